//! Dead letters sent again (`host retry`): a pipeline's rejected rows go to its destination a
//! batch at a time, through [`sync::deliver_with_retries`] as in a run. A row the destination
//! takes is dropped from the dead letters; one it rejects again keeps its place, with one more
//! attempt and the new reason.
//!
//! Each batch's id is derived from its dead letters' ids ([`sync::retry_batch_id`]), so a retry
//! that is itself retried carries the same id and a destination can drop what it has seen.

use crate::error::{Error, Result};
use crate::model::{Batch, Rows};
use crate::output::Output;
use crate::retry::RetryPolicy;
use crate::state::{DeadLetter, StateStore};
use crate::sync::{self, Shutdown};

/// What a replay did with the dead letters it sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub retried: usize,
    pub delivered: usize,
    pub rejected: usize,
}

/// Sends the dead letters of `pipeline` to `destination`, `batch_size` at a time, in the order
/// they were stored, until none is left or a stop is requested; retries and what the module
/// used are counted in `store`.
pub async fn replay<O: Output>(
    destination: &mut O,
    store: &StateStore,
    pipeline: &str,
    batch_size: usize,
    policy: &RetryPolicy,
    shutdown: &Shutdown,
) -> Result<Replayed> {
    let mut replayed = Replayed::default();
    let mut after = 0;
    while !shutdown.is_requested() {
        let letters = store
            .dead_letters(pipeline, after, batch_size as i64)
            .await?;
        let Some(last) = letters.last() else { break };
        after = last.id;
        let rows = rows_of(pipeline, &letters)?;
        let ids: Vec<i64> = letters.iter().map(|letter| letter.id).collect();
        let batch_id = sync::retry_batch_id(pipeline, &ids);
        let batch = Batch {
            id: &batch_id,
            pipeline,
            rows: &rows,
        };
        let (delivered, usage) =
            sync::deliver_with_retries(destination, batch, policy, shutdown, Some(store)).await;
        store.charge(pipeline, usage).await?;
        let delivered = delivered.map_err(|err| {
            err.context(format!("retrying dead letters of pipeline {pipeline:?}"))
        })?;
        // The reason for each letter the destination rejected again, by position in the batch.
        let mut reasons: Vec<Option<&str>> = vec![None; letters.len()];
        for row in &delivered.rejected {
            match reasons.get_mut(row.index as usize) {
                // A row rejected twice in one answer: the first reason stands.
                Some(slot) => {
                    slot.get_or_insert(&row.reason);
                }
                None => tracing::warn!(
                    "{pipeline}: batch {batch_id} has no row {}; that rejection is ignored",
                    row.index
                ),
            }
        }
        for (letter, reason) in letters.iter().zip(reasons) {
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
        replayed.retried += letters.len();
    }
    Ok(replayed)
}

/// The rows of `letters`, each as the destination received it the first time.
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
    use crate::model::{Delivered, RejectedRow, Usage};
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
                })
                .collect();
            (
                Ok(Delivered {
                    rejected,
                    passed_on: 0,
                }),
                Usage::default(),
            )
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
        };

        let replayed = replay(
            &mut destination,
            &store,
            "p",
            2,
            &policy,
            &Shutdown::default(),
        )
        .await
        .unwrap();

        let left = store.dead_letters("p", 0, 10).await.unwrap();
        assert_eq!(
            replayed,
            Replayed {
                retried: 3,
                delivered: 2,
                rejected: 1
            }
        );
        assert_eq!(
            destination.sent,
            [
                (
                    sync::retry_batch_id("p", &ids[..2]),
                    format!("[{},{}]", element(0), element(1))
                ),
                (
                    sync::retry_batch_id("p", &ids[2..]),
                    format!("[{}]", element(2))
                ),
            ]
        );
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!((left[0].index, left[0].attempts), (1, 2));
        assert_eq!(left[0].reason, "not 1");
    }
}
