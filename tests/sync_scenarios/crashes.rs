//! Stopping the host mid-batch, at its failpoints: kill -9 before and after delivery, and
//! SIGTERM while a batch is in hand. No gaps, and duplicates only of the batch that was
//! delivered but not checkpointed, under the same batch id.

use std::time::Duration;

use super::users;
use crate::support::lines::{
    assert_batches_at_most, assert_each_at_least_once, assert_each_once, batches, counts, ids,
};
use crate::support::{at, Backend, Val};

/// kill -9 after the second batch was delivered but before it was checkpointed: the next
/// run delivers that batch again first, with the same batch id and rows, then the rest;
/// every row at least once, only that batch twice.
pub(super) async fn kill_9_after_delivery_redelivers_the_batch_with_its_id(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    db.insert_users(&table, (1..=100).map(|id| (id, Val::Ts(at(id)))))
        .await;

    let mut running = host.spawn(
        &["--once", "--batch-size", "10"],
        Some("after_deliver=wait@2"),
    );
    running.reached("after_deliver", 2).await;
    running.kill9().await;
    let before_crash = host.new_lines();

    let crashed = batches(&before_crash);
    let expected_ids = |range: std::ops::RangeInclusive<i64>| range.collect::<Vec<_>>();
    assert_eq!(
        crashed
            .iter()
            .map(|(_, ids)| ids.clone())
            .collect::<Vec<_>>(),
        [expected_ids(1..=10), expected_ids(11..=20)],
        "output when the host was killed at the second batch's after_deliver"
    );
    let (first_batch, unacked_batch) = (crashed[0].0.clone(), crashed[1].0.clone());
    assert_ne!(first_batch, unacked_batch, "two batches share an id");

    let after = host.once(&["--batch-size", "10"]).await;

    let resumed = batches(&after);
    assert_eq!(
        resumed.first(),
        Some(&(unacked_batch.clone(), expected_ids(11..=20))),
        "the run after kill -9 must first redeliver the unacknowledged batch, same id, same rows"
    );
    for (batch, ids) in &resumed[1..] {
        assert!(
            *batch != first_batch && *batch != unacked_batch,
            "batch id {batch} reused for other rows {ids:?}"
        );
    }
    assert_batches_at_most(&after, 10);
    let all = [before_crash, after].concat();
    assert_each_at_least_once(&all, 1..=100);
    let twice: Vec<i64> = counts(&all)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        twice,
        expected_ids(11..=20),
        "rows delivered more than once"
    );
}

/// kill -9 after the second batch was read but before it was delivered: the first batch
/// was checkpointed, so the next run goes on from there and every row comes out exactly
/// once.
pub(super) async fn kill_9_before_delivery_repeats_nothing(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    db.insert_users(&table, (1..=30).map(|id| (id, Val::Ts(at(id)))))
        .await;

    let mut running = host.spawn(&["--once", "--batch-size", "10"], Some("after_read=wait@2"));
    running.reached("after_read", 2).await;
    running.kill9().await;
    let before_crash = host.new_lines();
    assert_eq!(
        ids(&before_crash),
        (1..=10).collect::<Vec<_>>(),
        "output when the host was killed at the second batch's after_read"
    );

    let after = host.once(&["--batch-size", "10"]).await;

    assert_eq!(
        ids(&after),
        (11..=30).collect::<Vec<_>>(),
        "the run after kill -9 before delivery"
    );
    assert_each_once(&[before_crash, after].concat(), 1..=30);
}

/// SIGTERM while a polling host holds a delivered batch (at `after_deliver` of batch 1):
/// it finishes that batch, checkpoints it, reads no further and exits 0; the next run
/// starts after it, so nothing is delivered twice.
pub(super) async fn sigterm_mid_batch_finishes_and_checkpoints_that_batch(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    db.insert_users(&table, (1..=30).map(|id| (id, Val::Ts(at(id)))))
        .await;

    let mut running = host.spawn(
        &["--poll", "200ms", "--batch-size", "10"],
        Some("after_deliver=wait@1"),
    );
    running.reached("after_deliver", 1).await;
    running.sigterm();
    // Let the signal land while the batch is in hand, then let the host go on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    running.go("after_deliver", 1);
    let outcome = running.finish().await;
    assert!(outcome.success(), "host must exit 0 on SIGTERM: {outcome}");
    let before = host.new_lines();
    assert_eq!(
        ids(&before),
        (1..=10).collect::<Vec<_>>(),
        "a host told to stop while holding batch 1 delivers that batch and no other"
    );

    let after = host.once(&["--batch-size", "10"]).await;

    assert_eq!(
        ids(&after),
        (11..=30).collect::<Vec<_>>(),
        "the run after a SIGTERM: batch 1 must have been checkpointed"
    );
}
