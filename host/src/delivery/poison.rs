//! Poison isolation: one bad row never wedges a pipeline.
//!
//! A module that fails a batch on every attempt (an error, a trap, its deadline, its memory
//! limit) may be failing on one row of it. So may a transform that answers *fatal* for it
//! (contract 0.2: the Rust SDK's `Err` or `?` on a row it cannot parse, an uncaught
//! JavaScript or Python exception; [`crate::model::error::ErrorKind::TransformFatal`]): that answer says another
//! attempt would fail the same way, so the batch is split at once, without the retries.
//! [`isolate`] splits the batch in halves, and the failing halves again, calling the failing
//! stage of the chain on each part under the usual limits, until it holds the rows that
//! fail alone: those are parked (kept as dead letters with the module and its error, a
//! fatal answer's message included), every other row goes on through the chain, and the
//! sync loop moves the watermark. For `k` bad rows of `n` this takes about `k·log2(n)` calls
//! plus one per part that passes; a part is not called when its sibling passed, since the
//! failure must then be in it (its halves are).
//!
//! What is not about rows is never split: a module that fails even an empty batch (a
//! transform whose configuration makes it answer fatal to anything), and one that fails
//! every row it is given alone (checked on three rows spread over the batch before any part
//! has passed); those fail the batch as before, a transform's fatal answer stopping the
//! pipeline with its message. Errors that are not a module failing on its input never reach
//! here, and end the delivery as they always did: a destination's fatal answer (a 401, a
//! refused list id: about the destination, which every part would meet as the batch did,
//! so splitting would only send it more requests), a destination down past its retries, a
//! retry-later from any module (it waits for something outside the rows: retried after the
//! delay it asked for, never split), a lost database.
//!
//! Each part has its own id, derived from the batch's id, the stage and the rows it holds
//! ([`crate::model::ids::part_id`]): a batch split again after a crash is split the same
//! way, under the same ids, so a destination can drop parts it has seen.

use std::time::Instant;

use crate::delivery::output::{Output, StageFailure};
use crate::delivery::retry::RetryPolicy;
use crate::delivery::retry_later;
use crate::model::error::{Error, Result};
use crate::model::ids::part_id;
use crate::model::rejections::bounded_reason;
use crate::model::shutdown::Shutdown;
use crate::model::{Batch, Delivered, RejectedRow, Rows, Usage};
use crate::state::StateStore;

/// Rows failing alone, spread over the batch, before any part passed, that show a module
/// failing every row rather than some.
const EVERY_ROW_PROBES: usize = 3;

/// Finds the rows of `batch` that stage `failure.stage` fails on alone, parks them and
/// delivers the rest; `error` is the failure of the whole batch, returned when the failure is
/// not about rows. Parts that a later stage fails are split there in turn. Returns what the
/// calls used, whatever the result.
pub async fn isolate<O: Output>(
    output: &mut O,
    batch: Batch<'_>,
    failure: StageFailure,
    error: Error,
    policy: &RetryPolicy,
    shutdown: &Shutdown,
    store: Option<&StateStore>,
) -> (Result<Delivered>, Usage) {
    let mut search = Search {
        output,
        pipeline: batch.pipeline,
        policy,
        shutdown,
        store,
        used: Usage::default(),
        delivered: Delivered {
            rejected: failure.rejected,
            ..Delivered::default()
        },
        tasks: vec![Task {
            stage: failure.stage,
            module: failure.module,
            rows: failure.input,
            id: batch.id.to_owned(),
            error,
        }],
    };
    while let Some(task) = search.tasks.pop() {
        if let Err(err) = search.split(task).await {
            return (Err(err), search.used);
        }
    }
    (Ok(search.delivered), search.used)
}

/// A stage to split the rows of: what it was given and how it failed on all of them.
struct Task {
    stage: usize,
    module: String,
    rows: Rows,
    /// The batch the rows' indexes count in.
    id: String,
    error: Error,
}

/// What a part's call says about the stage being split.
enum Tried {
    /// The stage took the part (and the chain after it delivered it, or a later stage's
    /// failure was queued to be split in turn).
    Passed,
    /// The stage failed the part: its error.
    Failed(String),
}

/// What is known about a part before it is called.
enum Known {
    /// Nothing yet.
    Untested,
    /// Its sibling passed, so its parent's failure is in it: split it without a call.
    Inferred,
    /// Called as it is, and failed so: the error.
    Failed(String),
}

struct Search<'a, O> {
    output: &'a mut O,
    pipeline: &'a str,
    policy: &'a RetryPolicy,
    shutdown: &'a Shutdown,
    store: Option<&'a StateStore>,
    used: Usage,
    delivered: Delivered,
    tasks: Vec<Task>,
}

impl<O: Output> Search<'_, O> {
    /// Splits the rows of `task` until each failing one stands alone; parks those.
    async fn split(&mut self, task: Task) -> Result<()> {
        let started = Instant::now();
        let mut calls = 0usize;
        let count = task.rows.len();
        // A module that fails without any row is not failing on a row.
        calls += 1;
        if let Tried::Failed(_) = self.try_part(&task, &[]).await? {
            return Err(task.error.context(format!(
                "module {} fails even an empty batch, so no row is at fault",
                task.module
            )));
        }
        let mut done = vec![false; count];
        let mut passed = false;
        let mut parked: Vec<u32> = Vec::new();
        let mut probed = false;
        let all: Vec<u32> = (0..count as u32).collect();
        let mut stack = vec![(all, Known::Failed(reason(&task.error)))];
        while let Some((part, known)) = stack.pop() {
            if self.shutdown.is_requested() {
                return Err(task.error);
            }
            let live: Vec<u32> = part
                .iter()
                .copied()
                .filter(|&index| !done[index as usize])
                .collect();
            if live.is_empty() {
                continue;
            }
            // A part that lost rows to a probe is another part: what was known is not.
            let known = if live.len() == part.len() {
                known
            } else {
                Known::Untested
            };
            let failed = match known {
                Known::Failed(err) => err,
                Known::Inferred if live.len() > 1 => String::new(),
                Known::Inferred | Known::Untested => {
                    calls += 1;
                    match self.try_part(&task, &live).await? {
                        Tried::Passed => {
                            passed = true;
                            live.iter().for_each(|&index| done[index as usize] = true);
                            continue;
                        }
                        Tried::Failed(err) => err,
                    }
                }
            };
            if let [index] = live[..] {
                self.park(&task, index, &failed);
                done[index as usize] = true;
                parked.push(index);
                if !passed && !probed {
                    probed = true;
                    for index in spread(&done) {
                        calls += 1;
                        match self.try_part(&task, &[index]).await? {
                            Tried::Passed => passed = true,
                            Tried::Failed(err) => {
                                self.park(&task, index, &err);
                                parked.push(index);
                            }
                        }
                        done[index as usize] = true;
                    }
                    if !passed && parked.len() >= EVERY_ROW_PROBES {
                        return Err(task.error.context(format!(
                            "module {} fails rows {} of batch {} each alone, and no part of \
                             the batch: the module fails every row, so none is set aside",
                            task.module,
                            list(&parked),
                            task.id
                        )));
                    }
                }
                continue;
            }
            let (left, right) = live.split_at(live.len() / 2);
            calls += 1;
            match self.try_part(&task, left).await? {
                Tried::Passed => {
                    passed = true;
                    left.iter().for_each(|&index| done[index as usize] = true);
                    stack.push((right.to_vec(), Known::Inferred));
                }
                Tried::Failed(err) => {
                    stack.push((right.to_vec(), Known::Untested));
                    stack.push((left.to_vec(), Known::Failed(err)));
                }
            }
        }
        tracing::warn!(
            "{}: module {} failed batch {} as a whole: {} of its {count} rows fail alone and \
             are set aside, the others go on ({calls} calls in {:.1?})",
            self.pipeline,
            task.module,
            task.id,
            parked.len(),
            started.elapsed()
        );
        Ok(())
    }

    /// Calls stage `task.stage` on the rows at `indexes` (the chain after it too, when it
    /// passes); an empty part probes the stage alone.
    async fn try_part(&mut self, task: &Task, indexes: &[u32]) -> Result<Tried> {
        let rows = task.rows.select(indexes);
        let id = part_id(&task.id, task.stage, indexes);
        let batch = Batch {
            id: &id,
            pipeline: self.pipeline,
            rows: &rows,
        };
        let (result, usage) = retry_later::deliver_retrying_later(
            self.output,
            task.stage,
            batch,
            self.policy,
            self.shutdown,
            self.store,
        )
        .await;
        self.used.add(usage);
        match result {
            Ok(mut delivered) => {
                for row in delivered
                    .rejected
                    .iter_mut()
                    .chain(delivered.parked.iter_mut())
                {
                    row.batch.get_or_insert_with(|| id.clone());
                }
                self.delivered.merge(delivered);
                Ok(Tried::Passed)
            }
            Err(err) if err.kind().may_be_a_row() => match self.output.take_failure() {
                Some(failure) if failure.stage == task.stage => Ok(Tried::Failed(reason(&err))),
                // The stage took the part; a later one failed it: split it there in turn.
                Some(failure) if failure.stage > task.stage && !indexes.is_empty() => {
                    let mut rejected = failure.rejected;
                    for row in &mut rejected {
                        row.batch.get_or_insert_with(|| id.clone());
                    }
                    self.delivered.rejected.extend(rejected);
                    self.tasks.push(Task {
                        stage: failure.stage,
                        module: failure.module,
                        rows: failure.input,
                        id,
                        error: err,
                    });
                    Ok(Tried::Passed)
                }
                _ => Err(err),
            },
            Err(err) => Err(err),
        }
    }

    /// Sets row `index` of `task` aside with the error it fails with alone.
    fn park(&mut self, task: &Task, index: u32, error: &str) {
        let row = task
            .rows
            .element(index as usize)
            .unwrap_or_else(|| "null".to_owned());
        self.delivered.parked.push(RejectedRow {
            index,
            row,
            // The module's error was masked when it was made; only its length is bounded.
            reason: bounded_reason(error, str::to_owned),
            module: task.module.clone(),
            batch: Some(task.id.clone()),
        });
    }
}

/// Rows to try alone, far from the first one that failed: the last and the middle one of
/// those not done.
fn spread(done: &[bool]) -> Vec<u32> {
    let open: Vec<u32> = (0..done.len() as u32)
        .filter(|&index| !done[index as usize])
        .collect();
    let mut picks = Vec::new();
    if let Some(&last) = open.last() {
        picks.push(last);
    }
    if open.len() > 1 {
        picks.push(open[(open.len() - 1) / 2]);
    }
    picks
}

/// What a parked row's letter says: the module's error and how to fix it, if it says.
fn reason(error: &Error) -> String {
    match error.hint() {
        Some(hint) => format!("{error:#}; {hint}"),
        None => format!("{error:#}"),
    }
}

fn list(indexes: &[u32]) -> String {
    let shown: Vec<String> = indexes.iter().map(u32::to_string).collect();
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    //! Poison isolation against a scripted one-module output: each test states one promise.

    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;
    use crate::delivery::attempt::deliver_with_retries;
    use crate::delivery::retry::{OnPoison, RetryPolicy};
    use crate::model::error::ErrorKind;
    use crate::model::{Delivered, Op, Rows, Usage};

    /// One module (stage 0, "picky") that fails any call holding one of its bad ids, or every
    /// non-empty call, and writes what passes. It fails as a trap does, or with the error kind
    /// `kind` says.
    #[derive(Default)]
    struct Picky {
        bad: HashSet<u64>,
        every_row: bool,
        empty_too: bool,
        kind: Option<ErrorKind>,
        calls: usize,
        /// Each delivered part: its id and row ids.
        delivered: Vec<(String, Vec<u64>)>,
        failure: Option<StageFailure>,
    }

    fn ids(rows: &Rows) -> Vec<u64> {
        rows.iter()
            .map(|(_, row)| {
                let row: serde_json::Value = serde_json::from_slice(row).unwrap();
                row["id"].as_u64().unwrap()
            })
            .collect()
    }

    impl Output for Picky {
        async fn deliver(&mut self, batch: Batch<'_>) -> (Result<Delivered>, Usage) {
            self.deliver_from(0, batch).await
        }

        async fn deliver_from(
            &mut self,
            stage: usize,
            batch: Batch<'_>,
        ) -> (Result<Delivered>, Usage) {
            assert_eq!(stage, 0);
            self.calls += 1;
            let ids = ids(batch.rows);
            let fails = match ids.is_empty() {
                true => self.empty_too,
                false => self.every_row || ids.iter().any(|id| self.bad.contains(id)),
            };
            if fails {
                let error = match self.kind {
                    None => Error::new(
                        ErrorKind::Module,
                        format!("module picky trapped on batch {}", batch.id),
                    ),
                    Some(kind) => Error::new(
                        kind,
                        format!("picky answered fatal for batch {}: no such plan", batch.id),
                    ),
                };
                // As the chain does: a failure a row may be at fault for names its stage.
                if error.kind().may_be_a_row() {
                    self.failure = Some(StageFailure {
                        stage: 0,
                        module: "picky".into(),
                        input: batch.rows.clone(),
                        rejected: Vec::new(),
                    });
                }
                return (Err(error), Usage::default());
            }
            if !ids.is_empty() {
                self.delivered.push((batch.id.to_owned(), ids));
            }
            (Ok(Delivered::default()), Usage::default())
        }

        fn take_failure(&mut self) -> Option<StageFailure> {
            self.failure.take()
        }
    }

    fn rows(count: u64) -> Rows {
        let mut rows = Rows::with_capacity(count as usize);
        for id in 0..count {
            rows.buffer()
                .extend_from_slice(format!(r#"{{"id":{id}}}"#).as_bytes());
            rows.end_row(Op::Upsert);
        }
        rows
    }

    fn policy(on_poison: OnPoison) -> RetryPolicy {
        RetryPolicy {
            max_retries: 1,
            backoff: Duration::from_millis(1),
            on_poison,
        }
    }

    async fn run(output: &mut Picky, count: u64, on_poison: OnPoison) -> Result<Delivered> {
        let rows = rows(count);
        let batch = Batch {
            id: "b1",
            pipeline: "p",
            rows: &rows,
        };
        let shutdown = Shutdown::default();
        deliver_with_retries(output, 0, batch, &policy(on_poison), &shutdown, None)
            .await
            .0
    }

    fn delivered_ids(output: &Picky) -> Vec<u64> {
        let mut ids: Vec<u64> = output
            .delivered
            .iter()
            .flat_map(|(_, ids)| ids.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Module calls after the batch's own attempts (1 + max_retries).
    fn split_calls(output: &Picky) -> usize {
        output.calls - 2
    }

    #[tokio::test]
    async fn one_bad_row_of_a_thousand_is_parked_and_every_other_row_delivered_once() {
        let mut output = Picky {
            bad: HashSet::from([613]),
            ..Picky::default()
        };
        let delivered = run(&mut output, 1000, OnPoison::Park).await.unwrap();
        let parked: Vec<(u32, &str, &str)> = delivered
            .parked
            .iter()
            .map(|row| (row.index, row.module.as_str(), row.row.as_str()))
            .collect();
        assert_eq!(
            parked,
            [(613, "picky", r#"{"op":"upsert","row":{"id":613}}"#)]
        );
        assert!(delivered.parked[0].reason.contains("trapped"));
        assert_eq!(delivered.parked[0].batch.as_deref(), Some("b1"));
        let expected: Vec<u64> = (0..1000).filter(|&id| id != 613).collect();
        assert_eq!(delivered_ids(&output), expected);
        // About log2(1000) levels, at most two calls each, plus the empty probe.
        assert!(split_calls(&output) <= 22, "{} calls", split_calls(&output));
        println!("1 bad row of 1000: {} calls", split_calls(&output));
    }

    #[tokio::test]
    async fn five_bad_rows_cost_about_five_times_log_n_calls() {
        let bad = [3, 250, 251, 700, 999];
        let mut output = Picky {
            bad: HashSet::from(bad),
            ..Picky::default()
        };
        let delivered = run(&mut output, 1000, OnPoison::Park).await.unwrap();
        let mut parked: Vec<u32> = delivered.parked.iter().map(|row| row.index).collect();
        parked.sort();
        assert_eq!(parked, [3, 250, 251, 700, 999]);
        assert_eq!(delivered_ids(&output).len(), 995);
        assert!(
            split_calls(&output) <= 5 * 22,
            "{} calls",
            split_calls(&output)
        );
        println!("5 bad rows of 1000: {} calls", split_calls(&output));
    }

    #[tokio::test]
    async fn a_batch_of_one_bad_row_is_parked() {
        let mut output = Picky {
            bad: HashSet::from([0]),
            ..Picky::default()
        };
        let delivered = run(&mut output, 1, OnPoison::Park).await.unwrap();
        assert_eq!(delivered.parked.len(), 1);
        assert!(output.delivered.is_empty());
    }

    #[tokio::test]
    async fn a_module_that_fails_every_row_is_not_split_to_the_end() {
        let mut output = Picky {
            every_row: true,
            ..Picky::default()
        };
        let err = run(&mut output, 1000, OnPoison::Park).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Module);
        assert!(err.to_string().contains("fails every row"), "{err}");
        assert!(output.delivered.is_empty());
        // The way down to one row, then two more rows alone: no thousand calls.
        assert!(split_calls(&output) <= 16, "{} calls", split_calls(&output));
    }

    #[tokio::test]
    async fn a_module_that_fails_an_empty_batch_is_not_split() {
        let mut output = Picky {
            every_row: true,
            empty_too: true,
            ..Picky::default()
        };
        let err = run(&mut output, 100, OnPoison::Park).await.unwrap_err();
        assert!(err.to_string().contains("empty batch"), "{err}");
        assert_eq!(split_calls(&output), 1);
    }

    #[tokio::test]
    async fn with_on_poison_stop_the_first_failure_ends_the_delivery() {
        let mut output = Picky {
            bad: HashSet::from([5]),
            ..Picky::default()
        };
        let err = run(&mut output, 10, OnPoison::Stop).await.unwrap_err();
        assert!(err.to_string().contains("trapped"), "{err}");
        assert_eq!(output.calls, 1);
    }

    /// A transform's fatal answer on one row: the row is parked with the module's message, the
    /// rest delivered, and the batch is split at once (no retry), with the calls a trap takes.
    #[tokio::test]
    async fn a_transform_answering_fatal_on_one_row_is_split_at_once() {
        let mut trapping = Picky {
            bad: HashSet::from([613]),
            ..Picky::default()
        };
        run(&mut trapping, 1000, OnPoison::Park).await.unwrap();
        let mut fatal = Picky {
            bad: HashSet::from([613]),
            kind: Some(ErrorKind::TransformFatal),
            ..Picky::default()
        };
        let delivered = run(&mut fatal, 1000, OnPoison::Park).await.unwrap();
        let parked: Vec<u32> = delivered.parked.iter().map(|row| row.index).collect();
        assert_eq!(parked, [613]);
        let reason = &delivered.parked[0].reason;
        assert!(reason.contains("answered fatal") && reason.contains("no such plan"));
        assert_eq!(delivered_ids(&fatal).len(), 999);
        assert_eq!(fatal.calls, 1 + split_calls(&trapping), "no retry");
    }

    /// A transform that answers fatal even to an empty batch (its configuration, not a row)
    /// stops the delivery with its message after that one probe; so does any fatal answer with
    /// `--on-poison stop`. A fatal answer that is not a transform's (a destination's 401) is
    /// never split.
    #[tokio::test]
    async fn a_fatal_answer_that_is_not_about_rows_is_not_split() {
        let mut configured = Picky {
            every_row: true,
            empty_too: true,
            kind: Some(ErrorKind::TransformFatal),
            ..Picky::default()
        };
        let err = run(&mut configured, 100, OnPoison::Park).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TransformFatal);
        assert!(err.to_string().contains("empty batch"), "{err}");
        assert!(err.to_string().contains("no such plan"), "{err}");
        assert_eq!(configured.calls, 2, "the batch, then the empty probe");

        for (kind, on_poison) in [
            (ErrorKind::TransformFatal, OnPoison::Stop),
            (ErrorKind::Fatal, OnPoison::Park),
        ] {
            let mut output = Picky {
                bad: HashSet::from([5]),
                kind: Some(kind),
                ..Picky::default()
            };
            let err = run(&mut output, 10, on_poison).await.unwrap_err();
            assert_eq!(err.kind(), kind);
            assert_eq!(output.calls, 1, "{kind:?} with {on_poison:?}");
        }
    }

    #[tokio::test]
    async fn a_batch_is_split_the_same_way_under_the_same_ids_every_time() {
        let mut first = Picky {
            bad: HashSet::from([17, 80]),
            ..Picky::default()
        };
        run(&mut first, 100, OnPoison::Park).await.unwrap();
        let mut second = Picky {
            bad: HashSet::from([17, 80]),
            ..Picky::default()
        };
        run(&mut second, 100, OnPoison::Park).await.unwrap();
        assert_eq!(first.delivered, second.delivered);
        let ids: HashSet<&String> = first.delivered.iter().map(|(id, _)| id).collect();
        assert_eq!(
            ids.len(),
            first.delivered.len(),
            "each part has an id of its own"
        );
    }
}
