//! What every driver does the same way through sqlx: bind a keyset statement, count rows,
//! read a row's raw values.

use sqlx::{Database, Executor, Pool};

use super::keyset::{Keyset, Statement};
use super::plan::Plan;
use crate::model::error::{Error, Result};
use crate::model::Op;

/// The pool a source reads through (see [`super::pools`]).
pub(crate) async fn open_pool<DB: Database>(
    options: <DB::Connection as sqlx::Connection>::Options,
) -> std::result::Result<Pool<DB>, sqlx::Error> {
    super::pools::open::<DB>(options).await
}

type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// The statement with each value bound as text, for drivers whose SQL casts every placeholder
/// to its column's type (see [`Keyset`]'s `cursor_param`).
pub(crate) fn bind_text<'q, DB>(statement: &'q Statement<'q>) -> Query<'q, DB>
where
    DB: Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut query = sqlx::query(&statement.sql);
    for arg in &statement.args {
        query = query.bind(arg.text());
    }
    query
}

/// Counts the rows whose cursor is NULL; 0 without asking when the column is NOT NULL.
pub(crate) async fn count_null_cursors<DB>(
    plan: &Plan,
    keyset: &Keyset,
    pool: &Pool<DB>,
) -> Result<u64>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'r> i64: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    if !plan.cursor_nullable {
        return Ok(0);
    }
    let sql = keyset.count_null_cursors();
    count(sqlx::query(&sql), pool, "NULL cursors").await
}

/// Runs a `SELECT COUNT(*) …`.
pub(crate) async fn count<'q, DB>(query: Query<'q, DB>, pool: &Pool<DB>, what: &str) -> Result<u64>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'r> i64: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let row = query
        .fetch_one(pool)
        .await
        .map_err(|err| Error::database(format!("cannot count {what}"), err))?;
    let count: i64 = sqlx::Row::try_get(&row, 0)
        .map_err(|err| Error::database(format!("cannot count {what}"), err))?;
    Ok(count.max(0) as u64)
}

/// The raw value of column `index`, or an error that names it.
pub(crate) fn raw<'r, R>(
    row: &'r R,
    index: usize,
    column: &str,
) -> Result<<R::Database as Database>::ValueRef<'r>>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
{
    row.try_get_raw(index)
        .map_err(|err| Error::fatal(format!("cannot read column {column:?}: {err}")))
}

/// A row is a delete when it has a deleted column (index and name) and its value there is set.
pub(crate) fn op_of<R>(row: &R, deleted: Option<(usize, &str)>) -> Result<Op>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
{
    use sqlx::ValueRef;
    Ok(match deleted {
        Some((index, column)) if !raw(row, index, column)?.is_null() => Op::Delete,
        _ => Op::Upsert,
    })
}

/// An error for a value that did not decode as its column's type said it would.
pub(crate) fn decode_error(
    table: &str,
    column: &str,
    as_type: &dyn std::fmt::Debug,
    err: sqlx::error::BoxDynError,
) -> Error {
    Error::fatal(format!(
        "cannot read column {column:?} of {table:?} as {as_type:?}: {err}"
    ))
}
