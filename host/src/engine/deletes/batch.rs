//! Delete batches: keys the table lacks, handed on as `{"op":"delete","row":{KEY: …}}` rows
//! through the pipeline's chain and destination, with the rules of any batch.
//!
//! A batch's id is derived from its keys, and the batch is recorded as pending (its keys
//! marked in the inventory) before it is handed on, so a crash before its checkpoint leaves
//! it to be delivered again, under the same id, at the end of the next pass. Just before it
//! is handed on, the keys are looked up once more and those present again are left out: a key
//! deleted and inserted again is then delivered as an upsert by the next pass, and never
//! deleted after it. Retries, parking and dead letters are those of every batch
//! ([`crate::delivery::attempt::deliver_with_retries`], [`Letters`]).

use crate::delivery::attempt::deliver_with_retries;
use crate::delivery::letters::Letters;
use crate::delivery::output::Output;
use crate::engine::sync_log::Totals;
use crate::model::error::Result;
use crate::model::failpoint;
use crate::model::ids::delete_batch_id;
use crate::model::key::Key;
use crate::model::{Batch, Op, Rows};
use crate::source::Source;
use crate::state::{PipelineState, StateStore};

use super::Check;

/// The delete batches of one check, and what they need from the pipeline.
pub(super) struct Batches<'a> {
    check: &'a Check<'a>,
    letters: Letters,
    /// Keys delivered as deletes by this check.
    pub delivered: u64,
}

impl<'a> Batches<'a> {
    pub async fn new(
        check: &'a Check<'a>,
        store: &StateStore,
        state: &PipelineState,
    ) -> Result<Batches<'a>> {
        Ok(Batches {
            check,
            letters: Letters::load(store, state).await?,
            delivered: 0,
        })
    }

    /// Records a new batch of `keys` as pending, then hands it on.
    pub async fn deliver<S: Source, O: Output>(
        &mut self,
        source: &mut S,
        output: &mut O,
        store: &StateStore,
        state: &mut PipelineState,
        mut keys: Vec<Key>,
        totals: &mut Totals,
    ) -> Result<()> {
        keys.sort();
        let id = delete_batch_id(&state.name, &keys);
        store.begin_deletes(&state.name, &id, &keys).await?;
        self.hand_on(source, output, store, state, &id, keys, totals)
            .await
    }

    /// Hands on pending batch `id` (new, or left by a crash) and checkpoints it.
    #[allow(clippy::too_many_arguments)]
    pub async fn hand_on<S: Source, O: Output>(
        &mut self,
        source: &mut S,
        output: &mut O,
        store: &StateStore,
        state: &mut PipelineState,
        id: &str,
        keys: Vec<Key>,
        totals: &mut Totals,
    ) -> Result<()> {
        failpoint::hit("delete_before_confirm").await;
        // Confirmed absent now, after any pass that could have delivered them again.
        let present = source.present_keys(&keys).await?;
        let (kept, gone): (Vec<Key>, Vec<Key>) =
            keys.into_iter().partition(|key| present.contains(key));
        if gone.is_empty() {
            let nothing = Default::default();
            return store
                .commit_deletes(state, id, (&[], &kept), &nothing, Default::default())
                .await;
        }
        let rows = delete_rows(&state.identity.key, &gone);
        failpoint::hit("delete_after_read").await;
        let batch = Batch {
            id,
            pipeline: &state.name,
            rows: &rows,
        };
        let check = self.check;
        let (delivered, usage) =
            deliver_with_retries(output, 0, batch, check.retry, check.shutdown, Some(store)).await;
        let delivered = match delivered {
            Ok(delivered) => delivered,
            Err(err) => {
                // As for any batch: the failed attempts are charged now, no checkpoint will.
                if let Err(uncharged) = store.charge(&state.name, usage).await {
                    tracing::warn!("{}: {uncharged:#}", state.name);
                }
                return Err(err);
            }
        };
        failpoint::hit("delete_after_deliver").await;
        self.letters
            .keep(store, &state.name, id, &rows, &delivered)
            .await?;
        store
            .commit_deletes(state, id, (&gone, &kept), &delivered, usage)
            .await?;
        let count = gone.len() as u64;
        self.delivered += count;
        totals.rows += count;
        totals.passed_on += delivered.passed_on as u64;
        totals.rejected += delivered.rejected.len() as u64;
        totals.parked += delivered.parked.len() as u64;
        totals.batches += 1;
        tracing::debug!("{}: delete batch {id}: {count} keys", state.name);
        Ok(())
    }
}

/// `{"KEY": value}` of each key, as delete rows.
fn delete_rows(key_column: &str, keys: &[Key]) -> Rows {
    let column = serde_json::Value::String(key_column.to_owned()).to_string();
    let mut rows = Rows::with_capacity(keys.len());
    for key in keys {
        let buffer = rows.buffer();
        buffer.push(b'{');
        buffer.extend_from_slice(column.as_bytes());
        buffer.push(b':');
        buffer.extend_from_slice(key.json().as_bytes());
        buffer.push(b'}');
        rows.end_row(Op::Delete);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_rows_carry_the_key_column_alone() {
        let keys = [Key::from_text("7", true), Key::from_text("a\"b", false)];
        let rows = delete_rows("id", &keys);
        assert_eq!(
            rows.to_json_array(),
            r#"[{"op":"delete","row":{"id":7}},{"op":"delete","row":{"id":"a\"b"}}]"#
        );
        assert_eq!(delete_batch_id("p", &keys), delete_batch_id("p", &keys[..]));
        assert_ne!(
            delete_batch_id("p", &keys),
            delete_batch_id("p", &keys[..1])
        );
        assert_ne!(delete_batch_id("p", &keys), delete_batch_id("q", &keys));
    }
}
