//! Many tenants in one process: `host run --config tidemark.toml`, end to end.
//!
//! - One file, many databases: every pipeline's rows reach its own output; `status --json`
//!   counts each pipeline on its own.
//! - A bad file (or a file plus a pipeline flag) exits 2 naming the file, line and key.
//! - Fault isolation: next to a guest that spins until its deadline, one that exhausts its
//!   memory, a destination that is down, one that always answers 429 and a source that cannot
//!   be reached, a healthy tenant's new rows arrive promptly; the bad tenants' errors are
//!   counted and their watermarks stay; SIGTERM stops the lot.
//! - Tenants cannot see each other: secrets and the allow-list are per pipeline.
//! - Accounting: rejected rows, retries, time and memory in modules, fuel, in `status --json`
//!   and on `--metrics`, the same numbers.
//! - Reload on SIGHUP: added, removed and changed pipelines; watermarks kept; a broken file
//!   refused.
//! - A bounded stop: a batch held by its destination past `stop_timeout` is abandoned, its
//!   watermark unmoved, and delivered again under the same id on the next start.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::host::{assert_mentions, Outcome};
use crate::support::http_server::{Reply, Server};
use crate::support::lines::{assert_each_once, batches};
use crate::support::tenants::*;
use crate::support::{Backend, TestDb, Val};

fn assert_exit(outcome: &Outcome, code: i32, what: &str) {
    assert_eq!(outcome.code(), Some(code), "{what}: {outcome}");
}

// ---------------------------------------------------------------------------------------------
// One file, every database

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pipeline_of_a_file_delivers_to_its_own_output() {
    let Some(pg) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let Some(lite) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    // MariaDB when it is there (outside CI an unreachable server only drops its pipeline).
    let maria = TestDb::new(Backend::MariaDb).await;
    let mut tenants = Tenants::new();
    let pg_users = users(&pg, "users", 1..=23).await;
    let pg_accounts = users(&pg, "accounts", 101..=140).await;
    let lite_users = users(&lite, "users", 201..=212).await;

    // The PostgreSQL URL through the environment, as a file should name a server with a
    // password.
    let variable = format!(
        "TM_TENANT_PG_{}",
        uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase()
    );
    let mut pipelines = vec![
        format!(
            "[[pipeline]]\nname = \"pg-users\"\nsource_env = {}\ntable = {}\noutput = {}\n\
             batch_size = 5\n",
            quote(&variable),
            quote(&pg_users),
            quote(&tenants.output("pg-users").display().to_string())
        ),
        tenants.pipeline(
            "pg-accounts",
            pg.url(),
            &pg_accounts,
            &format!(
                "{}\nconfig = {{ drop = \"name\" }}\nbatch_size = 16",
                modules(&["mask_pii"])
            ),
        ),
        tenants.pipeline(
            "lite-users",
            lite.url(),
            &lite_users,
            &modules(&["passthrough"]),
        ),
    ];
    let mut expected: Vec<(&str, Vec<i64>, i64)> = vec![
        ("pg-users", (1..=23).collect(), 5),
        ("pg-accounts", (101..=140).collect(), 16),
        ("lite-users", (201..=212).collect(), 500),
    ];
    if let Some(maria) = &maria {
        let table = users(maria, "users", 301..=309).await;
        pipelines.push(tenants.pipeline("maria-users", maria.url(), &table, "batch_size = 4"));
        expected.push(("maria-users", (301..=309).collect(), 4));
    }
    tenants.write("", &pipelines);
    tenants.host.set_env(&variable, pg.url());

    let outcome = tenants.run(&["--once"]).await;
    assert_exit(&outcome, 0, "a file of healthy pipelines with --once");

    let status = tenants.status().await;
    assert_eq!(
        status.keys().cloned().collect::<BTreeSet<String>>(),
        expected
            .iter()
            .map(|(name, ..)| name.to_string())
            .collect::<BTreeSet<String>>(),
        "status lists every pipeline of the file: {status:#?}"
    );
    for (name, rows, batch_size) in &expected {
        let lines = tenants.lines(name);
        assert_each_once(&lines, rows.iter().copied());
        let batch_count = rows.len().div_ceil(*batch_size as usize);
        assert_eq!(batches(&lines).len(), batch_count, "{name}'s batches");
        let own = &status[*name];
        assert_eq!(own["rows_synced"], json!(rows.len()), "{name}: {own}");
        assert_eq!(own["batches_synced"], json!(batch_count), "{name}: {own}");
        assert_eq!(
            own["watermark"]["key"],
            json!(rows.last().unwrap().to_string()),
            "{name}: {own}"
        );
        assert_eq!(own["errors"], json!(0), "{name}: {own}");
        assert!(own["last_run_at"].is_string(), "{name}: {own}");
    }
    // Each pipeline's own modules and configuration: only pg-accounts is masked.
    for line in tenants.lines("pg-accounts") {
        let email = line.text("email").unwrap();
        assert!(
            email.len() == 64 && !email.contains('@'),
            "pg-accounts' email is not masked: {line:?}"
        );
        assert!(!line.row.contains_key("name"), "name not dropped: {line:?}");
    }
    for line in tenants.lines("pg-users") {
        assert!(line.text("email").unwrap().contains('@'), "{line:?}");
        assert!(line.row.contains_key("name"), "{line:?}");
    }
    // The URL given through the environment is not written into the state store as is.
    assert_eq!(
        status["pg-users"]["source"], status["pg-accounts"]["source"],
        "the same server, through the environment or the file"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad files

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_exit_2_naming_the_line_and_the_key() {
    let tenants = Tenants::new();
    let good = tenants.pipeline("good", "sqlite://app.db", "users", "");
    // What is wrong, the pipelines, the line the error must name (found by its text), and
    // what else it must say; `{L}` stands for that line's number.
    let cases: Vec<(&str, String, &str, Vec<&str>)> = vec![
        (
            "a value of the wrong kind",
            format!(
                "{good}\n[[pipeline]]\nname = \"bad\"\nsource = \"sqlite://app.db\"\n\
                 table = \"users\"\nbatch_size = \"lots\"\n"
            ),
            "batch_size = \"lots\"",
            vec!["line {L}, key batch_size", "\"bad\""],
        ),
        (
            "an unknown key",
            "[[pipeline]]\nname = \"typo\"\nsource = \"sqlite://app.db\"\ntabel = \"users\"\n"
                .to_owned(),
            "tabel",
            vec!["line {L}, key tabel", "is not a pipeline key"],
        ),
        (
            "a password in the file",
            "[[pipeline]]\nname = \"pw\"\nsource = \"postgres://app:hunter2@db.example/app\"\n\
             table = \"users\"\n"
                .to_owned(),
            "hunter2",
            vec!["line {L}, key source", "password", "source_env"],
        ),
        (
            "a process-wide key in a pipeline",
            format!(
                "{good}\n[[pipeline]]\nname = \"st\"\nsource = \"sqlite://app.db\"\n\
                 table = \"users\"\nstate = \"sqlite://other.db\"\n"
            ),
            "other.db",
            vec!["line {L}, key state", "cannot be set per pipeline"],
        ),
        (
            "a duration that is not one",
            "[[pipeline]]\nname = \"poll\"\nsource = \"sqlite://app.db\"\ntable = \"users\"\n\
             poll = \"often\"\n"
                .to_owned(),
            "often",
            vec!["line {L}, key poll"],
        ),
        (
            "two pipelines of one name",
            format!("{good}\n[[pipeline]]\nname = \"good\"\nsource = \"sqlite://b.db\"\ntable = \"t\"\n"),
            "sqlite://b.db",
            vec![":{P}: two pipelines are named \"good\""],
        ),
        (
            "broken TOML",
            format!("{good}\n[[pipeline]\nname = \"x\"\n"),
            "[[pipeline]\n",
            vec!["tidemark.toml:{L}"],
        ),
    ];
    for (what, pipelines, needle, mentions) in cases {
        tenants.write("", &[pipelines]);
        let text = std::fs::read_to_string(tenants.file()).unwrap();
        // A needle ending in a newline is a whole line.
        let line = text
            .lines()
            .position(|line| match needle.strip_suffix('\n') {
                Some(whole) => line == whole,
                None => line.contains(needle),
            })
            .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"))
            + 1;
        // The [[pipeline]] header of the table the needle is in.
        let table_line = text
            .lines()
            .take(line)
            .enumerate()
            .filter(|(_, text)| text.starts_with("[[pipeline"))
            .map(|(at, _)| at + 1)
            .last()
            .unwrap_or(0);
        let outcome = tenants.run(&["--once"]).await;
        assert_exit(&outcome, 2, what);
        let mut all = vec!["tidemark.toml".to_owned()];
        all.extend(mentions.iter().map(|mention| {
            mention
                .replace("{L}", &line.to_string())
                .replace("{P}", &table_line.to_string())
        }));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        assert_mentions(
            &outcome.stderr,
            &format!("the error for {what} in\n{text}\n"),
            &all,
        );
        assert!(
            !outcome.stderr.contains("hunter2"),
            "the password is shown: {outcome}"
        );
    }
    assert!(
        tenants.status().await.is_empty(),
        "a refused file starts nothing"
    );

    // A good file with a pipeline's flag on the command line.
    tenants.write("", &[good]);
    for flag in [
        vec!["--table", "users"],
        vec!["--batch-size", "5"],
        vec!["--set", "x=y"],
        vec!["--config", "x=y"],
    ] {
        let outcome = tenants.run(&flag).await;
        assert_exit(&outcome, 2, &format!("a pipelines file and {flag:?}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Fault isolation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tenants_do_not_hold_up_a_healthy_one() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let tenants = Tenants::new();
    let healthy = users(&db, "healthy", 1..=5).await;
    let spin = users(&db, "spin", 1..=5).await;
    let hog = users(&db, "hog", 1..=5).await;
    let down = users(&db, "down", 1..=5).await;
    let busy = users(&db, "busy", 1..=5).await;
    let port = closed_port();
    let down_origin = format!("http://127.0.0.1:{port}");
    let busy_server = Server::start(|_| Reply::status(429));
    // The tenants that fail with a source connected: their state exists from the start.
    let bad = ["spin", "hog", "down", "busy"];
    tenants.write(
        "stop_timeout = \"10s\"",
        &[
            tenants.pipeline("healthy", db.url(), &healthy, &modules(&["passthrough"])),
            tenants.pipeline(
                "spin",
                db.url(),
                &spin,
                &format!(
                    "{}\ndeadline = \"1s\"\non_poison = \"stop\"",
                    modules(&["guest_loop_forever"])
                ),
            ),
            tenants.pipeline(
                "hog",
                db.url(),
                &hog,
                &format!(
                    "{}\nmemory_limit = \"16MiB\"\non_poison = \"stop\"",
                    modules(&["guest_allocate_unbounded"])
                ),
            ),
            tenants.pipeline(
                "down",
                db.url(),
                &down,
                &webhook(
                    &format!("{down_origin}/hook"),
                    &down_origin,
                    "max_retries = 2\nhttp_timeout = \"2s\"",
                ),
            ),
            tenants.pipeline(
                "busy",
                db.url(),
                &busy,
                &webhook(
                    &busy_server.url("/hook"),
                    &busy_server.origin(),
                    "max_retries = 2",
                ),
            ),
            tenants.pipeline(
                "unreachable",
                "postgres://postgres@127.0.0.1:1/test",
                "users",
                "",
            ),
        ],
    );

    // Compiled before the host starts: its first rows then wait for the host to start, not
    // for four modules compiling at once (with a cold cache, seconds on a busy 2-core machine).
    tenants
        .warm(&[
            "passthrough",
            "guest_loop_forever",
            "guest_allocate_unbounded",
            "webhook",
        ])
        .await;
    let mut running = tenants.spawn(&[]);
    let first = tenants
        .wait_for_ids(&mut running, "healthy", &[1, 2, 3, 4, 5], PROMPTLY)
        .await;
    // New rows, a few rounds, while the bad tenants spin, hoard, retry and restart.
    let mut slowest = first;
    for round in 0..4 {
        let new: Vec<i64> = (0..5).map(|n| 100 + round * 10 + n).collect();
        db.insert_users(&healthy, new.iter().map(|id| (*id, Val::Now)))
            .await;
        let took = tenants
            .wait_for_ids(&mut running, "healthy", &new, PROMPTLY)
            .await;
        slowest = slowest.max(took);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Prompt: a few polls of 100 ms, not a bad tenant's deadline or backoff.
    assert!(
        slowest < Duration::from_secs(3),
        "the healthy tenant waited {slowest:?} for its rows next to bad tenants"
    );
    // The hog's instances are capped at 16 MiB each; the process stays far below what an
    // uncapped guest would take.
    let peak = peak_rss_kib(running.pid().expect("the host runs"));
    assert!(peak < 512 << 10, "peak RSS {peak} KiB next to the hog");

    let status = wait_for_status(
        &tenants,
        &mut running,
        "every bad tenant's errors counted",
        Duration::from_secs(20),
        |status| {
            bad.iter().all(|name| {
                status.get(*name).is_some_and(|own| {
                    (number(own, "errors") > 0.0 || number(own, "retries") > 0.0)
                        && own["last_error"].is_string()
                })
            })
        },
    )
    .await;
    for name in bad {
        let own = &status[name];
        assert!(
            own["watermark"].is_null(),
            "{name}'s watermark moved: {own}"
        );
        assert_eq!(own["rows_synced"], json!(0), "{name}: {own}");
    }
    let error = |name: &str| status[name]["last_error"].as_str().unwrap().to_owned();
    assert_mentions(&error("spin"), "spin's last error", &["deadline"]);
    assert_mentions(&error("hog"), "hog's last error", &["memory"]);
    // Failed calls are charged too: the spinning guest's time, the hog's memory.
    assert!(
        number(&status["spin"], "guest_seconds") >= 0.5,
        "{}",
        status["spin"]
    );
    assert!(
        number(&status["hog"], "peak_guest_memory_bytes") >= (8 << 20) as f64,
        "{}",
        status["hog"]
    );
    assert_mentions(&error("busy"), "busy's last error", &["429"]);
    // Each run of busy tried its batch 1 + max_retries times, each retry counted as it
    // happened, though the batch was never delivered.
    assert!(busy_server.request_count() >= 3, "busy was not retried");
    assert!(
        number(&status["busy"], "retries") > 0.0,
        "{}",
        status["busy"]
    );
    let healthy_status = &status["healthy"];
    assert_eq!(healthy_status["errors"], json!(0), "{healthy_status}");
    assert_eq!(healthy_status["rows_synced"], json!(25), "{healthy_status}");
    assert_each_once(
        &tenants.lines("healthy"),
        (1..=5).chain((0..4).flat_map(|round| (0..5).map(move |n| 100 + round * 10 + n))),
    );
    for name in bad {
        assert!(tenants.lines(name).is_empty(), "{name} delivered rows");
    }

    // The unreachable source: sqlx retries a refused connection until its acquire timeout
    // (15 s), then the pipeline restarts with a backoff of its own.
    wait_for_log(
        &mut running,
        "error, restarting pipeline \"unreachable\"",
        Duration::from_secs(30),
    )
    .await;
    // A pipeline that never connected still has a status line with its errors.
    let status = tenants.status().await;
    let own = status
        .get("unreachable")
        .unwrap_or_else(|| panic!("no status line for the unreachable tenant: {status:?}"));
    assert!(number(own, "errors") > 0.0, "{own}");
    assert!(own["watermark"].is_null(), "{own}");
    assert_mentions(
        own["last_error"].as_str().unwrap_or_default(),
        "unreachable's last error",
        &["127.0.0.1:1"],
    );

    // Still running, and a SIGTERM stops every tenant, bad ones in their backoff included.
    assert!(running.try_finish().is_none(), "the host exited");
    running.sigterm();
    let stopping = Instant::now();
    let outcome = running.finish_within(Duration::from_secs(15)).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "stopping took {:?}, more than stop_timeout",
        stopping.elapsed()
    );
    assert_exit(&outcome, 0, "SIGTERM with bad tenants restarting");
}

// ---------------------------------------------------------------------------------------------
// Tenants cannot see each other

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_secrets_and_hosts() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let mut tenants = Tenants::new();
    let table = users(&db, "users", 1..=3).await;
    let secret = format!("tm-secret-{}", uuid::Uuid::new_v4().simple());
    let variable = format!(
        "TM_TENANT_KEY_{}",
        uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase()
    );
    tenants.host.set_env(&variable, &secret);
    let x = Server::accepting();
    let y = Server::accepting();
    tenants.write(
        "",
        &[
            tenants.pipeline(
                "a-leaky",
                db.url(),
                &table,
                &format!(
                    "{}\nsecrets = {{ api_key = {v}, other_key = {v} }}",
                    modules(&["guest_leaky_secret"]),
                    v = quote(&variable)
                ),
            ),
            tenants.pipeline(
                "b-leaky",
                db.url(),
                &table,
                &modules(&["guest_leaky_secret"]),
            ),
            tenants.pipeline(
                "c-hook",
                db.url(),
                &table,
                &webhook(
                    &x.url("/c"),
                    &x.origin(),
                    &format!("secrets = {{ token = {} }}", quote(&variable)),
                ),
            ),
            // d posts to X too, but only Y is on its list.
            tenants.pipeline(
                "d-hook",
                db.url(),
                &table,
                &webhook(&x.url("/d"), &y.origin(), ""),
            ),
        ],
    );
    let outcome = tenants.run(&["--once"]).await;
    assert_exit(&outcome, 1, "a run where d's destination is not allowed");
    assert_mentions(
        &outcome.stderr,
        "the run's end",
        &["1 pipelines failed: d-hook"],
    );
    assert!(
        !outcome.stderr.contains(&secret),
        "the secret is in the log: {outcome}"
    );

    for line in tenants.lines("a-leaky") {
        assert_eq!(line.row["sees_other_key"], json!(true), "{line:?}");
        assert_eq!(line.row["secret_length"], json!(secret.len()), "{line:?}");
    }
    let b = tenants.lines("b-leaky");
    assert_each_once(&b, 1..=3);
    for line in &b {
        assert_eq!(
            line.row["sees_other_key"],
            json!(false),
            "b sees a's secret: {line:?}"
        );
        assert_eq!(
            line.row["secret_length"],
            json!(0),
            "b sees a's api_key: {line:?}"
        );
    }

    // X heard from c only, with c's token; Y from nobody.
    let requests = x.requests();
    assert!(!requests.is_empty(), "c delivered nothing");
    for request in &requests {
        assert_eq!(
            request.path, "/c",
            "X received a request from another tenant"
        );
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {secret}").as_str())
        );
        assert_eq!(request.json()["pipeline"], json!("c-hook"));
    }
    assert_eq!(y.request_count(), 0, "Y received requests");
    let status = tenants.status().await;
    let d = &status["d-hook"];
    assert!(d["watermark"].is_null(), "d's watermark moved: {d}");
    assert_mentions(
        d["last_error"].as_str().unwrap_or_default(),
        "d's last error",
        &[&x.origin()],
    );
    assert_eq!(status["c-hook"]["rows_synced"], json!(3));
}

// ---------------------------------------------------------------------------------------------
// Accounting and metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_retries_and_costs_are_counted_and_served_as_metrics() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let tenants = Tenants::new();
    let table = users(&db, "users", 1..=6).await;
    let quiet = users(&db, "quiet", 1..=2).await;
    // A 503 first, then every batch accepted but for its second row.
    let server = Server::scripted(
        vec![Reply::status(503)],
        Reply::json(
            200,
            &json!({"rejected": [{"index": 1, "reason": "bad email"}]}),
        ),
    );
    tenants.write(
        "",
        &[
            tenants.pipeline(
                "acct",
                db.url(),
                &table,
                &webhook(
                    &server.url("/hook"),
                    &server.origin(),
                    "batch_size = 3\nfuel = 1000000000",
                ),
            ),
            tenants.pipeline("quiet", db.url(), &quiet, ""),
        ],
    );
    let address = format!("127.0.0.1:{}", closed_port());
    let mut running = tenants.spawn(&["--metrics", &address]);
    let status = wait_for_status(
        &tenants,
        &mut running,
        "acct's six rows delivered",
        PROMPTLY,
        |status| {
            status
                .get("acct")
                .is_some_and(|own| own["watermark"]["key"] == json!("6"))
                && status
                    .get("quiet")
                    .is_some_and(|own| own["rows_synced"] == json!(2))
        },
    )
    .await;
    let own = &status["acct"];
    assert!(number(own, "rows_rejected") >= 1.0, "{own}");
    assert!(number(own, "dead_letters") >= 1.0, "{own}");
    assert!(number(own, "retries") >= 1.0, "{own}");
    assert!(number(own, "guest_seconds") > 0.0, "{own}");
    assert!(number(own, "peak_guest_memory_bytes") > 0.0, "{own}");
    assert!(number(own, "fuel_used") > 0.0, "{own}");
    assert!(own["lag_seconds"].is_number(), "{own}");
    assert_eq!(own["batches_synced"], json!(2), "{own}");

    // The same numbers on /metrics (nothing moves any more: both pipelines are idle).
    let start = Instant::now();
    let text = loop {
        if let Some(text) = scrape(&address) {
            break text;
        }
        assert!(start.elapsed() < PROMPTLY, "nothing serves {address}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = tenants.status().await;
    for name in ["acct", "quiet"] {
        let own = &status[name];
        for (metric_name, field) in [
            ("tidemark_rows_delivered_total", "rows_synced"),
            ("tidemark_batches_delivered_total", "batches_synced"),
            ("tidemark_rows_rejected_total", "rows_rejected"),
            ("tidemark_retries_total", "retries"),
            ("tidemark_errors_total", "errors"),
            ("tidemark_fuel_used_total", "fuel_used"),
            (
                "tidemark_peak_guest_memory_bytes",
                "peak_guest_memory_bytes",
            ),
            ("tidemark_dead_letters", "dead_letters"),
            ("tidemark_lag_seconds", "lag_seconds"),
        ] {
            let served = metric(&text, metric_name, name);
            let shown = number(own, field);
            assert!(
                (served - shown).abs() <= 1e-6 * shown.abs().max(1.0),
                "{name}: {metric_name} is {served}, status {field} is {shown}"
            );
        }
        let seconds = metric(&text, "tidemark_guest_seconds_total", name);
        assert!((seconds - number(own, "guest_seconds")).abs() < 1e-3);
        assert!(metric(&text, "tidemark_last_run_timestamp_seconds", name) > 1.7e9);
    }
    assert_eq!(metric(&text, "tidemark_fuel_used_total", "quiet"), 0.0);
    let outcome = running.terminate().await;
    assert_exit(&outcome, 0, "SIGTERM");
}

// ---------------------------------------------------------------------------------------------
// Reload

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_removes_and_changes_pipelines() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let tenants = Tenants::new();
    let a = users(&db, "a", 1..=7).await;
    let b = users(&db, "b", 1..=4).await;
    let c = users(&db, "c", 1..=9).await;
    let pipeline_a = |batch_size: u32| {
        tenants.pipeline("a", db.url(), &a, &format!("batch_size = {batch_size}"))
    };
    let pipeline_b = tenants.pipeline("b", db.url(), &b, "");
    let pipeline_c = tenants.pipeline("c", db.url(), &c, &modules(&["passthrough"]));
    tenants.write("", &[pipeline_a(5), pipeline_b.clone()]);
    let mut running = tenants.spawn(&[]);
    tenants
        .wait_for_ids(&mut running, "a", &[1, 2, 3, 4, 5, 6, 7], PROMPTLY)
        .await;
    tenants
        .wait_for_ids(&mut running, "b", &[1, 2, 3, 4], PROMPTLY)
        .await;
    assert!(tenants.lines("c").is_empty());

    // Remove b, add c, change a's batch size.
    tenants.write("", &[pipeline_a(2), pipeline_c.clone()]);
    running.signal("HUP");
    wait_for_log(
        &mut running,
        "1 added, 1 changed, 1 removed, 2 running",
        PROMPTLY,
    )
    .await;
    tenants
        .wait_for_ids(&mut running, "c", &(1..=9).collect::<Vec<_>>(), PROMPTLY)
        .await;
    db.insert_users(&b, (5..=6).map(|id| (id, Val::Now))).await;
    db.insert_users(&a, (8..=12).map(|id| (id, Val::Now))).await;
    tenants
        .wait_for_ids(&mut running, "a", &[8, 9, 10, 11, 12], PROMPTLY)
        .await;
    // b polled as often as a: had it still run, rows 5 and 6 would be out by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_each_once(&tenants.lines("b"), 1..=4);
    // a kept its watermark: nothing again, and the new rows in batches of the new size.
    let lines_a = tenants.lines("a");
    assert_each_once(&lines_a, 1..=12);
    let after_reload: Vec<usize> = batches(&lines_a[7..])
        .iter()
        .map(|(_, ids)| ids.len())
        .collect();
    assert!(
        after_reload.iter().all(|size| *size <= 2),
        "a's batches after the reload are not of the new size 2: {after_reload:?}"
    );

    // A file that no longer parses changes nothing.
    tenants.write_raw("[[pipeline]\nname = ");
    running.signal("HUP");
    wait_for_log(&mut running, "reload refused", PROMPTLY).await;
    db.insert_users(&a, [(13, Val::Now)]).await;
    db.insert_users(&c, [(10, Val::Now)]).await;
    tenants
        .wait_for_ids(&mut running, "a", &[13], PROMPTLY)
        .await;
    tenants
        .wait_for_ids(&mut running, "c", &[10], PROMPTLY)
        .await;
    let status = tenants.status().await;
    assert_eq!(status["a"]["rows_synced"], json!(13), "{status:#?}");
    assert_eq!(status["b"]["rows_synced"], json!(4), "{status:#?}");
    assert_eq!(status["c"]["rows_synced"], json!(10), "{status:#?}");

    let outcome = running.terminate().await;
    assert_exit(&outcome, 0, "SIGTERM after reloads");
}

// ---------------------------------------------------------------------------------------------
// A bounded stop

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_abandons_a_held_batch_after_stop_timeout() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let tenants = Tenants::new();
    let table = users(&db, "users", 1..=6).await;
    let other = users(&db, "other", 1..=3).await;
    let server = Server::scripted(vec![Reply::ok().held()], Reply::ok());
    tenants.write(
        "stop_timeout = \"1s\"",
        &[
            tenants.pipeline(
                "held",
                db.url(),
                &table,
                &webhook(&server.url("/hook"), &server.origin(), "batch_size = 3"),
            ),
            tenants.pipeline("other", db.url(), &other, ""),
        ],
    );
    let mut running = tenants.spawn(&[]);
    server.wait_held(1, PROMPTLY).await;
    tenants
        .wait_for_ids(&mut running, "other", &[1, 2, 3], PROMPTLY)
        .await;
    let held = server.requests();
    let held_id = held[0].header("idempotency-key").unwrap().to_owned();
    assert_eq!(row_ids_of(&held[0]), [1, 2, 3]);

    running.sigterm();
    let stopping = Instant::now();
    let outcome = running.finish_within(Duration::from_secs(15)).await;
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the stop took {took:?} with stop_timeout = 1s"
    );
    assert!(
        took >= Duration::from_millis(900),
        "the stop did not wait for the batch in hand: {took:?}"
    );
    assert_mentions(
        &outcome.stderr,
        "the log of the stop",
        &["\"held\" did not stop within"],
    );
    assert_exit(&outcome, 0, "a stop that abandoned a batch");

    let status = tenants.status().await;
    let own = &status["held"];
    assert!(own["watermark"].is_null(), "held's watermark moved: {own}");
    assert_eq!(own["pending_batch"], json!(held_id), "{own}");
    assert_eq!(status["other"]["rows_synced"], json!(3));

    // The next start delivers the abandoned batch first, under the same id.
    server.set_handler(|_| Reply::ok());
    server.release();
    let outcome = tenants.run(&["--once"]).await;
    assert_exit(&outcome, 0, "the next start");
    let requests = server.requests();
    assert!(requests.len() >= 3, "{requests:#?}");
    assert_eq!(
        requests[1].header("idempotency-key"),
        Some(held_id.as_str())
    );
    assert_eq!(row_ids_of(&requests[1]), [1, 2, 3]);
    let delivered: Vec<i64> = requests[1..].iter().flat_map(row_ids_of).collect();
    assert_eq!(delivered, [1, 2, 3, 4, 5, 6]);
    let status = tenants.status().await;
    assert_eq!(status["held"]["watermark"]["key"], json!("6"));
    assert!(status["held"]["pending_batch"].is_null());
}
