//! Delete batches: keys the table lacks, handed on as `{"op":"delete","row":{KEY: …}}` rows
//! through the pipeline's chain and destination, with the rules of any batch.
//!
//! A batch's id is derived from its keys, and the batch is recorded as pending (its keys
//! marked in the inventory) before it is handed on, so a crash before its checkpoint leaves
//! it to be delivered again, under the same id, at the end of the next pass. Just before it
//! is handed on, the keys are looked up once more and those present again are left out: a key
//! deleted and inserted again is then delivered as an upsert by the next pass, and never
//! deleted after it. Retries, parking, dead letters and the commit go through the step of
//! every batch ([`crate::delivery::step`]).

use crate::delivery::output::Output;
use crate::delivery::step::Commit;
use crate::engine::pass::Pass;
use crate::model::error::Result;
use crate::model::failpoint;
use crate::model::ids::delete_batch_id;
use crate::model::key::Key;
use crate::model::{Op, Rows};
use crate::source::Source;

/// The delete batches of one check.
#[derive(Default)]
pub(super) struct Batches {
    /// Keys delivered as deletes by this check.
    pub delivered: u64,
}

impl Batches {
    /// Records a new batch of `keys` as pending, then hands it on.
    pub async fn deliver<S: Source, O: Output>(
        &mut self,
        pass: &mut Pass<'_, S, O>,
        mut keys: Vec<Key>,
    ) -> Result<()> {
        keys.sort();
        let id = delete_batch_id(&pass.state.name, &keys);
        let store = pass.step.store;
        store.begin_deletes(&pass.state.name, &id, &keys).await?;
        self.hand_on(pass, &id, keys).await
    }

    /// Hands on pending batch `id` (new, or left by a crash) and checkpoints it.
    pub async fn hand_on<S: Source, O: Output>(
        &mut self,
        pass: &mut Pass<'_, S, O>,
        id: &str,
        keys: Vec<Key>,
    ) -> Result<()> {
        failpoint::hit("delete_before_confirm").await;
        // Confirmed absent now, after any pass that could have delivered them again.
        let present = pass.source.present_keys(&keys).await?;
        let (kept, gone): (Vec<Key>, Vec<Key>) =
            keys.into_iter().partition(|key| present.contains(key));
        if gone.is_empty() {
            let nothing = Default::default();
            return pass
                .step
                .store
                .commit_deletes(pass.state, id, (&[], &kept), &nothing, Default::default())
                .await;
        }
        let rows = delete_rows(&pass.state.identity.key, &gone);
        let commit = Commit::Deletes {
            state: pass.state,
            gone: &gone,
            kept: &kept,
        };
        let delivered = pass.step.deliver(id, &rows, commit).await?;
        let count = gone.len() as u64;
        self.delivered += count;
        pass.totals.count(count, &delivered);
        tracing::debug!("{}: delete batch {id}: {count} keys", pass.state.name);
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
