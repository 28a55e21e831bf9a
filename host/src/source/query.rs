//! What every driver does the same way through sqlx: bind a keyset statement, count rows, and
//! stream a page while each row is rendered, keeping only the last one for its position.

use futures_util::TryStreamExt;
use sqlx::{Database, Executor, Pool};

use super::keyset::{Keyset, Statement};
use super::plan::Plan;
use super::Page;
use crate::error::{Error, Result};
use crate::model::{Op, Position, Rows};

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

/// Streams the rows of `query` into a page: `render` writes each row's JSON, `position` reads
/// the last row's cursor and key. Only one row is held at a time besides the page's JSON.
pub(crate) async fn read_page<'q, DB>(
    query: Query<'q, DB>,
    pool: &Pool<DB>,
    table: &str,
    limit: usize,
    mut render: impl FnMut(&DB::Row, &mut Rows) -> Result<()>,
    position: impl FnOnce(&DB::Row) -> Result<Position>,
) -> Result<Page>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    let mut stream = query.fetch(pool);
    let mut rows = Rows::with_capacity(limit);
    let mut last_row = None;
    while let Some(row) = stream
        .try_next()
        .await
        .map_err(|err| Error::database(format!("cannot read from {table:?}"), err))?
    {
        render(&row, &mut rows)?;
        last_row = Some(row);
    }
    let last = last_row.as_ref().map(position).transpose()?;
    Ok(Page { rows, last })
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
