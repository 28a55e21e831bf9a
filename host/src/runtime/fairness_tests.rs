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
