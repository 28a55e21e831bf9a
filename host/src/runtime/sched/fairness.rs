//! Fair shares of guest CPU between pipelines.
//!
//! Guest code runs on a thread of its own (the guest runtime, [`super::executor`]). Left
//! alone, N modules spinning until their deadlines would share it in turns of a whole epoch
//! tick each, and a healthy pipeline's short call would wait behind all of them: the healthy
//! tenant of `bench/many-pipelines.sh --fault-isolation` ran at 0.35x of its solo speed next
//! to 12 bad tenants.
//!
//! The rule: guest code runs only while its call holds one of [`GUEST_SLOTS`] slots. When calls of
//! several pipelines want a slot, it goes to the pipeline that has had the least guest time
//! during its calls in progress (virtual time, as in fair queueing), and a pipeline that starts
//! queueing goes just ahead of the least served one ([`HEAD_START`]). So a pipeline that needs
//! little guest time waits for little, and each of N pipelines with runnable guest code gets
//! about 1/N of the slot, however many modules or calls it runs.
//!
//! A call checks in at the first epoch check of its guest code and at every epoch tick after
//! ([`Turn::tick`], from the epoch callback): there it keeps its slot, hands it to a waiter with
//! less guest time, or waits in line. The first in line advances the engine's epoch, so a
//! running holder checks in at once rather than at its next tick. A holder that does not check
//! in (its guest waits in a host function, an HTTP request) loses the slot after [`GRACE`] past
//! such a nudge, or past a missed tick, and queues again when its guest code runs again. A
//! call's deadline counts while it waits: it ends in line as it would have ended running.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use wasmtime::{Engine, Trap};

use super::limits::EPOCH_TICK;

/// Guest code of at most this many calls runs at once: the guest runtime's one thread.
pub const GUEST_SLOTS: usize = 1;
/// How long a holder has to check in, after a nudge or a tick it should have seen, before the
/// next in line takes its slot.
pub const GRACE: Duration = Duration::from_millis(2);
/// How far ahead of the least served pipeline a pipeline starts when it queues: ahead, so that
/// one that comes back after host work (reading its next page) does not wait a round.
pub const HEAD_START: Duration = EPOCH_TICK;
/// The most one stretch between two check-ins is charged: a holder whose thread the system
/// descheduled did not run its guest meanwhile.
const MAX_CHARGE: Duration = Duration::from_millis(20);

/// The scheduler of the process: every module's calls share it.
static GUEST_CPU: LazyLock<Arc<Fairness>> = LazyLock::new(|| Fairness::new(GUEST_SLOTS));

/// A turn on the process's scheduler for one module call of `pipeline` on `engine`, which
/// stops waiting for a slot at `deadline`. Call [`Turn::tick`] from the store's epoch callback,
/// with the first deadline at 0 so that the guest checks in before it runs.
pub fn turn(pipeline: Arc<str>, deadline: Instant, engine: &Engine) -> Arc<Turn> {
    Arc::new(GUEST_CPU.turn(pipeline, Some(deadline), Some(engine.clone())))
}

/// Slots for guest code, handed out fairly between tenants (pipelines).
pub struct Fairness {
    slots: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_turn: u64,
    holders: Vec<Holder>,
    waiters: Vec<Waiter>,
    tenants: HashMap<Arc<str>, Tenant>,
}

struct Holder {
    turn: u64,
    tenant: Arc<str>,
    /// When the holder last checked in; guest time up to then is charged.
    checked_in: Instant,
    /// When the first in line asked it to check in, if it has not since.
    nudged: Option<Instant>,
}

struct Waiter {
    turn: u64,
    tenant: Arc<str>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Tenant {
    /// Guest time during the tenant's calls in progress (its virtual time).
    used: Duration,
    turns: usize,
}

impl Fairness {
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(Fairness {
            slots: slots.max(1),
            state: Mutex::new(State::default()),
        })
    }

    /// A turn for one call of `tenant`; it holds no slot until it checks in.
    pub fn turn(
        self: &Arc<Self>,
        tenant: Arc<str>,
        deadline: Option<Instant>,
        engine: Option<Engine>,
    ) -> Turn {
        let mut state = self.lock();
        let id = state.next_turn;
        state.next_turn += 1;
        state.tenants.entry(tenant.clone()).or_default().turns += 1;
        Turn {
            fairness: self.clone(),
            id,
            tenant,
            deadline,
            engine,
            wake: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements; a panic elsewhere leaves it usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn used(&self, tenant: &str) -> Duration {
        self.tenants.get(tenant).map_or(Duration::ZERO, |t| t.used)
    }

    fn holder(&self, turn: u64) -> Option<usize> {
        self.holders.iter().position(|holder| holder.turn == turn)
    }

    /// Charges the holder's guest time since its last check-in, which is now.
    fn check_in(&mut self, index: usize, now: Instant) {
        let holder = &mut self.holders[index];
        let spent = now
            .saturating_duration_since(holder.checked_in)
            .min(MAX_CHARGE);
        holder.checked_in = holder.checked_in.max(now);
        holder.nudged = None;
        if let Some(tenant) = self.tenants.get_mut(&holder.tenant) {
            tenant.used += spent;
        }
    }

    /// Frees the slots of holders that did not check in when they should have: their guest
    /// is not running (it waits in a host function).
    fn reclaim(&mut self, now: Instant) {
        self.holders.retain(|holder| {
            let missed_tick = now >= holder.checked_in + EPOCH_TICK + GRACE;
            let missed_nudge = holder.nudged.is_some_and(|at| now >= at + GRACE);
            !(missed_tick || missed_nudge)
        });
    }

    /// The waiter served next: the least guest time, then the longest wait.
    fn best_waiter(&self) -> Option<usize> {
        (0..self.waiters.len()).min_by_key(|&index| {
            let waiter = &self.waiters[index];
            (self.used(&waiter.tenant), waiter.turn)
        })
    }

    fn wake_best(&self) {
        if let Some(index) = self.best_waiter() {
            self.waiters[index].wake.notify_one();
        }
    }

    /// The least guest time of the other tenants that hold or want a slot.
    fn least_used_besides(&self, tenant: &str) -> Option<Duration> {
        let holders = self.holders.iter().map(|holder| &holder.tenant);
        let waiters = self.waiters.iter().map(|waiter| &waiter.tenant);
        holders
            .chain(waiters)
            .filter(|other| ***other != *tenant)
            .map(|other| self.used(other))
            .min()
    }

    fn remove_waiter(&mut self, turn: u64) -> bool {
        match self.waiters.iter().position(|waiter| waiter.turn == turn) {
            Some(index) => {
                self.waiters.swap_remove(index);
                true
            }
            None => false,
        }
    }
}

/// One module call's claim on guest CPU. Its guest code runs while it holds a slot; dropping
/// the turn (with the store) gives back whatever it holds.
pub struct Turn {
    fairness: Arc<Fairness>,
    id: u64,
    tenant: Arc<str>,
    deadline: Option<Instant>,
    engine: Option<Engine>,
    wake: Arc<Notify>,
}

impl Turn {
    /// From the epoch callback: checks in, lets the executor run other tasks, and checks in
    /// again. Before, so that a call's first check-in asks for the slot before its guest runs;
    /// after, because wasmtime counts the next tick from the end of this future: a call that
    /// asked for the slot while this one yielded is served now, not a whole tick later. A call
    /// whose deadline passes in line does not run on: it waits here for its wall-clock timeout,
    /// due at that same instant, to drop it.
    pub async fn tick(self: Arc<Self>) {
        let mut ready = self.enter().await;
        if ready.is_ok() {
            tokio::task::yield_now().await;
            ready = self.enter().await;
        }
        if ready.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Checks in before guest code runs on: keeps the slot, gives it to a waiter with less
    /// guest time, or waits in line for one. Fails with [`Trap::Interrupt`] once the call's
    /// deadline has passed in line.
    pub async fn enter(&self) -> Result<(), Trap> {
        {
            let mut state = self.fairness.lock();
            let now = Instant::now();
            if let Some(index) = state.holder(self.id) {
                state.check_in(index, now);
                let mine = state.used(&self.tenant);
                let better_waits = state
                    .best_waiter()
                    .is_some_and(|best| state.used(&state.waiters[best].tenant) < mine);
                if !better_waits {
                    return Ok(());
                }
                state.holders.swap_remove(index);
            }
            if let Some(least) = state.least_used_besides(&self.tenant) {
                let floor = least.saturating_sub(HEAD_START);
                if let Some(tenant) = state.tenants.get_mut(&self.tenant) {
                    tenant.used = tenant.used.max(floor);
                }
            }
            state.waiters.push(Waiter {
                turn: self.id,
                tenant: self.tenant.clone(),
                wake: self.wake.clone(),
            });
            state.wake_best();
        }
        let mut queued = Queued {
            turn: self,
            waiting: true,
        };
        let asked = Instant::now();
        loop {
            let woken = self.wake.notified();
            // Past its deadline, a call takes no slot, not even one a stalled holder just lost:
            // its wall-clock timeout drops it at that instant.
            if self
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
            {
                return Err(Trap::Interrupt);
            }
            let mut recheck = None;
            {
                let mut state = self.fairness.lock();
                let now = Instant::now();
                state.reclaim(now);
                let first = state
                    .best_waiter()
                    .filter(|&index| state.waiters[index].turn == self.id);
                if let Some(index) = first {
                    if state.holders.len() < self.fairness.slots {
                        state.waiters.swap_remove(index);
                        state.holders.push(Holder {
                            turn: self.id,
                            tenant: self.tenant.clone(),
                            checked_in: now,
                            nudged: None,
                        });
                        queued.waiting = false;
                        // The next in line watches the holders from now on.
                        state.wake_best();
                        tracing::trace!("{}: guest slot after {:?}", self.tenant, asked.elapsed());
                        return Ok(());
                    }
                    // First in line: a holder with more guest time is asked to check in now
                    // rather than at its next tick; one that misses a check-in (its guest
                    // waits in a host function) loses the slot.
                    let mine = state.used(&self.tenant);
                    let ahead: Vec<bool> = (state.holders.iter())
                        .map(|holder| state.used(&holder.tenant) > mine)
                        .collect();
                    let mut nudge = false;
                    for (holder, ahead) in state.holders.iter_mut().zip(ahead) {
                        if ahead && holder.nudged.is_none() {
                            holder.nudged = Some(now);
                            nudge = true;
                        }
                        let mut lapse = holder.checked_in + EPOCH_TICK + GRACE;
                        if let Some(asked) = holder.nudged {
                            lapse = lapse.min(asked + GRACE);
                        }
                        recheck = Some(recheck.map_or(lapse, |at: Instant| at.min(lapse)));
                    }
                    if nudge {
                        if let Some(engine) = &self.engine {
                            engine.increment_epoch();
                        }
                    }
                }
            }
            if let Some(deadline) = self.deadline {
                recheck = Some(recheck.map_or(deadline, |at| at.min(deadline)));
            }
            match recheck {
                Some(at) => {
                    tokio::select! {
                        _ = woken => {}
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                }
                None => woken.await,
            }
        }
    }
}

/// A turn in line; taken out of the line if its wait ends otherwise (a deadline, a dropped
/// call).
struct Queued<'a> {
    turn: &'a Turn,
    waiting: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.waiting {
            let mut state = self.turn.fairness.lock();
            if state.remove_waiter(self.turn.id) {
                state.wake_best();
            }
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = self.fairness.lock();
        if let Some(index) = state.holder(self.id) {
            state.check_in(index, Instant::now());
            state.holders.swap_remove(index);
        }
        state.remove_waiter(self.id);
        if let Some(tenant) = state.tenants.get_mut(&self.tenant) {
            tenant.turns -= 1;
            if tenant.turns == 0 {
                state.tenants.remove(&self.tenant);
            }
        }
        state.wake_best();
    }
}

#[cfg(test)]
mod tests {
    //! The fair scheduler of guest CPU, on its own: turns, hand-overs and waits.

    use super::*;

    fn holders(fairness: &Fairness) -> Vec<u64> {
        fairness.lock().holders.iter().map(|h| h.turn).collect()
    }

    fn set_used(fairness: &Fairness, tenant: &str, used: Duration) {
        fairness.lock().tenants.get_mut(tenant).unwrap().used = used;
    }

    fn turn(fairness: &Arc<Fairness>, tenant: &str) -> Arc<Turn> {
        Arc::new(fairness.turn(tenant.into(), None, None))
    }

    /// Lets spawned tasks run up to their next wait.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn queue(turn: &Arc<Turn>) -> tokio::task::JoinHandle<Result<(), Trap>> {
        let turn = turn.clone();
        tokio::spawn(async move { turn.enter().await })
    }

    #[tokio::test]
    async fn the_slot_goes_to_the_tenant_with_the_least_guest_time() {
        let fairness = Fairness::new(1);
        let spin = turn(&fairness, "spin");
        spin.enter().await.unwrap();
        let other = turn(&fairness, "other");
        let other_waits = queue(&other);
        settle().await;
        // The other spinning tenant has had much guest time by now; a light one queues last.
        set_used(&fairness, "other", Duration::from_millis(500));
        let light = turn(&fairness, "light");
        let light_waits = queue(&light);
        settle().await;
        assert_eq!(holders(&fairness), [spin.id]);

        drop(spin);
        light_waits.await.unwrap().unwrap();
        assert_eq!(holders(&fairness), [light.id]);
        assert!(!other_waits.is_finished());
        drop(light);
        other_waits.await.unwrap().unwrap();
        assert_eq!(holders(&fairness), [other.id]);
    }

    #[tokio::test]
    async fn a_holder_gives_way_when_it_checks_in_to_one_with_less_guest_time() {
        let fairness = Fairness::new(1);
        let spin = turn(&fairness, "spin");
        spin.enter().await.unwrap();
        // No one waits: a tick keeps the slot.
        spin.enter().await.unwrap();
        assert_eq!(holders(&fairness), [spin.id]);

        set_used(&fairness, "spin", Duration::from_millis(100));
        let light = turn(&fairness, "light");
        let light_waits = queue(&light);
        settle().await;
        assert!(
            !light_waits.is_finished(),
            "the slot was taken from a running guest"
        );
        // The spinning guest's next check-in: it gives way and queues.
        let spin_waits = queue(&spin);
        light_waits.await.unwrap().unwrap();
        assert_eq!(holders(&fairness), [light.id]);
        settle().await;
        assert!(!spin_waits.is_finished());
        drop(light);
        spin_waits.await.unwrap().unwrap();
        assert_eq!(holders(&fairness), [spin.id]);
    }

    #[tokio::test]
    async fn a_holder_that_misses_a_check_in_loses_its_slot() {
        let fairness = Fairness::new(1);
        // A guest that waits in a host function: it checked in once, then not again.
        let http = turn(&fairness, "http");
        http.enter().await.unwrap();
        let other = turn(&fairness, "other");
        let started = Instant::now();
        queue(&other).await.unwrap().unwrap();
        let waited = started.elapsed();
        assert!(waited >= EPOCH_TICK, "{waited:?}");
        assert!(waited < Duration::from_secs(1), "{waited:?}");
        assert_eq!(holders(&fairness), [other.id]);
        // Back from the host, the call queues again.
        let back = queue(&http);
        settle().await;
        assert!(!back.is_finished());
        drop(other);
        back.await.unwrap().unwrap();
        assert_eq!(holders(&fairness), [http.id]);

        // Asked to check in at once (it has had more guest time), it has GRACE to do so.
        set_used(&fairness, "http", Duration::from_millis(100));
        let light = turn(&fairness, "light");
        let started = Instant::now();
        queue(&light).await.unwrap().unwrap();
        let waited = started.elapsed();
        assert!(waited >= GRACE, "{waited:?}");
        assert!(waited < Duration::from_secs(1), "{waited:?}");
        assert_eq!(holders(&fairness), [light.id]);
    }

    #[tokio::test]
    async fn a_deadline_passes_in_line_too() {
        let fairness = Fairness::new(1);
        let spin = turn(&fairness, "spin");
        spin.enter().await.unwrap();
        let deadline = Instant::now() + Duration::from_millis(5);
        let late = fairness.turn("late".into(), Some(deadline), None);
        // The holder keeps checking in, as a running guest does.
        let keep = tokio::spawn({
            let spin = spin.clone();
            async move {
                while Instant::now() < deadline + Duration::from_millis(20) {
                    spin.enter().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        set_used(&fairness, "late", Duration::from_secs(1));
        assert!(matches!(late.enter().await, Err(Trap::Interrupt)));
        assert!(Instant::now() >= deadline);
        assert!(fairness.lock().waiters.is_empty());
        keep.await.unwrap();
        drop(late);
        drop(spin);
        let state = fairness.lock();
        assert!(state.holders.is_empty() && state.tenants.is_empty());
    }

    /// Three tenants that always have guest code to run, checking in every 2 ms, share the
    /// slot about evenly; a light tenant that comes every few milliseconds barely waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn spinning_tenants_share_and_a_light_one_barely_waits() {
        let fairness = Fairness::new(1);
        let until = Instant::now() + Duration::from_millis(600);
        let spinners: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|name| {
                let turn = turn(&fairness, name);
                tokio::spawn(async move {
                    let mut held = Duration::ZERO;
                    while Instant::now() < until {
                        turn.enter().await.unwrap();
                        let stretch = Instant::now();
                        // A guest between two epoch checks holds its thread.
                        std::thread::sleep(Duration::from_millis(2));
                        held += stretch.elapsed();
                    }
                    held
                })
            })
            .collect();
        let light = tokio::spawn({
            let fairness = fairness.clone();
            async move {
                let mut waits = Vec::new();
                while Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let turn = fairness.turn("light".into(), None, None);
                    let asked = Instant::now();
                    turn.enter().await.unwrap();
                    waits.push(asked.elapsed());
                }
                waits
            }
        });
        let mut shares = Vec::new();
        for spinner in spinners {
            shares.push(spinner.await.unwrap());
        }
        let total: Duration = shares.iter().sum();
        for share in &shares {
            let fraction = share.as_secs_f64() / total.as_secs_f64();
            assert!((0.2..0.46).contains(&fraction), "shares {shares:?}");
        }
        let mut waits = light.await.unwrap();
        waits.sort();
        let median = waits[waits.len() / 2];
        assert!(median < Duration::from_millis(5), "light waits {waits:?}");
    }
}
