//! A polling host against a writer that inserts and updates rows with the database's clock,
//! some in transactions that commit late.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::AnyPool;

use super::users;
use crate::support::lines::Line;
use crate::support::{at, Backend, Val};

/// What the concurrent writer did.
#[derive(Debug, Default)]
struct Writes {
    inserts: usize,
    updates: usize,
    transactions: usize,
}

/// A small xorshift: the writer's choices need no quality, only no dependency.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % u64::try_from(n).expect("n fits u64")).expect("fits usize")
    }
}

/// For `duration`, inserts rows and updates random ones, each write stamped with the
/// database's now and a new version `vN` in `name`; one write in ten is a transaction of two
/// updates that stays open 30 ms, so its first row's stamp is older than its commit.
async fn write_concurrently(
    backend: Backend,
    pool: &AnyPool,
    table: &str,
    seeded: usize,
    duration: Duration,
) -> Writes {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut versions = vec![0u64; seeded];
    let mut writes = Writes::default();
    // On SQLite, "now" is the test's clock, read as each statement is written.
    let update = |versions: &mut Vec<u64>, index: usize| {
        versions[index] += 1;
        format!(
            "UPDATE {table} SET name = 'v{}', updated_at = {} WHERE id = {}",
            versions[index],
            backend.lit(&Val::Now),
            index + 1
        )
    };
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let roll = rng.below(10);
        if roll < 3 {
            versions.push(0);
            let id = versions.len();
            let sql = format!(
                "INSERT INTO {table} (id, email, name, updated_at) \
                 VALUES ({id}, 'w{id}@example.com', 'v0', {})",
                backend.lit(&Val::Now)
            );
            run(pool, &sql).await;
            writes.inserts += 1;
        } else if roll < 9 {
            let index = rng.below(versions.len());
            let sql = update(&mut versions, index);
            run(pool, &sql).await;
            writes.updates += 1;
        } else {
            let (first, second) = (rng.below(versions.len()), rng.below(versions.len()));
            let mut tx = pool.begin().await.expect("begin");
            let sql = update(&mut versions, first);
            sqlx::raw_sql(&sql)
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|err| panic!("{sql}: {err}"));
            tokio::time::sleep(Duration::from_millis(30)).await;
            let sql = update(&mut versions, second);
            sqlx::raw_sql(&sql)
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|err| panic!("{sql}: {err}"));
            tx.commit().await.expect("commit");
            writes.transactions += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    writes
}

async fn run(pool: &AnyPool, sql: &str) {
    if let Err(err) = sqlx::raw_sql(sql).execute(pool).await {
        panic!("{sql}: {err}");
    }
}

/// A host polling every 200 ms while a writer inserts and updates rows for 4 s; then the
/// writer stops, the host gets SIGTERM (and must exit 0), and one more `--once` run: for
/// every row, the last line delivered carries the row's final version, and no row's
/// versions ever went backwards in the output.
pub(super) async fn concurrent_writers_final_versions_are_delivered(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    let seeded = 50;
    let rows: Vec<Vec<Val>> = (1..=50)
        .map(|id| {
            vec![
                Val::Int(id),
                Val::Text(format!("user{id}@example.com")),
                Val::Text("v0".to_owned()),
                Val::Ts(at(id)),
            ]
        })
        .collect();
    db.insert(&table, crate::support::db::USERS_COLUMNS, &rows)
        .await;

    let running = host.spawn(&["--poll", "200ms", "--batch-size", "50"], None);
    // The host is another process: the writer can simply run in this task meanwhile.
    let writes =
        write_concurrently(backend, db.pool(), &table, seeded, Duration::from_secs(4)).await;
    assert!(
        writes.inserts > 20 && writes.updates > 20 && writes.transactions > 2,
        "the writer did too little to test anything: {writes:?}"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let polled = host.all_lines().len();
    let outcome = running.terminate().await;
    assert!(outcome.success(), "host must exit 0 on SIGTERM: {outcome}");
    assert!(
        polled >= seeded,
        "the polling host delivered only {polled} lines in 5.5 s"
    );
    host.once(&["--batch-size", "50"]).await;

    let lines = host.all_lines();
    let expected = db.names(&table).await;
    let mut last: BTreeMap<i64, &Line> = BTreeMap::new();
    let mut backwards = Vec::new();
    for line in &lines {
        let version = |line: &Line| {
            line.name()
                .strip_prefix('v')
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("name is not a version: {line:?}"))
        };
        if let Some(previous) = last.get(&line.id()) {
            if version(previous) > version(line) {
                backwards.push((line.id(), version(previous), version(line)));
            }
        }
        last.insert(line.id(), line);
    }
    let stale: Vec<(i64, String, Option<String>)> = expected
        .iter()
        .filter(|(id, name)| last.get(id).map(|line| line.name()) != Some(name.as_str()))
        .map(|(id, name)| (*id, name.clone(), last.get(id).map(|l| l.name().to_owned())))
        .collect();
    assert!(
        stale.is_empty(),
        "{} of {} rows' final version never delivered ({writes:?}, {} lines); (id, in the \
         database, last delivered): {:?}",
        stale.len(),
        expected.len(),
        lines.len(),
        crate::support::lines::head(&stale)
    );
    assert!(
        backwards.is_empty(),
        "versions went backwards in the output, (id, before, after): {backwards:?}"
    );
    let unknown: Vec<i64> = last
        .keys()
        .filter(|id| !expected.contains_key(id))
        .copied()
        .collect();
    assert!(
        unknown.is_empty(),
        "delivered rows that do not exist: {unknown:?}"
    );
}
