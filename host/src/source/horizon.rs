//! The safe horizon of integer cursors: the largest id below which no row can still commit.
//!
//! A sequence (PostgreSQL) or an auto-increment counter (InnoDB) hands ids out in increasing
//! order, but transactions commit in any order: a row with id 7 may become visible a second
//! after the row with id 8. A reader that moved its watermark to 8 would never see 7. So a pass
//! only reads ids that are *final*: every transaction that could still commit an id at or below
//! them has ended.
//!
//! # The rule
//!
//! At each pass the driver takes a *sighting*: `M`, the largest id visible in a snapshot `S`,
//! and then, from a list of the server's transactions read after `S`, the set `W` of those that
//! may hold an id (on PostgreSQL the transactions holding a write lock on the table or its
//! sequence; on InnoDB those that hold table locks or are inside a statement). Every id up to
//! `M` is final as soon as every transaction of `W` has ended, committed or rolled back.
//!
//! Why: let a transaction `X` commit a row with id `i <= M` that `S` did not show. `X` drew `i`
//! before the id `M` was drawn (ids are handed out in order), `M` was drawn before its row
//! committed, and that commit came before `S`. So `X` had drawn its id, and not committed,
//! when `S` was taken; the driver's list, read after `S`, shows `X` still open (`X` is in
//! `W`) unless `X` had ended by then. Either way, once every member of `W` has ended, `X` has
//! ended too, and a read that starts after that sees its row. An id drawn after `S` is above
//! `M`, so later transactions cannot land below it.
//!
//! Each sighting is kept until its own set has ended; none is replaced by a newer one, since
//! with writers that overlap, each new set would again hold a writer still open, and the
//! horizon would never move. Sightings end in order of their sets, and the horizon is the
//! largest `M` of those that ended, so it only ever grows. Sightings whose `M` adds nothing
//! are not kept, and when many wait behind one long transaction, the middle ones are thinned
//! out (the oldest end first, the newest carry the largest `M`).
//!
//! The drivers say which transactions may hold an id and how soon after `S` their list is
//! complete (PostgreSQL's lock table at once; InnoDB's `innodb_trx` only once its cache has been
//! refilled after `S`). When a server does not show other transactions at all, the sightings
//! become final once they are `--settle` old instead: ids whose transactions commit within
//! `--settle` of a higher id becoming visible are delivered, a slower one may be passed over.
//!
//! Not covered, whatever the server: ids the application assigns itself (or draws from a
//! sequence in one transaction and inserts in another, as ORMs with "pooled" id generators
//! do), and sequences that hand ids out in blocks per session (PostgreSQL `CACHE` above 1).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};

use crate::model::error::Result;

/// How many sightings wait at most; more are thinned out in the middle.
const MAX_PENDING: usize = 512;

/// A transaction holds the horizon back this long before the log says so.
const WARN_AFTER: Duration = Duration::from_secs(60);

/// The first pass of a process looks again this long for some id to become final: it has no
/// earlier sighting to fall back on, and a `--once` run on a busy table would otherwise find a
/// writer open at its only look, every time, and deliver nothing.
pub(crate) const FIRST_PASS_WAIT: Duration = Duration::from_secs(2);

/// How often that first pass looks again.
const LOOK_AGAIN: Duration = Duration::from_millis(100);

/// A driver that sights the integer horizon of its table.
pub(crate) trait SightsIds: Send {
    fn ids(&mut self) -> &mut IdHorizon;

    /// `Some(settle)` when the server shows no other transactions: ids are final by age.
    fn blind(&self, settle: Duration) -> Option<Duration>;

    /// Takes one sighting and reads which transactions ended (see the module's rule).
    fn sight_ids(&mut self, settle: Duration) -> impl Future<Output = Result<()>> + Send;

    /// The clock of a pass over an integer cursor: one sighting, or on the process's first
    /// pass as many as [`FIRST_PASS_WAIT`] allows until some id is final.
    fn id_clock(&mut self, settle: Duration) -> impl Future<Output = Result<super::Clock>> + Send {
        async move {
            let started = Instant::now();
            self.sight_ids(settle).await?;
            while self.ids().looks_again(started) {
                tokio::time::sleep(LOOK_AGAIN).await;
                self.sight_ids(settle).await?;
            }
            self.ids().first_pass_over();
            let blind = self.blind(settle);
            Ok(self.ids().clock(blind))
        }
    }
}

/// Rows are not said to be held back (in `host status`) until they have waited this long: a
/// writer that commits within it is the ordinary traffic of a busy table.
const REPORT_AFTER: Duration = Duration::from_secs(1);

/// One open transaction that may hold an id, as a driver lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Writer {
    /// Names one transaction, never reused for another while this one lives (a session's
    /// next transaction has another id).
    pub id: String,
    /// How a person finds it: `pid 4242 (user app)`, `thread 12`.
    pub label: String,
    /// How long it had been open when listed, when the server says.
    pub open_for: Option<Duration>,
}

/// One sighting: ids up to `max` are final once every transaction of `waiting_for` has ended.
#[derive(Debug)]
struct Sighting {
    max: i128,
    at: Instant,
    /// `None` until a list of transactions complete for this sighting has been read.
    waiting_for: Option<BTreeSet<String>>,
}

/// A transaction seen holding a sighting back.
#[derive(Debug)]
struct Seen {
    label: String,
    /// When it was first listed, and how long it had been open then (if known).
    first: Instant,
    open_before: Option<Duration>,
}

impl Seen {
    fn open_for(&self, now: Instant) -> Duration {
        self.open_before.unwrap_or_default() + now.saturating_duration_since(self.first)
    }
}

/// The integer horizon of one table, kept across the passes of a process.
#[derive(Debug)]
pub(crate) struct IdHorizon {
    table: String,
    /// Every id up to this one is final.
    done: Option<i128>,
    pending: VecDeque<Sighting>,
    seen: HashMap<String, Seen>,
    warned: HashSet<String>,
    /// The least and greatest value the horizon's placeholder can carry.
    least: i128,
    greatest: i128,
    /// Whether the first pass of the process is over (see [`FIRST_PASS_WAIT`]).
    first_pass_over: bool,
}

impl IdHorizon {
    /// A horizon for `table` whose bound is bound as a value between `least` and `greatest`.
    pub fn new(table: &str, least: i128, greatest: i128) -> Self {
        IdHorizon {
            table: table.to_owned(),
            done: None,
            pending: VecDeque::new(),
            seen: HashMap::new(),
            warned: HashSet::new(),
            least,
            greatest,
            first_pass_over: false,
        }
    }

    /// The table, as the user named it.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether any id has been found final yet in this process.
    pub fn has_final(&self) -> bool {
        self.done.is_some()
    }

    /// Whether a sighting still waits.
    pub fn is_waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether a sighting waits for a list of transactions complete for it.
    pub fn needs_list(&self) -> bool {
        self.pending.iter().any(|s| s.waiting_for.is_none())
    }

    /// Whether the first pass, started at `started`, should look again (see
    /// [`FIRST_PASS_WAIT`]).
    pub fn looks_again(&self, started: Instant) -> bool {
        !self.first_pass_over
            && !self.has_final()
            && self.is_waiting()
            && started.elapsed() < FIRST_PASS_WAIT
    }

    /// The first pass has taken its sightings: later passes look once.
    pub fn first_pass_over(&mut self) {
        self.first_pass_over = true;
    }

    /// The clock of a pass: the bound and why rows wait; `blind` is `--settle` when the
    /// server shows no other transactions.
    pub fn clock(&self, blind: Option<Duration>) -> super::Clock {
        super::Clock {
            horizon: self.bound(),
            now: None,
            held_back: self.held_back(blind),
        }
    }

    /// `max` (the largest id a snapshot showed; `None` for an empty table) was seen in a
    /// snapshot taken before `at`.
    pub fn sight(&mut self, max: Option<i128>, at: Instant) {
        let Some(max) = max else { return };
        // A sighting at or below one already kept, or below what is final, adds nothing: the
        // older one ends no later.
        let known = self.pending.back().map(|s| s.max).or(self.done);
        if known.is_some_and(|known| max <= known) {
            return;
        }
        self.pending.push_back(Sighting {
            max,
            at,
            waiting_for: None,
        });
        if self.pending.len() > MAX_PENDING {
            self.pending.remove(MAX_PENDING / 2);
        }
    }

    /// The transactions open now, from a list the server filled after `filled_after` (`None`:
    /// at some unknown time, but after every earlier list). Sightings taken at or before
    /// `filled_after` wait for those of the list still open; sightings that are waiting lose
    /// those no longer listed (a list filled later than one that showed a transaction, and
    /// without it, shows that it ended).
    pub fn listed(&mut self, writers: &[Writer], filled_after: Option<Instant>) {
        let now = Instant::now();
        let open: BTreeSet<String> = writers.iter().map(|w| w.id.clone()).collect();
        for sighting in &mut self.pending {
            match &mut sighting.waiting_for {
                Some(waiting) => waiting.retain(|id| open.contains(id)),
                None if filled_after.is_some_and(|filled| sighting.at <= filled) => {
                    sighting.waiting_for = Some(open.clone())
                }
                None => {}
            }
        }
        for writer in writers {
            self.seen.entry(writer.id.clone()).or_insert_with(|| Seen {
                label: writer.label.clone(),
                first: now,
                open_before: writer.open_for,
            });
        }
        while let Some(index) = self
            .pending
            .iter()
            .rposition(|s| s.waiting_for.as_ref().is_some_and(BTreeSet::is_empty))
        {
            let max = self.pending[index].max;
            self.pending.drain(..=index);
            self.done = Some(self.done.map_or(max, |done| done.max(max)));
        }
        let waited_on: HashSet<&String> = self
            .pending
            .iter()
            .filter_map(|s| s.waiting_for.as_ref())
            .flatten()
            .collect();
        self.seen.retain(|id, _| waited_on.contains(id));
        self.warned.retain(|id| waited_on.contains(id));
        self.warn_long_writers(now);
    }

    /// Without a view of other transactions: sightings at least `settle` old are final.
    pub fn settled(&mut self, settle: Duration) {
        let now = Instant::now();
        while let Some(first) = self.pending.front() {
            if now.saturating_duration_since(first.at) < settle {
                break;
            }
            let max = first.max;
            self.pending.pop_front();
            self.done = Some(self.done.map_or(max, |done| done.max(max)));
        }
    }

    /// The exclusive bound of a read: one past the largest final id; the least value when none
    /// is final yet (nothing is read); `None` when the largest possible id is final.
    pub fn bound(&self) -> Option<String> {
        match self.done {
            None => Some(self.least.to_string()),
            Some(done) if done >= self.greatest => None,
            Some(done) => Some((done + 1).max(self.least).to_string()),
        }
    }

    /// Why rows wait, once they have waited [`REPORT_AFTER`]: the transaction that holds the
    /// oldest waiting sighting back the longest, or that no list of transactions came.
    pub fn held_back(&self, blind: Option<Duration>) -> Option<String> {
        let now = Instant::now();
        let oldest = self.pending.front()?;
        if now.saturating_duration_since(oldest.at) < REPORT_AFTER {
            return None;
        }
        let above = match self.done {
            Some(done) => format!("ids above {done}"),
            None => "all ids".to_owned(),
        };
        if let Some(settle) = blind {
            return Some(format!(
                "{above} wait until they are {} old (--settle): the server shows no other \
                 transactions to this connection",
                humantime::format_duration(settle)
            ));
        }
        let Some(waiting) = &oldest.waiting_for else {
            return Some(format!(
                "{above} wait for a list of open transactions that the server has not \
                 refreshed since they were seen"
            ));
        };
        let holder = waiting
            .iter()
            .filter_map(|id| self.seen.get(id))
            .max_by_key(|seen| seen.open_for(now))?;
        Some(format!(
            "{above} wait for transaction {}, open for {:.1}s",
            holder.label,
            holder.open_for(now).as_secs_f64()
        ))
    }

    fn warn_long_writers(&mut self, now: Instant) {
        for (id, seen) in &self.seen {
            let open_for = seen.open_for(now);
            if open_for >= WARN_AFTER && self.warned.insert(id.clone()) {
                tracing::warn!(
                    "transaction {} has been open for {}s and may still commit ids of {}: rows \
                     with higher ids wait until it ends",
                    seen.label,
                    open_for.as_secs(),
                    self.table
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(id: &str) -> Writer {
        Writer {
            id: id.into(),
            label: format!("pid {id}"),
            open_for: None,
        }
    }

    fn horizon() -> IdHorizon {
        IdHorizon::new("t", i64::MIN.into(), i64::MAX.into())
    }

    #[test]
    fn nothing_is_read_before_a_sighting_ends() {
        let mut h = horizon();
        assert_eq!(h.bound().as_deref(), Some("-9223372036854775808"));
        let at = Instant::now();
        h.sight(Some(10), at);
        h.listed(&[writer("a")], Some(at));
        assert_eq!(h.bound().as_deref(), Some("-9223372036854775808"));
        // The writer ends: everything up to 10 is final.
        h.listed(&[], Some(Instant::now()));
        assert_eq!(h.bound().as_deref(), Some("11"));
        assert!(!h.is_waiting());
    }

    #[test]
    fn an_empty_list_makes_the_sighting_final_at_once() {
        let mut h = horizon();
        let at = Instant::now();
        h.sight(Some(5), at);
        h.listed(&[], Some(at));
        assert_eq!(h.bound().as_deref(), Some("6"));
    }

    #[test]
    fn overlapping_writers_never_stall_the_horizon() {
        // Each pass sees a new writer open while the previous one is still open: every
        // sighting still ends once its own writers have.
        let mut h = horizon();
        let mut bounds = Vec::new();
        for pass in 0..6_i128 {
            let at = Instant::now();
            h.sight(Some(pass * 10 + 10), at);
            let open: Vec<Writer> = [pass, pass + 1]
                .iter()
                .map(|w| writer(&w.to_string()))
                .collect();
            h.listed(&open, Some(at));
            bounds.push(h.bound());
        }
        // Sighting N waits for writers N and N+1; at pass N+2 both have ended.
        assert_eq!(bounds[0].as_deref(), Some("-9223372036854775808"));
        assert_eq!(bounds[1].as_deref(), Some("-9223372036854775808"));
        assert_eq!(bounds[2].as_deref(), Some("11"));
        assert_eq!(bounds[5].as_deref(), Some("41"));
    }

    #[test]
    fn a_long_writer_holds_back_only_what_it_may_hold() {
        let mut h = horizon();
        let at = Instant::now();
        h.sight(Some(10), at);
        h.listed(&[], Some(at));
        let at = Instant::now();
        h.sight(Some(20), at);
        h.listed(&[writer("long")], Some(at));
        let at = Instant::now();
        h.sight(Some(30), at);
        h.listed(&[writer("long"), writer("quick")], Some(at));
        assert_eq!(h.bound().as_deref(), Some("11"));
        h.listed(&[writer("long")], Some(Instant::now()));
        assert_eq!(h.bound().as_deref(), Some("11"));
        h.listed(&[writer("other")], Some(Instant::now()));
        assert_eq!(h.bound().as_deref(), Some("31"));
    }

    #[test]
    fn a_list_filled_before_a_sighting_does_not_end_it() {
        let mut h = horizon();
        let filled = Instant::now();
        let at = filled + Duration::from_millis(50);
        h.sight(Some(10), at);
        h.listed(&[], Some(filled));
        assert!(h.is_waiting());
        assert_eq!(h.bound().as_deref(), Some("-9223372036854775808"));
        h.listed(&[], Some(at));
        assert_eq!(h.bound().as_deref(), Some("11"));
    }

    #[test]
    fn the_largest_id_needs_no_bound_and_the_least_bound_stays_in_range() {
        let mut h = IdHorizon::new("t", 0, u64::MAX.into());
        assert_eq!(h.bound().as_deref(), Some("0"));
        let at = Instant::now();
        h.sight(Some(u64::MAX.into()), at);
        h.listed(&[], Some(at));
        assert_eq!(h.bound(), None);
    }

    #[test]
    fn blind_sightings_end_after_settle() {
        let mut h = horizon();
        h.sight(Some(3), Instant::now() - Duration::from_secs(10));
        h.sight(Some(7), Instant::now());
        h.settled(Duration::from_secs(5));
        assert_eq!(h.bound().as_deref(), Some("4"));
        h.settled(Duration::ZERO);
        assert_eq!(h.bound().as_deref(), Some("8"));
    }

    #[test]
    fn many_waiting_sightings_are_thinned_but_keep_the_ends() {
        let mut h = horizon();
        let at = Instant::now();
        for max in 1..=(MAX_PENDING as i128 + 100) {
            h.sight(Some(max), at);
            h.listed(&[writer("long"), writer(&max.to_string())], Some(at));
        }
        assert_eq!(h.pending.len(), MAX_PENDING);
        assert_eq!(h.pending.front().unwrap().max, 1);
        h.listed(&[], Some(Instant::now()));
        assert_eq!(
            h.bound().as_deref(),
            Some(&*(MAX_PENDING as i128 + 101).to_string())
        );
    }

    #[test]
    fn status_names_the_longest_open_writer() {
        let mut h = horizon();
        let at = Instant::now() - Duration::from_secs(5);
        h.sight(Some(10), at);
        let mut long = writer("1/5");
        long.label = "pid 42 (user app)".into();
        long.open_for = Some(Duration::from_secs(90));
        h.listed(&[writer("2/7"), long], Some(at));
        let why = h.held_back(None).unwrap();
        assert!(
            why.starts_with("all ids wait for transaction pid 42 (user app), open for 90"),
            "{why}"
        );
        assert!(h.warned.contains("1/5"));
        h.listed(&[], Some(Instant::now()));
        assert_eq!(h.held_back(None), None);
        assert!(h.warned.is_empty());
    }
}
