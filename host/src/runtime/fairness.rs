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
#[path = "fairness_tests.rs"]
mod tests;
