//! Poison isolation: one bad row never wedges a pipeline.
//!
//! A module that fails a batch on every attempt (an error, a trap, its deadline, its memory
//! limit) may be failing on one row of it. So may a transform that answers *fatal* for it
//! (contract 0.2: the Rust SDK's `Err` or `?` on a row it cannot parse, an uncaught
//! JavaScript or Python exception; [`ErrorKind::TransformFatal`]): that answer says another
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
//! ([`part_id`]): a batch split again after a crash is split the same way, under the same
//! ids, so a destination can drop parts it has seen.

use std::time::{Duration, Instant};

use crate::attempt;
use crate::error::{Error, ErrorKind, Result};
use crate::ids::digest;
use crate::model::{Batch, Delivered, RejectedRow, Rows, Usage};
use crate::output::{Output, StageFailure};
use crate::retry::{OnPoison, RetryPolicy};
use crate::runtime::bounded_reason;
use crate::shutdown::Shutdown;
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

/// The id of the part of batch `batch` (as stage `stage` received it) that holds the rows at
/// `indexes`.
pub fn part_id(batch: &str, stage: usize, indexes: &[u32]) -> String {
    let stage = stage.to_string();
    let rows = ranges(indexes);
    digest([batch, "part", &stage, &rows])
}

/// `indexes` as runs: `0-4,7,9-10`.
fn ranges(indexes: &[u32]) -> String {
    let mut text = String::new();
    let mut rest = indexes.iter().copied().peekable();
    while let Some(first) = rest.next() {
        let mut last = first;
        while rest.peek() == Some(&(last + 1)) {
            last += 1;
            rest.next();
        }
        if !text.is_empty() {
            text.push(',');
        }
        text.push_str(&first.to_string());
        if last != first {
            text.push('-');
            text.push_str(&last.to_string());
        }
    }
    text
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
        let (result, usage) = attempt::deliver_retrying_later(
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
            stage: task.module.clone(),
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

/// Delivers `batch` from stage `stage` of `output` (0: the whole chain), as
/// [`attempt::deliver_retrying_later`] does while a destination asks to retry later. A
/// module that fails the batch is given the batch again at once, up to `policy.max_retries`
/// times; once it has failed every attempt (a transform's fatal answer: at once),
/// [`isolate`] sets aside the rows it fails on alone and delivers the rest (`--on-poison
/// park`, the default). With `--on-poison stop` a module failure ends the delivery at once.
/// Returns what module calls used over all attempts, whatever the result.
pub async fn deliver_with_retries<O: Output>(
    output: &mut O,
    stage: usize,
    batch: Batch<'_>,
    policy: &RetryPolicy,
    shutdown: &Shutdown,
    store: Option<&StateStore>,
) -> (Result<Delivered>, Usage) {
    let mut used = Usage::default();
    let mut retry = 0;
    loop {
        let (result, usage) =
            attempt::deliver_retrying_later(output, stage, batch, policy, shutdown, store).await;
        used.add(usage);
        let err = match result {
            Err(err) if err.kind().may_be_a_row() && policy.on_poison == OnPoison::Park => err,
            result => return (result, used),
        };
        // A transform that answered fatal said another attempt would fail the same way.
        if retry < policy.max_retries && err.kind() == ErrorKind::Module {
            retry += 1;
            let waited = attempt::wait_to_retry(attempt::Retry {
                pipeline: batch.pipeline,
                retry,
                error: &err,
                // At once: a module fails the same input the same way, so waiting would only
                // delay finding the row at fault (and a `--once` run's exit), while a failure
                // that was chance (a deadline missed under load) gets its second try anyway.
                asked: Some(Duration::ZERO),
                policy,
                shutdown,
                store,
            })
            .await;
            if !waited {
                return (Err(err), used);
            }
            continue;
        }
        // Failed on every attempt: a row may be at fault. The module's stage and input come
        // from the failed call (none when no module failed: nothing to split).
        let Some(failure) = output.take_failure() else {
            return (Err(err), used);
        };
        let (result, usage) = isolate(output, batch, failure, err, policy, shutdown, store).await;
        used.add(usage);
        return (result, used);
    }
}

#[cfg(test)]
#[path = "poison_tests.rs"]
mod tests;
