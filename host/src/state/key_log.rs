//! The log of key changes: a checkpoint of a pipeline whose inventory is kept records the
//! keys of its batch as one row of `inventory_log`, in the checkpoint's transaction, and a
//! check folds the log into the inventory before it reads it ([`StateStore::fold_key_log`]).
//!
//! Why a log: an insert per key into the inventory's index in every checkpoint cost the sync
//! 35–70 % of its time on a SQLite state store (about a microsecond of SQLite's time per key,
//! on the path of every batch). One row per batch costs about what the checkpoint's own
//! `UPDATE` costs. The keys still reach the index, once per check, netted (a key upserted ten
//! times between two checks is inserted once) and sorted, in large transactions: a cost that
//! grows with what changed since the last check, paid by the check.

use std::collections::HashMap;

use sqlx::AnyConnection;

use super::inventory::{inventory_error, KeyChanges};
use super::{Bind, PipelineState, StateStore};
use crate::model::error::Result;
use crate::model::key::{key_of_row, Key};
use crate::model::{Op, Rows};

/// Keys folded into the inventory per transaction, about: bounds the memory of a fold.
const FOLD_KEYS: usize = 50_000;

/// The key changes of one batch, as `inventory_log` keeps them: a line per row, `+KEY` for an
/// upsert, `-KEY` for a delete (a key's JSON text holds no raw line break).
#[derive(Debug, Default)]
pub(super) struct KeyLog {
    text: String,
}

impl KeyLog {
    /// The keys of `rows` in column `key_column`. A row that does not show its key (it cannot:
    /// rows are as read) is left out.
    pub(super) fn of_rows(rows: &Rows, key_column: &str) -> Self {
        let mut text = String::with_capacity(rows.len() * 10);
        for (op, row) in rows.iter() {
            let Some(key) = key_of_row(row, key_column) else {
                continue;
            };
            text.push(match op {
                Op::Upsert => '+',
                Op::Delete => '-',
            });
            text.push_str(key.json());
            text.push('\n');
        }
        KeyLog { text }
    }

    /// Writes the log row on `connection` (the checkpoint's transaction), as entry `seq`:
    /// the revision the checkpoint gives the pipeline, so entries are in checkpoint order.
    pub(super) async fn write(
        &self,
        store: &StateStore,
        connection: &mut AnyConnection,
        pipeline: &str,
        seq: i64,
    ) -> Result<()> {
        if self.text.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "INSERT INTO {}inventory_log (pipeline, seq, changes) VALUES ($1, $2, $3)",
            store.prefix
        ))
        .bind(pipeline)
        .bind(seq)
        .bind(self.text.as_str())
        .execute(&mut *connection)
        .await
        .map_err(|err| inventory_error(pipeline, err))?;
        Ok(())
    }
}

impl StateStore {
    /// [`StateStore::update`], together with the log of `keys` in one transaction when
    /// there are any.
    pub(super) async fn update_with_keys(
        &self,
        state: &mut PipelineState,
        keys: Option<&KeyLog>,
        assignments: &str,
        values: &[Bind<'_>],
    ) -> Result<()> {
        let Some(keys) = keys else {
            return self.update(state, assignments, values).await;
        };
        let mut transaction = self.transaction(&state.name).await?;
        // Logged under the revision this update gives the pipeline.
        keys.write(self, &mut transaction, &state.name, state.revision + 1)
            .await?;
        self.update_on(&mut transaction, state, assignments, values)
            .await?;
        transaction
            .commit()
            .await
            .map_err(|err| inventory_error(&state.name, err))
    }

    /// Applies the logged key changes of the pipeline to its inventory, oldest first, and
    /// empties the log; returns how many keys changed. Each transaction takes log entries up
    /// to about 50,000 keys, nets them (the last change of a key wins) and writes them
    /// sorted, so a check's reads of the inventory see every checkpoint before it.
    pub async fn fold_key_log(&self, pipeline: &str) -> Result<u64> {
        // On PostgreSQL the entries are locked while folded: a second process folding the
        // same pipeline waits, then finds them gone, instead of applying them out of order.
        let lock = if self.is_sqlite() { "" } else { " FOR UPDATE" };
        let next = format!(
            "SELECT seq, changes FROM {}inventory_log WHERE pipeline = $1 AND seq > $2 \
             ORDER BY seq LIMIT 1{lock}",
            self.prefix
        );
        let mut folded = 0;
        loop {
            let mut transaction = self.transaction(pipeline).await?;
            let mut last = i64::MIN;
            let mut net: HashMap<String, bool> = HashMap::new();
            let mut lines = 0;
            while lines < FOLD_KEYS {
                let entry: Option<(i64, String)> = sqlx::query_as(&next)
                    .bind(pipeline)
                    .bind(last)
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(|err| inventory_error(pipeline, err))?;
                let Some((seq, changes)) = entry else {
                    break;
                };
                last = seq;
                for line in changes.lines() {
                    lines += 1;
                    if let Some(key) = line.strip_prefix('+') {
                        net.insert(key.to_owned(), true);
                    } else if let Some(key) = line.strip_prefix('-') {
                        net.insert(key.to_owned(), false);
                    }
                }
            }
            if last == i64::MIN {
                return Ok(folded);
            }
            folded += net.len() as u64;
            let changes = KeyChanges::netted(net);
            changes.write(self, &mut transaction, pipeline).await?;
            sqlx::query(&format!(
                "DELETE FROM {}inventory_log WHERE pipeline = $1 AND seq <= $2",
                self.prefix
            ))
            .bind(pipeline)
            .bind(last)
            .execute(&mut *transaction)
            .await
            .map_err(|err| inventory_error(pipeline, err))?;
            transaction
                .commit()
                .await
                .map_err(|err| inventory_error(pipeline, err))?;
        }
    }
}

impl KeyChanges {
    /// Keys present (`true`) or gone (`false`), each sorted: inserts then go through the
    /// index in its order.
    fn netted(net: HashMap<String, bool>) -> KeyChanges {
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for (key, present) in net {
            match present {
                true => added.push(Key::stored(key)),
                false => removed.push(Key::stored(key)),
            }
        }
        added.sort();
        removed.sort();
        KeyChanges { added, removed }
    }
}
