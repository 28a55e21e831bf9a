//! Sources: the databases Tidemark reads deltas from.
//!
//! [`connect`] picks the driver from the URL's scheme. Every driver answers the same questions
//! in the same order (see [`Source`]): it describes its table from the catalog, and the one
//! [`plan`] checks the user's cursor, key and deleted column against that description. The SQL
//! that pages through a table by keyset lives in `keyset`, the JSON rendering of values in
//! [`crate::json`]. A driver owns its connection, its type mapping and clock, and the exact
//! text form of its cursor and key values.

mod any;
mod keyset;
pub mod mysql;
pub mod plan;
pub mod postgres;
mod query;
mod redact;
pub mod sqlite;

pub use any::{connect, AnySource, Driver};
pub use redact::redact_url;

use std::fmt;
use std::future::Future;

use crate::error::{Error, Result};

/// A table name as the user gave it, optionally schema-qualified.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub table: TableRef,
    pub cursor: String,
    /// `None` picks the table's single-column primary key.
    pub key: Option<String>,
    pub deleted_column: Option<String>,
    /// Zone of cursor values that carry none (PostgreSQL `timestamp`, MySQL DATETIME).
    pub time_zone: String,
}

/// Where a pipeline stands: which rows were already delivered.
///
/// Rows are read in `(cursor, key)` order. With `--null-cursor oldest` the rows whose cursor is
/// NULL come first, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// Among the rows whose cursor is NULL, after the given key (or at their start).
    Nulls { after_key: Option<String> },
    /// At the first row with a non-NULL cursor.
    Start,
    /// After the row with this exact cursor and key.
    After(Watermark),
}

/// A `(cursor, key)` pair, each in the exact text form its driver writes and reads back
/// without loss (microseconds and all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    pub cursor: String,
    pub key: String,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Nulls { after_key: None } => f.write_str("start of NULL cursors"),
            Position::Nulls {
                after_key: Some(key),
            } => write!(f, "(NULL, {key})"),
            Position::Start => f.write_str("start"),
            Position::After(mark) => write!(f, "({}, {})", mark.cursor, mark.key),
        }
    }
}

/// Whether a row is delivered as a change or as a (soft) delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Upsert,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        }
    }
}

/// The rows of one page, each rendered as a JSON object, in read order.
///
/// Rows share one buffer so that a page costs a handful of allocations whatever its size.
#[derive(Debug, Default)]
pub struct Rows {
    data: Vec<u8>,
    ends: Vec<(Op, usize)>,
}

impl Rows {
    pub fn with_capacity(rows: usize) -> Self {
        Rows {
            data: Vec::with_capacity(rows * 128),
            ends: Vec::with_capacity(rows),
        }
    }

    /// The buffer the next row's JSON object is written into; finish it with [`Rows::end_row`].
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    pub fn end_row(&mut self, op: Op) {
        self.ends.push((op, self.data.len()));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Each row's operation and JSON object.
    pub fn iter(&self) -> impl Iterator<Item = (Op, &[u8])> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&(op, end)| {
            let row = &self.data[start..end];
            start = end;
            (op, row)
        })
    }

    pub fn deletes(&self) -> usize {
        self.ends.iter().filter(|(op, _)| *op == Op::Delete).count()
    }

    /// The rows as a JSON array of `{"op": …, "row": …}` objects, as processors receive them.
    pub fn to_json_array(&self) -> String {
        let mut json = Vec::with_capacity(self.data.len() + self.len() * 24 + 2);
        json.push(b'[');
        for (index, (op, row)) in self.iter().enumerate() {
            if index > 0 {
                json.push(b',');
            }
            json.extend_from_slice(b"{\"op\":\"");
            json.extend_from_slice(op.as_str().as_bytes());
            json.extend_from_slice(b"\",\"row\":");
            json.extend_from_slice(row);
            json.push(b'}');
        }
        json.push(b']');
        String::from_utf8(json).expect("rows are rendered as UTF-8 JSON")
    }

    /// Reads rows back from the form of [`Rows::to_json_array`], checking each element.
    pub fn from_json_array(text: &str) -> std::result::Result<Self, String> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum WireOp {
            Upsert,
            Delete,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Envelope<'a> {
            op: WireOp,
            #[serde(borrow)]
            row: &'a serde_json::value::RawValue,
        }
        let envelopes: Vec<Envelope<'_>> =
            serde_json::from_str(text).map_err(|err| err.to_string())?;
        let mut rows = Rows::with_capacity(envelopes.len());
        for (index, envelope) in envelopes.into_iter().enumerate() {
            let row = envelope.row.get();
            if !row.starts_with('{') {
                return Err(format!("element {index}: \"row\" is not an object"));
            }
            rows.buffer().extend_from_slice(row.as_bytes());
            rows.end_row(match envelope.op {
                WireOp::Upsert => Op::Upsert,
                WireOp::Delete => Op::Delete,
            });
        }
        Ok(rows)
    }
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

/// Seconds from `cursor` to `now`, when the cursor is a time written as text.
pub(crate) fn timestamp_lag(is_time: bool, now: &str, cursor: &str) -> Option<f64> {
    if !is_time {
        return None;
    }
    let lag = crate::json::parse_timestamp(now)? - crate::json::parse_timestamp(cursor)?;
    Some(lag.num_microseconds()? as f64 / 1e6)
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

    #[test]
    fn rows_round_trip_through_the_processor_form() {
        let mut rows = Rows::default();
        rows.buffer().extend_from_slice(br#"{"id":1}"#);
        rows.end_row(Op::Upsert);
        rows.buffer().extend_from_slice(br#"{"id":2,"s":"]}"}"#);
        rows.end_row(Op::Delete);
        let json = rows.to_json_array();
        assert_eq!(
            json,
            r#"[{"op":"upsert","row":{"id":1}},{"op":"delete","row":{"id":2,"s":"]}"}}]"#
        );
        let back = Rows::from_json_array(&json).unwrap();
        let items: Vec<(Op, &[u8])> = back.iter().collect();
        assert_eq!(items, rows.iter().collect::<Vec<_>>());
        assert!(Rows::from_json_array(r#"[{"op":"upsert","row":3}]"#).is_err());
        assert!(Rows::from_json_array(r#"[{"op":"merge","row":{}}]"#).is_err());
        assert!(Rows::from_json_array(r#"{"op":"upsert"}"#).is_err());
        assert_eq!(Rows::from_json_array("[]").unwrap().len(), 0);
    }
}
