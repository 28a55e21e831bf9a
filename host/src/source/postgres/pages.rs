//! Reading PostgreSQL pages with `COPY (SELECT …) TO STDOUT (FORMAT binary)`.
//!
//! Issue 13: decoding each row through sqlx's row type held the host to about 0.4 of the
//! server's own export. COPY streams the same keyset page (the same SELECT, its values written
//! in as literals since COPY takes no parameters) in PostgreSQL's binary row format, which is
//! rendered here straight into the page's JSON, one pass over the bytes. The position comes
//! from the last row of the same read, so the watermark is exact as before.
//!
//! Binary format: an 11-byte signature, flags and a header extension, then per row a 16-bit
//! field count and per field a 32-bit length (-1: NULL) and that many bytes, then -1 as the
//! trailer. Values are in each type's `send` form (big-endian integers and floats,
//! microseconds since 2000-01-01 for timestamps, UTF-8 text in the client encoding).

use chrono::{DateTime, NaiveDateTime};
use futures_util::TryStreamExt;
use sqlx::postgres::{PgPool, PgPoolCopyExt};

use crate::model::error::{Error, Result};
use crate::model::json;
use crate::model::{Op, Position, Watermark};
use crate::source::ahead::{PageSender, Ran, Reads, Split, Statements};
use crate::source::plan::{CursorType, Plan};

/// How a column's values become JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::source) enum Render {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    /// Text, or any type the select list casts to text (numeric, date, interval, enum, …).
    Str,
    /// JSON text: json, jsonb, and `to_json` of arrays, composites and domains.
    Raw,
    Bytes,
    Uuid,
    TimestampTz,
    Timestamp,
}

#[derive(Debug)]
pub(in crate::source) struct Column {
    pub name: String,
    pub key: Vec<u8>,
    pub render: Render,
}

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The COPY statements of a read of the table, the keyset with its values written in.
pub(in crate::source) type CopyReads = Reads<PgPool, Column>;

impl Statements for CopyReads {
    async fn run(
        &self,
        from: &Position,
        rows: usize,
        split: &mut Split,
        to: Option<&PageSender>,
    ) -> Result<Ran> {
        let select = self.keyset.select(from, self.bound.until(), rows);
        copy(self, &select.sql, split, to).await
    }
}

/// Runs `select` (a keyset SELECT with its values as literals) through COPY, rendering its
/// rows into `split`'s pages (see [`Statements::run`]). The COPY is always read to its end,
/// even after an error or once nobody waits: a connection left in the middle of one would
/// go back to the pool unusable.
async fn copy(
    reads: &CopyReads,
    select: &str,
    split: &mut Split,
    to: Option<&PageSender>,
) -> Result<Ran> {
    let plan = &reads.plan;
    let failed = |err| Error::database(format!("cannot read from {:?}", plan.table), err);
    let sql = format!("COPY ({select}) TO STDOUT (FORMAT binary)");
    let mut stream = reads.pool.copy_out_raw(&sql).await.map_err(failed)?;
    let mut reader = PageReader {
        plan,
        columns: &reads.columns,
        split,
        last: None,
        header_read: false,
        ended: false,
    };
    // Whatever a message ended in the middle of a row waits here for the next one; the
    // server sends a row per message, so this stays small.
    let mut pending: Vec<u8> = Vec::new();
    let mut outcome: Result<bool> = Ok(true);
    while let Some(chunk) = stream.try_next().await.map_err(failed)? {
        if !matches!(outcome, Ok(true)) {
            continue;
        }
        let used = if pending.is_empty() {
            reader.consume(&chunk).map(|used| {
                pending.extend_from_slice(&chunk[used..]);
            })
        } else {
            pending.extend_from_slice(&chunk);
            reader.consume(&pending).map(|used| {
                pending.drain(..used);
            })
        };
        outcome = match (used, to) {
            (Err(err), _) => Err(err),
            (Ok(()), Some(to)) => Ok(reader.split.send(to).await),
            (Ok(()), None) => Ok(true),
        };
    }
    if !outcome? {
        return Ok(Ran::Abandoned);
    }
    if !reader.ended || !pending.is_empty() {
        return Err(reader.malformed("the COPY data ended early"));
    }
    let last = reader
        .last
        .take()
        .map(|last| reader.position(&last))
        .transpose()?;
    Ok(Ran::Ended(last))
}

/// The last row's key and cursor, as sent.
#[derive(Default)]
struct LastRow {
    key: Vec<u8>,
    cursor: Vec<u8>,
    cursor_is_null: bool,
}

struct PageReader<'a> {
    plan: &'a Plan,
    columns: &'a [Column],
    split: &'a mut Split,
    last: Option<LastRow>,
    header_read: bool,
    ended: bool,
}

/// The fields of one row: each one's bytes, `None` for NULL.
type Fields<'b> = Vec<Option<&'b [u8]>>;

impl PageReader<'_> {
    /// Renders every whole row at the start of `data`; returns how many bytes it used.
    fn consume(&mut self, data: &[u8]) -> Result<usize> {
        let mut at = 0;
        if !self.header_read {
            let Some(header) = header_len(data) else {
                return Ok(0);
            };
            if !data.starts_with(SIGNATURE) {
                return Err(self.malformed("no binary COPY signature"));
            }
            self.header_read = true;
            at = header;
        }
        let mut fields: Fields<'_> = Vec::with_capacity(self.columns.len());
        while !self.ended {
            let Some(count) = data.get(at..at + 2) else {
                break;
            };
            let count = i16::from_be_bytes([count[0], count[1]]);
            if count == -1 {
                self.ended = true;
                at += 2;
                break;
            }
            if count as usize != self.columns.len() {
                return Err(self.malformed("a row with another number of columns"));
            }
            let Some(end) = split_fields(data, at + 2, self.columns.len(), &mut fields) else {
                break;
            };
            self.render(&fields)?;
            // Kept for every row in the same two buffers: only the page's end says which
            // row was the last.
            let last = self.last.get_or_insert_with(LastRow::default);
            last.key.clear();
            last.key
                .extend_from_slice(fields[self.plan.key].unwrap_or_default());
            last.cursor.clear();
            last.cursor_is_null = fields[self.plan.cursor].is_none();
            last.cursor
                .extend_from_slice(fields[self.plan.cursor].unwrap_or_default());
            if self.split.row_ended() {
                if let Some(last) = &self.last {
                    let page_end = self.position(last)?;
                    self.split.finish(Some(page_end));
                }
            }
            at = end;
        }
        Ok(at)
    }

    fn render(&mut self, fields: &Fields<'_>) -> Result<()> {
        let buf = self.split.rows().buffer();
        buf.push(b'{');
        for (index, (column, field)) in self.columns.iter().zip(fields).enumerate() {
            if index > 0 {
                buf.push(b',');
            }
            buf.extend_from_slice(&column.key);
            let Some(bytes) = *field else {
                json::write_null(buf);
                continue;
            };
            let bad = || bad_value(self.plan, column);
            match column.render {
                Render::Bool => json::write_bool(buf, fixed::<1>(bytes).ok_or_else(bad)?[0] != 0),
                Render::I16 => json::write_i64(buf, int(bytes, column.render).ok_or_else(bad)?),
                Render::I32 => json::write_i64(buf, int(bytes, column.render).ok_or_else(bad)?),
                Render::I64 => json::write_i64(buf, int(bytes, column.render).ok_or_else(bad)?),
                Render::F32 => {
                    json::write_f32(buf, f32::from_be_bytes(fixed::<4>(bytes).ok_or_else(bad)?))
                }
                Render::F64 => {
                    json::write_f64(buf, f64::from_be_bytes(fixed::<8>(bytes).ok_or_else(bad)?))
                }
                Render::Str => json::write_str(buf, text(self.plan, column, bytes)?),
                Render::Raw => json::write_raw(buf, text(self.plan, column, bytes)?),
                Render::Bytes => json::write_base64(buf, bytes),
                Render::Uuid => json::write_uuid(
                    buf,
                    &sqlx::types::Uuid::from_bytes(fixed::<16>(bytes).ok_or_else(bad)?),
                ),
                Render::TimestampTz | Render::Timestamp => json::write_timestamp(
                    buf,
                    &timestamp(self.plan, column, bytes)?,
                    column.render == Render::TimestampTz,
                ),
            }
        }
        buf.push(b'}');
        let deleted = self
            .plan
            .deleted
            .is_some_and(|index| fields[index].is_some());
        self.split
            .rows()
            .end_row(if deleted { Op::Delete } else { Op::Upsert });
        Ok(())
    }

    /// The position after the last row: its exact cursor and key text.
    fn position(&self, last: &LastRow) -> Result<Position> {
        let key_column = &self.columns[self.plan.key];
        let bad = |column| bad_value(self.plan, column);
        let key = match key_column.render {
            Render::I16 | Render::I32 | Render::I64 => int(&last.key, key_column.render)
                .ok_or_else(|| bad(key_column))?
                .to_string(),
            Render::Uuid => sqlx::types::Uuid::from_bytes(
                fixed::<16>(&last.key).ok_or_else(|| bad(key_column))?,
            )
            .to_string(),
            _ => text(self.plan, key_column, &last.key)?.to_owned(),
        };
        if last.cursor_is_null {
            return Ok(Position::Nulls {
                after_key: Some(key),
            });
        }
        let cursor_bytes = &last.cursor;
        let cursor_column = &self.columns[self.plan.cursor];
        let cursor = match self.plan.cursor_type {
            CursorType::Instant | CursorType::LocalTime => json::timestamp_text(
                &timestamp(self.plan, cursor_column, cursor_bytes)?,
                self.plan.cursor_type == CursorType::Instant,
            ),
            CursorType::Integer => int(cursor_bytes, cursor_column.render)
                .ok_or_else(|| bad(cursor_column))?
                .to_string(),
        };
        Ok(Position::After(Watermark { cursor, key }))
    }

    fn malformed(&self, what: &str) -> Error {
        Error::fatal(format!(
            "cannot read from {:?}: {what} in PostgreSQL's binary COPY output",
            self.plan.table
        ))
    }
}

/// The header's length, once all of it is in `data`.
fn header_len(data: &[u8]) -> Option<usize> {
    let extension = data.get(SIGNATURE.len() + 4..SIGNATURE.len() + 8)?;
    let extension = u32::from_be_bytes(extension.try_into().ok()?) as usize;
    let len = SIGNATURE.len() + 8 + extension;
    (data.len() >= len).then_some(len)
}

/// Fills `fields` with the row's fields starting at `at`; returns where the row ends, or
/// `None` when `data` holds only part of it.
fn split_fields<'b>(
    data: &'b [u8],
    mut at: usize,
    count: usize,
    fields: &mut Fields<'b>,
) -> Option<usize> {
    fields.clear();
    for _ in 0..count {
        let len = i32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            fields.push(None);
        } else {
            let end = at + len as usize;
            fields.push(Some(data.get(at..end)?));
            at = end;
        }
    }
    Some(at)
}

fn fixed<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    bytes.try_into().ok()
}

/// An integer column's value as sent: 2, 4 or 8 bytes by its type.
fn int(bytes: &[u8], render: Render) -> Option<i64> {
    match render {
        Render::I16 => fixed::<2>(bytes).map(|b| i16::from_be_bytes(b).into()),
        Render::I32 => fixed::<4>(bytes).map(|b| i32::from_be_bytes(b).into()),
        _ => fixed::<8>(bytes).map(i64::from_be_bytes),
    }
}

fn text<'b>(plan: &Plan, column: &Column, bytes: &'b [u8]) -> Result<&'b str> {
    std::str::from_utf8(bytes).map_err(|err| {
        Error::fatal(format!(
            "cannot read column {:?} of {:?} as text: {err}",
            column.name, plan.table
        ))
    })
}

/// Microseconds since 2000-01-01 00:00:00; `infinity` and `-infinity` (the extremes of
/// i64) have no place on a time line and are refused.
fn timestamp(plan: &Plan, column: &Column, bytes: &[u8]) -> Result<NaiveDateTime> {
    const EPOCH_2000: i64 = 946_684_800_000_000;
    let micros = fixed::<8>(bytes)
        .map(i64::from_be_bytes)
        .filter(|micros| *micros != i64::MAX && *micros != i64::MIN)
        .and_then(|micros| micros.checked_add(EPOCH_2000))
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(|| bad_value(plan, column))?;
    Ok(micros.naive_utc())
}

fn bad_value(plan: &Plan, column: &Column) -> Error {
    Error::fatal(format!(
        "cannot read column {:?} of {:?} as {:?}: a value outside its type's range",
        column.name, plan.table, column.render
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn rows_split_across_messages_wait_for_the_rest() {
        let mut data = SIGNATURE.to_vec();
        data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(header_len(&data), Some(19));
        assert_eq!(header_len(&data[..18]), None);
        let mut row = 2i16.to_be_bytes().to_vec();
        row.extend(field(&7i64.to_be_bytes()));
        row.extend((-1i32).to_be_bytes());
        let mut fields = Vec::with_capacity(2);
        assert_eq!(split_fields(&row, 2, 2, &mut fields), Some(row.len()));
        assert_eq!(fields, vec![Some(&7i64.to_be_bytes()[..]), None]);
        assert_eq!(split_fields(&row[..row.len() - 1], 2, 2, &mut fields), None);
    }

    #[test]
    fn integers_take_their_width_from_the_type() {
        assert_eq!(int(&(-3i16).to_be_bytes(), Render::I16), Some(-3));
        assert_eq!(int(&9i32.to_be_bytes(), Render::I32), Some(9));
        assert_eq!(int(&9i32.to_be_bytes(), Render::I64), None);
    }
}
