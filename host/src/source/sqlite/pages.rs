//! Reading SQLite pages on a blocking thread, a whole page per hand-over.
//!
//! sqlx runs each SQLite connection on a worker thread and sends every row back to the async
//! side on its own (issue 13 measured 1M rows at 3.9 s user and 1.7 s system CPU, seven times
//! the `sqlite3` shell). Here the keyset statement is stepped on a blocking thread that also
//! renders each row's JSON there, and only the finished page crosses back. The statement, its
//! values and the order are those of `keyset`, so the delivery guarantees do not change; the
//! position comes from the page's last row, read by the same step.
//!
//! The reader has its own read-only connection (rusqlite over the libsqlite3-sys that sqlx
//! uses); the sqlx pool keeps describing the table, reading the clock and counting.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::model::error::{Error, Result};
use crate::model::json;
use crate::model::{Op, Position, Rows, Watermark};
use crate::source::keyset::Statement;
use crate::source::Page;

/// What a page's rendering needs to know of the table, shared with the reading thread.
#[derive(Debug)]
pub(in crate::source) struct Layout {
    pub table: String,
    /// Each column's name and its `"name":` prefix.
    pub columns: Vec<(String, Vec<u8>)>,
    pub key: usize,
    pub cursor: usize,
    pub deleted: Option<usize>,
}

/// A watermark value with the storage class it had in the database.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::source) enum Tagged<'a> {
    Integer(i64),
    Real(f64),
    Text(&'a str),
}

impl<'a> Tagged<'a> {
    pub fn parse(text: &'a str) -> Self {
        match text.split_at_checked(2) {
            Some(("i:", rest)) => rest.parse().map_or(Tagged::Text(rest), Tagged::Integer),
            Some(("r:", rest)) => rest.parse().map_or(Tagged::Text(rest), Tagged::Real),
            Some(("t:", rest)) => Tagged::Text(rest),
            _ => Tagged::Text(text),
        }
    }
}

/// The page reader: one read-only connection, used by one page at a time.
pub(in crate::source) struct PageReader {
    connection: Arc<Mutex<Connection>>,
    layout: Arc<Layout>,
}

impl PageReader {
    /// Opens `path` read-only, waiting for a writer's lock as long as sqlx's pool does.
    pub fn open(path: &Path, layout: Layout) -> Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        crate::model::sqlite_quotes::refuse_double_quoted_strings()?;
        let connection = Connection::open_with_flags(path, flags)
            .and_then(|connection| {
                connection.busy_timeout(Duration::from_secs(5))?;
                Ok(connection)
            })
            .map_err(|err| Error::sqlite(format!("cannot open {}", path.display()), err))?;
        Ok(PageReader {
            connection: Arc::new(Mutex::new(connection)),
            layout: Arc::new(layout),
        })
    }

    /// The name of column `index`, for messages.
    pub fn column_name(&self, index: usize) -> &str {
        &self.layout.columns[index].0
    }

    /// Runs the keyset `statement` and renders its rows, on a blocking thread.
    pub async fn read(&self, statement: &Statement<'_>, limit: usize) -> Result<Page> {
        let sql = statement.sql.clone();
        let args: Vec<String> = statement.args.iter().map(|a| a.text().to_owned()).collect();
        let connection = Arc::clone(&self.connection);
        let layout = Arc::clone(&self.layout);
        tokio::task::spawn_blocking(move || {
            let connection = connection
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            read_page(&connection, &layout, &sql, &args, limit)
        })
        .await
        .map_err(|err| Error::fatal(format!("the SQLite page reader stopped: {err}")))?
    }
}

fn read_page(
    connection: &Connection,
    layout: &Layout,
    sql: &str,
    args: &[String],
    limit: usize,
) -> Result<Page> {
    let failed = |err| Error::sqlite(format!("cannot read from {:?}", layout.table), err);
    let mut statement = connection.prepare_cached(sql).map_err(failed)?;
    for (index, arg) in args.iter().enumerate() {
        let slot = index + 1;
        match Tagged::parse(arg) {
            Tagged::Integer(value) => statement.raw_bind_parameter(slot, value),
            Tagged::Real(value) => statement.raw_bind_parameter(slot, value),
            Tagged::Text(value) => statement.raw_bind_parameter(slot, value),
        }
        .map_err(failed)?;
    }
    let mut rows = Rows::with_capacity(limit);
    // The last row's cursor and key, rewritten in place for each row: a step invalidates the
    // previous row, and only the page's end says which row was the last.
    let (mut cursor_text, mut key_text) = (String::new(), String::new());
    let mut last_cursor_is_null = false;
    let mut cursor = statement.raw_query();
    while let Some(row) = cursor.next().map_err(failed)? {
        render_row(layout, row, &mut rows)?;
        if !tagged_text(layout, row, layout.key, &mut key_text)? {
            return Err(Error::fatal(format!(
                "key column {:?} of {:?} is NULL",
                layout.columns[layout.key].0, layout.table
            )));
        }
        last_cursor_is_null = !tagged_text(layout, row, layout.cursor, &mut cursor_text)?;
    }
    let last = match (rows.is_empty(), last_cursor_is_null) {
        (true, _) => None,
        (false, true) => Some(Position::Nulls {
            after_key: Some(key_text),
        }),
        (false, false) => Some(Position::After(Watermark {
            cursor: cursor_text,
            key: key_text,
        })),
    };
    Ok(Page { rows, last })
}

/// Column `index` of `row`, or an error that names it.
fn value<'r>(layout: &Layout, row: &'r rusqlite::Row<'_>, index: usize) -> Result<ValueRef<'r>> {
    row.get_ref(index).map_err(|err| {
        Error::sqlite(
            format!("cannot read column {:?}", layout.columns[index].0),
            err,
        )
    })
}

fn render_row(layout: &Layout, row: &rusqlite::Row<'_>, rows: &mut Rows) -> Result<()> {
    let buf = rows.buffer();
    buf.push(b'{');
    for (index, (name, key)) in layout.columns.iter().enumerate() {
        if index > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(key);
        match value(layout, row, index)? {
            ValueRef::Null => json::write_null(buf),
            ValueRef::Integer(value) => json::write_i64(buf, value),
            ValueRef::Real(value) => json::write_f64(buf, value),
            ValueRef::Text(bytes) => json::write_str(buf, text(layout, name, bytes)?),
            ValueRef::Blob(bytes) => json::write_base64(buf, bytes),
        }
    }
    buf.push(b'}');
    let deleted = match layout.deleted {
        Some(index) => value(layout, row, index)? != ValueRef::Null,
        None => false,
    };
    rows.end_row(if deleted { Op::Delete } else { Op::Upsert });
    Ok(())
}

fn text<'a>(layout: &Layout, column: &str, bytes: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|err| {
        Error::fatal(format!(
            "cannot read column {column:?} of {:?} as text: {err}",
            layout.table
        ))
    })
}

/// Writes column `index` of `row` into `out` in watermark form, its storage class in front
/// (`i:42`); false when it is NULL.
fn tagged_text(
    layout: &Layout,
    row: &rusqlite::Row<'_>,
    index: usize,
    out: &mut String,
) -> Result<bool> {
    use std::fmt::Write as _;
    let column = &layout.columns[index].0;
    out.clear();
    // Writing into a String cannot fail.
    let _ = match value(layout, row, index)? {
        ValueRef::Null => return Ok(false),
        ValueRef::Integer(value) => write!(out, "i:{value}"),
        ValueRef::Real(value) => write!(out, "r:{value}"),
        ValueRef::Text(bytes) => write!(out, "t:{}", text(layout, column, bytes)?),
        ValueRef::Blob(_) => {
            return Err(Error::fatal(format!(
                "column {column:?} of {:?} holds a BLOB, which cannot order rows",
                layout.table
            ))
            .with_hint("use a cursor and key that hold integers, reals or text"))
        }
    };
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_values_keep_their_storage_class() {
        assert_eq!(Tagged::parse("i:42"), Tagged::Integer(42));
        assert_eq!(Tagged::parse("r:1.5"), Tagged::Real(1.5));
        assert_eq!(
            Tagged::parse("t:2024-01-01 00:00:00"),
            Tagged::Text("2024-01-01 00:00:00")
        );
        assert_eq!(Tagged::parse("t:i:x"), Tagged::Text("i:x"));
    }
}
