//! Several workers share one pipelines file through a PostgreSQL state store (issue 15): worker
//! processes on this machine, a state database of the test's own.
//!
//! - 3 workers share 60 pipelines: each within one of its fair share, each row once (or again
//!   only in a batch of the same id).
//! - kill -9 a worker: its pipelines deliver again on the others within the lease TTL plus a
//!   round, nothing missed.
//! - SIGSTOP a worker past its lease, change rows, SIGCONT: its checkpoint is fenced (paused
//!   after a delivery) or its delivery is (paused before one), it gives the pipeline up having
//!   delivered nothing more, no watermark moves backwards, every row's final version arrives.
//! - A fourth worker joins: pipelines move to it at batch boundaries, never run twice at once.
//! - SIGTERM: the worker's pipelines move at once, not after the TTL.
//! - 100 pipelines on one PostgreSQL database: at most `max_source_connections` source
//!   connections per worker (`pg_stat_activity`).
//! - An SQLite state store takes one worker: a second is refused (exit 2).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::support::host::Running;
use crate::support::lines::{ids, Line};
use crate::support::tenants::*;
use crate::support::workers::*;
use crate::support::{Backend, TestDb, Val};

/// The lease TTL of these tests: short, so that a lost worker costs seconds.
const TTL: Duration = Duration::from_secs(2);

/// How long the workers may take to settle on their shares.
const SETTLE: Duration = Duration::from_secs(60);

/// Pipelines `p00`… reading tables of one SQLite file (no PostgreSQL connections), their
/// workers' state in a PostgreSQL database of the test's own.
struct Fleet {
    _pg: TestDb,
    source: TestDb,
    tenants: Tenants,
    state: ScratchDb,
    /// Pipeline name → its table.
    tables: BTreeMap<String, String>,
}

impl Fleet {
    async fn new(pipelines: usize, rows: i64, top: &str) -> Option<Fleet> {
        let pg = TestDb::new(Backend::Postgres).await?;
        let source = TestDb::new(Backend::Sqlite).await?;
        let tenants = Tenants::new();
        let state = ScratchDb::new(&pg, "tm_state").await;
        let mut tables = BTreeMap::new();
        let mut entries = Vec::new();
        for n in 0..pipelines {
            let name = format!("p{n:02}");
            let table = users(&source, &format!("t{n}"), 1..=rows).await;
            entries.push(tenants.pipeline(&name, source.url(), &table, "batch_size = 2"));
            tables.insert(name, table);
        }
        tenants.write(top, &entries);
        Some(Fleet {
            _pg: pg,
            source,
            tenants,
            state,
            tables,
        })
    }

    fn worker(&self) -> Running {
        spawn_worker(&self.tenants, &self.state)
    }

    /// Inserts rows `ids` into the tables of `pipelines`, stamped now.
    async fn insert(&self, pipelines: &[String], ids: &[i64]) {
        for name in pipelines {
            self.source
                .insert_users(&self.tables[name], ids.iter().map(|id| (*id, Val::Now)))
                .await;
        }
    }

    fn names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    /// Waits until every pipeline of `pipelines` delivered every id of `expected`; returns
    /// how long that took.
    async fn wait_delivered(
        &self,
        workers: &mut [&mut Running],
        pipelines: &[String],
        expected: &[i64],
        timeout: Duration,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let missing: Vec<&String> = pipelines
                .iter()
                .filter(|name| {
                    let delivered = ids(&self.tenants.lines(name));
                    !expected.iter().all(|id| delivered.contains(id))
                })
                .collect();
            if missing.is_empty() {
                return start.elapsed();
            }
            for worker in workers.iter_mut() {
                if let Some(outcome) = worker.try_finish() {
                    panic!("a worker exited while rows were awaited: {outcome}");
                }
            }
            if start.elapsed() > timeout {
                let logs: Vec<String> = workers.iter().map(|worker| worker.stderr()).collect();
                panic!(
                    "rows {expected:?} not delivered within {timeout:?} to {missing:?}; leases \
                     {:?}\n{}",
                    self.state.held().await,
                    logs.join("\n-----\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every pipeline: rows 1..=`last` delivered, each once or again in a batch of its id.
    fn assert_delivered_once(&self, last: i64) {
        let expected: BTreeSet<i64> = (1..=last).collect();
        for name in self.tables.keys() {
            assert_once_or_redelivered(name, &self.tenants.lines(name), &expected);
        }
    }
}

fn ttl_line() -> String {
    format!("lease_ttl = \"{}s\"", TTL.as_secs())
}

/// Fails if any worker's log shows a pipeline run by two workers at once.
fn assert_never_run_twice(logs: &[String]) {
    for log in logs {
        for sign in [
            "another worker took the pipeline over",
            "changed by another process",
        ] {
            assert!(!log.contains(sign), "a worker logged {sign:?}:\n{log}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_sixty_pipelines_each_row_once() {
    let Some(fleet) = Fleet::new(60, 5, &ttl_line()).await else {
        return;
    };
    let (mut a, mut b, mut c) = (fleet.worker(), fleet.worker(), fleet.worker());
    let names = fleet.names();
    let mut all = [&mut a, &mut b, &mut c];
    wait_balanced(&fleet.state, &mut all, 60, SETTLE).await;
    fleet
        .wait_delivered(&mut all, &names, &[1, 2, 3, 4, 5], SETTLE)
        .await;
    fleet.insert(&names, &[6, 7, 8]).await;
    fleet
        .wait_delivered(&mut all, &names, &[6, 7, 8], SETTLE)
        .await;
    let shares = wait_balanced(&fleet.state, &mut all, 60, SETTLE).await;
    assert!(shares.values().all(|n| *n == 20), "{shares:?}");
    fleet.assert_delivered_once(8);
    let logs: Vec<String> = all.iter().map(|worker| worker.stderr()).collect();
    assert_never_run_twice(&logs);
    // `host status` shows the owners and the live workers.
    let status = fleet
        .tenants
        .host
        .exec(["status", "--state", fleet.state.url()])
        .await;
    assert!(status.success(), "{status}");
    assert!(
        status.stdout.contains("3 live workers"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("run by "), "{}", status.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_pipelines_resume_within_the_ttl() {
    let Some(fleet) = Fleet::new(12, 3, &ttl_line()).await else {
        return;
    };
    let (mut a, mut b, mut c) = (fleet.worker(), fleet.worker(), fleet.worker());
    let names = fleet.names();
    let shares = wait_balanced(&fleet.state, &mut [&mut a, &mut b, &mut c], 12, SETTLE).await;
    fleet
        .wait_delivered(&mut [&mut a, &mut b, &mut c], &names, &[1, 2, 3], SETTLE)
        .await;
    let victim = worker_name(&shares, &a).expect("the first worker holds pipelines");
    let orphans: Vec<String> = fleet
        .state
        .held()
        .await
        .into_iter()
        .filter(|(_, owner)| *owner == victim)
        .map(|(pipeline, _)| pipeline)
        .collect();
    assert_eq!(orphans.len(), 4, "{shares:?}");
    a.kill9().await;
    let killed = Instant::now();
    fleet.insert(&names, &[4, 5]).await;
    fleet
        .wait_delivered(&mut [&mut b, &mut c], &orphans, &[4, 5], SETTLE)
        .await;
    let resumed = killed.elapsed();
    // The leases expire within the TTL, the others' next round (a third of it) claims them;
    // the rest is starting the pipelines and a pass on a loaded machine.
    let bound = TTL + TTL / 3 + Duration::from_secs(3);
    assert!(
        resumed < bound,
        "the killed worker's pipelines delivered again after {resumed:?} (bound {bound:?})"
    );
    eprintln!("kill -9: its pipelines delivered again after {resumed:?}");
    wait_balanced(&fleet.state, &mut [&mut b, &mut c], 12, SETTLE).await;
    fleet.assert_delivered_once(5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_is_fenced_and_gives_its_pipeline_up() {
    // Paused after handing its batch on: the checkpoint that follows is refused.
    pause_a_worker_past_its_lease("after_deliver", "another worker took the pipeline over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_before_delivering_hands_nothing_on_after_its_lease() {
    // Paused with its batch recorded as pending, about to hand it on (a worker cut off from the
    // state store while the destination still answers is in the same place): once resumed, it
    // must not deliver rows older than those the other worker delivered meanwhile.
    pause_a_worker_past_its_lease("before_deliver", "this one hands no batch on").await;
}

/// Two workers; the new one stops at `failpoint` in its first batch and is SIGSTOPped past its
/// lease; the other takes the pipeline over and delivers newer rows; once resumed, the paused
/// one logs `fenced` and gives the pipeline up, having delivered nothing more.
async fn pause_a_worker_past_its_lease(failpoint: &str, fenced: &str) {
    let Some(fleet) = Fleet::new(4, 3, &ttl_line()).await else {
        return;
    };
    let names = fleet.names();
    let mut b = fleet.worker();
    fleet
        .wait_delivered(&mut [&mut b], &names, &[1, 2, 3], SETTLE)
        .await;
    let args = vec![
        "run".to_owned(),
        "--config".to_owned(),
        fleet.tenants.file_arg(),
        "--state".to_owned(),
        fleet.state.url().to_owned(),
    ];
    let mut a = fleet
        .tenants
        .host
        .spawn_exact(args, Some(&format!("{failpoint}=wait@1")));
    let shares = wait_balanced(&fleet.state, &mut [&mut a, &mut b], 4, SETTLE).await;
    let paused_name = worker_name(&shares, &a).expect("the new worker holds pipelines");
    let held = fleet.state.held().await;
    let target = held
        .iter()
        .find(|(_, owner)| **owner == paused_name)
        .map(|(pipeline, _)| pipeline.clone())
        .expect("a pipeline of the paused worker");
    let mut marks = vec![fleet.state.watermarks().await[&target].clone()];

    fleet.insert(std::slice::from_ref(&target), &[4, 5]).await;
    a.reached(failpoint, 1).await;
    a.signal("STOP");
    // Past its lease: the other worker takes the pipeline over and redelivers the batch.
    let start = Instant::now();
    while fleet.state.held().await.get(&target) == Some(&paused_name) {
        assert!(
            start.elapsed() < SETTLE,
            "the lease of {target} never moved"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fleet
        .source
        .execute(&format!(
            "UPDATE {} SET name = 'final', updated_at = {} WHERE id = 4",
            fleet.tables[&target],
            fleet.source.lit(&Val::Now)
        ))
        .await;
    fleet.insert(std::slice::from_ref(&target), &[6]).await;
    let finals = |lines: &[Line]| {
        lines
            .iter()
            .any(|line| line.id() == 4 && line.row["name"] == "final")
    };
    let start = Instant::now();
    while !(finals(&fleet.tenants.lines(&target))
        && ids(&fleet.tenants.lines(&target)).contains(&6))
    {
        assert!(
            start.elapsed() < SETTLE,
            "the other worker did not deliver row 4's final version:\n{}",
            b.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    marks.push(fleet.state.watermarks().await[&target].clone());

    // Resumed, the paused worker goes on from its failpoint: refused, the pipeline given up.
    let delivered_before = fleet.tenants.lines(&target).len();
    a.go(failpoint, 1);
    a.signal("CONT");
    wait_for_log(&mut a, fenced, SETTLE).await;
    wait_for_log(&mut a, "giving the pipeline up", SETTLE).await;
    assert_eq!(
        fleet.tenants.lines(&target).len(),
        delivered_before,
        "the resumed worker delivered rows after its lease was taken over:\n{}",
        a.stderr()
    );
    marks.push(fleet.state.watermarks().await[&target].clone());
    // The workers settle again, and later changes still arrive.
    wait_balanced(&fleet.state, &mut [&mut a, &mut b], 4, SETTLE).await;
    fleet.insert(&names, &[7]).await;
    fleet
        .wait_delivered(&mut [&mut a, &mut b], &names, &[7], SETTLE)
        .await;
    marks.push(fleet.state.watermarks().await[&target].clone());
    assert!(
        marks.windows(2).all(|pair| pair[0] <= pair[1]),
        "the watermark of {target} moved backwards: {marks:?}"
    );
    let lines = fleet.tenants.lines(&target);
    let last_of_4 = lines.iter().rev().find(|line| line.id() == 4).unwrap();
    assert_eq!(last_of_4.row["name"], "final", "{lines:?}");
    let delivered: BTreeSet<i64> = ids(&lines).into_iter().collect();
    assert_eq!(delivered, (1..=7).collect(), "{lines:?}");
    let status = fleet
        .tenants
        .host
        .exec(["status", "--state", fleet.state.url()])
        .await;
    let line = status
        .stdout
        .lines()
        .find(|line| line.contains(&paused_name) && line.contains("checkpoints fenced"))
        .unwrap_or_else(|| panic!("{paused_name} not among the workers:\n{}", status.stdout));
    assert!(
        line.contains("checkpoints fenced") && !line.contains(" 0 checkpoints fenced"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_worker_takes_its_share_at_batch_boundaries() {
    let Some(fleet) = Fleet::new(12, 3, &ttl_line()).await else {
        return;
    };
    let names = fleet.names();
    let (mut a, mut b, mut c) = (fleet.worker(), fleet.worker(), fleet.worker());
    wait_balanced(&fleet.state, &mut [&mut a, &mut b, &mut c], 12, SETTLE).await;
    let mut d = fleet.worker();
    // Rows keep coming while pipelines move; every sample of the leases has one owner per
    // pipeline, and the new worker ends with its share.
    let start = Instant::now();
    let mut next_id = 4;
    let mut samples = 0;
    loop {
        fleet.insert(&names, &[next_id]).await;
        next_id += 1;
        let shares = fleet.state.shares().await;
        samples += 1;
        assert!(shares.values().sum::<usize>() <= 12, "{shares:?}");
        if shares.len() == 4 && shares.values().all(|n| *n == 3) {
            break;
        }
        assert!(
            start.elapsed() < SETTLE,
            "never balanced over 4: {shares:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = next_id - 1;
    let all: Vec<i64> = (1..=last).collect();
    fleet
        .wait_delivered(&mut [&mut a, &mut b, &mut c, &mut d], &names, &all, SETTLE)
        .await;
    fleet.assert_delivered_once(last);
    let logs: Vec<String> = [&a, &b, &c, &d].iter().map(|w| w.stderr()).collect();
    assert_never_run_twice(&logs);
    assert!(
        logs.iter().any(|log| log.contains("handing it over")),
        "no handover logged"
    );
    eprintln!(
        "4th worker: balanced after {:?} ({samples} samples)",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_s_pipelines_move_at_once() {
    // A long TTL: only the release at stop can explain a move well within it.
    let ttl = Duration::from_secs(12);
    let Some(fleet) = Fleet::new(6, 3, "lease_ttl = \"12s\"").await else {
        return;
    };
    let names = fleet.names();
    let (mut a, mut b) = (fleet.worker(), fleet.worker());
    let shares = wait_balanced(&fleet.state, &mut [&mut a, &mut b], 6, SETTLE).await;
    let survivor = worker_name(&shares, &b).expect("the second worker holds pipelines");
    let stopped = Instant::now();
    let outcome = a.terminate().await;
    assert!(outcome.success(), "{outcome}");
    assert!(outcome.stderr.contains("released 3 leases"), "{outcome}");
    // Free at once: the other worker's next round (a third of the TTL) takes them all.
    loop {
        let shares = fleet.state.shares().await;
        if shares.get(&survivor) == Some(&6) {
            break;
        }
        assert!(
            stopped.elapsed() < ttl - Duration::from_secs(2),
            "the stopped worker's pipelines did not move well within the TTL: {shares:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("SIGTERM: pipelines moved after {:?}", stopped.elapsed());
    fleet.insert(&names, &[4]).await;
    fleet
        .wait_delivered(&mut [&mut b], &names, &[4], SETTLE)
        .await;
    fleet.assert_delivered_once(4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_on_one_database_share_a_bounded_pool() {
    let Some(pg) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let source = ScratchDb::new(&pg, "tm_src").await;
    let state = ScratchDb::new(&pg, "tm_state").await;
    let tenants = Tenants::new();
    let mut entries = Vec::new();
    let mut names = Vec::new();
    for n in 0..100 {
        sqlx::raw_sql(&format!(
            "CREATE TABLE t{n} (id BIGINT PRIMARY KEY, name TEXT, \
             updated_at TIMESTAMPTZ(6) NOT NULL); \
             INSERT INTO t{n} VALUES (1, 'a', '2024-01-01+00'), (2, 'b', '2024-01-02+00')"
        ))
        .execute(source.pool())
        .await
        .unwrap_or_else(|err| panic!("creating table t{n}: {err}"));
        let name = format!("p{n:02}");
        entries.push(tenants.pipeline(&name, source.url(), &format!("t{n}"), ""));
        names.push(name);
    }
    let max = 3;
    tenants.write(
        &format!("{}\nmax_source_connections = {max}", ttl_line()),
        &entries,
    );
    let mut a = spawn_worker(&tenants, &state);
    let mut b = spawn_worker(&tenants, &state);
    let start = Instant::now();
    let mut peak = 0;
    loop {
        peak = peak.max(source.source_connections().await);
        let done = names
            .iter()
            .all(|name| ids(&tenants.lines(name)).len() >= 2);
        if done {
            break;
        }
        for worker in [&mut a, &mut b] {
            if let Some(outcome) = worker.try_finish() {
                panic!("a worker exited: {outcome}");
            }
        }
        assert!(
            start.elapsed() < SETTLE,
            "100 pipelines not delivered; leases {:?}\n{}",
            state.held().await,
            a.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("100 pipelines, 2 workers: at most {peak} source connections");
    assert!(peak >= 1);
    assert!(
        peak <= 2 * max,
        "{peak} source connections for 2 workers of {max}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_on_an_sqlite_state_is_refused() {
    let Some(lite) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let tenants = Tenants::new();
    let table = users(&lite, "users", 1..=3).await;
    tenants.write("", &[tenants.pipeline("only", lite.url(), &table, "")]);
    let mut first = tenants.spawn(&[]);
    tenants
        .wait_for_ids(&mut first, "only", &[1, 2, 3], PROMPTLY)
        .await;
    let second = tenants.run(&[]).await;
    assert_eq!(second.code(), Some(2), "{second}");
    assert!(
        second.stderr.contains("one worker runs per state file"),
        "{second}"
    );
    assert!(second.stderr.contains("PostgreSQL state store"), "{second}");
    assert!(first.terminate().await.success());
}
