//! Several workers on this machine sharing one pipelines file through a PostgreSQL state
//! store: the store's database (one per test: the store's schema is always `tidemark`, so
//! tests sharing a database would share workers and leases), the workers, and reads of the
//! leases.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Connection, Row};

use super::host::Running;
use super::lines::Line;
use super::tenants::Tenants;
use super::TestDb;

/// A PostgreSQL database of this test's, dropped at the end.
pub struct ScratchDb {
    name: String,
    admin_url: String,
    url: String,
    pool: AnyPool,
}

impl ScratchDb {
    /// A new database on the server of `pg` (a PostgreSQL test database).
    pub async fn new(pg: &TestDb, prefix: &str) -> ScratchDb {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        pg.execute(&format!("CREATE DATABASE {name}")).await;
        let admin_url = pg.url().to_owned();
        let (base, _) = admin_url
            .rsplit_once('/')
            .unwrap_or_else(|| panic!("a PostgreSQL URL without a database: {admin_url}"));
        let url = format!("{base}/{name}");
        // Small: PostgreSQL allows 100 connections and other tests run alongside.
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap_or_else(|err| panic!("connecting to {url}: {err}"));
        ScratchDb {
            name,
            admin_url,
            url,
            pool,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The leases held now (not released, not expired), pipeline → owner.
    pub async fn held(&self) -> BTreeMap<String, String> {
        let rows = sqlx::query(
            "SELECT pipeline, owner FROM tidemark.leases WHERE owner IS NOT NULL \
             AND expires_at >= CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        rows.iter()
            .map(|row| (row.get("pipeline"), row.get("owner")))
            .collect()
    }

    /// How many pipelines each owner holds now.
    pub async fn shares(&self) -> BTreeMap<String, usize> {
        let mut shares = BTreeMap::new();
        for owner in self.held().await.into_values() {
            *shares.entry(owner).or_insert(0) += 1;
        }
        shares
    }

    /// The cursor value of each pipeline's watermark.
    pub async fn watermarks(&self) -> BTreeMap<String, Option<String>> {
        let rows = sqlx::query("SELECT pipeline, cursor_value FROM tidemark.pipelines")
            .fetch_all(&self.pool)
            .await
            .unwrap_or_default();
        rows.iter()
            .map(|row| (row.get("pipeline"), row.get("cursor_value")))
            .collect()
    }

    /// Connections to this database from sources (`application_name` tidemark).
    pub async fn source_connections(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'tidemark'",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap_or_else(|err| panic!("reading pg_stat_activity: {err}"))
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let (name, url) = (self.name.clone(), self.admin_url.clone());
        let pool = self.pool.clone();
        // Drop runs inside the test's runtime: a thread with a runtime of its own drops the
        // database, best effort.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                pool.close().await;
                let Ok(mut conn) = AnyConnection::connect(&url).await else {
                    return;
                };
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let _ = sqlx::raw_sql(&sql).execute(&mut conn).await;
                let _ = conn.close().await;
            });
        });
        let _ = cleanup.join();
    }
}

/// `host run --config FILE --state URL`: one more worker.
pub fn spawn_worker(tenants: &Tenants, state: &ScratchDb) -> Running {
    tenants.spawn(&["--state", state.url()])
}

/// The name a worker has in the store: it carries the process id.
pub fn worker_name(shares: &BTreeMap<String, usize>, worker: &Running) -> Option<String> {
    let pid = format!("-{}-", worker.pid()?);
    shares.keys().find(|name| name.contains(&pid)).cloned()
}

/// Waits until `count` workers each hold a share within one of fair (all pipelines held);
/// returns the shares. Fails with the workers' logs after `timeout`.
pub async fn wait_balanced(
    state: &ScratchDb,
    workers: &mut [&mut Running],
    pipelines: usize,
    timeout: Duration,
) -> BTreeMap<String, usize> {
    let start = Instant::now();
    let count = workers.len();
    loop {
        let shares = state.shares().await;
        let fair = pipelines.div_ceil(count);
        let balanced = shares.len() == count
            && shares.values().sum::<usize>() == pipelines
            && shares.values().all(|n| n + 1 >= fair && *n <= fair);
        if balanced {
            return shares;
        }
        for worker in workers.iter_mut() {
            if let Some(outcome) = worker.try_finish() {
                panic!("a worker exited while waiting for balance: {outcome}");
            }
        }
        if start.elapsed() > timeout {
            let logs: Vec<String> = workers.iter().map(|worker| worker.stderr()).collect();
            panic!(
                "{count} workers not balanced over {pipelines} pipelines within {timeout:?}: \
                 {shares:?}\n{}",
                logs.join("\n-----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every id of `expected` delivered and nothing else; an id delivered more than once only
/// ever again in a batch of the same id (a batch redelivered after a crash or a takeover).
pub fn assert_once_or_redelivered(what: &str, lines: &[Line], expected: &BTreeSet<i64>) {
    let mut batches: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
    for line in lines {
        batches
            .entry(line.id())
            .or_default()
            .insert(line.batch.as_str());
    }
    let delivered: BTreeSet<i64> = batches.keys().copied().collect();
    assert_eq!(&delivered, expected, "{what}: the rows delivered");
    let twice: Vec<(&i64, &BTreeSet<&str>)> =
        batches.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "{what}: rows delivered in two different batches: {twice:?}"
    );
}
