//! Sources: the databases Tidemark reads deltas from.
//!
//! [`connect`] picks the driver from the URL's scheme. Every driver answers the same questions
//! in the same order (see [`Source`]): it describes its table from the catalog, and the one
//! [`plan`] checks the user's cursor, key and deleted column against that description. The SQL
//! that pages through a table by keyset lives in `keyset`, the JSON rendering of values in
//! [`crate::model::json`]. A driver owns its connection, its type mapping and clock, and the exact
//! text form of its cursor and key values.

mod ahead;
mod any;
mod horizon;
pub mod keys;
mod keyset;
pub mod mysql;
pub mod plan;
pub mod pools;
pub mod postgres;
mod query;
pub mod sqlite;

pub use any::{connect, AnySource, Driver};
pub use keys::TableKeys;

use std::fmt;
use std::future::Future;

use crate::model::error::{Error, Result};
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
    /// Why rows that are already visible wait for a later pass (a transaction still open),
    /// for `host status`; `None` when nothing waits for long.
    pub held_back: Option<String>,
}

/// Seconds from `cursor` to `now`, when the cursor is a time written as text.
pub(crate) fn timestamp_lag(is_time: bool, now: &str, cursor: &str) -> Option<f64> {
    if !is_time {
        return None;
    }
    let lag =
        crate::model::json::parse_timestamp(now)? - crate::model::json::parse_timestamp(cursor)?;
    Some(lag.num_microseconds()? as f64 / 1e6)
}

/// The oldest transaction still open, as a server lists it.
#[derive(Debug, Clone)]
pub(crate) struct OldestOpen {
    pub started: chrono::NaiveDateTime,
    /// How a person finds it: `pid 4242`, `thread 12`.
    pub label: String,
}

impl OldestOpen {
    /// The transaction of MySQL thread `thread`, open since `started`.
    pub fn thread((started, thread): (chrono::NaiveDateTime, u64)) -> Self {
        OldestOpen {
            started,
            label: format!("thread {thread}"),
        }
    }
}

/// The safe horizon of a pass: `settled` (the database's now minus `--settle`), held back to
/// the start of the oldest transaction still open, when the server shows it, since that
/// transaction may still commit rows stamped before `settled`; and, when it holds the horizon
/// back, why (for `host status`). Says so in the log when a transaction has been holding the
/// horizon for over five minutes.
pub(crate) fn held_back_horizon(
    settled: chrono::NaiveDateTime,
    oldest_open: Option<OldestOpen>,
    now: chrono::NaiveDateTime,
) -> (chrono::NaiveDateTime, Option<String>) {
    match oldest_open.filter(|oldest| oldest.started < settled) {
        Some(oldest) => {
            let open_for = (now - oldest.started).num_milliseconds() as f64 / 1e3;
            if open_for > 300.0 {
                tracing::warn!(
                    "transaction {} open since {} UTC holds the sync horizon back; rows \
                     changed after its start wait until it ends",
                    oldest.label,
                    oldest.started
                );
            }
            // A transaction shorter than that is the ordinary traffic of a busy table.
            let why = (open_for >= 1.0).then(|| {
                format!(
                    "rows changed after {} UTC wait for transaction {}, open for {open_for:.1}s",
                    oldest.started, oldest.label
                )
            });
            (oldest.started, why)
        }
        None => (settled, None),
    }
}

/// A database table read as a stream of deltas.
///
/// Contract: [`Source::read`] returns rows strictly after `after` in `(cursor, key)` order
/// (key order among NULL cursors), at most `limit` of them, none at or past the bound, and
/// the position of the last row returned. Reading never changes the database.
///
/// A source also answers what a delete check asks about its keys ([`TableKeys`]).
pub trait Source: TableKeys + Send {
    /// Rows whose cursor is NULL (0 when the column is declared NOT NULL).
    fn null_cursor_count(&mut self) -> impl Future<Output = Result<u64>> + Send;

    /// The safe horizon. Times: the database's now minus `settle`, and on servers that show
    /// it, no later than the start of the oldest transaction still open. Integers: past the
    /// largest id that no open transaction can still commit below (see `ids`).
    fn clock(&mut self, settle: std::time::Duration) -> impl Future<Output = Result<Clock>> + Send;

    /// How many rows a read from `after` up to `until` would return in all.
    fn count(
        &mut self,
        after: &Position,
        until: Until<'_>,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// About how many rows a read from `after` up to `until` would return, for progress
    /// only: the exact [`Source::count`] unless the driver has a cheaper estimate (counting
    /// a million pending rows took a fifth of the time to read them, issue 13).
    fn estimate(
        &mut self,
        after: &Position,
        until: Until<'_>,
    ) -> impl Future<Output = Result<u64>> + Send {
        self.count(after, until)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
