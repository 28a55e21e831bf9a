//! The sync loop: read a page after the watermark, hand it on, then move the watermark.
//!
//! One pass, top to bottom:
//! 1. Refuse NULL cursors unless the user opted in: a NULL would be passed over silently.
//! 2. Read the database's clock once: rows at or past the safe horizon wait for a later pass.
//! 3. Redeliver a batch that was handed on but not checkpointed (a crash), under its old id.
//! 4. Page by keyset on (cursor, key): record the batch as pending, then hand it on and
//!    checkpoint it ([`crate::delivery::step`], the step every batch takes).
//! 5. With `--detect-deletes`, when a check is due, deliver the deletes of keys the table no
//!    longer has ([`crate::engine::deletes`]): in sequence with the passes, never during one.
//!
//! The watermark only moves after delivery, so a crash at any instant loses nothing and
//! repeats at most the one batch in flight. A destination that asks for a batch again later
//! gets the same batch, under the same id, after a backoff; rows it rejects are kept as dead
//! letters and the watermark moves past them. A module that fails a batch on every attempt
//! has the rows it fails on alone parked as dead letters ([`crate::delivery::poison`]). What a
//! pass works with is one [`Pass`].

use std::time::Duration;

use crate::delivery::letters::Letters;
use crate::delivery::output::Output;
use crate::delivery::step::{Commit, Step};
use crate::engine::deletes;
use crate::engine::pass::Pass;
use crate::engine::progress::Progress;
use crate::engine::settings::SyncOptions;
use crate::engine::sync_log::{log_waiting, Totals};
use crate::model::backoff::Backoff;
use crate::model::error::{Error, ErrorKind, Result};
use crate::model::failpoint;
use crate::model::ids::batch_id;
use crate::model::shutdown::Shutdown;
use crate::model::{Delivered, NullCursorPolicy, Position};
use crate::source::{Driver, Page, Source, Until};
use crate::state::{PipelineState, StateStore};

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
    let step = Step {
        output,
        store,
        retry: &options.retry,
        shutdown,
        pipeline: state.name.clone(),
        letters: Letters::default(),
    };
    let mut pass = Pass {
        source,
        step,
        state,
        options,
        totals: Totals::default(),
    };
    let mut backoff = PassBackoff::default();
    loop {
        match run_pass(&mut pass).await {
            Ok(()) => backoff = PassBackoff::default(),
            // A stop that interrupted a retry: the batch was not checkpointed, and comes again
            // under the same id next run.
            Err(err)
                if shutdown.is_requested()
                    && !matches!(
                        err.kind(),
                        ErrorKind::Fatal | ErrorKind::TransformFatal | ErrorKind::Fenced
                    ) =>
            {
                tracing::info!("{}: stopped: {err:#}", pass.state.name);
                return Ok(pass.totals);
            }
            Err(err)
                if matches!(err.kind(), ErrorKind::Transient | ErrorKind::Module)
                    && !options.once =>
            {
                let wait = backoff.next(err.kind());
                tracing::warn!("{}: {err:#}; retrying in {wait:?}", pass.state.name);
                if let Err(unrecorded) = store.record_error(&pass.state.name, &err, None).await {
                    tracing::warn!("{}: {unrecorded:#}", pass.state.name);
                }
                shutdown.sleep(wait).await;
            }
            Err(err) => return Err(err),
        }
        if options.once || shutdown.is_requested() {
            return Ok(pass.totals);
        }
        shutdown.sleep(options.poll).await;
        if shutdown.is_requested() {
            return Ok(pass.totals);
        }
    }
}

/// Waits between failed passes. A lost connection is tried again soon (from 0.5 s, doubling to
/// a minute); a module that fails (its deadline, its memory, a trap) waits longer each time,
/// from 1 s doubling to 5 minutes, so that a module spinning to its deadline on every batch
/// costs little guest CPU once it has failed a few times. Each kind counts its own failures
/// with a [`Backoff`].
#[derive(Debug)]
struct PassBackoff {
    transient: Backoff,
    module: Backoff,
}

impl Default for PassBackoff {
    fn default() -> Self {
        PassBackoff {
            transient: Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
            module: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
        }
    }
}

impl PassBackoff {
    fn next(&mut self, kind: ErrorKind) -> Duration {
        match kind {
            ErrorKind::Module => self.module.next_wait(),
            _ => self.transient.next_wait(),
        }
    }
}

async fn run_pass<S: Source, O: Output>(pass: &mut Pass<'_, S, O>) -> Result<()> {
    let (options, store, shutdown) = (pass.options, pass.step.store, pass.step.shutdown);
    if options.null_cursor == NullCursorPolicy::Refuse {
        let nulls = pass.source.null_cursor_count().await?;
        if nulls > 0 {
            return Err(Error::invalid(format!(
                "{nulls} rows of {:?} have a NULL cursor column {:?} and would never be synced",
                pass.state.identity.table, pass.state.identity.cursor
            ))
            .with_hint("make the column NOT NULL (fill it in first), or pass --null-cursor oldest to deliver them first on a full sync"));
        }
    }

    let clock = pass.source.clock(options.settle).await?;
    pass.step.letters = Letters::load(store, pass.state).await?;
    let before = pass.totals;

    if let Some(pending) = pass.state.pending.clone() {
        let page = pass
            .source
            .read(
                &pass.state.position,
                Until::Through(&pending.end),
                options.batch_size,
            )
            .await?;
        tracing::info!(
            "{}: redelivering batch {} ({} rows) that was not checkpointed",
            pass.state.name,
            pending.id,
            page.rows.len()
        );
        match page.last.clone() {
            Some(end) => {
                pass.totals.redelivered += page.rows.len() as u64;
                let rows = Commit::Rows {
                    state: pass.state,
                    end: &end,
                };
                let delivered = pass.step.deliver(&pending.id, &page.rows, rows).await?;
                count(pass, &delivered, &page, &pending.id, &end);
            }
            None => {
                let position = pass.state.position.clone();
                store.advance(pass.state, &position).await?;
            }
        }
    }

    let until = Until::Horizon(clock.horizon.as_deref());
    let mut page = pass
        .source
        .read(&pass.state.position, until, options.batch_size)
        .await?;
    // Estimated only for a backlog: a first page that is not full holds every row of the pass
    // (past NULL cursors, more may follow). Most passes of a polling pipeline find a few rows
    // or none, and a worker with hundreds of them would spend a statement a pass on the count.
    let pending_rows = match (&pass.state.position, page.rows.len() < options.batch_size) {
        (Position::After(_) | Position::Start, true) => page.rows.len() as u64,
        _ => pass.source.estimate(&pass.state.position, until).await?,
    };
    let mut progress = Progress::new(&pass.state.name, pending_rows);
    while !shutdown.is_requested() {
        let full = page.rows.len() >= options.batch_size;
        let Some(end) = page.last.clone() else {
            if let Position::Nulls { .. } = pass.state.position {
                store.advance(pass.state, &Position::Start).await?;
                page = pass
                    .source
                    .read(&pass.state.position, until, options.batch_size)
                    .await?;
                continue;
            }
            break;
        };
        failpoint::hit("after_read").await;
        let id = batch_id(&pass.state.name, &pass.state.position, &end);
        store.begin_batch(pass.state, &id, &end).await?;
        let rows = page.rows.len() as u64;
        // The next page is read while this one is handed on: reading moves no watermark, and
        // the database's time then overlaps the destination's.
        let source = &mut *pass.source;
        let read_ahead = async {
            match full {
                true => Some(source.read(&end, until, options.batch_size).await),
                false => None,
            }
        };
        let commit = Commit::Rows {
            state: pass.state,
            end: &end,
        };
        let (delivered, next) =
            tokio::join!(pass.step.deliver(&id, &page.rows, commit), read_ahead);
        count(pass, &delivered?, &page, &id, &end);
        progress.advance(rows);
        page = match next {
            Some(next) => next?,
            None if matches!(pass.state.position, Position::Nulls { .. }) => {
                store.advance(pass.state, &Position::Start).await?;
                pass.source
                    .read(&pass.state.position, until, options.batch_size)
                    .await?
            }
            None => break,
        };
    }
    progress.finish();

    let lag = match (&clock.now, &pass.state.position) {
        (Some(now), Position::After(mark)) => pass.source.lag_seconds(now, &mark.cursor),
        _ => None,
    };
    store
        .finish_pass(pass.state, lag, clock.held_back.as_deref())
        .await?;
    let done = pass.totals.since(&before);
    if done.rows > 0 || options.once {
        tracing::info!(
            "{}: {done}; watermark {}{}",
            pass.state.name,
            Driver::from_url(&pass.state.identity.source).map_or_else(
                |_| pass.state.position.to_string(),
                |driver| driver.shown_position(&pass.state.position)
            ),
            lag.map(|lag| format!(", lag {lag:.1}s"))
                .unwrap_or_default()
        );
    }
    if clock.horizon.is_some() {
        log_waiting(pass.source, pass.state, options.settle, options.once).await?;
    }
    if let (Some(every), false) = (options.detect_deletes, shutdown.is_requested()) {
        deletes::run_if_due(pass, every).await?;
    }
    Ok(())
}

/// Counts batch `id` of `page`, checkpointed at `end`, in the run's totals.
fn count<S, O>(
    pass: &mut Pass<'_, S, O>,
    delivered: &Delivered,
    page: &Page,
    id: &str,
    end: &Position,
) {
    pass.totals.count(page.rows.len() as u64, delivered);
    tracing::debug!(
        "{}: batch {id}: {} rows ({} deletes), watermark {end}",
        pass.state.name,
        page.rows.len(),
        page.rows.deletes()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_modules_back_off_longer_than_lost_connections() {
        let mut backoff = PassBackoff::default();
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
        let mut backoff = PassBackoff::default();
        for _ in 0..20 {
            backoff.next(ErrorKind::Transient);
        }
        assert_eq!(backoff.next(ErrorKind::Transient), Duration::from_secs(60));
    }

    /// Pins both sequences whole, and that a new `PassBackoff` (what a pass that went well leaves)
    /// starts them over.
    #[test]
    fn the_waits_between_failed_passes_stay_as_they_are() {
        let mut backoff = PassBackoff::default();
        let transient: Vec<u128> = (0..10)
            .map(|_| backoff.next(ErrorKind::Transient).as_millis())
            .collect();
        assert_eq!(
            transient,
            [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
        );
        // Every kind but a module's failure counts as a lost connection.
        assert_eq!(backoff.next(ErrorKind::Fatal), Duration::from_secs(60));
        let module: Vec<u64> = (0..12)
            .map(|_| backoff.next(ErrorKind::Module).as_secs())
            .collect();
        assert_eq!(module, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        for _ in 0..100 {
            backoff.next(ErrorKind::Module);
            backoff.next(ErrorKind::Transient);
        }
        assert_eq!(backoff.next(ErrorKind::Module), Duration::from_secs(300));
        assert_eq!(backoff.next(ErrorKind::Transient), Duration::from_secs(60));
        backoff = PassBackoff::default();
        assert_eq!(backoff.next(ErrorKind::Module), Duration::from_secs(1));
        assert_eq!(
            backoff.next(ErrorKind::Transient),
            Duration::from_millis(500)
        );
    }
}

#[cfg(test)]
mod loop_tests {
    //! The sync loop against an in-memory table and a scripted output, over a real (file) SQLite
    //! state store: no database server needed. Each test states one promise of the loop.

    use std::collections::VecDeque;
    use std::time::Duration;

    use super::*;
    use crate::delivery::retry::RetryPolicy;
    use crate::model::{Batch, Delivered, Op, Rows, Usage, Watermark};
    use crate::source::{Clock, Page};
    use crate::state::testing::{identity, TempDir};

    /// A table of `(cursor, key)` rows; cursors and keys are rendered zero-padded so that their
    /// text order is their numeric order, as a driver's exact text form would compare.
    #[derive(Default)]
    struct Table {
        rows: Vec<(u64, u64)>,
        reads: usize,
    }

    impl Table {
        fn with_rows(rows: impl IntoIterator<Item = (u64, u64)>) -> Self {
            let mut table = Table::default();
            for row in rows {
                table.upsert(row.0, row.1);
            }
            table
        }

        /// Inserts or updates the row with `key`, which then has cursor `cursor`.
        fn upsert(&mut self, cursor: u64, key: u64) {
            self.rows.retain(|&(_, k)| k != key);
            self.rows.push((cursor, key));
            self.rows.sort();
        }

        fn mark(cursor: u64, key: u64) -> Watermark {
            Watermark {
                cursor: format!("{cursor:012}"),
                key: format!("{key:012}"),
            }
        }

        fn selected(&self, after: &Position, until: Until<'_>) -> Vec<(u64, u64)> {
            let after = match after {
                Position::After(mark) => Some((mark.cursor.clone(), mark.key.clone())),
                _ => None,
            };
            self.rows
                .iter()
                .copied()
                .filter(|&(c, k)| {
                    let here = Self::mark(c, k);
                    let here = (here.cursor, here.key);
                    let past_start = after.as_ref().is_none_or(|after| &here > after);
                    let before_end = match until {
                        Until::Horizon(None) => true,
                        Until::Horizon(Some(horizon)) => here.0.as_str() < horizon,
                        Until::Through(Position::After(end)) => {
                            here <= (end.cursor.clone(), end.key.clone())
                        }
                        Until::Through(_) => false,
                    };
                    past_start && before_end
                })
                .collect()
        }
    }

    /// This table has no deletes to find: these tests run without `--detect-deletes`.
    impl crate::source::TableKeys for Table {
        async fn key_digests(&mut self, _bits: u32) -> Result<(crate::model::key::Digests, u64)> {
            Ok(Default::default())
        }

        async fn present_keys(
            &mut self,
            _keys: &[crate::model::key::Key],
        ) -> Result<std::collections::HashSet<crate::model::key::Key>> {
            Ok(Default::default())
        }

        async fn delivered_keys(
            &mut self,
            _through: &Position,
            _after: Option<&crate::model::key::Key>,
            _limit: usize,
        ) -> Result<Vec<crate::model::key::Key>> {
            Ok(Vec::new())
        }
    }

    impl Source for Table {
        async fn null_cursor_count(&mut self) -> Result<u64> {
            Ok(0)
        }

        async fn clock(&mut self, _settle: Duration) -> Result<Clock> {
            Ok(Clock::default())
        }

        async fn count(&mut self, after: &Position, until: Until<'_>) -> Result<u64> {
            Ok(self.selected(after, until).len() as u64)
        }

        async fn read(&mut self, after: &Position, until: Until<'_>, limit: usize) -> Result<Page> {
            self.reads += 1;
            let selected: Vec<_> = self
                .selected(after, until)
                .into_iter()
                .take(limit)
                .collect();
            let mut rows = Rows::with_capacity(selected.len());
            for (cursor, key) in &selected {
                rows.buffer()
                    .extend_from_slice(format!(r#"{{"id":{key},"v":{cursor}}}"#).as_bytes());
                rows.end_row(Op::Upsert);
            }
            let last = selected
                .last()
                .map(|&(cursor, key)| Position::After(Self::mark(cursor, key)));
            Ok(Page { rows, last })
        }

        fn lag_seconds(&self, _now: &str, _cursor: &str) -> Option<f64> {
            None
        }

        fn key_column(&self) -> &str {
            "id"
        }
    }

    /// An output that records what it was handed, answering each attempt from a script (then
    /// success once the script is used up).
    #[derive(Default)]
    struct Recorder {
        script: VecDeque<Result<Delivered>>,
        /// Every attempt: batch id and row ids.
        attempts: Vec<(String, Vec<u64>)>,
    }

    impl Recorder {
        fn failing_with(errors: impl IntoIterator<Item = Error>) -> Self {
            Recorder {
                script: errors.into_iter().map(Err).collect(),
                ..Recorder::default()
            }
        }

        /// Row ids of the attempts that succeeded, in order.
        fn delivered_ids(&self, failures: usize) -> Vec<u64> {
            self.attempts
                .iter()
                .skip(failures)
                .flat_map(|(_, ids)| ids.iter().copied())
                .collect()
        }
    }

    impl Output for Recorder {
        async fn deliver(&mut self, batch: Batch<'_>) -> (Result<Delivered>, Usage) {
            let ids = batch
                .rows
                .iter()
                .map(|(_, row)| {
                    let row: serde_json::Value = serde_json::from_slice(row).unwrap_or_default();
                    row["id"].as_u64().unwrap_or(u64::MAX)
                })
                .collect();
            self.attempts.push((batch.id.to_owned(), ids));
            let used = Usage {
                time: Duration::from_millis(1),
                fuel: 0,
                peak_memory: 0,
            };
            (
                self.script.pop_front().unwrap_or(Ok(Delivered::default())),
                used,
            )
        }
    }

    struct Harness {
        _dir: TempDir,
        store: StateStore,
        state: PipelineState,
    }

    impl Harness {
        async fn new(name: &str) -> Self {
            let dir = TempDir::new();
            let store = dir.open().await;
            let state = store
                .load_or_create(name, &identity(), Position::Start)
                .await
                .unwrap();
            Harness {
                _dir: dir,
                store,
                state,
            }
        }

        async fn pass(&mut self, table: &mut Table, output: &mut Recorder) -> Result<Totals> {
            run(
                table,
                output,
                &self.store,
                &mut self.state,
                &options(),
                &Shutdown::default(),
            )
            .await
        }

        /// The state as a fresh process would load it.
        async fn reloaded(&self) -> PipelineState {
            self.store.load(&self.state.name).await.unwrap().unwrap()
        }
    }

    fn options() -> SyncOptions {
        SyncOptions {
            batch_size: 3,
            poll: Duration::from_millis(1),
            settle: Duration::ZERO,
            once: true,
            null_cursor: NullCursorPolicy::Refuse,
            retry: RetryPolicy {
                max_retries: 2,
                backoff: Duration::from_millis(1),
                // Module failures end the batch at once here; poison isolation has tests of its
                // own (poison_tests.rs).
                on_poison: crate::delivery::retry::OnPoison::Stop,
            },
            detect_deletes: None,
        }
    }

    #[tokio::test]
    async fn every_row_is_delivered_once_in_keyset_order_and_the_watermark_ends_at_the_last() {
        let mut harness = Harness::new("full").await;
        let mut table = Table::with_rows((1..=10).map(|key| (100 + key / 4, key)));
        let mut output = Recorder::default();
        let totals = harness.pass(&mut table, &mut output).await.unwrap();
        assert_eq!(totals.rows, 10);
        assert_eq!(totals.batches, 4);
        assert_eq!(output.delivered_ids(0), (1..=10).collect::<Vec<_>>());
        let state = harness.reloaded().await;
        assert_eq!(state.position, Position::After(Table::mark(102, 10)));
        assert_eq!(state.pending, None);
        assert_eq!(state.rows_synced, 10);
    }

    #[tokio::test]
    async fn a_tie_larger_than_a_batch_is_paged_without_loss_or_repeat() {
        let mut harness = Harness::new("tie").await;
        let mut table = Table::with_rows((1..=8).map(|key| (7, key)));
        let mut output = Recorder::default();
        harness.pass(&mut table, &mut output).await.unwrap();
        assert_eq!(output.delivered_ids(0), (1..=8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_second_pass_delivers_only_rows_changed_since_the_first() {
        let mut harness = Harness::new("delta").await;
        let mut table = Table::with_rows((1..=5).map(|key| (10, key)));
        let mut output = Recorder::default();
        harness.pass(&mut table, &mut output).await.unwrap();
        table.upsert(11, 2);
        table.upsert(12, 6);
        let mut second = Recorder::default();
        let totals = harness.pass(&mut table, &mut second).await.unwrap();
        assert_eq!(totals.rows, 2);
        assert_eq!(second.delivered_ids(0), vec![2, 6]);
    }

    #[tokio::test]
    async fn a_failed_delivery_keeps_the_watermark_and_the_next_run_redelivers_under_the_same_id() {
        let mut harness = Harness::new("crash").await;
        let mut table = Table::with_rows((1..=6).map(|key| (key, key)));
        // The second batch fails for good (say, the process died while handing it on).
        let mut output = Recorder::default();
        output.script.push_back(Ok(Delivered::default()));
        output
            .script
            .push_back(Err(Error::fatal("destination down")));
        let err = harness.pass(&mut table, &mut output).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Fatal);
        let failed_id = output.attempts[1].0.clone();
        let state = harness.reloaded().await;
        assert_eq!(state.position, Position::After(Table::mark(3, 3)));
        assert_eq!(
            state.pending.as_ref().map(|p| p.id.as_str()),
            Some(&*failed_id)
        );

        // A new process: the pending batch comes first, under its old id, then the rest.
        harness.state = state;
        let mut again = Recorder::default();
        harness.pass(&mut table, &mut again).await.unwrap();
        assert_eq!(again.attempts[0].0, failed_id);
        assert_eq!(again.delivered_ids(0), vec![4, 5, 6]);
        assert_eq!(harness.reloaded().await.rows_synced, 6);
    }

    #[tokio::test]
    async fn a_batch_asked_again_later_is_retried_under_the_same_id_then_given_up() {
        let mut harness = Harness::new("retry").await;
        let mut table = Table::with_rows([(1, 1), (2, 2)]);
        let later = || Error::retry_later("busy", Some(Duration::from_millis(1)));
        let mut output = Recorder::failing_with([later()]);
        harness.pass(&mut table, &mut output).await.unwrap();
        assert_eq!(output.attempts.len(), 2);
        assert_eq!(output.attempts[0], output.attempts[1]);
        assert_eq!(harness.reloaded().await.accounting.retries, 1);

        // Past --max-retries the pipeline stops and its watermark stays.
        table.upsert(3, 3);
        let mut output = Recorder::failing_with([later(), later(), later()]);
        let err = harness.pass(&mut table, &mut output).await.unwrap_err();
        assert!(
            format!("{err}").contains("gave up after 2 retries"),
            "{err}"
        );
        assert_eq!(output.attempts.len(), 3);
        let state = harness.reloaded().await;
        assert_eq!(state.position, Position::After(Table::mark(2, 2)));
    }

    #[tokio::test]
    async fn rejected_rows_become_dead_letters_and_the_watermark_moves_past_them() {
        let mut harness = Harness::new("rejected").await;
        let mut table = Table::with_rows([(1, 1), (2, 2)]);
        let mut output = Recorder::default();
        output.script.push_back(Ok(Delivered {
            rejected: vec![crate::model::RejectedRow {
                index: 1,
                row: r#"{"op":"upsert","row":{"id":2}}"#.into(),
                reason: "bad email".into(),
                module: "webhook".into(),
                batch: None,
            }],
            parked: Vec::new(),
            passed_on: 1,
        }));
        harness.pass(&mut table, &mut output).await.unwrap();
        let state = harness.reloaded().await;
        assert_eq!(state.position, Position::After(Table::mark(2, 2)));
        assert_eq!(state.accounting.rows_rejected, 1);
        let letters = harness.store.dead_letters("rejected", 0, 10).await.unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].reason, "bad email");
    }

    #[tokio::test]
    async fn failed_attempts_are_charged_to_the_pipeline() {
        let mut harness = Harness::new("charged").await;
        let mut table = Table::with_rows([(1, 1)]);
        let mut output = Recorder::failing_with([Error::new(ErrorKind::Module, "trap")]);
        harness.pass(&mut table, &mut output).await.unwrap_err();
        let state = harness.reloaded().await;
        assert!(
            state.accounting.usage.time > Duration::ZERO,
            "{:?}",
            state.accounting
        );
        assert_eq!(state.position, Position::Start);
    }
}
