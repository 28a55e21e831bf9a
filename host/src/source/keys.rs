//! What a delete check asks of the table, per driver: the digest of each range of keys, which
//! of some keys the table still holds, and the keys of the rows a pipeline has delivered.
//!
//! PostgreSQL and MariaDB sum the key digests of every range inside the database
//! ([`crate::model::key`] says how the digest is computed on both sides), so a check reads one row
//! per range, not one per key; SQLite has no MD5, so its keys are read and summed here. Which
//! keys are present is asked by key, through the key's index. Each driver's SQL is in the
//! file named for it; [`AnySource`] dispatches to them.

use std::collections::HashSet;

use sqlx::{Database, Executor, Pool, Row};

use super::any::delegate;
use super::keyset::Statement;
use super::{query, AnySource};
use crate::model::error::Result;
use crate::model::key::{Digests, Key};
use crate::model::Position;

/// Keys asked about in one statement.
pub const KEYS_PER_STATEMENT: usize = 500;

/// What the table says about its keys, as a delete check needs it.
pub trait TableKeys: Send {
    /// Count and digest sum of the table's keys in each of `2^bits` ranges of the digest
    /// space, and how many keys the host read to get them (0 where the database sums).
    fn key_digests(
        &mut self,
        bits: u32,
    ) -> impl std::future::Future<Output = Result<(Digests, u64)>> + Send;

    /// Which of `keys` the table holds now.
    fn present_keys(
        &mut self,
        keys: &[Key],
    ) -> impl std::future::Future<Output = Result<HashSet<Key>>> + Send;

    /// Up to `limit` keys, in the table's key order after `after`, of the rows that a
    /// pipeline at `through` has delivered.
    fn delivered_keys(
        &mut self,
        through: &Position,
        after: Option<&Key>,
        limit: usize,
    ) -> impl std::future::Future<Output = Result<Vec<Key>>> + Send;
}

impl TableKeys for AnySource {
    async fn key_digests(&mut self, bits: u32) -> Result<(Digests, u64)> {
        delegate!(self, source => source.key_digests(bits).await)
    }

    async fn present_keys(&mut self, keys: &[Key]) -> Result<HashSet<Key>> {
        delegate!(self, source => source.present_keys(keys).await)
    }

    async fn delivered_keys(
        &mut self,
        through: &Position,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>> {
        delegate!(self, source => source.delivered_keys(through, after, limit).await)
    }
}

/// The digests of keys the host read itself.
pub(crate) fn digests_of<'a>(keys: impl IntoIterator<Item = &'a Key>, bits: u32) -> Digests {
    let mut digests = Digests::new();
    for key in keys {
        let hash = key.hash();
        let entry = digests
            .entry(crate::model::key::range_of(hash, bits))
            .or_insert((0, 0));
        entry.0 += 1;
        entry.1 += i64::from(hash);
    }
    digests
}

/// The digests a statement that sums them in SQL returns (`range, count, sum` rows).
pub(super) async fn summed_digests<DB>(
    pool: &Pool<DB>,
    table: &str,
    sql: &str,
) -> Result<(Digests, u64)>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    (i64, i64, i64): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(sql)
        .fetch_all(pool)
        .await
        .map_err(|err| keys_error(table, err))?;
    Ok((crate::model::key::digests_from_rows(rows), 0))
}

/// A statement that returns keys as text, for [`present_texts`] to bind.
type TextQuery<'q, DB> = sqlx::query::QueryScalar<'q, DB, String, <DB as Database>::Arguments<'q>>;

/// Which of `keys` the table holds, for the drivers whose SQL renders a key as text
/// (PostgreSQL, MariaDB): `sql(n)` is the statement for `n` keys, `bind` gives it their plain
/// texts, and it returns the texts of those found. `number`: the key column holds integers.
pub(super) async fn present_texts<DB>(
    pool: &Pool<DB>,
    (table, number): (&str, bool),
    keys: &[Key],
    sql: impl Fn(usize) -> String,
    bind: impl for<'q> Fn(TextQuery<'q, DB>, &'q [String]) -> TextQuery<'q, DB>,
) -> Result<HashSet<Key>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    (String,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let mut present = HashSet::new();
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        let texts: Vec<String> = chunk.iter().map(Key::plain).collect();
        let sql = sql(chunk.len());
        let found = bind(sqlx::query_scalar(&sql), &texts)
            .fetch_all(pool)
            .await
            .map_err(|err| keys_error(table, err))?;
        present.extend(found.iter().map(|text| Key::from_text(text, number)));
    }
    Ok(present)
}

/// The keys `statement` ([`super::keyset::Keyset::delivered_keys`]) returns as text, for the
/// drivers whose SQL renders a key as text.
pub(super) async fn delivered_texts<DB>(
    pool: &Pool<DB>,
    (table, number): (&str, bool),
    statement: &Statement<'_>,
) -> Result<Vec<Key>>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> String: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let rows = query::bind_text(statement)
        .fetch_all(pool)
        .await
        .map_err(|err| keys_error(table, err))?;
    rows.iter()
        .map(|row| {
            let text: String = row.try_get(0).map_err(|err| keys_error(table, err))?;
            Ok(Key::from_text(&text, number))
        })
        .collect()
}

/// The error of a statement a check ran on the table.
pub(super) fn keys_error(table: &str, err: sqlx::Error) -> crate::model::error::Error {
    crate::model::error::Error::database(format!("cannot read the keys of {table:?}"), err)
}
