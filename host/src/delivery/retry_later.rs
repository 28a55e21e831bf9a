//! One delivery of a batch to an output, offered again while the destination asks to retry
//! later, and the wait before any retry (counted, logged, cut short by a stop). The bottom of
//! a batch's trip: every call of the chain goes through here, a batch's own attempts
//! ([`crate::delivery::attempt`]) and the parts of a batch split to find a bad row
//! ([`crate::delivery::poison`]).

use std::time::Duration;

use crate::delivery::output::Output;
use crate::delivery::retry::RetryPolicy;
use crate::model::error::{Error, ErrorKind, Result};
use crate::model::shutdown::Shutdown;
use crate::model::{Batch, Delivered, Usage};
use crate::state::StateStore;

/// Delivers `batch` from stage `stage` of `output`, again and again while the destination
/// asks to retry later, waiting as `policy` says; gives up after `policy.max_retries`
/// retries. A stop request ends the wait and returns the destination's last answer. Each
/// retry is counted in `store` as it happens, so a destination that never recovers shows its
/// retries too. Returns what module calls used over all attempts, whatever the result.
pub async fn deliver_retrying_later<O: Output>(
    output: &mut O,
    stage: usize,
    batch: Batch<'_>,
    policy: &RetryPolicy,
    shutdown: &Shutdown,
    store: Option<&StateStore>,
) -> (Result<Delivered>, Usage) {
    let mut retry = 0;
    let mut used = Usage::default();
    loop {
        let (result, usage) = output.deliver_from(stage, batch).await;
        used.add(usage);
        match result {
            Err(err) if err.kind() == ErrorKind::RetryLater => {
                if retry >= policy.max_retries {
                    return (Err(policy.gave_up(&err)), used);
                }
                retry += 1;
                let waited = wait_to_retry(Retry {
                    pipeline: batch.pipeline,
                    retry,
                    error: &err,
                    asked: err.retry_after(),
                    policy,
                    shutdown,
                    store,
                })
                .await;
                if !waited {
                    return (Err(err), used);
                }
            }
            result => return (result, used),
        }
    }
}

/// One retry of a batch about to wait: whose, which, why, and what governs the wait.
pub struct Retry<'a> {
    pub pipeline: &'a str,
    /// From 1.
    pub retry: u32,
    pub error: &'a Error,
    /// How long the destination asked to wait, if it said.
    pub asked: Option<Duration>,
    pub policy: &'a RetryPolicy,
    pub shutdown: &'a Shutdown,
    pub store: Option<&'a StateStore>,
}

/// Counts the retry in the store (as it happens, so a batch that never gets through shows
/// its retries too; a count that cannot be written is only logged), says why in the log, and
/// waits as the policy says. Returns false when a stop was requested meanwhile.
pub async fn wait_to_retry(retry: Retry<'_>) -> bool {
    if let Some(store) = retry.store {
        if let Err(unrecorded) = store.record_retry(retry.pipeline).await {
            tracing::warn!("{}: {unrecorded:#}", retry.pipeline);
        }
    }
    let wait = retry.policy.wait(retry.retry, retry.asked);
    tracing::warn!(
        "{}: {:#}; retry {} of {} (--max-retries) in {wait:.1?}",
        retry.pipeline,
        retry.error,
        retry.retry,
        retry.policy.max_retries
    );
    retry.shutdown.sleep(wait).await;
    !retry.shutdown.is_requested()
}
