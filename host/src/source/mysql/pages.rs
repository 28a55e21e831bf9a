//! Reading MySQL and MariaDB pages: rendering each row's JSON and the position of a page's
//! last row, and the statements of a read ahead (see `ahead`), several pages per statement.

use chrono::{DateTime, NaiveDateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::mysql::{MySql, MySqlPool, MySqlRow, MySqlValueRef};
use sqlx::{Decode, ValueRef};

use crate::model::error::{Error, Result};
use crate::model::json;
use crate::model::{Position, Rows, Watermark};
use crate::source::ahead::{PageSender, Ran, Reads, Split, Statements};
use crate::source::plan::CursorType;
use crate::source::query;

/// How a column's values become JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Render {
    I64,
    U64,
    F32,
    F64,
    /// Text, decimals, and whatever the select list casts to text (DATE, TIME, spatial, …).
    Str,
    Raw,
    Bytes,
    TimestampTz,
    Timestamp,
}

#[derive(Debug)]
pub(crate) struct Column {
    pub(in crate::source) name: String,
    pub(in crate::source) key: Vec<u8>,
    pub(in crate::source) render: Render,
}

/// The keyset statements of a read of the table.
pub(in crate::source) type MyReads = Reads<MySqlPool, Column>;

impl Statements for MyReads {
    async fn run(
        &self,
        from: &Position,
        rows: usize,
        split: &mut Split,
        to: Option<&PageSender>,
    ) -> Result<Ran> {
        let table = self;
        let statement = table.keyset.select(from, self.bound.until(), rows);
        let failed = |err| Error::database(format!("cannot read from {:?}", table.plan.table), err);
        let mut stream = query::bind_text(&statement).fetch(&table.pool);
        let mut last_row = None;
        // Read to the end even after an error or once nobody waits, so that the connection
        // goes back to the pool with no result left unread.
        let mut outcome: Result<bool> = Ok(true);
        while let Some(row) = stream.try_next().await.map_err(failed)? {
            if !matches!(outcome, Ok(true)) {
                continue;
            }
            outcome = match render_row(table, &row, split.rows()) {
                Err(err) => Err(err),
                Ok(()) if split.row_ended() => match position_of(table, &row) {
                    Ok(end) => {
                        split.finish(Some(end));
                        match to {
                            Some(to) => Ok(split.send(to).await),
                            None => Ok(true),
                        }
                    }
                    Err(err) => Err(err),
                },
                Ok(()) => Ok(true),
            };
            last_row = Some(row);
        }
        if !outcome? {
            return Ok(Ran::Abandoned);
        }
        let last = last_row
            .as_ref()
            .map(|row| position_of(table, row))
            .transpose()?;
        Ok(Ran::Ended(last))
    }
}

fn render_row(table: &MyReads, row: &MySqlRow, rows: &mut Rows) -> Result<()> {
    let buf = rows.buffer();
    buf.push(b'{');
    for (index, column) in table.columns.iter().enumerate() {
        if index > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(&column.key);
        let value = query::raw(row, index, &column.name)?;
        if value.is_null() {
            json::write_null(buf);
            continue;
        }
        let failed =
            |err| query::decode_error(&table.plan.table, &column.name, &column.render, err);
        match column.render {
            Render::I64 => json::write_i64(buf, decode::<i64>(value).map_err(failed)?),
            Render::U64 => json::write_u64(buf, decode::<u64>(value).map_err(failed)?),
            Render::F32 => json::write_f32(buf, decode::<f32>(value).map_err(failed)?),
            Render::F64 => json::write_f64(buf, decode::<f64>(value).map_err(failed)?),
            Render::Str => json::write_str(buf, decode::<&str>(value).map_err(failed)?),
            Render::Raw => json::write_raw(buf, decode::<&str>(value).map_err(failed)?),
            Render::Bytes => json::write_base64(buf, decode::<&[u8]>(value).map_err(failed)?),
            Render::TimestampTz => {
                let ts: DateTime<Utc> = decode(value).map_err(failed)?;
                json::write_timestamp(buf, &ts.naive_utc(), true)
            }
            Render::Timestamp => json::write_timestamp(buf, &decode(value).map_err(failed)?, false),
        }
    }
    buf.push(b'}');
    let deleted = (table.plan.deleted).map(|index| (index, table.columns[index].name.as_str()));
    rows.end_row(query::op_of(row, deleted)?);
    Ok(())
}

fn position_of(table: &MyReads, row: &MySqlRow) -> Result<Position> {
    let plan = &table.plan;
    let key_column = &table.columns[plan.key];
    let key = integer_or_text(
        query::raw(row, plan.key, &key_column.name)?,
        key_column.render,
    )
    .map_err(|err| query::decode_error(&plan.table, &key_column.name, &key_column.render, err))?;
    let cursor_column = &table.columns[plan.cursor];
    let cursor_value = query::raw(row, plan.cursor, &cursor_column.name)?;
    if cursor_value.is_null() {
        return Ok(Position::Nulls {
            after_key: Some(key),
        });
    }
    // No `Z` suffix: MariaDB reads `2024-01-01T00:00:00.000001` but not a zone designator;
    // the session zone is UTC, so the text means the same instant.
    let cursor = match plan.cursor_type {
        CursorType::Instant => decode::<DateTime<Utc>>(cursor_value)
            .map(|ts| json::timestamp_text(&ts.naive_utc(), false)),
        CursorType::LocalTime => {
            decode::<NaiveDateTime>(cursor_value).map(|ts| json::timestamp_text(&ts, false))
        }
        CursorType::Integer => integer_or_text(cursor_value, cursor_column.render),
    }
    .map_err(|err| {
        query::decode_error(&plan.table, &cursor_column.name, &cursor_column.render, err)
    })?;
    Ok(Position::After(Watermark { cursor, key }))
}

fn integer_or_text(
    value: MySqlValueRef<'_>,
    render: Render,
) -> Result<String, sqlx::error::BoxDynError> {
    match render {
        Render::I64 => decode::<i64>(value).map(|v| v.to_string()),
        Render::U64 => decode::<u64>(value).map(|v| v.to_string()),
        _ => decode::<&str>(value).map(str::to_owned),
    }
}

fn decode<'r, T: Decode<'r, MySql>>(
    value: MySqlValueRef<'r>,
) -> Result<T, sqlx::error::BoxDynError> {
    T::decode(value)
}
