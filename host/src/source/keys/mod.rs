//! What a delete check asks of the table, per driver: the digest of each range of keys, which
//! of some keys the table still holds, and the keys of the rows a pipeline has delivered.
//!
//! PostgreSQL and MariaDB sum the key digests of every range inside the database
//! ([`crate::key`] says how the digest is computed on both sides), so a check reads one row
//! per range, not one per key; SQLite has no MD5, so its keys are read and summed here. Which
//! keys are present is asked by key, through the key's index. Each driver's SQL is in the
//! file named for it; [`AnySource`] dispatches to them.

mod mysql;
mod postgres;
mod sqlite;

use std::collections::HashSet;

use super::AnySource;
use crate::error::Result;
use crate::key::{Digests, Key};
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

/// Runs the same expression on whichever source is inside.
macro_rules! delegate {
    ($self:expr, $source:ident => $body:expr) => {
        match $self {
            AnySource::Postgres($source) => $body,
            AnySource::MySql($source) => $body,
            AnySource::Sqlite($source) => $body,
        }
    };
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
            .entry(crate::key::range_of(hash, bits))
            .or_insert((0, 0));
        entry.0 += 1;
        entry.1 += i64::from(hash);
    }
    digests
}

/// The error of a statement a check ran on the table.
fn keys_error(table: &str, err: sqlx::Error) -> crate::error::Error {
    crate::error::Error::database(format!("cannot read the keys of {table:?}"), err)
}
