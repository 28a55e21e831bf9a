//! The inventory: the keys each pipeline has delivered, so that a delete check can find the
//! ones the table no longer has (issue 14), and what those checks found.
//!
//! Each key is kept with its digest ([`crate::model::key`]), under the primary key `(pipeline,
//! key_json)`: in key order, so that keys that grow (serial ids) are appended to the index.
//! A check reads the inventory in two passes, one summing the digests of each range of the
//! digest space and one for the keys of the ranges that differ. The inventory moves with the
//! checkpoint: [`StateStore::commit_batch`] logs the batch's keys (an upsert adds one, a
//! delete removes it) in the transaction that moves the watermark (`key_log.rs`), a check
//! folds that log in first, and [`StateStore::commit_deletes`] removes the keys a delete
//! batch delivered in the transaction that counts it. A pipeline's `inventory` column is set
//! only once its inventory is complete ([`StateStore::finish_inventory`]); until then
//! checkpoints log nothing.

use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use super::accounting::Charge;
use super::{column, now_rfc3339, to_bigint, Bind, PipelineState, StateStore};
use crate::model::error::{Error, Result};
use crate::model::key::{digests_from_rows, Digests, Key};
use crate::model::{Delivered, Usage};

/// Keys written to the store in one statement. They travel as one JSON parameter: with a
/// parameter per key, sqlx's SQLite driver finds each by name in a list as long as the
/// statement's (`sqlite3_bind_parameter_name`), which made 1,500 parameters cost more than
/// the inserts themselves.
const CHUNK: usize = 1000;

/// What the delete checks of a pipeline found, for `host status` and the metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteChecks {
    /// Whether the inventory is complete and kept with every checkpoint.
    pub inventory: bool,
    /// Keys delivered as deletes by checks, over the pipeline's life.
    pub deletes_detected: i64,
    pub last_check_at: Option<String>,
    pub last_check_seconds: Option<f64>,
    /// Ranges of the last check whose digests differed, read key by key.
    pub last_check_ranges: Option<i64>,
    /// Keys the last check read from the table one by one (all of them on SQLite).
    pub last_check_keys: Option<i64>,
}

impl DeleteChecks {
    pub(super) fn decode(row: &AnyRow) -> Result<Self> {
        Ok(DeleteChecks {
            inventory: column::<Option<String>>(row, "inventory")?.is_some(),
            deletes_detected: column(row, "deletes_detected")?,
            last_check_at: column(row, "last_check_at")?,
            last_check_seconds: column(row, "last_check_seconds")?,
            last_check_ranges: column(row, "last_check_ranges")?,
            last_check_keys: column(row, "last_check_keys")?,
        })
    }
}

/// What one check did.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckReport {
    pub seconds: f64,
    pub ranges: u64,
    pub keys: u64,
}

/// Keys to add to and remove from the inventory.
#[derive(Debug, Default)]
pub(super) struct KeyChanges {
    pub(super) added: Vec<Key>,
    pub(super) removed: Vec<Key>,
}

impl KeyChanges {
    /// Writes the changes on `connection`, which may be inside a transaction.
    pub(super) async fn write(
        &self,
        store: &StateStore,
        connection: &mut AnyConnection,
        pipeline: &str,
    ) -> Result<()> {
        // Each key as `[digest, key]`.
        let rows = match store.is_sqlite() {
            true => {
                "SELECT $1, json_extract(value, '$[0]'), json_extract(value, '$[1]') \
                 FROM json_each($2) WHERE true"
            }
            false => {
                "SELECT $1, CAST(e->>0 AS BIGINT), e->>1 FROM json_array_elements(CAST($2 AS json)) e"
            }
        };
        let sql = format!(
            "INSERT INTO {}inventory (pipeline, hash, key_json) {rows} ON CONFLICT DO NOTHING",
            store.prefix
        );
        for chunk in self.added.chunks(CHUNK) {
            let pairs: Vec<(u32, &str)> =
                chunk.iter().map(|key| (key.hash(), key.json())).collect();
            sqlx::query(&sql)
                .bind(pipeline)
                .bind(json_list(&pairs))
                .execute(&mut *connection)
                .await
                .map_err(|err| inventory_error(pipeline, err))?;
        }
        for chunk in self.removed.chunks(CHUNK) {
            store
                .keys_statement(connection, pipeline, "DELETE FROM {t} WHERE", chunk, None)
                .await?;
        }
        Ok(())
    }
}

impl StateStore {
    /// Starts the pipeline's inventory over, empty; checkpoints leave it alone until
    /// [`StateStore::finish_inventory`].
    pub async fn start_inventory(&self, state: &mut PipelineState) -> Result<()> {
        self.update(state, "inventory = NULL", &[]).await?;
        state.deletes.inventory = false;
        for table in ["inventory", "inventory_log"] {
            sqlx::query(&format!(
                "DELETE FROM {}{table} WHERE pipeline = $1",
                self.prefix
            ))
            .bind(&state.name)
            .execute(&self.pool)
            .await
            .map_err(|err| inventory_error(&state.name, err))?;
        }
        Ok(())
    }

    /// Adds keys to an inventory being built (keys already there are left as they are).
    pub async fn add_keys(&self, pipeline: &str, keys: Vec<Key>) -> Result<()> {
        let changes = KeyChanges {
            added: keys,
            removed: Vec::new(),
        };
        let mut connection = (self.pool.acquire().await)
            .map_err(|err| Error::database("cannot reach the state store", err))?;
        changes.write(self, &mut connection, pipeline).await
    }

    /// Marks the inventory complete: from now on every checkpoint keeps it.
    pub async fn finish_inventory(&self, state: &mut PipelineState) -> Result<()> {
        self.update(state, "inventory = $3", &[Bind::Text(Some("ready"))])
            .await?;
        state.deletes.inventory = true;
        Ok(())
    }

    /// Forgets the inventory of a pipeline that runs without delete checks: kept by nobody,
    /// it would go stale, and a later check would deliver deletes for rows that exist.
    pub async fn drop_inventory(&self, state: &mut PipelineState) -> Result<()> {
        self.start_inventory(state).await
    }

    /// How many keys the inventory holds.
    pub async fn inventory_len(&self, pipeline: &str) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {}inventory WHERE pipeline = $1",
            self.prefix
        ))
        .bind(pipeline)
        .fetch_one(&self.pool)
        .await
        .map_err(|err| inventory_error(pipeline, err))?;
        Ok(count.max(0) as u64)
    }

    /// Count and digest sum of each range when the digest space is cut in `2^bits` ranges.
    pub async fn inventory_digests(&self, pipeline: &str, bits: u32) -> Result<Digests> {
        let shift = 32 - bits.min(32);
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(&format!(
            "SELECT hash >> {shift}, COUNT(*), CAST(SUM(hash) AS BIGINT) FROM {}inventory \
             WHERE pipeline = $1 GROUP BY 1",
            self.prefix
        ))
        .bind(pipeline)
        .fetch_all(&self.pool)
        .await
        .map_err(|err| inventory_error(pipeline, err))?;
        Ok(digests_from_rows(rows))
    }

    /// Up to `limit` keys whose digests fall in `ranges` (of `2^bits`), after key `after`, in
    /// the primary key's order. A check pages through the ranges that differ this way: one
    /// pass over the inventory whatever the number of ranges, where a statement per range
    /// would scan the pipeline's keys once per range (they are kept in key order, which makes
    /// a checkpoint append to the index rather than write all over it).
    pub async fn inventory_keys(
        &self,
        pipeline: &str,
        (bits, ranges): (u32, &[u32]),
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let shift = 32 - bits.min(32);
        // Numbers this function formats itself: inlined, they need no parameter each.
        let list = ranges
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let after_clause = match after {
            Some(_) => "AND key_json > $2",
            None => "",
        };
        let sql = format!(
            "SELECT key_json FROM {}inventory WHERE pipeline = $1 {after_clause} \
             AND (hash >> {shift}) IN ({list}) ORDER BY key_json LIMIT {limit}",
            self.prefix
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql).bind(pipeline);
        if let Some(after) = after {
            query = query.bind(after.json());
        }
        let keys = query
            .fetch_all(&self.pool)
            .await
            .map_err(|err| inventory_error(pipeline, err))?;
        Ok(keys.into_iter().map(Key::stored).collect())
    }

    /// Records that the delete batch `id` of `keys` is about to be handed on: a crash before
    /// [`StateStore::commit_deletes`] leaves it pending, and the next check delivers it again
    /// under the same id.
    pub async fn begin_deletes(&self, pipeline: &str, id: &str, keys: &[Key]) -> Result<()> {
        let mut transaction = self.transaction(pipeline).await?;
        for chunk in keys.chunks(CHUNK) {
            let set = "UPDATE {t} SET pending_batch = $2 WHERE";
            self.keys_statement(&mut transaction, pipeline, set, chunk, Some(id))
                .await?;
        }
        transaction
            .commit()
            .await
            .map_err(|err| inventory_error(pipeline, err))
    }

    /// The delete batch handed on but not committed, if a crash left one: its id and keys.
    pub async fn pending_deletes(&self, pipeline: &str) -> Result<Option<(String, Vec<Key>)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT pending_batch, key_json FROM {}inventory \
             WHERE pipeline = $1 AND pending_batch IS NOT NULL ORDER BY key_json",
            self.prefix
        ))
        .bind(pipeline)
        .fetch_all(&self.pool)
        .await
        .map_err(|err| inventory_error(pipeline, err))?;
        let Some(id) = rows.first().map(|(id, _)| id.clone()) else {
            return Ok(None);
        };
        // One batch is pending at a time; were there two, the first is delivered now and the
        // other at the next check.
        let mut keys: Vec<Key> = rows
            .into_iter()
            .filter(|(batch, _)| *batch == id)
            .map(|(_, key)| Key::stored(key))
            .collect();
        // In the order the batch was made in (the store's collation may differ).
        keys.sort();
        Ok(Some((id, keys)))
    }

    /// Checkpoints delete batch `id`: removes the keys it delivered (`gone`) from the
    /// inventory, releases the others (`kept`: found present again just before delivery), and
    /// counts the batch, in one transaction with the compare-and-set on the pipeline.
    pub async fn commit_deletes(
        &self,
        state: &mut PipelineState,
        id: &str,
        (gone, kept): (&[Key], &[Key]),
        delivered: &Delivered,
        usage: Usage,
    ) -> Result<()> {
        let mut transaction = self.transaction(&state.name).await?;
        for chunk in gone.chunks(CHUNK) {
            self.keys_statement(
                &mut transaction,
                &state.name,
                "DELETE FROM {t} WHERE",
                chunk,
                None,
            )
            .await?;
        }
        for chunk in kept.chunks(CHUNK) {
            let release = "UPDATE {t} SET pending_batch = NULL WHERE";
            self.keys_statement(&mut transaction, &state.name, release, chunk, None)
                .await?;
        }
        if gone.is_empty() {
            // Every key was back: nothing was delivered, nothing to count.
            return transaction
                .commit()
                .await
                .map_err(|err| inventory_error(&state.name, err));
        }
        let rows = to_bigint(gone.len());
        let charge = Charge::new(usage);
        let [micros, fuel, peak] = charge.binds();
        self.update_on(
            &mut transaction,
            state,
            &format!(
                "rows_synced = rows_synced + $3, batches_synced = batches_synced + 1, \
                 last_batch = $4, rows_rejected = rows_rejected + $5, \
                 rows_parked = rows_parked + $6, deletes_detected = deletes_detected + $3, {}",
                Charge::assignments(7)
            ),
            &[
                Bind::Int(rows),
                Bind::Text(Some(id)),
                Bind::Int(to_bigint(delivered.rejected.len())),
                Bind::Int(to_bigint(delivered.parked.len())),
                micros,
                fuel,
                peak,
            ],
        )
        .await?;
        transaction
            .commit()
            .await
            .map_err(|err| inventory_error(&state.name, err))?;
        state.rows_synced += rows;
        state.batches_synced += 1;
        state.last_batch = Some(id.to_owned());
        state.deletes.deletes_detected += rows;
        state.accounting.rows_rejected += to_bigint(delivered.rejected.len());
        state.accounting.rows_parked += to_bigint(delivered.parked.len());
        charge.add_to(&mut state.accounting);
        Ok(())
    }

    /// Records the end of a check: when, how long it took, what it read.
    pub async fn finish_check(&self, state: &mut PipelineState, report: CheckReport) -> Result<()> {
        let now = now_rfc3339();
        self.update(
            state,
            "last_check_at = $3, last_check_seconds = $4, last_check_ranges = $5, \
             last_check_keys = $6",
            &[
                Bind::Text(Some(&now)),
                Bind::Float(Some(report.seconds)),
                Bind::Int(to_bigint(report.ranges)),
                Bind::Int(to_bigint(report.keys)),
            ],
        )
        .await?;
        state.deletes.last_check_at = Some(now);
        state.deletes.last_check_seconds = Some(report.seconds);
        state.deletes.last_check_ranges = Some(to_bigint(report.ranges));
        state.deletes.last_check_keys = Some(to_bigint(report.keys));
        Ok(())
    }

    /// Runs `head` (`{t}` for the table) followed by a match of `keys` of the pipeline: `$1`
    /// is the pipeline, `$2` the optional `extra` value, then the keys' texts as one JSON
    /// array, which the primary key `(pipeline, key_json)` finds one by one.
    async fn keys_statement(
        &self,
        connection: &mut AnyConnection,
        pipeline: &str,
        head: &str,
        keys: &[Key],
        extra: Option<&str>,
    ) -> Result<()> {
        let list = if extra.is_some() { "$3" } else { "$2" };
        let list = match self.is_sqlite() {
            true => format!("SELECT value FROM json_each({list})"),
            false => format!("SELECT json_array_elements_text(CAST({list} AS json))"),
        };
        let sql = format!(
            "{} pipeline = $1 AND key_json IN ({list})",
            head.replace("{t}", &format!("{}inventory", self.prefix)),
        );
        let mut query = sqlx::query(&sql).bind(pipeline);
        if let Some(extra) = extra {
            query = query.bind(extra);
        }
        let texts: Vec<&str> = keys.iter().map(Key::json).collect();
        query
            .bind(json_list(&texts))
            .execute(&mut *connection)
            .await
            .map_err(|err| inventory_error(pipeline, err))?;
        Ok(())
    }

    pub(super) async fn transaction(
        &self,
        pipeline: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        self.pool
            .begin()
            .await
            .map_err(|err| inventory_error(pipeline, err))
    }
}

/// `items` as a JSON array, the text of one parameter.
fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    // Numbers and strings only: serializing them cannot fail.
    serde_json::to_string(items).unwrap_or_default()
}

pub(super) fn inventory_error(pipeline: &str, err: sqlx::Error) -> Error {
    Error::database(
        format!("cannot update the key inventory of pipeline {pipeline:?}"),
        err,
    )
}

#[cfg(test)]
mod tests {
    //! Tests of the key inventory (`inventory.rs`).

    use super::*;
    use crate::model::key::range_of;
    use crate::state::testing::{after, rows, users, TempDir};

    #[tokio::test]
    async fn checkpoints_keep_the_inventory_and_deletes_leave_it() {
        let dir = TempDir::new();
        let store = dir.open().await;
        let mut state = users(&store).await;
        store.start_inventory(&mut state).await.unwrap();
        store.finish_inventory(&mut state).await.unwrap();
        let end = after("i:5", "i:5");
        store.begin_batch(&mut state, "b1", &end).await.unwrap();
        let none = Delivered::default();
        store
            .commit_batch(&mut state, &end, &rows(5), &none, Usage::default())
            .await
            .unwrap();
        // Logged with the checkpoint, in the inventory once folded.
        assert_eq!(store.inventory_len("users").await.unwrap(), 0);
        assert_eq!(store.fold_key_log("users").await.unwrap(), 5);
        assert_eq!(store.fold_key_log("users").await.unwrap(), 0);
        assert_eq!(store.inventory_len("users").await.unwrap(), 5);
        // The same keys again (updates) change nothing.
        store
            .commit_batch(&mut state, &end, &rows(3), &none, Usage::default())
            .await
            .unwrap();
        store.fold_key_log("users").await.unwrap();
        let digests = store.inventory_digests("users", 1).await.unwrap();
        let keys: Vec<Key> = (1..=5)
            .map(|id| Key::from_text(&id.to_string(), true))
            .collect();
        assert_eq!(digests, crate::source::keys::digests_of(&keys, 1));
        let range = range_of(keys[0].hash(), 1);
        let in_range = store
            .inventory_keys("users", (1, &[range][..]), None, 10)
            .await
            .unwrap();
        assert!(in_range.contains(&keys[0]), "{in_range:?}");
        assert!(in_range.iter().all(|key| range_of(key.hash(), 1) == range));
        // Paged in key order.
        let both = store
            .inventory_keys("users", (1, &[0, 1][..]), None, 5)
            .await
            .unwrap();
        assert_eq!(both, keys);
        let rest = store
            .inventory_keys("users", (1, &[0, 1][..]), Some(&keys[2]), 2)
            .await
            .unwrap();
        assert_eq!(rest, keys[3..5]);

        store
            .begin_deletes("users", "d1", &keys[..2])
            .await
            .unwrap();
        let pending = store.pending_deletes("users").await.unwrap().unwrap();
        assert_eq!(pending, ("d1".to_owned(), keys[..2].to_vec()));
        // Key 2 was back when the batch was confirmed: only key 1 is gone.
        store
            .commit_deletes(
                &mut state,
                "d1",
                (&keys[..1], &keys[1..2]),
                &none,
                Usage::default(),
            )
            .await
            .unwrap();
        assert_eq!(store.pending_deletes("users").await.unwrap(), None);
        assert_eq!(store.inventory_len("users").await.unwrap(), 4);
        let stored = store.load("users").await.unwrap().unwrap();
        assert_eq!(stored.deletes.deletes_detected, 1);
        assert!(stored.deletes.inventory);
        assert_eq!(stored.rows_synced, 5 + 3 + 1);

        store.drop_inventory(&mut state).await.unwrap();
        assert_eq!(store.inventory_len("users").await.unwrap(), 0);
        assert!(
            !store
                .load("users")
                .await
                .unwrap()
                .unwrap()
                .deletes
                .inventory
        );
    }
}
