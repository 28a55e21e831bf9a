//! Keeps a Mailchimp audience in sync with a table: each batch's rows are subscribed or updated
//! with the Marketing API's batch endpoint (`POST /3.0/lists/{list_id}`, `update_existing`,
//! at most 500 members a request), and deleted rows are archived
//! (`DELETE /3.0/lists/{list_id}/members/{md5 of the lowercased email}`) or unsubscribed.
//!
//! ```text
//! host run --table users --module target/wasm32-wasip2/release/mailchimp.wasm \
//!   --set list_id=abc123 --secret api_key=MAILCHIMP_API_KEY \
//!   --allow-host https://us6.api.mailchimp.com
//! ```
//!
//! Configuration (`--set key=value`; `api_key` best as `--secret`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `list_id` | | the audience |
//! | `api_key` | | `…-us6`: the suffix names the data center |
//! | `base_url` | `https://<dc>.api.mailchimp.com` | another API root (a proxy, a test server) |
//! | `email_column` | `email` | the column with the member's address |
//! | `status` | `subscribed` | status of upserted members |
//! | `status_column` | | a column with each member's status instead (empty: `status`) |
//! | `merge_fields` | | `FNAME=first_name,LNAME=last_name`: merge tag = column |
//! | `on_delete` | `archive` | `archive` or `unsubscribe` deleted rows |
//!
//! A row without an email address, and every member Mailchimp lists in the response's
//! `errors`, is rejected with the reason (the host keeps it as a dead letter). 429 and 5xx make
//! the host retry the batch (after `Retry-After`); a refused API key (401, 403) or any other
//! 4xx stops the pipeline with Mailchimp's `detail`.

use std::collections::HashMap;

use md5::{Digest, Md5};
use tidemark_sdk::http::{Disposition, Request, Response};
use tidemark_sdk::{json, log, Batch, Change, ConfigKey, Error, Map, Rejection, Result, Value};

/// Members per batch subscribe request, Mailchimp's limit.
const MEMBERS_PER_REQUEST: usize = 500;

const KEYS: &[ConfigKey] = &[
    ConfigKey::required("list_id", "the audience rows are synced into"),
    ConfigKey::required(
        "api_key",
        "Mailchimp API key; its -us6 suffix names the data center",
    )
    .secret(),
    ConfigKey::optional(
        "base_url",
        "another API root (default https://<dc>.api.mailchimp.com)",
    ),
    ConfigKey::optional(
        "email_column",
        "the column with the address (default email)",
    ),
    ConfigKey::optional("status", "status of upserted members (default subscribed)"),
    ConfigKey::optional(
        "status_column",
        "a column with each member's status instead",
    ),
    ConfigKey::optional(
        "merge_fields",
        "merge tag = column pairs: FNAME=first_name,LNAME=last",
    ),
    ConfigKey::optional("on_delete", "archive (default) or unsubscribe deleted rows"),
];

/// Reads and checks the configuration once at start: a bad key or value stops the run
/// before any row is read.
fn init() -> Result<()> {
    Settings::from_config(tidemark_sdk::config).map_err(Error::Fatal)?;
    Ok(())
}

fn deliver(batch: Batch) -> Result<Vec<Rejection>> {
    let settings = Settings::from_config(tidemark_sdk::config).map_err(Error::Fatal)?;
    let plan = plan(&settings, &batch.changes);
    let mut rejected = plan.rejected;
    let list_url = format!("{}/3.0/lists/{}", settings.base, settings.list_id);

    for chunk in plan.members.chunks(MEMBERS_PER_REQUEST) {
        let members: Vec<&Value> = chunk.iter().map(|(_, member)| member).collect();
        let body = json!({"members": members, "update_existing": true});
        let response = Request::post(&list_url)
            .basic_auth("anystring", &settings.api_key)
            .json(&body)?
            .send()?;
        if !response.is_success() {
            return Err(failure(&response, &format!("POST {list_url}")));
        }
        let sent: Vec<(usize, &str)> = chunk
            .iter()
            .map(|(index, member)| (*index, member["email_address"].as_str().unwrap_or("")))
            .collect();
        let (errors, unmatched) = member_errors(&response.body, &sent);
        for entry in unmatched {
            log::warn(format!(
                "batch {}: Mailchimp reported an error for no member of the request: {entry}",
                batch.id
            ));
        }
        rejected.extend(errors);
    }

    for (index, email) in &plan.archives {
        let url = format!("{list_url}/members/{}", subscriber_hash(email));
        let response = Request::delete(&url)
            .basic_auth("anystring", &settings.api_key)
            .send()?;
        match archive_outcome(&response) {
            Archive::Done => {}
            Archive::Rejected(reason) => rejected.push(Rejection {
                index: *index as u32,
                reason,
            }),
            Archive::Failed => return Err(failure(&response, &format!("DELETE {url}"))),
        }
    }
    rejected.sort_by_key(|r| r.index);
    Ok(rejected)
}

tidemark_sdk::destination!(deliver, keys = KEYS, init = init);

/// The configuration, read and checked at start (`init`) and again for each batch.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    list_id: String,
    api_key: String,
    /// `https://us6.api.mailchimp.com`, without a trailing slash.
    base: String,
    email_column: String,
    status: String,
    status_column: Option<String>,
    /// `(merge tag, column)`.
    merge_fields: Vec<(String, String)>,
    on_delete: OnDelete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDelete {
    Archive,
    Unsubscribe,
}

impl Settings {
    fn from_config(
        config: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<Settings, String> {
        let given = |key: &str| config(key).filter(|value| !value.trim().is_empty());
        let required = |key: &str, how: &str| {
            given(key).ok_or_else(|| format!("missing configuration {key:?}: pass {how}"))
        };
        let list_id = required("list_id", "--set list_id=<audience id>")?;
        let api_key = required("api_key", "--secret api_key=<variable holding the key>")?;
        let base = match given("base_url") {
            Some(base) => base.trim().trim_end_matches('/').to_owned(),
            None => match data_center(&api_key) {
                Some(dc) => format!("https://{dc}.api.mailchimp.com"),
                None => {
                    return Err(
                        "the API key has no data center suffix (like \"-us6\"): pass \
                                --set base_url=https://<dc>.api.mailchimp.com"
                            .to_owned(),
                    )
                }
            },
        };
        let on_delete = match given("on_delete").as_deref().map(str::trim) {
            None | Some("archive") => OnDelete::Archive,
            Some("unsubscribe") => OnDelete::Unsubscribe,
            Some(other) => {
                return Err(format!(
                    "on_delete={other:?}: use on_delete=archive or on_delete=unsubscribe"
                ))
            }
        };
        Ok(Settings {
            list_id: list_id.trim().to_owned(),
            api_key: api_key.trim().to_owned(),
            base,
            email_column: given("email_column").unwrap_or_else(|| "email".into()),
            status: given("status").unwrap_or_else(|| "subscribed".into()),
            status_column: given("status_column"),
            merge_fields: merge_fields(&given("merge_fields").unwrap_or_default())?,
            on_delete,
        })
    }
}

/// The data center of an API key: `…-us6` is `us6`.
fn data_center(api_key: &str) -> Option<&str> {
    let (_, dc) = api_key.trim().rsplit_once('-')?;
    let valid = !dc.is_empty() && dc.chars().all(|c| c.is_ascii_alphanumeric());
    valid.then_some(dc)
}

/// `FNAME=first_name,LNAME=last_name` as `(tag, column)` pairs.
fn merge_fields(spec: &str) -> std::result::Result<Vec<(String, String)>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((tag, column)) if !tag.trim().is_empty() && !column.trim().is_empty() => {
                Ok((tag.trim().to_owned(), column.trim().to_owned()))
            }
            _ => Err(format!(
                "merge_fields: {pair:?} is not TAG=column (e.g. FNAME=first_name)"
            )),
        })
        .collect()
}

/// What one batch turns into.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// `(row index, member)` for the batch subscribe requests.
    members: Vec<(usize, Value)>,
    /// `(row index, email)` of members to archive.
    archives: Vec<(usize, String)>,
    /// Rows that cannot be sent at all.
    rejected: Vec<Rejection>,
}

/// Sorts a batch's rows into members to subscribe or update, members to archive and rows to
/// reject. When several rows of the batch share an address, the last one (the newest) is sent.
fn plan(settings: &Settings, changes: &[Change]) -> Plan {
    let mut plan = Plan::default();
    let mut last_of: HashMap<String, usize> = HashMap::new();
    let mut emails: Vec<Option<String>> = Vec::with_capacity(changes.len());
    for (index, change) in changes.iter().enumerate() {
        let email = change
            .row
            .get(&settings.email_column)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|email| !email.is_empty());
        match email {
            Some(email) => {
                last_of.insert(email.to_lowercase(), index);
                emails.push(Some(email.to_owned()));
            }
            None => {
                plan.rejected.push(Rejection {
                    index: index as u32,
                    reason: format!("no email address in column {:?}", settings.email_column),
                });
                emails.push(None);
            }
        }
    }
    for (index, (change, email)) in changes.iter().zip(emails).enumerate() {
        let Some(email) = email else { continue };
        if last_of.get(&email.to_lowercase()) != Some(&index) {
            continue; // a later row of this batch has the same address
        }
        match (change.is_delete(), settings.on_delete) {
            (true, OnDelete::Archive) => plan.archives.push((index, email)),
            (true, OnDelete::Unsubscribe) => plan.members.push((
                index,
                json!({"email_address": email, "status": "unsubscribed"}),
            )),
            (false, _) => plan
                .members
                .push((index, member(settings, &change.row, email))),
        }
    }
    plan
}

/// The batch subscribe entry of an upserted row.
fn member(settings: &Settings, row: &Map<String, Value>, email: String) -> Value {
    let status = settings
        .status_column
        .as_ref()
        .and_then(|column| row.get(column))
        .and_then(Value::as_str)
        .filter(|status| !status.trim().is_empty())
        .unwrap_or(&settings.status);
    let mut member = json!({"email_address": email, "status": status.trim()});
    let fields: Map<String, Value> = settings
        .merge_fields
        .iter()
        .filter_map(|(tag, column)| match row.get(column) {
            None | Some(Value::Null) => None,
            Some(value) => Some((tag.clone(), value.clone())),
        })
        .collect();
    if !fields.is_empty() {
        member["merge_fields"] = Value::Object(fields);
    }
    member
}

/// Mailchimp's id of a member: the MD5 of the lowercased address, in hex.
fn subscriber_hash(email: &str) -> String {
    format!("{:x}", Md5::digest(email.trim().to_lowercase().as_bytes()))
}

/// The rejections in a batch subscribe response's `errors`, matched to the rows `sent`
/// (`(row index, email)`) by address; entries that match no row are returned as text.
fn member_errors(body: &[u8], sent: &[(usize, &str)]) -> (Vec<Rejection>, Vec<String>) {
    let Ok(body) = serde_json_value(body) else {
        return (Vec::new(), Vec::new());
    };
    let Some(errors) = body.get("errors").and_then(Value::as_array) else {
        return (Vec::new(), Vec::new());
    };
    let by_email: HashMap<String, usize> = sent
        .iter()
        .map(|(index, email)| (email.to_lowercase(), *index))
        .collect();
    let mut rejected: Vec<Rejection> = Vec::new();
    let mut unmatched = Vec::new();
    for entry in errors {
        let index = entry
            .get("email_address")
            .and_then(Value::as_str)
            .and_then(|email| by_email.get(&email.trim().to_lowercase()));
        let Some(&index) = index else {
            unmatched.push(entry.to_string());
            continue;
        };
        let message = entry
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("rejected");
        let reason = match entry.get("error_code").and_then(Value::as_str) {
            Some(code) if !code.is_empty() => format!("Mailchimp: {message} ({code})"),
            _ => format!("Mailchimp: {message}"),
        };
        if !rejected.iter().any(|r| r.index as usize == index) {
            rejected.push(Rejection {
                index: index as u32,
                reason,
            });
        }
    }
    (rejected, unmatched)
}

fn serde_json_value(body: &[u8]) -> std::result::Result<Value, ()> {
    std::str::from_utf8(body)
        .map_err(|_| ())?
        .parse::<Value>()
        .map_err(|_| ())
}

/// What Mailchimp said about an error, from its problem document
/// (`{"type", "title", "status", "detail", "instance"}`), else the start of the body.
fn problem_detail(response: &Response) -> String {
    let problem = serde_json_value(&response.body).unwrap_or(Value::Null);
    let title = problem.get("title").and_then(Value::as_str);
    let detail = problem.get("detail").and_then(Value::as_str);
    match (title, detail) {
        (Some(title), Some(detail)) => format!("{title}: {detail}"),
        (None, Some(text)) | (Some(text), None) => text.to_owned(),
        (None, None) => response.body_excerpt(200),
    }
}

/// The error of a response that is not a success: 401 and 403 say the key was refused.
fn failure(response: &Response, what: &str) -> Error {
    let detail = problem_detail(response);
    match response.status {
        401 | 403 => Error::Fatal(format!(
            "{what}: Mailchimp refused the API key (HTTP {}: {detail}); check --secret api_key",
            response.status
        )),
        _ => response.error(what, &detail),
    }
}

/// What an archive call's response means for its row.
#[derive(Debug, PartialEq)]
enum Archive {
    /// Archived, or not a member (404): nothing left to do.
    Done,
    /// Mailchimp will not archive this member (a 4xx about it): the row is rejected.
    Rejected(String),
    /// The request as a whole failed: retry later or stop, as [`failure`] says.
    Failed,
}

fn archive_outcome(response: &Response) -> Archive {
    match (response.status, response.disposition()) {
        (_, Disposition::Delivered) | (404, _) => Archive::Done,
        (401 | 403, _) | (_, Disposition::RetryLater) => Archive::Failed,
        (400..=499, Disposition::Fatal) => Archive::Rejected(format!(
            "Mailchimp: archiving failed (HTTP {}): {}",
            response.status,
            problem_detail(response)
        )),
        _ => Archive::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_sdk::Op;

    fn config(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn settings(extra: &[(&str, &str)]) -> Settings {
        let mut pairs = vec![("list_id", "abc123"), ("api_key", "0123abcd-us6")];
        pairs.extend_from_slice(extra);
        Settings::from_config(config(&pairs)).unwrap()
    }

    fn change(op: Op, row: Value) -> Change {
        Change::from_row(op, &row).unwrap()
    }

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![("retry-after".into(), b"3".to_vec())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn data_center_from_the_key() {
        assert_eq!(data_center("0123456789abcdef-us6"), Some("us6"));
        assert_eq!(data_center(" key-with-dashes-us21 "), Some("us21"));
        assert_eq!(data_center("nodc"), None);
        assert_eq!(data_center("key-"), None);
        assert_eq!(data_center("key-us6.evil.com/"), None);
    }

    #[test]
    fn settings_defaults_and_overrides() {
        let s = settings(&[]);
        assert_eq!(s.base, "https://us6.api.mailchimp.com");
        assert_eq!(s.email_column, "email");
        assert_eq!(s.status, "subscribed");
        assert_eq!(s.status_column, None);
        assert!(s.merge_fields.is_empty());
        assert_eq!(s.on_delete, OnDelete::Archive);

        let s = settings(&[
            ("base_url", "http://127.0.0.1:8080/"),
            ("email_column", "mail"),
            ("status", "pending"),
            ("status_column", "state"),
            ("merge_fields", "FNAME=first_name, LNAME=last_name"),
            ("on_delete", "unsubscribe"),
        ]);
        assert_eq!(s.base, "http://127.0.0.1:8080");
        assert_eq!(s.email_column, "mail");
        assert_eq!(s.status, "pending");
        assert_eq!(s.status_column.as_deref(), Some("state"));
        assert_eq!(
            s.merge_fields,
            vec![
                ("FNAME".to_owned(), "first_name".to_owned()),
                ("LNAME".to_owned(), "last_name".to_owned())
            ]
        );
        assert_eq!(s.on_delete, OnDelete::Unsubscribe);
    }

    #[test]
    fn settings_errors_name_the_flag() {
        let err = Settings::from_config(config(&[("api_key", "k-us6")])).unwrap_err();
        assert!(err.contains("--set list_id="), "{err}");
        let err = Settings::from_config(config(&[("list_id", "l")])).unwrap_err();
        assert!(err.contains("--secret api_key="), "{err}");
        let err = Settings::from_config(config(&[("list_id", "l"), ("api_key", "k")])).unwrap_err();
        assert!(err.contains("base_url"), "{err}");
        let err = Settings::from_config(config(&[
            ("list_id", "l"),
            ("api_key", "k-us6"),
            ("on_delete", "purge"),
        ]))
        .unwrap_err();
        assert!(err.contains("on_delete"), "{err}");
        let err = Settings::from_config(config(&[
            ("list_id", "l"),
            ("api_key", "k-us6"),
            ("merge_fields", "FNAME"),
        ]))
        .unwrap_err();
        assert!(err.contains("TAG=column"), "{err}");
    }

    #[test]
    fn rows_become_members_archives_and_rejections() {
        let s = settings(&[
            ("merge_fields", "FNAME=first,LNAME=last"),
            ("status_column", "state"),
        ]);
        let changes = vec![
            change(
                Op::Upsert,
                json!({"id": 1, "email": "Ada@Example.com", "first": "Ada", "last": null, "state": "pending"}),
            ),
            change(Op::Upsert, json!({"id": 2, "email": null})),
            change(Op::Delete, json!({"id": 3, "email": "gone@example.com"})),
            change(
                Op::Upsert,
                json!({"id": 4, "email": "bob@example.com", "state": ""}),
            ),
            change(Op::Upsert, json!({"id": 5})),
            change(
                Op::Upsert,
                json!({"id": 6, "email": "BOB@example.com ", "first": "Bob"}),
            ),
        ];
        let plan = plan(&s, &changes);
        assert_eq!(
            plan.members,
            vec![
                (
                    0,
                    json!({"email_address": "Ada@Example.com", "status": "pending",
                           "merge_fields": {"FNAME": "Ada"}})
                ),
                (
                    5,
                    json!({"email_address": "BOB@example.com", "status": "subscribed",
                           "merge_fields": {"FNAME": "Bob"}})
                ),
            ]
        );
        assert_eq!(plan.archives, vec![(2, "gone@example.com".to_owned())]);
        let rejected: Vec<u32> = plan.rejected.iter().map(|r| r.index).collect();
        assert_eq!(rejected, vec![1, 4]);
        assert!(plan.rejected[0].reason.contains("\"email\""));
    }

    #[test]
    fn deletes_unsubscribe_when_configured() {
        let s = settings(&[("on_delete", "unsubscribe")]);
        let plan = plan(&s, &[change(Op::Delete, json!({"email": "a@example.com"}))]);
        assert!(plan.archives.is_empty());
        assert_eq!(
            plan.members,
            vec![(
                0,
                json!({"email_address": "a@example.com", "status": "unsubscribed"})
            )]
        );
    }

    #[test]
    fn subscriber_hash_is_md5_of_the_lowercased_address() {
        // Mailchimp's documented example hash of "urist.mcvankab@freddiesjokes.com".
        assert_eq!(
            subscriber_hash("Urist.McVankab@FreddiesJokes.com"),
            "62eeb292278cc15f5817cb78f7790b08"
        );
    }

    #[test]
    fn response_errors_map_back_to_rows() {
        let body = r#"{"new_members": [{"email_address": "a@example.com"}],
            "updated_members": [],
            "errors": [
              {"email_address": "B@example.com", "error": "B@example.com looks fake or invalid, please enter a real email address.", "error_code": "ERROR_FAKE_EMAIL"},
              {"email_address": "nobody@example.com", "error": "?", "error_code": "X"}
            ],
            "total_created": 1, "total_updated": 0, "error_count": 2}"#;
        let sent = [(0, "a@example.com"), (3, "b@example.com")];
        let (rejected, unmatched) = member_errors(body.as_bytes(), &sent);
        assert_eq!(
            rejected,
            vec![Rejection {
                index: 3,
                reason: "Mailchimp: B@example.com looks fake or invalid, please enter a real \
                         email address. (ERROR_FAKE_EMAIL)"
                    .into()
            }]
        );
        assert_eq!(unmatched.len(), 1);
        assert_eq!(member_errors(b"not json", &sent), (Vec::new(), Vec::new()));
    }

    #[test]
    fn failures_carry_mailchimps_detail() {
        let problem = r#"{"type": "https://mailchimp.com/developer/marketing/docs/errors/",
            "title": "API Key Invalid", "status": 401,
            "detail": "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
            "instance": "d6f2a3"}"#;
        match failure(&response(401, problem), "POST x") {
            Error::Fatal(message) => {
                assert!(message.contains("API Key Invalid"), "{message}");
                assert!(message.contains("wrong datacenter"), "{message}");
                assert!(message.contains("--secret api_key"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        match failure(
            &response(
                400,
                r#"{"title": "Invalid Resource", "detail": "Bad list"}"#,
            ),
            "x",
        ) {
            Error::Fatal(message) => assert!(message.contains("Bad list"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            failure(&response(429, "{}"), "x"),
            Error::RetryLater {
                message: "x: HTTP 429: {}".into(),
                after: Some(std::time::Duration::from_secs(3))
            }
        );
        assert!(matches!(
            failure(&response(503, "<html>down</html>"), "x"),
            Error::RetryLater { .. }
        ));
    }

    #[test]
    fn archive_outcomes() {
        assert_eq!(archive_outcome(&response(204, "")), Archive::Done);
        assert_eq!(archive_outcome(&response(404, "")), Archive::Done);
        assert_eq!(archive_outcome(&response(401, "")), Archive::Failed);
        assert_eq!(archive_outcome(&response(503, "")), Archive::Failed);
        assert_eq!(archive_outcome(&response(302, "")), Archive::Failed);
        assert!(matches!(
            archive_outcome(&response(405, r#"{"detail": "nope"}"#)),
            Archive::Rejected(reason) if reason.contains("nope")
        ));
    }
}
