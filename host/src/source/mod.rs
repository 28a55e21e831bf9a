//! Sources: the databases Tidemark reads deltas from.
//!
//! Every driver answers the same questions in the same order (see [`Source`]); the SQL that
//! pages through a table by keyset lives in [`crate::cursor`], the JSON rendering of values in
//! [`crate::json`]. A driver owns its connection, the table's description, and the exact text
//! form of its cursor and key values.

pub mod mysql;
pub mod postgres;
mod query;
pub mod sqlite;

use std::fmt;
use std::future::Future;

use crate::error::{Error, Result};
use crate::model::{Position, Rows};

/// A table name as the user gave it, optionally schema-qualified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableRef {
    pub schema: Option<String>,
    pub name: String,
}

impl TableRef {
    /// Parses `users` or `app.users`.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = || {
            Error::invalid(format!("invalid table name {text:?}"))
                .with_hint("pass --table NAME or --table SCHEMA.NAME")
        };
        let mut parts = text.split('.');
        let (schema, name) = match (parts.next(), parts.next(), parts.next()) {
            (Some(name), None, None) => (None, name),
            (Some(schema), Some(name), None) => (Some(schema), name),
            _ => return Err(invalid()),
        };
        if name.is_empty() || schema.is_some_and(str::is_empty) {
            return Err(invalid());
        }
        Ok(TableRef {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What the user asked to read: the table and the columns that drive the delta.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableSpec {
    pub table: TableRef,
    pub cursor: String,
    /// `None` picks the table's single-column primary key.
    pub key: Option<String>,
    pub deleted_column: Option<String>,
    /// Zone of cursor values that carry none (PostgreSQL `timestamp`, MySQL DATETIME).
    pub time_zone: String,
}

/// The upper bound of a read.
#[derive(Debug, Clone, Copy)]
pub enum Until<'a> {
    /// Rows whose cursor is below the safe horizon (exclusive; `None`: no bound).
    Horizon(Option<&'a str>),
    /// Rows up to and including this position: re-reading a batch that was delivered but
    /// not checkpointed.
    Through(&'a Position),
}

/// One page of rows and the position after its last row.
#[derive(Debug)]
pub struct Page {
    pub rows: Rows,
    /// `None` when the page is empty.
    pub last: Option<Position>,
}

/// The database's own clock, read once per pass.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Rows whose cursor is at or past this value are left for a later pass (exact text of
    /// the cursor's type; `None` for integer cursors, which have no time to settle).
    pub horizon: Option<String>,
    /// The database's now, in the cursor's own form, for lag reporting.
    pub now: Option<String>,
}

/// A database table read as a stream of deltas.
///
/// Contract: [`Source::read`] returns rows strictly after `after` in `(cursor, key)` order
/// (key order among NULL cursors), at most `limit` of them, none at or past the bound, and
/// the position of the last row returned. Reading never changes the database.
pub trait Source: Send {
    /// Rows whose cursor is NULL (0 when the column is declared NOT NULL).
    fn null_cursor_count(&mut self) -> impl Future<Output = Result<u64>> + Send;

    /// The safe horizon: the database's now minus `settle`, and on servers that show it, no
    /// later than the start of the oldest transaction still open.
    fn clock(&mut self, settle: std::time::Duration) -> impl Future<Output = Result<Clock>> + Send;

    /// How many rows a read from `after` up to `until` would return in all.
    fn count(
        &mut self,
        after: &Position,
        until: Until<'_>,
    ) -> impl Future<Output = Result<u64>> + Send;

    fn read(
        &mut self,
        after: &Position,
        until: Until<'_>,
        limit: usize,
    ) -> impl Future<Output = Result<Page>> + Send;

    /// Seconds between `now` and `cursor`, both as this source renders them; `None` when the
    /// cursor is not a time.
    fn lag_seconds(&self, now: &str, cursor: &str) -> Option<f64>;

    /// The resolved key column (the primary key unless `--key` named one).
    fn key_column(&self) -> &str;
}

/// The kinds of database Tidemark reads, picked by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Driver {
    Postgres,
    MySql,
    Sqlite,
}

impl Driver {
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some("postgres" | "postgresql") => Ok(Driver::Postgres),
            Some("mysql" | "mariadb") => Ok(Driver::MySql),
            Some("sqlite") => Ok(Driver::Sqlite),
            _ => Err(
                Error::invalid(format!("unsupported database URL {:?}", redact_url(url)))
                    .with_hint(
                        "use postgres://USER@HOST/DB, mysql://USER@HOST/DB or sqlite://PATH",
                    ),
            ),
        }
    }

    /// A cursor or key value as a person reads it. SQLite watermarks carry the storage class
    /// of their value (`i:42` is the integer 42), which is left out; other drivers' values
    /// show as they are.
    pub fn shown_value(self, value: &str) -> &str {
        match self {
            Driver::Sqlite => ["i:", "r:", "t:"]
                .iter()
                .find_map(|tag| value.strip_prefix(tag))
                .unwrap_or(value),
            Driver::Postgres | Driver::MySql => value,
        }
    }

    /// A position with its values as [`Driver::shown_value`] shows them.
    pub fn shown_position(self, position: &Position) -> String {
        match position {
            Position::After(mark) => format!(
                "({}, {})",
                self.shown_value(&mark.cursor),
                self.shown_value(&mark.key)
            ),
            Position::Nulls {
                after_key: Some(key),
            } => format!("(NULL, {})", self.shown_value(key)),
            other => other.to_string(),
        }
    }
}

/// The index of column `name` among `names`, or an error that lists the columns and names
/// the flag that picks another.
pub(crate) fn find_column(names: &[&str], name: &str, table: &str, flag: &str) -> Result<usize> {
    names
        .iter()
        .position(|candidate| *candidate == name)
        .ok_or_else(|| {
            Error::invalid(format!("table {table:?} has no column {name:?}"))
                .with_hint(format!("pass {flag} with one of: {}", names.join(", ")))
        })
}

/// Says once, at start, that reads will scan the table: without an index that leads with the
/// cursor, every page is a full scan and sort, and a large first sync grows quadratically.
pub(crate) fn warn_unless_indexed(has_index: bool, table: &str, cursor: &str, key: &str) {
    if !has_index {
        tracing::warn!(
            "no index on {table} starts with column {cursor:?}: every batch scans the table; \
             create one on ({cursor}, {key})"
        );
    }
}

/// The URL with any password replaced, for logs, errors and status output.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Watermark;

    #[test]
    fn table_names_parse_with_and_without_schema() {
        assert_eq!(TableRef::parse("users").unwrap().to_string(), "users");
        let qualified = TableRef::parse("app.users").unwrap();
        assert_eq!(qualified.schema.as_deref(), Some("app"));
        assert_eq!(qualified.name, "users");
        assert!(TableRef::parse("a.b.c").is_err());
        assert!(TableRef::parse(".users").is_err());
        assert!(TableRef::parse("").is_err());
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://bob:secret@db:5432/app"),
            "postgres://bob:***@db:5432/app"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(redact_url("mysql://root@h/db"), "mysql://root@h/db");
    }

    #[test]
    fn drivers_follow_the_scheme() {
        assert_eq!(
            Driver::from_url("postgres://x/y").unwrap(),
            Driver::Postgres
        );
        assert_eq!(Driver::from_url("mysql://x/y").unwrap(), Driver::MySql);
        assert_eq!(Driver::from_url("sqlite://a.db").unwrap(), Driver::Sqlite);
        assert!(Driver::from_url("foo://x").is_err());
        assert!(Driver::from_url("users.db").is_err());
    }

    #[test]
    fn only_sqlite_values_lose_their_storage_class_when_shown() {
        let mark = Position::After(Watermark {
            cursor: "t:2024-01-01".into(),
            key: "i:42".into(),
        });
        assert_eq!(Driver::Sqlite.shown_position(&mark), "(2024-01-01, 42)");
        assert_eq!(
            Driver::Postgres.shown_position(&mark),
            "(t:2024-01-01, i:42)"
        );
        assert_eq!(Driver::Sqlite.shown_value("r:1.5"), "1.5");
        assert_eq!(Driver::MySql.shown_value("i:42"), "i:42");
        let nulls = Position::Nulls {
            after_key: Some("i:7".into()),
        };
        assert_eq!(Driver::Sqlite.shown_position(&nulls), "(NULL, 7)");
        assert_eq!(Driver::Sqlite.shown_position(&Position::Start), "start");
    }
}
