//! Database URLs as logs, errors, status output and the state store may show them: with every
//! password masked and the rest as the user wrote it.
//!
//! A password can travel in the user info (`postgres://user:secret@host/db`) or as a query
//! parameter: sqlx 0.8 reads `password` from a PostgreSQL URL's query (`PgConnectOptions`);
//! libpq also knows `sslpassword`, and other MySQL and ODBC-style clients spell it `pwd` or
//! `passwd`. sqlx's `MySqlConnectOptions` takes the password from the user info only, but a
//! parameter that looks like a password is masked whatever the database.

use url::form_urlencoded;
use url::Url;

const MASK: &str = "***";

/// The URL with any password replaced by `***`, for logs, errors and status output.
///
/// A URL with nothing to mask comes back exactly as given. Text that does not parse as a URL
/// is masked by its shape instead: whatever sits between the user info's first `:` and its
/// last `@`, and the values of password parameters, so a password never shows verbatim.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(parsed) if parsed.has_host() => redact_parsed(url, parsed),
        _ => redact_text(url),
    }
}

fn redact_parsed(original: &str, mut parsed: Url) -> String {
    let query = parsed.query().map(mask_query);
    let masked_query = query.as_ref().is_some_and(|(_, masked)| *masked);
    if parsed.password().is_none() && !masked_query {
        return original.to_owned();
    }
    // Fails only without a host name (`postgres://:pw@/db`): fall back to masking by shape.
    if parsed.password().is_some() && parsed.set_password(Some(MASK)).is_err() {
        return redact_text(original);
    }
    if let Some((query, true)) = query {
        parsed.set_query(Some(&query));
    }
    parsed.to_string()
}

/// Masks by shape what did not parse as a URL.
fn redact_text(text: &str) -> String {
    let (head, query) = match text.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (text, None),
    };
    let start = head.find("://").map_or(0, |at| at + 3);
    let rest = &head[start..];
    // The user info ends at the last `@`: an unencoded password may hold `@` or `/`.
    let mut redacted = match rest.rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{}{}:{MASK}{}", &head[..start], &rest[..colon], &rest[at..]),
            None => head.to_owned(),
        },
        None => head.to_owned(),
    };
    if let Some(query) = query {
        redacted.push('?');
        redacted.push_str(&mask_query(query).0);
    }
    redacted
}

/// The query with the value of each password parameter masked, and whether any was.
/// Other parameters keep their exact text.
fn mask_query(query: &str) -> (String, bool) {
    let mut masked = false;
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            let key = form_urlencoded::parse(pair.as_bytes())
                .next()
                .map(|(key, _)| key.into_owned())
                .unwrap_or_default();
            match pair.split_once('=') {
                Some((raw_key, _)) if is_password_parameter(&key) => {
                    masked = true;
                    format!("{raw_key}={MASK}")
                }
                _ => pair.to_owned(),
            }
        })
        .collect();
    (pairs.join("&"), masked)
}

/// `password`, `sslpassword`, `ssl-password`, `passwd`, `pwd`, `pass`, in any case.
fn is_password_parameter(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("passwd") || matches!(key.as_str(), "pwd" | "pass")
}

#[cfg(test)]
mod tests {
    use crate::model::redact::redact_url;

    #[test]
    fn user_info_passwords_are_masked() {
        assert_eq!(
            redact_url("postgres://bob:secret@db:5432/app"),
            "postgres://bob:***@db:5432/app"
        );
        assert_eq!(redact_url("mysql://u:p@h/db"), "mysql://u:***@h/db");
        assert_eq!(
            redact_url("mariadb://root:pw@127.0.0.1:3306/test"),
            "mariadb://root:***@127.0.0.1:3306/test"
        );
        assert_eq!(
            redact_url("postgres://:secret@h/db"),
            "postgres://:***@h/db"
        );
    }

    #[test]
    fn percent_encoded_passwords_are_masked_whole() {
        assert_eq!(
            redact_url("postgres://u:p%40ss%2Fw%3Ard@h/db"),
            "postgres://u:***@h/db"
        );
        // An unencoded `@` belongs to the password: the host is after the last one.
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn password_parameters_are_masked_and_the_rest_kept() {
        assert_eq!(
            redact_url("postgres://u@h/db?password=secret&sslmode=require"),
            "postgres://u@h/db?password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u:a@h/db?sslmode=verify-full&sslpassword=b&application_name=x"),
            "postgres://u:***@h/db?sslmode=verify-full&sslpassword=***&application_name=x"
        );
        assert_eq!(
            redact_url("mysql://u@h/db?PWD=s&ssl-mode=required&pass%77ord=t"),
            "mysql://u@h/db?PWD=***&ssl-mode=required&pass%77ord=***"
        );
    }

    #[test]
    fn urls_without_a_password_come_back_as_given() {
        for url in [
            "sqlite://x.db",
            "sqlite:///var/lib/app data.db?mode=ro",
            "sqlite::memory:",
            "mysql://root@h/db",
            "postgres://u@h/db?sslmode=require&timezone=%2B08:00",
            "users.db",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn text_that_is_no_url_is_masked_by_its_shape() {
        // An unencoded `/` in the password makes the port invalid for the URL parser.
        assert_eq!(
            redact_url("postgres://u:se/cret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u:pw@/db"), "postgres://u:***@/db");
        assert_eq!(redact_url("u:secret@h"), "u:***@h");
        assert_eq!(
            redact_url("postgres://u:p@h:port/db?password=x"),
            "postgres://u:***@h:port/db?password=***"
        );
    }
}
