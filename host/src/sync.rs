//! The sync loop: read a page after the watermark, hand it on, then move the watermark.
//!
//! One pass, top to bottom:
//! 1. Refuse NULL cursors unless the user opted in: a NULL would be passed over silently.
//! 2. Read the database's clock once: rows at or past the safe horizon wait for a later pass.
//! 3. Redeliver a batch that was handed on but not checkpointed (a crash), under its old id.
//! 4. Page by keyset on (cursor, key): record the batch as pending, deliver it, checkpoint.
//! 5. With `--detect-deletes`, when a check is due, deliver the deletes of keys the table no
//!    longer has ([`crate::deletes`]): in sequence with the passes, never during one.
//!
//! The watermark only moves after delivery, so a crash at any instant loses nothing and
//! repeats at most the one batch in flight. A destination that asks for a batch again later
//! gets the same batch, under the same id, after a backoff; rows it rejects are kept as dead
//! letters and the watermark moves past them. A module that fails a batch on every attempt
//! has the rows it fails on alone parked as dead letters ([`crate::poison`]).

use std::time::Duration;

use crate::deletes;
use crate::error::{Error, ErrorKind, Result};
use crate::failpoint;
use crate::ids::digest;
use crate::letters::Letters;
use crate::model::{Batch, NullCursorPolicy, Position};
use crate::output::Output;
pub use crate::poison::deliver_with_retries;
use crate::progress::Progress;
use crate::retry::RetryPolicy;
pub use crate::shutdown::Shutdown;
use crate::source::{Driver, Page, Source, Until};
use crate::state::{PipelineState, StateStore};
use crate::sync_log::log_waiting;

/// How a pipeline runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncOptions {
    pub batch_size: usize,
    pub poll: Duration,
    pub settle: Duration,
    pub once: bool,
    pub null_cursor: NullCursorPolicy,
    pub retry: RetryPolicy,
    /// How often to look for hard deletes (`--detect-deletes`); `None`: never.
    pub detect_deletes: Option<Duration>,
}

pub use crate::sync_log::Totals;

/// Runs passes until `--once` is done or a stop is requested. Transient errors (a lost
/// connection) are retried with backoff when polling; everything else ends the run.
pub async fn run<S: Source, O: Output>(
    source: &mut S,
    output: &mut O,
    store: &StateStore,
    state: &mut PipelineState,
    options: &SyncOptions,
    shutdown: &Shutdown,
) -> Result<Totals> {
    let mut totals = Totals::default();
    let mut backoff = Backoff::default();
    loop {
        match run_pass(source, output, store, state, options, shutdown, &mut totals).await {
            Ok(()) => backoff = Backoff::default(),
            // A stop that interrupted a retry: the batch was not checkpointed, and comes again
            // under the same id next run.
            Err(err)
                if shutdown.is_requested()
                    && !matches!(
                        err.kind(),
                        ErrorKind::Fatal | ErrorKind::TransformFatal | ErrorKind::Fenced
                    ) =>
            {
                tracing::info!("{}: stopped: {err:#}", state.name);
                return Ok(totals);
            }
            Err(err)
                if matches!(err.kind(), ErrorKind::Transient | ErrorKind::Module)
                    && !options.once =>
            {
                let wait = backoff.next(err.kind());
                tracing::warn!("{}: {err:#}; retrying in {wait:?}", state.name);
                if let Err(unrecorded) = store.record_error(&state.name, &err, None).await {
                    tracing::warn!("{}: {unrecorded:#}", state.name);
                }
                shutdown.sleep(wait).await;
            }
            Err(err) => return Err(err),
        }
        if options.once || shutdown.is_requested() {
            return Ok(totals);
        }
        shutdown.sleep(options.poll).await;
        if shutdown.is_requested() {
            return Ok(totals);
        }
    }
}

/// Waits between failed passes. A lost connection is tried again soon (from 0.5 s, doubling to
/// a minute); a module that fails (its deadline, its memory, a trap) waits longer each time,
/// from 1 s doubling to 5 minutes, so that a module spinning to its deadline on every batch
/// costs little guest CPU once it has failed a few times.
#[derive(Debug, Default)]
struct Backoff {
    transient: u32,
    module: u32,
}

impl Backoff {
    fn next(&mut self, kind: ErrorKind) -> Duration {
        let (failures, first, last) = match kind {
            ErrorKind::Module => (
                &mut self.module,
                Duration::from_secs(1),
                Duration::from_secs(300),
            ),
            _ => (
                &mut self.transient,
                Duration::from_millis(500),
                Duration::from_secs(60),
            ),
        };
        let wait = first.saturating_mul(1 << (*failures).min(16)).min(last);
        *failures += 1;
        wait
    }
}

async fn run_pass<S: Source, O: Output>(
    source: &mut S,
    output: &mut O,
    store: &StateStore,
    state: &mut PipelineState,
    options: &SyncOptions,
    shutdown: &Shutdown,
    totals: &mut Totals,
) -> Result<()> {
    if options.null_cursor == NullCursorPolicy::Refuse {
        let nulls = source.null_cursor_count().await?;
        if nulls > 0 {
            return Err(Error::invalid(format!(
                "{nulls} rows of {:?} have a NULL cursor column {:?} and would never be synced",
                state.identity.table, state.identity.cursor
            ))
            .with_hint("make the column NOT NULL (fill it in first), or pass --null-cursor oldest to deliver them first on a full sync"));
        }
    }

    let clock = source.clock(options.settle).await?;
    let mut letters = Letters::load(store, state).await?;
    let before = *totals;

    if let Some(pending) = state.pending.clone() {
        let page = source
            .read(
                &state.position,
                Until::Through(&pending.end),
                options.batch_size,
            )
            .await?;
        tracing::info!(
            "{}: redelivering batch {} ({} rows) that was not checkpointed",
            state.name,
            pending.id,
            page.rows.len()
        );
        match page.last.clone() {
            Some(end) => {
                totals.redelivered += page.rows.len() as u64;
                deliver(
                    output,
                    store,
                    state,
                    &mut letters,
                    page,
                    &pending.id,
                    &end,
                    options,
                    shutdown,
                    totals,
                )
                .await?
            }
            None => {
                let position = state.position.clone();
                store.advance(state, &position).await?;
            }
        }
    }

    let until = Until::Horizon(clock.horizon.as_deref());
    let mut page = source
        .read(&state.position, until, options.batch_size)
        .await?;
    // Estimated only for a backlog: a first page that is not full holds every row of the pass
    // (past NULL cursors, more may follow). Most passes of a polling pipeline find a few rows
    // or none, and a worker with hundreds of them would spend a statement a pass on the count.
    let pending_rows = match (&state.position, page.rows.len() < options.batch_size) {
        (Position::After(_) | Position::Start, true) => page.rows.len() as u64,
        _ => source.estimate(&state.position, until).await?,
    };
    let mut progress = Progress::new(&state.name, pending_rows);
    while !shutdown.is_requested() {
        let full = page.rows.len() >= options.batch_size;
        let Some(end) = page.last.clone() else {
            if let Position::Nulls { .. } = state.position {
                store.advance(state, &Position::Start).await?;
                page = source
                    .read(&state.position, until, options.batch_size)
                    .await?;
                continue;
            }
            break;
        };
        failpoint::hit("after_read").await;
        let id = batch_id(&state.name, &state.position, &end);
        store.begin_batch(state, &id, &end).await?;
        let rows = page.rows.len() as u64;
        // The next page is read while this one is handed on: reading moves no watermark, and
        // the database's time then overlaps the destination's.
        let read_ahead = async {
            match full {
                true => Some(source.read(&end, until, options.batch_size).await),
                false => None,
            }
        };
        let (delivered, next) = tokio::join!(
            deliver(
                output,
                store,
                state,
                &mut letters,
                page,
                &id,
                &end,
                options,
                shutdown,
                totals
            ),
            read_ahead
        );
        delivered?;
        progress.advance(rows);
        page = match next {
            Some(next) => next?,
            None if matches!(state.position, Position::Nulls { .. }) => {
                store.advance(state, &Position::Start).await?;
                source
                    .read(&state.position, until, options.batch_size)
                    .await?
            }
            None => break,
        };
    }
    progress.finish();

    let lag = match (&clock.now, &state.position) {
        (Some(now), Position::After(mark)) => source.lag_seconds(now, &mark.cursor),
        _ => None,
    };
    store
        .finish_pass(state, lag, clock.held_back.as_deref())
        .await?;
    let pass = totals.since(&before);
    if pass.rows > 0 || options.once {
        tracing::info!(
            "{}: {pass}; watermark {}{}",
            state.name,
            Driver::from_url(&state.identity.source).map_or_else(
                |_| state.position.to_string(),
                |driver| driver.shown_position(&state.position)
            ),
            lag.map(|lag| format!(", lag {lag:.1}s"))
                .unwrap_or_default()
        );
    }
    if clock.horizon.is_some() {
        log_waiting(source, state, options.settle, options.once).await?;
    }
    if let (Some(every), false) = (options.detect_deletes, shutdown.is_requested()) {
        let check = deletes::Check {
            every,
            batch_size: options.batch_size,
            retry: &options.retry,
            shutdown,
        };
        check
            .run_if_due(source, output, store, state, totals)
            .await?;
    }
    Ok(())
}

/// Hands a page on and checkpoints it: batch `id` ends at `end`, and was recorded as pending
/// before this. Rows it left behind become dead letters in the same step as the checkpoint.
#[allow(clippy::too_many_arguments)]
async fn deliver<O: Output>(
    output: &mut O,
    store: &StateStore,
    state: &mut PipelineState,
    letters: &mut Letters,
    page: Page,
    id: &str,
    end: &Position,
    options: &SyncOptions,
    shutdown: &Shutdown,
    totals: &mut Totals,
) -> Result<()> {
    let batch = Batch {
        id,
        pipeline: &state.name,
        rows: &page.rows,
    };
    failpoint::hit("before_deliver").await;
    let (delivered, usage) =
        deliver_with_retries(output, 0, batch, &options.retry, shutdown, Some(store)).await;
    let delivered = match delivered {
        Ok(delivered) => delivered,
        Err(err) => {
            // A failed attempt costs as much as a delivered one: charge it now, since no
            // checkpoint will carry it.
            if let Err(uncharged) = store.charge(&state.name, usage).await {
                tracing::warn!("{}: {uncharged:#}", state.name);
            }
            return Err(err);
        }
    };
    failpoint::hit("after_deliver").await;
    letters
        .keep(store, &state.name, id, &page.rows, &delivered)
        .await?;
    store
        .commit_batch(state, end, &page.rows, &delivered, usage)
        .await?;
    totals.rows += page.rows.len() as u64;
    totals.passed_on += delivered.passed_on as u64;
    totals.rejected += delivered.rejected.len() as u64;
    totals.parked += delivered.parked.len() as u64;
    totals.batches += 1;
    tracing::debug!(
        "{}: batch {id}: {} rows ({} deletes), watermark {end}",
        state.name,
        page.rows.len(),
        page.rows.deletes()
    );
    Ok(())
}

/// The id of the batch of `pipeline` that starts after `start` and ends at `end`: the same
/// range always gets the same id, so a destination can drop a batch it has seen.
pub fn batch_id(pipeline: &str, start: &Position, end: &Position) -> String {
    digest([pipeline, &describe(start), &describe(end)])
}

/// The id of a batch of dead letters sent again: the same letters always get the same id.
pub fn retry_batch_id(pipeline: &str, dead_letters: &[i64]) -> String {
    let ids: Vec<String> = dead_letters.iter().map(i64::to_string).collect();
    digest([pipeline, "retry", &ids.join(",")])
}

fn describe(position: &Position) -> String {
    match position {
        Position::Nulls { after_key } => format!("nulls\0{}", after_key.as_deref().unwrap_or("")),
        Position::Start => "start".to_owned(),
        Position::After(mark) => format!("after\0{}\0{}", mark.cursor, mark.key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Watermark;

    #[test]
    fn failing_modules_back_off_longer_than_lost_connections() {
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..11)
            .map(|_| backoff.next(ErrorKind::Module).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        // Each kind counts its own failures.
        assert_eq!(
            backoff.next(ErrorKind::Transient),
            Duration::from_millis(500)
        );
        assert_eq!(backoff.next(ErrorKind::Transient), Duration::from_secs(1));
        let mut backoff = Backoff::default();
        for _ in 0..20 {
            backoff.next(ErrorKind::Transient);
        }
        assert_eq!(backoff.next(ErrorKind::Transient), Duration::from_secs(60));
    }

    fn after(cursor: &str, key: &str) -> Position {
        Position::After(Watermark {
            cursor: cursor.into(),
            key: key.into(),
        })
    }

    #[test]
    fn batch_ids_depend_only_on_pipeline_and_range() {
        let a = batch_id(
            "users",
            &Position::Start,
            &after("2024-01-01T00:00:00.000001Z", "7"),
        );
        let b = batch_id(
            "users",
            &Position::Start,
            &after("2024-01-01T00:00:00.000001Z", "7"),
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
        assert_ne!(
            a,
            batch_id(
                "orders",
                &Position::Start,
                &after("2024-01-01T00:00:00.000001Z", "7")
            )
        );
        assert_ne!(
            a,
            batch_id(
                "users",
                &Position::Start,
                &after("2024-01-01T00:00:00.000002Z", "7")
            )
        );
        assert_ne!(
            batch_id("users", &after("a", "b"), &after("c", "d")),
            batch_id("users", &after("a\0b", ""), &after("c", "d"))
        );
    }
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod loop_tests;
