//! Integer cursors (`--cursor id` on an auto-increment or sequence id) while inserts commit out
//! of id order: no row is passed over, a rolled-back insert holds nothing back, and a
//! transaction that stays open holds the horizon back, says so in `host status`, and lets the
//! rows through once it commits (issue 16).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::{AnyConnection, Connection, Row};

use crate::support::lines::assert_each_once;
use crate::support::{tests_on, Backend, Host, TestDb};

// SQLite has one writer at a time: a transaction held open stops every other insert, so only
// the race of writers applies there.
tests_on!(
    postgres,
    Postgres,
    [out_of_order_commits_lose_no_row],
    [
        a_rolled_back_insert_holds_nothing_back,
        a_long_open_transaction_holds_the_horizon
    ]
);
tests_on!(
    mariadb,
    MariaDb,
    [out_of_order_commits_lose_no_row],
    [
        a_rolled_back_insert_holds_nothing_back,
        a_long_open_transaction_holds_the_horizon
    ]
);
tests_on!(sqlite, Sqlite, [out_of_order_commits_lose_no_row]);

/// A table of ids drawn by the database: `id` (sequence, AUTO_INCREMENT, or SQLite's
/// AUTOINCREMENT rowid) and the writer that inserted the row.
async fn id_table(backend: Backend, name: &str) -> Option<(TestDb, String)> {
    let db = TestDb::new(backend).await?;
    let table = db.table(name);
    let columns = match backend {
        Backend::Postgres => "id BIGSERIAL PRIMARY KEY, writer TEXT NOT NULL",
        Backend::MariaDb => "id BIGINT AUTO_INCREMENT PRIMARY KEY, writer VARCHAR(20) NOT NULL",
        Backend::Sqlite => "id INTEGER PRIMARY KEY AUTOINCREMENT, writer TEXT NOT NULL",
    };
    db.execute(&format!("CREATE TABLE {table} ({columns})"))
        .await;
    Some((db, table))
}

/// Inserts one row on `session` (in its transaction, if one is open) and returns its id.
async fn insert(backend: Backend, session: &mut AnyConnection, table: &str, writer: &str) -> i64 {
    let sql = format!("INSERT INTO {table} (writer) VALUES ('{writer}')");
    let id = match backend {
        Backend::Postgres | Backend::Sqlite => sqlx::query(&format!("{sql} RETURNING id"))
            .fetch_one(&mut *session)
            .await
            .map(|row| row.get::<i64, _>(0)),
        Backend::MariaDb => match sqlx::query(&sql).execute(&mut *session).await {
            Ok(_) => sqlx::query("SELECT CAST(LAST_INSERT_ID() AS SIGNED)")
                .fetch_one(&mut *session)
                .await
                .map(|row| row.get::<i64, _>(0)),
            Err(err) => Err(err),
        },
    };
    id.unwrap_or_else(|err| panic!("{}: {sql}: {err}", backend.name()))
}

async fn execute(session: &mut AnyConnection, sql: &str) {
    if let Err(err) = sqlx::raw_sql(sql).execute(&mut *session).await {
        panic!("{sql}: {err}");
    }
}

/// One writer for `run_for`: each round opens a transaction, inserts a row, holds the
/// transaction open for `hold(round)` and commits. Returns each id with its commit instant.
async fn writer(
    backend: Backend,
    db: &TestDb,
    table: &str,
    name: &str,
    run_for: Duration,
    hold: impl Fn(u64) -> Duration,
) -> Vec<(i64, Instant)> {
    let mut session = db.session().await;
    if backend == Backend::Sqlite {
        // Writers queue for SQLite's one write lock behind transactions held open for
        // seconds.
        execute(&mut session, "PRAGMA busy_timeout = 30000").await;
    }
    let mut committed = Vec::new();
    let deadline = Instant::now() + run_for;
    let mut round = 0;
    while Instant::now() < deadline {
        let wait = hold(round);
        round += 1;
        if wait.is_zero() {
            // Autocommit: the id is committed by the time the insert returns.
            let id = insert(backend, &mut session, table, name).await;
            committed.push((id, Instant::now()));
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        execute(&mut session, "BEGIN").await;
        let id = insert(backend, &mut session, table, name).await;
        tokio::time::sleep(wait).await;
        execute(&mut session, "COMMIT").await;
        committed.push((id, Instant::now()));
    }
    let _ = session.close().await;
    committed
}

/// A polling host (every 200 ms) while three writers each hold an insert open for 0.2–1.5 s
/// and a fourth inserts every 10 ms, for 8 s: ids commit out of order many times over (the
/// test checks that they did), and every row arrives exactly once.
async fn out_of_order_commits_lose_no_row(backend: Backend) {
    let Some((db, table)) = id_table(backend, "ooo_events").await else {
        return;
    };
    let host = Host::new(&db, &table);
    let running = host.spawn(
        &["--cursor", "id", "--poll", "200ms", "--batch-size", "100"],
        None,
    );
    let run_for = Duration::from_secs(8);
    // Holds from 0.2 to 1.5 s, different for each writer and round.
    let slow = |seed: u64| {
        move |round: u64| Duration::from_millis(200 + (seed * 7919 + round * 104_729) % 1_300)
    };
    let (a, b, c, fast) = tokio::join!(
        writer(backend, &db, &table, "slow1", run_for, slow(1)),
        writer(backend, &db, &table, "slow2", run_for, slow(2)),
        writer(backend, &db, &table, "slow3", run_for, slow(3)),
        writer(backend, &db, &table, "fast", run_for, |_| Duration::ZERO),
    );
    let mut committed: BTreeMap<i64, Instant> = BTreeMap::new();
    for (id, at) in a.into_iter().chain(b).chain(c).chain(fast) {
        committed.insert(id, at);
    }
    // The race is real: ids that became visible more than a poll after a higher id did.
    let mut latest = None::<Instant>;
    let mut late = 0;
    for at in committed.values().rev() {
        if latest.is_some_and(|latest| *at > latest + Duration::from_millis(200)) {
            late += 1;
        }
        latest = Some(latest.map_or(*at, |latest: Instant| latest.min(*at)));
    }
    if backend != Backend::Sqlite {
        assert!(
            late >= 5,
            "only {late} of {} ids committed a poll after a higher id: the writers did not race",
            committed.len()
        );
    }
    // Everything committed arrives within a few polls of the writers' end.
    let deadline = Instant::now() + Duration::from_secs(15);
    while host.all_lines().len() < committed.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outcome = running.terminate().await;
    assert!(outcome.success(), "host must exit 0 on SIGTERM: {outcome}");
    assert_each_once(&host.all_lines(), committed.keys().copied());
}

/// The held-back reason `host status --json` shows for the pipeline.
async fn held_back(host: &Host) -> Option<String> {
    let pipelines = host.status_json().await;
    pipelines
        .first()
        .and_then(|pipeline| pipeline["held_back"].as_str())
        .map(str::to_owned)
}

/// Waits at most `within` until the output holds every id of `ids`.
async fn arrive(host: &Host, ids: &[i64], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let seen: Vec<i64> = host.all_lines().iter().map(|line| line.id()).collect();
        if ids.iter().all(|id| seen.contains(id)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A polling host that has delivered the table's first row, and a transaction that has
/// inserted the next one and is still open.
struct Started {
    /// Kept for its schema or database, dropped with it.
    _db: TestDb,
    table: String,
    /// A session for other inserts.
    other: AnyConnection,
    first: i64,
    host: Host,
    running: crate::support::host::Running,
    /// The session whose transaction is open, and the id it inserted.
    open: AnyConnection,
    open_id: i64,
}

async fn start(backend: Backend, name: &str) -> Option<Started> {
    let (db, table) = id_table(backend, name).await?;
    let mut other = db.session().await;
    let first = insert(backend, &mut other, &table, "before").await;
    let host = Host::new(&db, &table);
    let running = host.spawn(&["--cursor", "id", "--poll", "200ms"], None);
    assert!(arrive(&host, &[first], Duration::from_secs(10)).await);
    let mut open = db.session().await;
    execute(&mut open, "BEGIN").await;
    let open_id = insert(backend, &mut open, &table, "open").await;
    Some(Started {
        _db: db,
        table,
        other,
        first,
        host,
        running,
        open,
        open_id,
    })
}

/// A transaction inserts a row and rolls back: the rows inserted after it wait while it is
/// open, and arrive at once (within a second) after it ends.
async fn a_rolled_back_insert_holds_nothing_back(backend: Backend) {
    let Some(mut s) = start(backend, "rb_events").await else {
        return;
    };
    let (first, rolled_back) = (s.first, s.open_id);
    let after = insert(backend, &mut s.other, &s.table, "after").await;
    assert!(after > rolled_back);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let seen: Vec<i64> = s.host.all_lines().iter().map(|line| line.id()).collect();
    assert!(
        !seen.contains(&after),
        "id {after} was delivered while id {rolled_back} could still commit"
    );
    execute(&mut s.open, "ROLLBACK").await;
    let ended = Instant::now();
    assert!(
        arrive(&s.host, &[after], Duration::from_secs(5)).await,
        "id {after} did not arrive within 5 s of the rollback"
    );
    let waited = ended.elapsed();
    assert!(
        waited < Duration::from_millis(1_500),
        "id {after} took {waited:?} to arrive after the rollback"
    );
    let outcome = s.running.terminate().await;
    assert!(outcome.success(), "{outcome}");
    assert_each_once(&s.host.all_lines(), [first, after]);
}

/// A transaction inserts a row and stays open for seconds: rows with higher ids wait, `host
/// status` names the transaction and how long it has been open, and once it commits every row
/// arrives, its own included.
async fn a_long_open_transaction_holds_the_horizon(backend: Backend) {
    let Some(mut s) = start(backend, "long_events").await else {
        return;
    };
    let (first, held) = (s.first, s.open_id);
    let mut later = Vec::new();
    for _ in 0..3 {
        later.push(insert(backend, &mut s.other, &s.table, "later").await);
    }
    // Past the one second after which status reports a wait.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let seen: Vec<i64> = s.host.all_lines().iter().map(|line| line.id()).collect();
    assert_eq!(
        seen,
        vec![first],
        "rows passed the open transaction's id {held}"
    );
    let why = held_back(&s.host).await.unwrap_or_else(|| {
        panic!(
            "host status shows no reason while id {held} is open: {}",
            s.running.stderr()
        )
    });
    assert!(
        why.contains(&format!("ids above {first} wait for transaction"))
            && why.contains("open for"),
        "host status says {why:?}"
    );
    let named = match backend {
        Backend::Postgres => "pid ",
        _ => "thread ",
    };
    assert!(
        why.contains(named),
        "status does not name the session: {why:?}"
    );

    execute(&mut s.open, "COMMIT").await;
    let mut all = vec![first, held];
    all.extend(&later);
    assert!(
        arrive(&s.host, &all, Duration::from_secs(5)).await,
        "rows did not arrive after the long transaction committed: {:?}",
        s.host
            .all_lines()
            .iter()
            .map(|line| line.id())
            .collect::<Vec<_>>()
    );
    // The next pass no longer says anything is held back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(held_back(&s.host).await, None);
    let outcome = s.running.terminate().await;
    assert!(outcome.success(), "{outcome}");
    assert_each_once(&s.host.all_lines(), all);
}
