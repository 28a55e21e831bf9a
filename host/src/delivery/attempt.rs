//! A batch's attempts: offered to the chain ([`retry_later`] waits while a destination asks to
//! retry later), given again while a module fails it, and, once a module has failed it on
//! every attempt, handed to poison isolation ([`poison`]), which sets aside the rows at fault.
//! The attempts every delivery makes: a run's batches, delete batches and dead letters sent
//! again, all through [`crate::delivery::step`].

use std::time::Duration;

use crate::delivery::output::Output;
use crate::delivery::poison;
use crate::delivery::retry::{OnPoison, RetryPolicy};
use crate::delivery::retry_later;
use crate::model::error::{ErrorKind, Result};
use crate::model::shutdown::Shutdown;
use crate::model::{Batch, Delivered, Usage};
use crate::state::StateStore;

/// Delivers `batch` from stage `stage` of `output` (0: the whole chain), as
/// [`retry_later::deliver_retrying_later`] does while a destination asks to retry later. A
/// module that fails the batch is given the batch again at once, up to `policy.max_retries`
/// times; once it has failed every attempt (a transform's fatal answer: at once),
/// [`poison::isolate`] sets aside the rows it fails on alone and delivers the rest (`--on-poison
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
            retry_later::deliver_retrying_later(output, stage, batch, policy, shutdown, store)
                .await;
        used.add(usage);
        let err = match result {
            Err(err) if err.kind().may_be_a_row() && policy.on_poison == OnPoison::Park => err,
            result => return (result, used),
        };
        // A transform that answered fatal said another attempt would fail the same way.
        if retry < policy.max_retries && err.kind() == ErrorKind::Module {
            retry += 1;
            let waited = retry_later::wait_to_retry(retry_later::Retry {
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
        let (result, usage) =
            poison::isolate(output, batch, failure, err, policy, shutdown, store).await;
        used.add(usage);
        return (result, used);
    }
}
