//! The error a processor returns about a whole batch (or its configuration, from `init`):
//! worth retrying later, or fatal. Rows a processor will not take are not errors: reject them
//! ([`crate::Transformed::reject`], [`crate::Rejection`]) and the rest of the batch goes on.

use std::time::Duration;

/// Why a processor did not process a batch, in transforms and destinations alike.
///
/// `?` turns the SDK's own errors, `String`s, `&str`s and [`serde_json::Error`]s into
/// [`Error::Fatal`] (a row that does not parse, a missing configuration key: retrying cannot
/// fix them), and an [`crate::http::HttpError`] into what it means (retry later when the
/// request got no response, fatal when the host refused it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Temporary (a network error, a 5xx, a 429, a dependency not ready): the host hands on
    /// the same batch, with the same id, again later, after `after` when given.
    RetryLater {
        message: String,
        after: Option<Duration>,
    },
    /// Permanent (bad credentials, bad configuration): the host stops the pipeline with this
    /// message and keeps its watermark.
    Fatal(String),
}

impl Error {
    /// A failure retrying cannot fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        Error::Fatal(message.into())
    }

    /// A temporary failure: the host decides when to try again (its back-off).
    pub fn retry_later(message: impl Into<String>) -> Self {
        Error::RetryLater {
            message: message.into(),
            after: None,
        }
    }

    /// A temporary failure, to be tried again after `after` (e.g. a `Retry-After`).
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        Error::RetryLater {
            message: message.into(),
            after: Some(after),
        }
    }

    /// What went wrong, in the processor's words.
    pub fn message(&self) -> &str {
        match self {
            Error::RetryLater { message, .. } | Error::Fatal(message) => message,
        }
    }

    pub fn is_retry_later(&self) -> bool {
        matches!(self, Error::RetryLater { .. })
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Fatal(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::Fatal(message.to_owned())
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::Fatal(format!("JSON: {err}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn row_count(rows: &str) -> Result<usize> {
        let rows: Vec<serde_json::Value> = serde_json::from_str(rows)?;
        Ok(rows.len())
    }

    #[test]
    fn errors_are_std_errors_and_question_marks_make_them_fatal() {
        let boxed: Box<dyn std::error::Error> = Box::new(Error::from("no list_id"));
        assert_eq!(boxed.to_string(), "no list_id");
        assert_eq!(row_count("[1, 2]"), Ok(2));
        assert!(
            matches!(row_count("[1,"), Err(Error::Fatal(message)) if message.starts_with("JSON")),
            "{:?}",
            row_count("[1,")
        );
    }

    #[test]
    fn retry_later_carries_its_delay() {
        let later = Error::retry_after("busy", Duration::from_secs(2));
        assert!(later.is_retry_later());
        assert_eq!(later.message(), "busy");
        assert_eq!(
            later,
            Error::RetryLater {
                message: "busy".into(),
                after: Some(Duration::from_secs(2))
            }
        );
        assert!(!Error::fatal("no").is_retry_later());
    }
}
