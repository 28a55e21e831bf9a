//! The engine's typed error. Callers branch on [`ErrorKind`], never on message text:
//! the sync loop retries [`ErrorKind::RetryLater`] deliveries at once (same batch, same id),
//! [`ErrorKind::Transient`] and [`ErrorKind::Module`] errors on its next pass when it polls,
//! and stops on the rest. Poison isolation ([`crate::delivery::poison`]) splits the batches that
//! [`ErrorKind::Module`] and [`ErrorKind::TransformFatal`] errors fail
//! ([`ErrorKind::may_be_a_row`]).

use std::fmt;
use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's input is wrong (URL, table, column, flag): fix it and run again.
    Invalid,
    /// The database or the network failed in a way a later attempt may not.
    Transient,
    /// A module failed the batch (trap, limit, error): the watermark stays, and a later
    /// attempt runs the batch in a fresh instance.
    Module,
    /// The destination asked for the same batch again later (it is down, or rate limited).
    RetryLater,
    /// A transform answered *fatal* for the batch (contract 0.2: the Rust SDK's `Err` or `?`
    /// in a row's transform, an uncaught JavaScript or Python exception). Another attempt at
    /// the same rows would fail the same way, so it is not retried; it may be one row's
    /// fault, so poison isolation looks for the rows at fault. Anywhere else it is
    /// [`ErrorKind::Fatal`]: stop.
    TransformFatal,
    /// Anything else: stop, keep the watermark where it is.
    Fatal,
    /// The pipeline's lease was taken over by another worker: this one must stop running the
    /// pipeline at once, and write nothing more for it (see [`crate::cluster::membership`]).
    Fenced,
}

impl ErrorKind {
    /// Whether a module failed the batch in a way one of its rows may be at fault for: what
    /// poison isolation splits. A destination's fatal answer (a 401) and its retry-later (it
    /// is down) are about the destination, never about a row.
    pub fn may_be_a_row(self) -> bool {
        matches!(self, ErrorKind::Module | ErrorKind::TransformFatal)
    }
}

/// An error with its kind, a message that names the thing that failed, and an optional hint
/// that says how to fix it.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
    /// For [`ErrorKind::RetryLater`]: how long the destination asked to wait.
    retry_after: Option<Duration>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
            retry_after: None,
            source: None,
        }
    }

    /// The destination will take the batch later, after `after` if it said when.
    pub fn retry_later(message: impl Into<String>, after: Option<Duration>) -> Self {
        Error {
            retry_after: after,
            ..Self::new(ErrorKind::RetryLater, message)
        }
    }

    /// Bad input from the user.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Fatal, message)
    }

    /// Wraps a database error, classifying it: lost connections and timeouts are transient,
    /// errors the server raised about the statement are not.
    pub fn database(context: impl Into<String>, err: sqlx::Error) -> Self {
        let kind = match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => ErrorKind::Transient,
            sqlx::Error::Tls(_) | sqlx::Error::Configuration(_) => ErrorKind::Invalid,
            sqlx::Error::Database(db)
                if is_transient_sqlstate(db.code().as_deref()) || is_sqlite_busy(db.as_ref()) =>
            {
                ErrorKind::Transient
            }
            _ => ErrorKind::Fatal,
        };
        Self::caused_by(kind, context, err)
    }

    /// Wraps an error of the SQLite page reader (see `source::sqlite_pages`): a database
    /// that is busy or locked by a writer is transient, anything else is not.
    pub fn sqlite(context: impl Into<String>, err: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
        let kind = match err.sqlite_error_code() {
            Some(DatabaseBusy | DatabaseLocked) => ErrorKind::Transient,
            _ => ErrorKind::Fatal,
        };
        Self::caused_by(kind, context, err)
    }

    pub fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        Self::caused_by(ErrorKind::Fatal, context, err)
    }

    fn caused_by(
        kind: ErrorKind,
        context: impl Into<String>,
        err: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            kind,
            message: context.into(),
            hint: None,
            retry_after: None,
            source: Some(Box::new(err)),
        }
    }

    /// Prefixes the message with what was being done.
    pub fn context(mut self, context: impl std::fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Adds the line that tells the user how to fix the problem.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// SQLSTATE classes worth retrying: connection exceptions (08), serialization failures and
/// deadlocks (40), insufficient resources (53), operator intervention such as a server
/// shutting down (57P01..57P03).
fn is_transient_sqlstate(code: Option<&str>) -> bool {
    match code {
        Some(code) => {
            code.starts_with("08")
                || code.starts_with("40")
                || code.starts_with("53")
                || matches!(code, "57P01" | "57P02" | "57P03")
        }
        None => false,
    }
}

/// SQLite's "database is busy" and "is locked" (primary codes 5 and 6, with their extended
/// codes): another connection holds the lock. Most waits end in the busy timeout, but SQLite
/// returns some without waiting (two connections turning a new file to WAL at once, one that
/// opens a WAL file while another recovers it), so they are worth trying again.
fn is_sqlite_busy(err: &(dyn sqlx::error::DatabaseError + 'static)) -> bool {
    let is_sqlite = err
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some();
    is_sqlite
        && err
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// `{}` shows the message alone, as error chains (anyhow's `{:#}`) expect of an error that
/// has a [`source`](std::error::Error::source); `{:#}` adds the causes, for log lines and the
/// state store, where the error stands alone.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if f.alternate() {
            let mut cause = std::error::Error::source(self);
            while let Some(err) = cause {
                write!(f, ": {err}")?;
                cause = err.source();
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}
