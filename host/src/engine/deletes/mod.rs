//! Hard deletes (`--detect-deletes INTERVAL`, issue 14): keys the pipeline delivered that the
//! table no longer holds reach the destination as `{"op":"delete","row":{KEY: …}}`.
//!
//! A watermark sees only rows that exist, so the pipeline keeps an inventory of the keys it
//! delivered ([`crate::state`]'s `inventory`, moved with each checkpoint). Every INTERVAL, at
//! the end of a pass (so never during one: a delete and an upsert of one key are never in
//! flight together), a check compares the table with the inventory range by range: the key
//! digests are cut into `2^bits` ranges of about [`KEYS_PER_RANGE`] keys, each side sums the
//! digests of each range (the table inside the database, see [`crate::source::keys`]), and
//! only the ranges whose sums differ are read key by key. Their keys the table lacks are
//! delivered in batches (`batch.rs`), each confirmed absent just before it is handed on.
//!
//! Cost of a check: the fold of the key changes logged by checkpoints since the last check
//! into the inventory (`state`'s `key_log`), one pass over the key index inside the database
//! (nothing read but a row per range), two over the inventory (the digests, then the keys of
//! the ranges that differ, page by page), and a lookup of each of those keys in the table; a
//! range differs when a key of it was deleted, or inserted and not yet delivered.

mod batch;

use std::time::{Duration, Instant};

use crate::delivery::letters::Letters;
use crate::delivery::output::Output;
use crate::engine::pass::Pass;
use crate::model::error::Result;
use crate::model::key::Key;
use crate::model::shutdown::Shutdown;
use crate::source::Source;
use crate::state::{CheckReport, PipelineState, StateStore};

/// About how many keys one range of the digest space holds: a range that differs costs this
/// many lookups, and a check reads one digest per this many keys.
pub const KEYS_PER_RANGE: u64 = 1024;

/// Keys read per statement while the inventory of an existing pipeline is built.
const BUILD_PAGE: usize = 10_000;

/// Inventory keys of the ranges that differ read per statement, then looked up in the table.
const CHECK_PAGE: usize = 5_000;

/// Brings the inventory in line with the options at the start of a run: built when delete
/// checks are on and it is missing (an existing pipeline: from the keys of rows already
/// delivered, without delivering anything), dropped when they are off (nobody would keep it).
pub async fn prepare<S: Source>(
    source: &mut S,
    store: &StateStore,
    state: &mut PipelineState,
    every: Option<Duration>,
    shutdown: &Shutdown,
) -> Result<()> {
    match (every, state.deletes.inventory) {
        (Some(_), false) => build(source, store, state, shutdown).await,
        (None, true) => {
            tracing::info!(
                "{}: delete checks are off: the key inventory is dropped (it is built again \
                 when --detect-deletes is given)",
                state.name
            );
            store.drop_inventory(state).await
        }
        _ => Ok(()),
    }
}

/// Fills the inventory with the keys of the rows at or before the watermark. A run stopped
/// midway leaves it incomplete (unmarked), and the next run starts it over.
async fn build<S: Source>(
    source: &mut S,
    store: &StateStore,
    state: &mut PipelineState,
    shutdown: &Shutdown,
) -> Result<()> {
    let started = Instant::now();
    store.start_inventory(state).await?;
    // The rows of a batch pending after a crash are not counted: they come again and their
    // checkpoint adds them.
    let through = state.position.clone();
    let mut after: Option<Key> = None;
    let mut count = 0;
    loop {
        if shutdown.is_requested() {
            return Ok(());
        }
        let keys = source
            .delivered_keys(&through, after.as_ref(), BUILD_PAGE)
            .await?;
        let Some(last) = keys.last().cloned() else {
            break;
        };
        count += keys.len();
        store.add_keys(&state.name, keys).await?;
        after = Some(last);
    }
    store.finish_inventory(state).await?;
    tracing::info!(
        "{}: key inventory built: {count} keys of rows already delivered, in {:.1}s (none \
         delivered again)",
        state.name,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// At the end of a pass, with delete checks on (every `every`): delivers a delete batch a
/// crash left pending, then, when a check is due, runs one.
pub async fn run_if_due<S: Source, O: Output>(
    pass: &mut Pass<'_, S, O>,
    every: Duration,
) -> Result<()> {
    let store = pass.step.store;
    if !pass.state.deletes.inventory {
        build(pass.source, store, pass.state, pass.step.shutdown).await?;
    }
    // The live letters as the store has them now, which delete rows may supersede.
    pass.step.letters = Letters::load(store, pass.state).await?;
    let mut batches = batch::Batches::default();
    if let Some((id, keys)) = store.pending_deletes(&pass.state.name).await? {
        tracing::info!(
            "{}: redelivering delete batch {id} ({} keys) that was not checkpointed",
            pass.state.name,
            keys.len()
        );
        batches.hand_on(pass, &id, keys).await?;
    }
    if !is_due(pass.state.deletes.last_check_at.as_deref(), every) {
        return Ok(());
    }
    // The check's time includes the fold: it is what keeping the inventory costs beyond
    // a row per checkpoint.
    let started = Instant::now();
    let folded = store.fold_key_log(&pass.state.name).await?;
    let fold_seconds = started.elapsed().as_secs_f64();
    let report = check(pass, &mut batches, started).await?;
    tracing::info!(
        "{}: delete check: {folded} key changes folded into the inventory in \
         {fold_seconds:.2}s, {} ranges read key by key, {} keys read, {} deletes, {:.2}s",
        pass.state.name,
        report.ranges,
        report.keys,
        batches.delivered,
        report.seconds
    );
    store.finish_check(pass.state, report).await
}

/// One check, from `started`: compares the digests of each range, reads the ranges that
/// differ key by key, and delivers the keys the table lacks, a pass's batch size at a time.
async fn check<S: Source, O: Output>(
    pass: &mut Pass<'_, S, O>,
    batches: &mut batch::Batches,
    started: Instant,
) -> Result<CheckReport> {
    let (store, shutdown) = (pass.step.store, pass.step.shutdown);
    let batch_size = pass.options.batch_size;
    let bits = bits_for(store.inventory_len(&pass.state.name).await?);
    let ours = store.inventory_digests(&pass.state.name, bits).await?;
    let (theirs, mut keys_read) = pass.source.key_digests(bits).await?;
    // A range the inventory does not have holds no key to delete.
    let differing: Vec<u32> = ours
        .iter()
        .filter(|(range, digest)| theirs.get(range) != Some(digest))
        .map(|(range, _)| *range)
        .collect();
    let mut missing: Vec<Key> = Vec::new();
    let mut after: Option<Key> = None;
    while !shutdown.is_requested() {
        let keys = store
            .inventory_keys(
                &pass.state.name,
                (bits, &differing[..]),
                after.as_ref(),
                CHECK_PAGE,
            )
            .await?;
        let Some(last) = keys.last().cloned() else {
            break;
        };
        after = Some(last);
        let present = pass.source.present_keys(&keys).await?;
        keys_read += present.len() as u64;
        missing.extend(keys.into_iter().filter(|key| !present.contains(key)));
        while missing.len() >= batch_size {
            let keys: Vec<Key> = missing.drain(..batch_size).collect();
            batches.deliver(pass, keys).await?;
        }
    }
    if !missing.is_empty() && !shutdown.is_requested() {
        batches.deliver(pass, missing).await?;
    }
    Ok(CheckReport {
        seconds: started.elapsed().as_secs_f64(),
        ranges: differing.len() as u64,
        keys: keys_read,
    })
}

/// Bits of the digest space that pick a range: ranges of about [`KEYS_PER_RANGE`] keys.
pub fn bits_for(keys: u64) -> u32 {
    let ranges = keys.div_ceil(KEYS_PER_RANGE).max(1);
    ranges.next_power_of_two().trailing_zeros().min(24)
}

/// Whether a check is due `every` after the last one (at `last`, RFC 3339), or never ran.
fn is_due(last: Option<&str>, every: Duration) -> bool {
    let Some(last) = last.and_then(|last| chrono::DateTime::parse_from_rfc3339(last).ok()) else {
        return true;
    };
    // A last check in the future (a clock set back) does not hold checks off.
    match chrono::Utc::now().signed_duration_since(last).to_std() {
        Ok(since) => since >= every,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_hold_about_a_thousand_keys() {
        assert_eq!(bits_for(0), 0);
        assert_eq!(bits_for(1024), 0);
        assert_eq!(bits_for(1025), 1);
        assert_eq!(bits_for(1_000_000), 10);
        assert_eq!(bits_for(u64::MAX), 24);
    }

    #[test]
    fn a_check_is_due_after_its_interval_or_when_it_never_ran() {
        assert!(is_due(None, Duration::from_secs(3600)));
        let now = chrono::Utc::now().to_rfc3339();
        assert!(!is_due(Some(&now), Duration::from_secs(3600)));
        assert!(is_due(Some(&now), Duration::ZERO));
        assert!(is_due(
            Some("2020-01-01T00:00:00Z"),
            Duration::from_secs(60)
        ));
    }
}
