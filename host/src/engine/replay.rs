//! Dead letters sent again (`host retry`): a pipeline's letters go through its chain again,
//! a batch at a time, each from the module that left it behind (a row a transform rejected or
//! failed on goes through that transform and everything after it), with the attempts of a run
//! ([`crate::delivery::attempt::deliver_with_retries`]). A row that gets through is dropped
//! from the dead letters; one the same module leaves behind again keeps its place, with one
//! more attempt and the new reason; one a later module leaves behind becomes that module's
//! letter.
//!
//! Never older over newer: a letter whose row came through again later with another cursor
//! (a newer version, delivered or itself kept as a letter) is superseded; it is skipped,
//! dropped and named in the log, so that the older version never overwrites the newer one.
//!
//! Each batch's id is derived from its dead letters' ids
//! ([`crate::model::ids::retry_batch_id`]), so a retry that is itself retried carries the same
//! id and a destination can drop what it has seen.

use crate::delivery::output::Output;
use crate::delivery::step::{Commit, Step};
use crate::model::error::{Error, Result};
use crate::model::ids::retry_batch_id;
use crate::model::{Delivered, Rows};
use crate::state::DeadLetter;

/// What a replay did with the dead letters it read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub retried: usize,
    pub delivered: usize,
    pub rejected: usize,
    /// Letters skipped (and dropped) because a newer version of their row came through.
    pub superseded: usize,
}

/// Sends the dead letters of the step's pipeline through its output (the pipeline's chain),
/// `batch_size` at a time, in the order they were stored, each from its module's stage, until
/// none is left or a stop is requested; retries and what the modules used are counted in the
/// step's store. Rows a later module leaves behind are kept as its letters, keyed by the
/// columns of the step's letters.
pub async fn replay<O: Output>(step: &mut Step<'_, O>, batch_size: usize) -> Result<Replayed> {
    let (store, shutdown) = (step.store, step.shutdown);
    let pipeline = step.pipeline.clone();
    let pipeline = pipeline.as_str();
    let mut replayed = Replayed::default();
    let mut after = 0;
    while !shutdown.is_requested() {
        let page = store
            .dead_letters(pipeline, after, batch_size as i64)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        let mut live = Vec::with_capacity(page.len());
        for letter in page {
            if letter.superseded_at.is_none() {
                live.push(letter);
                continue;
            }
            tracing::info!(
                "{pipeline}: skipped dead letter {} (row key {}): superseded by a newer version \
                 at cursor {}, which is not overwritten",
                letter.id,
                letter.key.as_deref().unwrap_or("?"),
                letter.superseded_cursor.as_deref().unwrap_or("?")
            );
            store.remove_dead_letter(letter.id).await?;
            replayed.superseded += 1;
        }
        for group in live.chunk_by(|a, b| a.stage == b.stage) {
            let stage = match &group[0].stage {
                Some(module) => step.output.stage_of(module).ok_or_else(|| {
                    Error::invalid(format!(
                        "dead letter {} of pipeline {pipeline:?} was left behind by module \
                         {module}, which is not in the chain",
                        group[0].id
                    ))
                    .with_hint(format!(
                        "pass the pipeline's modules to host retry, {module} among them, as \
                         --module flags in the order of the run"
                    ))
                })?,
                None => step.output.last_stage(),
            };
            let rows = rows_of(pipeline, group)?;
            let letter_ids: Vec<i64> = group.iter().map(|letter| letter.id).collect();
            let batch_id = retry_batch_id(pipeline, &letter_ids);
            let delivered = step
                .deliver(&batch_id, &rows, Commit::Replay { stage })
                .await
                .map_err(|err| {
                    err.context(format!("retrying dead letters of pipeline {pipeline:?}"))
                })?;
            replayed.retried += group.len();
            // The letters the same module left behind again, by position in the batch; the
            // rest is new: left behind by a later module, or in a part split off the batch.
            let mut again: Vec<Option<&str>> = vec![None; group.len()];
            let mut onward = Delivered::default();
            for (row, parked) in delivered
                .rejected
                .iter()
                .map(|row| (row, false))
                .chain(delivered.parked.iter().map(|row| (row, true)))
            {
                let output = &step.output;
                let here = output.stage_of(&row.module).unwrap_or(output.last_stage()) == stage
                    && row.batch.as_deref().is_none_or(|batch| batch == batch_id);
                match (here, again.get_mut(row.index as usize)) {
                    // A row rejected twice in one answer: the first reason stands.
                    (true, Some(slot)) => {
                        slot.get_or_insert(&row.reason);
                    }
                    (true, None) => tracing::warn!(
                        "{pipeline}: batch {batch_id} has no row {}; that rejection is ignored",
                        row.index
                    ),
                    (false, _) if parked => onward.parked.push(row.clone()),
                    (false, _) => onward.rejected.push(row.clone()),
                }
            }
            for (letter, reason) in group.iter().zip(again) {
                match reason {
                    Some(reason) => {
                        store.reject_again(letter.id, reason).await?;
                        replayed.rejected += 1;
                    }
                    None => {
                        store.remove_dead_letter(letter.id).await?;
                        replayed.delivered += 1;
                    }
                }
            }
            step.letters
                .keep(store, pipeline, &batch_id, &Rows::default(), &onward)
                .await?;
        }
    }
    Ok(replayed)
}

/// The rows of `letters`, each as its module received it the first time.
fn rows_of(pipeline: &str, letters: &[DeadLetter]) -> Result<Rows> {
    let mut rows = Rows::with_capacity(letters.len());
    for letter in letters {
        rows.push_element(letter.row.get()).map_err(|detail| {
            Error::fatal(format!(
                "dead letter {} of pipeline {pipeline:?} holds a damaged row: {detail}",
                letter.id
            ))
            .with_hint(format!(
                "delete or repair dead letter {} in the state store's dead_letters table",
                letter.id
            ))
        })?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::delivery::letters::Letters;
    use crate::delivery::retry::RetryPolicy;
    use crate::model::shutdown::Shutdown;
    use crate::model::{Batch, Delivered, RejectedRow, Usage};
    use crate::state::testing::TempDir;

    /// Rejects the same indexes of every batch and keeps what it was sent.
    struct Rejecting {
        indexes: Vec<u32>,
        sent: Vec<(String, String)>,
    }

    impl Output for Rejecting {
        async fn deliver(&mut self, batch: Batch<'_>) -> (Result<Delivered>, Usage) {
            self.sent
                .push((batch.id.to_owned(), batch.rows.to_json_array()));
            let rejected = self
                .indexes
                .iter()
                .map(|&index| RejectedRow {
                    index,
                    row: String::new(),
                    reason: format!("not {index}"),
                    module: String::new(),
                    batch: None,
                })
                .collect();
            let delivered = Delivered {
                rejected,
                parked: Vec::new(),
                passed_on: 0,
            };
            (Ok(delivered), Usage::default())
        }
    }

    fn element(id: u32) -> String {
        format!(r#"{{"op":"upsert","row":{{"id":{id}}}}}"#)
    }

    #[tokio::test]
    async fn rejections_are_matched_by_index_and_out_of_range_ones_ignored() {
        let dir = TempDir::new();
        let store = dir.open().await;
        let letters: Vec<RejectedRow> = (0..3)
            .map(|index| RejectedRow {
                index,
                row: element(index),
                reason: "bad".into(),
                module: String::new(),
                batch: None,
            })
            .collect();
        store.record_rejections("p", "b1", &letters).await.unwrap();
        let ids: Vec<i64> = store
            .dead_letters("p", 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|letter| letter.id)
            .collect();
        // Batches of two letters: index 1 is the second letter of the first batch only; index
        // 7 is in neither, and a second rejection of index 1 changes nothing.
        let mut destination = Rejecting {
            indexes: vec![1, 7, 1],
            sent: Vec::new(),
        };
        let policy = RetryPolicy {
            max_retries: 0,
            backoff: Duration::from_millis(1),
            on_poison: crate::delivery::retry::OnPoison::Park,
        };

        let letters = Letters::for_pipeline(&store, "p").await.unwrap();
        let shutdown = Shutdown::default();
        let mut step = Step {
            output: &mut destination,
            store: &store,
            retry: &policy,
            shutdown: &shutdown,
            pipeline: "p".to_owned(),
            letters,
        };
        let replayed = replay(&mut step, 2).await.unwrap();

        let left = store.dead_letters("p", 0, 10).await.unwrap();
        assert_eq!(
            replayed,
            Replayed {
                retried: 3,
                delivered: 2,
                rejected: 1,
                superseded: 0,
            }
        );
        assert_eq!(
            destination.sent,
            [
                (
                    retry_batch_id("p", &ids[..2]),
                    format!("[{},{}]", element(0), element(1))
                ),
                (retry_batch_id("p", &ids[2..]), format!("[{}]", element(2))),
            ]
        );
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!((left[0].index, left[0].attempts), (1, 2));
        assert_eq!(left[0].reason, "not 1");
    }
}
