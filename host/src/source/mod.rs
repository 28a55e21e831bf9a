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
        let envelopes: Vec<Envelope<'_>> =
            serde_json::from_str(text).map_err(|err| err.to_string())?;
        let mut rows = Rows::with_capacity(envelopes.len());
        for (index, envelope) in envelopes.into_iter().enumerate() {
            rows.push_envelope(envelope)
                .map_err(|detail| format!("element {index}: {detail}"))?;
        }
        Ok(rows)
    }

    /// Appends one element of the form of [`Rows::to_json_array`], `{"op": …, "row": {…}}`
    /// (as a dead letter keeps it), checking it.
    pub fn push_element(&mut self, element: &str) -> std::result::Result<(), String> {
        let envelope: Envelope<'_> =
            serde_json::from_str(element).map_err(|err| err.to_string())?;
        self.push_envelope(envelope)
    }

    fn push_envelope(&mut self, envelope: Envelope<'_>) -> std::result::Result<(), String> {
        let row = envelope.row.get();
        if !row.starts_with('{') {
            return Err("\"row\" is not an object".to_owned());
        }
        self.data.extend_from_slice(row.as_bytes());
        self.end_row(match envelope.op {
            WireOp::Upsert => Op::Upsert,
            WireOp::Delete => Op::Delete,
        });
        Ok(())
    }
}

/// One element of the processor form of [`Rows`].
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    op: WireOp,
    #[serde(borrow)]
    row: &'a serde_json::value::RawValue,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum WireOp {
    Upsert,
    Delete,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

        let mut one = Rows::default();
        one.push_element(r#"{"op":"delete","row":{"id":2,"s":"]}"}}"#)
            .unwrap();
        assert_eq!(
            one.iter().collect::<Vec<_>>(),
            [(Op::Delete, &br#"{"id":2,"s":"]}"}"#[..])]
        );
        assert!(one.push_element(r#"{"op":"upsert","row":[1]}"#).is_err());
        assert!(one
            .push_element(r#"{"op":"upsert","row":{},"x":1}"#)
            .is_err());
        assert_eq!(one.len(), 1, "a refused element adds nothing");
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
}
