//! Processors, end to end: WebAssembly components between the database and the output.
//!
//! - A chain of transforms (`passthrough`, then `mask_pii`) on each database: every row once,
//!   reshaped exactly; updates go through the chain too.
//! - Configuration and secrets: a module sees both, and the secret's value never leaves the
//!   host (not in the log, errors, output or `status`).
//! - Guests that fail a batch (deadline, memory cap, fuel, panic, error): `--once` exits 1
//!   naming the module, pipeline, batch and the flag that raises the limit; the watermark does
//!   not move, and a later run delivers every row, starting with the failed batch under its id.
//!   A polling host retries the batch in fresh instances and keeps running.
//! - A module of neither world is refused before any row is read.
//! - `host check` (world, exports, imports, compile cache) and `host test`.
//!
//! The components come from `examples/` and `tests/guests/` ([`crate::support::guests`]);
//! [`every_test_guest_has_a_test`] keeps each test guest used here.

use std::iter::Peekable;
use std::path::Path;
use std::str::Lines;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::db::USERS_COLUMNS;
use crate::support::guests::{guest, test_guest_names};
use crate::support::host::{assert_mentions, error_report, Outcome};
use crate::support::http_server::{Reply, Server};
use crate::support::lines::{assert_each_once, batches, ids};
use crate::support::{at, Backend, Host, TestDb, Val};

crate::support::on_databases!(
    [postgres => Postgres, mariadb => MariaDb, sqlite => Sqlite],
    [chain_of_transforms_masks_every_row_once]
);

/// `--module PATH` for each of `names` in order, this test's `--cache-dir`, then `extra`.
pub(crate) fn with_modules(host: &Host, names: &[&str], extra: &[&str]) -> Vec<String> {
    let mut args = Vec::new();
    for name in names {
        args.push("--module".to_owned());
        args.push(guest(name).display().to_string());
    }
    args.push("--cache-dir".to_owned());
    args.push(host.cache_dir().display().to_string());
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    args
}

pub(crate) fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A SQLite `users` table with rows `1..=count` and a host reading it.
pub(crate) async fn sqlite_users(count: i64) -> (TestDb, Host) {
    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("sqlite always runs");
    let table = db.create_users().await;
    db.insert_users(&table, (1..=count).map(|id| (id, Val::Ts(at(id)))))
        .await;
    let host = Host::new(&db, &table);
    (db, host)
}

/// Pipeline `name` of `host status --json`, if the state has it.
async fn pipeline_status(host: &Host, name: &str) -> Option<Value> {
    host.status_json()
        .await
        .into_iter()
        .find(|pipeline| pipeline["pipeline"] == name)
}

/// Pipeline `name` has synced nothing: absent from the state, or with no rows, no batches
/// and no watermark.
async fn assert_nothing_synced(host: &Host, name: &str, what: &str) {
    if let Some(pipeline) = pipeline_status(host, name).await {
        assert_eq!(
            pipeline["rows_synced"], 0,
            "{what}: rows synced; {pipeline}"
        );
        assert_eq!(
            pipeline["batches_synced"], 0,
            "{what}: batches synced; {pipeline}"
        );
        assert!(
            pipeline["watermark"].is_null(),
            "{what}: the watermark moved; {pipeline}"
        );
    }
}

/// The output file is absent or empty.
fn assert_no_output(host: &Host, what: &str) {
    match std::fs::read_to_string(host.output_path()) {
        Ok(text) => assert!(text.is_empty(), "{what}: the host wrote output:\n{text}"),
        Err(err) => assert_eq!(
            err.kind(),
            std::io::ErrorKind::NotFound,
            "{what}: reading {}: {err}",
            host.output_path().display()
        ),
    }
}

/// Scenario: `passthrough` then `mask_pii --set drop=name` on 6 users, in batches of 4.
/// Every row comes out once as exactly `{id, email: sha256(trimmed lowercase email),
/// updated_at, masked: true}`; a second run delivers nothing; an updated row is delivered
/// again, through the chain, with its new email hashed.
async fn chain_of_transforms_masks_every_row_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let table = db.create_users().await;
    db.insert_users(&table, (1..=5).map(|id| (id, Val::Ts(at(id)))))
        .await;
    let mixed_case = vec![
        Val::Int(6),
        Val::Text("  Mixed.Case@Example.COM ".to_owned()),
        Val::Text("user 6".to_owned()),
        Val::Ts(at(6)),
    ];
    db.insert(&table, USERS_COLUMNS, &[mixed_case]).await;
    let mut host = Host::new(&db, &table);
    let args = with_modules(
        &host,
        &["passthrough", "mask_pii"],
        &[
            "--set",
            "drop=name",
            "--pipeline",
            "masked",
            "--batch-size",
            "4",
        ],
    );
    let expected = |id: i64, email: &str, micros: i64| {
        json!({
            "id": id,
            "email": sha256_hex(email),
            "updated_at": db.rendered_stamp(at(micros)),
            "masked": true,
        })
    };

    let lines = host.once(&refs(&args)).await;

    assert_each_once(&lines, 1..=6);
    for line in &lines {
        let id = line.id();
        let email = match id {
            6 => "mixed.case@example.com".to_owned(),
            _ => format!("user{id}@example.com"),
        };
        assert_eq!(
            Value::Object(line.row.clone()),
            expected(id, &email, id),
            "row {id} after passthrough and mask_pii"
        );
        assert_eq!(line.op, "upsert", "op of row {id}");
    }
    let sizes: Vec<usize> = batches(&lines).iter().map(|(_, ids)| ids.len()).collect();
    assert_eq!(sizes, [4, 2], "batches of 4 over 6 rows, through the chain");
    let status = pipeline_status(&host, "masked").await;
    assert_eq!(
        status.as_ref().map(|p| p["rows_synced"].clone()),
        Some(json!(6)),
        "status after the first run: {status:?}"
    );

    let again = host.once(&refs(&args)).await;
    assert!(again.is_empty(), "a second run delivered {again:?}");

    db.execute(&format!(
        "UPDATE {table} SET email = 'New.Address@Example.org', name = 'renamed', \
         updated_at = {} WHERE id = 3",
        db.lit(&Val::Ts(at(100)))
    ))
    .await;
    let update = host.once(&refs(&args)).await;
    assert_eq!(ids(&update), [3], "the run after updating row 3");
    assert_eq!(
        Value::Object(update[0].row.clone()),
        expected(3, "new.address@example.org", 100),
        "updated row 3 after the chain"
    );
}

/// A run of `guest_leaky_secret` given secret `api_key` (from an environment variable) and
/// config `other_key`, with the host logging at trace level.
struct LeakyRun {
    _db: TestDb,
    host: Host,
    secret: String,
    outcome: Outcome,
}

impl LeakyRun {
    async fn new(extra: &[&str]) -> LeakyRun {
        let (db, mut host) = sqlite_users(3).await;
        let secret = format!("tm-secret-{}", uuid::Uuid::new_v4().simple());
        let variable = format!(
            "TM_TEST_API_KEY_{}",
            uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase()
        );
        host.set_env(&variable, &secret);
        // Whatever the host logs, at any level of its own, must be free of the secret.
        host.set_env("TIDEMARK_LOG", "info,tidemark=trace,host=trace");
        let secret_flag = format!("api_key={variable}");
        let mut flags = vec![
            "--secret",
            &secret_flag,
            "--set",
            "other_key=x",
            "--pipeline",
            "leaky",
        ];
        flags.extend(extra);
        let args = with_modules(&host, &["guest_leaky_secret"], &flags);
        let outcome = host.run_once(&refs(&args)).await;
        LeakyRun {
            _db: db,
            host,
            secret,
            outcome,
        }
    }

    /// Neither the run's stdout and stderr, nor its output file, nor `status` (table and
    /// JSON), nor the state database holds the secret.
    async fn assert_secret_nowhere(&self) {
        let state = self.host.state_url();
        let status = self.host.exec(["status", "--state", &state]).await;
        let status_json = self
            .host
            .exec(["status", "--state", &state, "--json"])
            .await;
        let output = std::fs::read_to_string(self.host.output_path()).unwrap_or_default();
        let state_file = std::fs::read(self.host.dir().join("state.db")).unwrap_or_default();
        let places = [
            ("run stdout", self.outcome.stdout.clone()),
            ("run stderr", self.outcome.stderr.clone()),
            ("output file", output),
            ("status", format!("{}{}", status.stdout, status.stderr)),
            (
                "status --json",
                format!("{}{}", status_json.stdout, status_json.stderr),
            ),
            (
                "state database",
                String::from_utf8_lossy(&state_file).into_owned(),
            ),
        ];
        for (place, text) in places {
            assert!(
                !text.contains(&self.secret),
                "the secret {} leaked into the {place}:\n{text}",
                self.secret
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_reaches_the_module_and_is_masked_everywhere() {
    let mut run = LeakyRun::new(&[]).await;

    assert!(run.outcome.success(), "leaky run: {}", run.outcome);
    let lines = run.host.new_lines();
    assert_each_once(&lines, 1..=3);
    for line in &lines {
        assert_eq!(
            line.row.get("sees_other_key"),
            Some(&json!(true)),
            "the module should see --set other_key: {line:?}"
        );
        assert_eq!(
            line.row.get("secret_length"),
            Some(&json!(run.secret.len())),
            "the module should see the secret's value: {line:?}"
        );
    }
    assert_mentions(
        &run.outcome.stderr,
        "the log of a module that logs its secret",
        &["the api key is ***"],
    );
    run.assert_secret_nowhere().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_error_names_module_and_batch_without_the_secret() {
    let mut run = LeakyRun::new(&["--set", "fail=yes", "--on-poison", "stop"]).await;

    assert_eq!(run.outcome.code(), Some(1), "exit code; {}", run.outcome);
    let report = error_report(&run.outcome).to_owned();
    assert_mentions(
        &report,
        "the error of a module that fails with its secret",
        &["guest_leaky_secret", "leaky", "failing with api key ***"],
    );
    run.assert_secret_nowhere().await;
    assert_no_output(&run.host, "a failed batch");
    assert_nothing_synced(&run.host, "leaky", "after the module's error").await;
    let batch = rerun_with_passthrough(&mut run.host, "leaky", 3, &[]).await;
    assert_mentions(&report, "the error of the failed batch", &[&batch]);
}

#[tokio::test]
async fn unset_secret_variable_exits_2_naming_it() {
    let (_db, host) = sqlite_users(2).await;
    let variable = format!(
        "TM_TEST_UNSET_{}",
        uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase()
    );
    let secret_flag = format!("api_key={variable}");
    let args = with_modules(&host, &["guest_leaky_secret"], &["--secret", &secret_flag]);

    let outcome = host.run_once(&refs(&args)).await;

    assert_eq!(outcome.code(), Some(2), "exit code; {outcome}");
    assert_mentions(&outcome.stderr, "the error", &[&variable]);
    assert_no_output(&host, "a run refused for a missing secret");
}

/// After a failed run of pipeline `pipeline` over users `1..=rows`: a `--once` run of
/// `passthrough` on it delivers every row exactly once. Returns the id of its first batch:
/// the batch that failed, delivered again under the same id.
async fn rerun_with_passthrough(
    host: &mut Host,
    pipeline: &str,
    rows: i64,
    extra: &[&str],
) -> String {
    let mut flags = vec!["--pipeline", pipeline];
    flags.extend(extra);
    let args = with_modules(host, &["passthrough"], &flags);
    let lines = host.once(&refs(&args)).await;
    assert_each_once(&lines, 1..=rows);
    lines[0].batch.clone()
}

/// Runs `modules` once on pipeline `pipeline` over 5 users in batches of 2 and checks what
/// every failed batch must leave: exit 1 within 20 s, no output, nothing synced; then a run
/// of `passthrough` delivers every row. Returns the host's error report and the id of the
/// batch that failed.
async fn failed_batch(modules: &[&str], flags: &[&str], pipeline: &str) -> (String, String) {
    let (_db, mut host) = sqlite_users(5).await;
    // A guest that fails every batch, as before poison isolation: the batch fails at once.
    let mut extra = vec![
        "--pipeline",
        pipeline,
        "--batch-size",
        "2",
        "--on-poison",
        "stop",
    ];
    extra.extend(flags);
    let args = with_modules(&host, modules, &extra);

    let started = Instant::now();
    let outcome = host.run_once(&refs(&args)).await;
    let took = started.elapsed();

    assert_eq!(
        outcome.code(),
        Some(1),
        "exit code of {modules:?}; {outcome}"
    );
    assert!(
        took < Duration::from_secs(20),
        "{modules:?} took {took:?} to fail the batch"
    );
    assert_no_output(&host, "a failed batch");
    assert_nothing_synced(&host, pipeline, "after the failed batch").await;
    let batch = rerun_with_passthrough(&mut host, pipeline, 5, &["--batch-size", "2"]).await;
    (error_report(&outcome).to_owned(), batch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_past_its_deadline_fails_the_batch() {
    let (report, batch) =
        failed_batch(&["guest_loop_forever"], &["--deadline", "1s"], "spinning").await;

    assert_mentions(
        &report,
        "the error of a guest past its deadline",
        &[
            "guest_loop_forever",
            "spinning",
            &batch,
            "deadline",
            "--deadline",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_over_its_memory_limit_fails_the_batch() {
    let (report, batch) = failed_batch(
        &["guest_allocate_unbounded"],
        &["--memory-limit", "32MiB"],
        "hoarding",
    )
    .await;

    assert_mentions(
        &report,
        "the error of a guest over its memory limit",
        &[
            "guest_allocate_unbounded",
            "hoarding",
            &batch,
            "memory limit",
            "--memory-limit",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_out_of_fuel_fails_the_batch() {
    let (report, batch) =
        failed_batch(&["guest_loop_forever"], &["--fuel", "100000000"], "metered").await;

    assert_mentions(
        &report,
        "the error of a guest out of fuel",
        &["guest_loop_forever", "metered", &batch, "fuel", "--fuel"],
    );
}

/// The panicking guest second in a chain: the error names it, not the first module.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_panic_fails_the_batch() {
    let (report, batch) = failed_batch(&["passthrough", "guest_panics"], &[], "exploding").await;

    assert_mentions(
        &report,
        "the error of a panicking guest",
        &["guest_panics", "exploding", &batch, "panicked"],
    );
}

/// What the panicking guest prints on each attempt, before the batch id.
const PANIC_MARKER: &str = "guest panicked on batch ";

/// The batch ids of the panicking guest's attempts, in the order of `stderr`.
fn panicked_batches(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|line| line.split_once(PANIC_MARKER))
        .map(|(_, rest)| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect()
        })
        .collect()
}

/// Without `--once`, a batch the guest fails is tried again, in a fresh instance, and the host
/// keeps running; SIGTERM stops it with exit 0; a later run with another module delivers
/// every row, starting with the failed batch under its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_host_retries_a_failed_batch_and_keeps_running() {
    let (_db, mut host) = sqlite_users(5).await;
    let args = with_modules(
        &host,
        &["guest_panics"],
        &[
            "--pipeline",
            "retried",
            "--batch-size",
            "2",
            "--poll",
            "200ms",
            "--on-poison",
            "stop",
        ],
    );

    let started = Instant::now();
    let mut running = host.spawn(&refs(&args), None);
    let attempts = loop {
        if let Some(outcome) = running.try_finish() {
            panic!("a polling host exited when its guest panicked: {outcome}");
        }
        // Complete lines only: the host may be writing the last one.
        let stderr = running.stderr();
        let complete = &stderr[..stderr.rfind('\n').map_or(0, |end| end + 1)];
        let attempts = panicked_batches(complete);
        if attempts.len() >= 2 {
            break attempts;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "fewer than two attempts of the batch within 20 s; stderr:\n{}",
            running.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let batch = attempts[0].clone();
    assert!(
        attempts.iter().all(|attempt| *attempt == batch),
        "the attempts were on different batches: {attempts:?}"
    );
    if let Some(wait) = Duration::from_secs(2).checked_sub(started.elapsed()) {
        tokio::time::sleep(wait).await;
    }
    if let Some(outcome) = running.try_finish() {
        panic!("the polling host exited within 2 s: {outcome}");
    }
    let outcome = running.terminate().await;

    assert_eq!(
        outcome.code(),
        Some(0),
        "exit code after SIGTERM; {outcome}"
    );
    // The host's own reports of the failed attempts: lines that name the module and the
    // batch, other than the guest's output.
    let reports = outcome
        .stderr
        .lines()
        .filter(|line| {
            line.contains("guest_panics") && line.contains(&batch) && !line.contains(PANIC_MARKER)
        })
        .count();
    assert!(
        reports >= 2,
        "the host should report each failed attempt of batch {batch}, naming the module; \
         {reports} reports in:\n{}",
        outcome.stderr
    );
    assert_no_output(&host, "a batch that always fails");
    assert_nothing_synced(&host, "retried", "after the retries").await;

    let first = rerun_with_passthrough(&mut host, "retried", 5, &["--batch-size", "2"]).await;
    assert_eq!(
        first, batch,
        "the run after the retries should deliver the failed batch first, under its id"
    );
}

/// A command component, chained after a good module: refused with exit 2 before the source
/// is read, by `run` and by `check`.
#[tokio::test]
async fn module_of_neither_world_is_refused_at_load() {
    let (_db, host) = sqlite_users(3).await;
    let args = with_modules(
        &host,
        &["passthrough", "guest-wrong-world"],
        &["--pipeline", "wrong"],
    );

    let outcome = host.run_once(&refs(&args)).await;

    assert_eq!(outcome.code(), Some(2), "exit code; {outcome}");
    assert_mentions(
        &outcome.stderr,
        "the refusal of a command component",
        &[
            "guest-wrong-world",
            "implements neither the transform nor the destination world",
        ],
    );
    assert_no_output(&host, "a refused module");
    if let Some(pipeline) = pipeline_status(&host, "wrong").await {
        assert!(
            pipeline["pending_batch"].is_null(),
            "a batch was read for a refused module: {pipeline}"
        );
    }
    assert_nothing_synced(&host, "wrong", "after a refused module").await;

    let check = check_outcome(&host, "guest-wrong-world").await;
    assert_eq!(check.code(), Some(2), "host check exit code; {check}");
    assert_mentions(
        &check.stderr,
        "host check of a command component",
        &["implements neither the transform nor the destination world"],
    );
}

/// `host check --module NAME --cache-dir` this host's cache, whatever its exit code.
async fn check_outcome(host: &Host, name: &str) -> Outcome {
    let module = guest(name).display().to_string();
    let cache = host.cache_dir().display().to_string();
    host.exec(["check", "--module", &module, "--cache-dir", &cache])
        .await
}

/// `host check` of `name`, which must succeed.
async fn check(host: &Host, name: &str) -> Outcome {
    let outcome = check_outcome(host, name).await;
    assert!(outcome.success(), "host check {name}: {outcome}");
    outcome
}

fn cwasm_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(cwasm_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "cwasm") {
            files.push(path.display().to_string());
        }
    }
    files
}

#[tokio::test]
async fn check_compiles_once_then_loads_from_the_cache() {
    let host = Host::scratch();

    let first = check(&host, "passthrough").await;
    let cached = cwasm_files(&host.cache_dir());
    let second = check(&host, "passthrough").await;

    let (first, second) = (check_report(&first.stdout), check_report(&second.stdout));
    assert!(
        first.loaded.starts_with("compiled (now cached)"),
        "the first check of a module: {first:?}"
    );
    assert_eq!(cached.len(), 1, "compiled modules in the cache: {cached:?}");
    assert!(
        second.loaded.starts_with("loaded from the compile cache"),
        "the second check with the same cache: {second:?}"
    );
    assert_eq!(
        (
            &first.module,
            &first.world,
            &first.exports,
            &first.imports,
            &first.keys
        ),
        (
            &second.module,
            &second.world,
            &second.exports,
            &second.imports,
            &second.keys
        ),
        "the report besides its last line"
    );
}

/// What `host check` printed, in its fixed layout: `module:`, `world:`, `exports:` and
/// `imports:` with their names indented, `config keys:` (with the keys indented, or what the
/// module declares on the same line), then one line on how the module was loaded.
#[derive(Debug)]
struct CheckReport {
    module: String,
    world: String,
    exports: Vec<String>,
    imports: Vec<String>,
    keys: Vec<String>,
    loaded: String,
}

fn check_report(stdout: &str) -> CheckReport {
    let mut lines = stdout.lines().peekable();
    let take = |lines: &mut Peekable<Lines>, prefix: &str| -> String {
        lines
            .next()
            .and_then(|line| line.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("host check: no {prefix:?} line where expected:\n{stdout}"))
            .to_owned()
    };
    let indented = |lines: &mut Peekable<Lines>| -> Vec<String> {
        let mut names = Vec::new();
        while let Some(name) = lines.next_if(|line| line.starts_with("  ")) {
            names.push(name[2..].to_owned());
        }
        names
    };
    let module = take(&mut lines, "module:  ");
    let world = take(&mut lines, "world:   ");
    take(&mut lines, "exports:");
    let exports = indented(&mut lines);
    take(&mut lines, "imports:");
    let imports = indented(&mut lines);
    let declared = take(&mut lines, "config keys:");
    let mut keys = indented(&mut lines);
    if !declared.is_empty() {
        keys.push(declared.trim().to_owned());
    }
    let loaded = take(&mut lines, "");
    let rest: Vec<&str> = lines.collect();
    assert!(
        rest.is_empty(),
        "host check: lines after the last: {rest:?}\n{stdout}"
    );
    CheckReport {
        module,
        world,
        exports,
        imports,
        keys,
        loaded,
    }
}

/// `host check` of a transform and of a destination: the world and the contract's version,
/// the export of the world's interface, and the imports each module uses (`mask_pii` reads
/// its configuration through the host interface, the destination also imports outbound HTTP).
#[tokio::test]
async fn check_reports_world_exports_and_imports() {
    let host = Host::scratch();
    let cases = [
        (
            "passthrough",
            "transform (tidemark:processor@0.2.0)",
            "tidemark:processor/transformer@0.2.0",
            &["tidemark:processor/types@0.2.0"][..],
        ),
        (
            "mask_pii",
            "transform (tidemark:processor@0.2.0)",
            "tidemark:processor/transformer@0.2.0",
            &[
                "tidemark:processor/host@0.2.0",
                "tidemark:processor/types@0.2.0",
            ][..],
        ),
        (
            "guest_denied_destination",
            "destination (tidemark:processor@0.2.0)",
            "tidemark:processor/deliverer@0.2.0",
            &[
                "tidemark:processor/host@0.2.0",
                "wasi:http/outgoing-handler@0.2.12",
            ][..],
        ),
    ];
    for (name, world, export, imports) in cases {
        let outcome = check(&host, name).await;

        let report = check_report(&outcome.stdout);
        assert_eq!(
            report.module,
            guest(name).display().to_string(),
            "{report:?}"
        );
        assert_eq!(report.world, world, "world of {name}");
        // Every module of the SDK exports `lifecycle` too (its keys, its init).
        assert_eq!(
            report.exports,
            ["tidemark:processor/lifecycle@0.2.0", export],
            "exports of {name}"
        );
        for import in imports {
            assert!(
                report.imports.iter().any(|have| have == import),
                "imports of {name} should include {import}: {:?}",
                report.imports
            );
        }
        if name == "mask_pii" {
            assert_eq!(
                report.keys,
                [
                    "email_column: the column hashed (default email)",
                    "drop: columns removed, comma-separated"
                ],
                "the keys mask_pii declares"
            );
        }
        assert!(
            report.loaded.starts_with("compiled (now cached)"),
            "the first check of {name}: {:?}",
            report.loaded
        );
    }
}

/// A module's usage line of `host test`.
#[derive(Debug)]
struct Usage {
    fuel: Option<u64>,
    peak_memory_mib: f64,
}

/// The one stderr line `<name>: <time>, fuel <n | not metered>, peak memory <x> MiB`.
fn usage(stderr: &str, name: &str) -> Usage {
    let prefix = format!("{name}: ");
    let lines: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .collect();
    let [line] = lines[..] else {
        panic!("expected one usage line of {name} in stderr:\n{stderr}");
    };
    let parts: Vec<&str> = line.split(", ").collect();
    let [time, fuel, memory] = parts[..] else {
        panic!("usage line of {name} is not `time, fuel, peak memory`: {line:?}");
    };
    let time_number = ["ns", "µs", "us", "ms", "s"]
        .iter()
        .find_map(|unit| time.strip_suffix(unit));
    assert!(
        time_number.is_some_and(|n| matches!(n.parse::<f64>(), Ok(n) if n >= 0.0)),
        "usage line of {name}: bad time {time:?}"
    );
    let fuel = match fuel.strip_prefix("fuel ") {
        Some("not metered") => None,
        Some(n) => Some(
            n.parse::<u64>()
                .unwrap_or_else(|_| panic!("usage line of {name}: bad fuel {n:?}")),
        ),
        None => panic!("usage line of {name}: bad fuel {fuel:?}"),
    };
    let peak_memory_mib = memory
        .strip_prefix("peak memory ")
        .and_then(|rest| rest.strip_suffix(" MiB"))
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("usage line of {name}: bad peak memory {memory:?}"));
    Usage {
        fuel,
        peak_memory_mib,
    }
}

/// `host test` with `extra`, over `rows` written to a file.
async fn host_test(host: &Host, rows: &Value, extra: &[&str]) -> Outcome {
    let input = host.dir().join("rows.json");
    std::fs::write(&input, rows.to_string()).expect("writing the input rows");
    let mut args = vec!["test".to_owned(), "--input".to_owned()];
    args.push(input.display().to_string());
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    host.exec(&args).await
}

#[tokio::test]
async fn test_command_runs_mask_pii_over_a_file() {
    let host = Host::scratch();
    let rows = json!([
        {"id": 1, "email": "  Alice@Example.COM ", "name": "Alice", "phone": "555-0100"},
        {"op": "delete", "row": {"id": 2, "email": "bob@example.com", "name": "Bob"}},
        {"id": 3, "email": null, "name": "Nobody"},
    ]);
    let args = with_modules(&host, &["mask_pii"], &["--set", "drop=name,phone"]);

    let outcome = host_test(&host, &rows, &refs(&args)).await;

    assert!(outcome.success(), "host test: {outcome}");
    let printed: Value = serde_json::from_str(&outcome.stdout)
        .unwrap_or_else(|err| panic!("host test printed no JSON ({err}): {outcome}"));
    // SHA-256 of "alice@example.com" and "bob@example.com".
    let expected = json!([
        {"op": "upsert", "row": {
            "id": 1,
            "email": "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976",
            "masked": true,
        }},
        {"op": "delete", "row": {
            "id": 2,
            "email": "5ff860bf1190596c7188ab851db691f0f3169c453936e9e1eba2f9a47f7a0018",
            "masked": true,
        }},
        {"op": "upsert", "row": {"id": 3, "email": null, "masked": true}},
    ]);
    assert_eq!(printed, expected, "host test output");
    assert!(
        outcome.stdout.starts_with("[\n  {"),
        "the output should be pretty JSON:\n{}",
        outcome.stdout
    );
    let mask = usage(&outcome.stderr, "mask_pii");
    assert_eq!(mask.fuel, None, "fuel without --fuel");
    assert!(
        mask.peak_memory_mib > 0.0,
        "peak memory of mask_pii: {mask:?}"
    );
}

/// `--config KEY=VALUE`, the old spelling of `--set KEY=VALUE`, still reaches the module, with
/// a warning that names the new flag.
#[tokio::test]
async fn deprecated_config_spelling_still_sets_module_values() {
    let (_db, mut host) = sqlite_users(3).await;
    let args = with_modules(&host, &["mask_pii"], &["--config", "drop=name"]);

    let outcome = host.run_once(&refs(&args)).await;

    assert!(outcome.success(), "host run --config drop=name: {outcome}");
    assert_mentions(
        &outcome.stderr,
        "the run's log",
        &["--config KEY=VALUE is deprecated; use --set KEY=VALUE"],
    );
    let lines = host.new_lines();
    assert_each_once(&lines, 1..=3);
    for line in &lines {
        assert!(!line.row.contains_key("name"), "name kept: {:?}", line.row);
        assert_eq!(line.row["masked"], true, "{:?}", line.row);
    }
}

/// Two modules under a fuel budget: each gets its usage line, in chain order, with the fuel it
/// burned; `email_column` moves the hashing to another column.
#[tokio::test]
async fn test_command_meters_each_module_of_a_chain() {
    let host = Host::scratch();
    let rows = json!([{"id": 1, "contact": "Carol@Example.com", "email": "keep@example.com"}]);
    let args = with_modules(
        &host,
        &["passthrough", "mask_pii"],
        &["--set", "email_column=contact", "--fuel", "1000000000"],
    );

    let outcome = host_test(&host, &rows, &refs(&args)).await;

    assert!(outcome.success(), "host test: {outcome}");
    let printed: Value = serde_json::from_str(&outcome.stdout)
        .unwrap_or_else(|err| panic!("host test printed no JSON ({err}): {outcome}"));
    // SHA-256 of "carol@example.com".
    let expected = json!([{"op": "upsert", "row": {
        "id": 1,
        "contact": "e0d47ca1bc1eb62e650fc1fd660a9bfbf7cba8dc6337d81df7ea9aa9071a24a5",
        "email": "keep@example.com",
        "masked": true,
    }}]);
    assert_eq!(printed, expected, "host test output");
    for name in ["passthrough", "mask_pii"] {
        let used = usage(&outcome.stderr, name);
        let fuel = used
            .fuel
            .unwrap_or_else(|| panic!("{name} not metered under --fuel: {used:?}"));
        assert!(
            fuel > 0 && fuel <= 1_000_000_000,
            "fuel burned by {name}: {fuel}"
        );
    }
    let position = |name: &str| {
        let prefix = format!("{name}: ");
        outcome
            .stderr
            .lines()
            .position(|line| line.starts_with(&prefix))
    };
    assert!(
        position("passthrough") < position("mask_pii"),
        "usage lines out of chain order:\n{}",
        outcome.stderr
    );
}

/// `--pipeline` and `--batch-id` reach the module; its failure is reported like a run's.
#[tokio::test]
async fn test_command_reports_a_panicking_module() {
    let host = Host::scratch();
    let rows = json!([{"id": 1}]);
    let args = with_modules(
        &host,
        &["guest_panics"],
        &["--pipeline", "trial", "--batch-id", "b-42"],
    );

    let outcome = host_test(&host, &rows, &refs(&args)).await;

    assert!(
        !outcome.success(),
        "host test of a panicking module: {outcome}"
    );
    // First the batch as given; then the parts `host test` splits it into, as `host run`
    // would, to tell a row at fault from a module that cannot run.
    assert_eq!(
        panicked_batches(&outcome.stderr)
            .first()
            .map(String::as_str),
        Some("b-42"),
        "the batch id the guest saw"
    );
    assert_mentions(
        error_report(&outcome),
        "the error of host test",
        &["guest_panics", "trial", "b-42", "panicked"],
    );
}

/// Each component of `tests/guests/` is run by a test of this file.
/// Scenario: a destination sends three requests at once (`http::send_all`) to a receiver that
/// answers each after 300 ms. With `--max-in-flight 1` the host lets them out one after
/// another; with `--max-in-flight 3`, together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_caps_requests_sent_together() {
    for in_flight in [1, 3] {
        let (_db, host) = sqlite_users(2).await;
        let server = Server::start(|_| Reply::ok().delayed(Duration::from_millis(300)));
        let url = format!("url={}", server.url("/fanout"));
        let origin = server.origin();
        let in_flight_arg = in_flight.to_string();
        let args = with_modules(
            &host,
            &["guest_concurrent_requests"],
            &[
                "--pipeline",
                "fanout",
                "--set",
                &url,
                "--allow-host",
                &origin,
                "--max-in-flight",
                &in_flight_arg,
            ],
        );
        let outcome = host.run_once(&refs(&args)).await;
        assert_eq!(
            outcome.code(),
            Some(0),
            "--max-in-flight {in_flight}: {outcome}"
        );
        let arrivals: Vec<Instant> = server.requests().iter().map(|r| r.at).collect();
        assert_eq!(arrivals.len(), 3, "--max-in-flight {in_flight}: requests");
        let first = arrivals.iter().min().copied().unwrap_or_else(Instant::now);
        let last = arrivals.iter().max().copied().unwrap_or(first);
        let spread = last - first;
        if in_flight == 1 {
            assert!(
                spread >= Duration::from_millis(550),
                "one in flight, yet the requests arrived within {spread:?}"
            );
        } else {
            assert!(
                spread < Duration::from_millis(250),
                "three in flight, yet the requests arrived over {spread:?}"
            );
        }
    }
}

#[test]
fn every_test_guest_has_a_test() {
    // This file, the hostile-tenant tests (tests/hostile_*.rs), which run their guests next
    // to a healthy tenant, the authoring tests (tests/authoring.rs) and the contract's
    // (tests/contract.rs).
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests");
    let mut source = include_str!("modules.rs").to_owned();
    for entry in std::fs::read_dir(&tests)
        .expect("the tests directory")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let named = matches!(name.as_str(), "authoring.rs" | "contract.rs");
        if (name.starts_with("hostile_") || named) && name.ends_with(".rs") {
            source += &std::fs::read_to_string(entry.path()).expect("a test file");
        }
    }
    let names = test_guest_names();
    assert!(!names.is_empty(), "no guests found in tests/guests");
    for name in names {
        assert!(
            source.contains(&format!("\"{name}\"")),
            "tests/guests builds {name}, but no test in tests/modules.rs, tests/hostile_*.rs, tests/authoring.rs or tests/contract.rs runs it"
        );
    }
}

/// Scenario: a chain that ends in a destination module. The module is refused the network
/// (no origin is allowed), the host says so with the module and pipeline, the batch counts as
/// delivered and nothing goes to the JSON Lines output. A "retry later" or "fatal" answer
/// fails the run with the destination's message and leaves the watermark where it was; as the
/// host refused the call's request, the retry-later is not retried, and both name the refusal;
/// so does a panic after the refusal, neither retried nor split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_module_ends_the_chain() {
    let (_db, host) = sqlite_users(3).await;
    let args = with_modules(
        &host,
        &["guest_denied_destination"],
        &["--pipeline", "dest"],
    );
    let outcome = host.run_once(&refs(&args)).await;
    assert_eq!(outcome.code(), Some(0), "exit code; {outcome}");
    assert_mentions(
        &outcome.stderr,
        "the log of a destination refused the network",
        &[
            "refused outbound request to https://example.com:443",
            "request denied as expected",
            "guest_denied_destination",
        ],
    );
    assert_no_output(&host, "a chain that ends in a destination");
    let status = pipeline_status(&host, "dest").await.expect("pipeline dest");
    assert_eq!(status["rows_synced"], 3, "{status}");

    let refusal = "the host refused its request to https://example.com:443: its origin is not on the allow-list; allow it with --allow-host https://example.com:443";
    for (mode, says) in [
        ("retry", "asked to retry batch"),
        ("fatal", "bad credentials"),
        ("panic", "panicked"),
    ] {
        let (_db, host) = sqlite_users(2).await;
        let config = format!("mode={mode}");
        let args = with_modules(
            &host,
            &["guest_denied_destination"],
            &["--pipeline", mode, "--set", &config],
        );
        let outcome = host.run_once(&refs(&args)).await;
        assert_eq!(
            outcome.code(),
            Some(1),
            "exit code with {config}; {outcome}"
        );
        assert_mentions(
            error_report(&outcome),
            &config,
            &["guest_denied_destination", says, refusal],
        );
        if mode != "fatal" {
            assert_mentions(error_report(&outcome), &config, &["retrying cannot help"]);
        }
        // Stopped at the first call: neither retried nor split to look for a row at fault.
        assert_eq!(
            outcome.stderr.matches("refused outbound request").count(),
            1,
            "calls with {config}: {outcome}"
        );
        assert_nothing_synced(&host, mode, &config).await;
    }

    // An init that fails after a refused request names the refusal: exit 2, nothing read.
    let (_db, host) = sqlite_users(2).await;
    let args = with_modules(
        &host,
        &["guest_denied_destination"],
        &["--pipeline", "init", "--set", "mode=init"],
    );
    let outcome = host.run_once(&refs(&args)).await;
    assert_eq!(
        outcome.code(),
        Some(2),
        "exit code with mode=init; {outcome}"
    );
    assert_mentions(
        error_report(&outcome),
        "mode=init",
        &[
            "refused its configuration",
            "cannot reach the receiver",
            refusal,
        ],
    );
    assert_nothing_synced(&host, "init", "mode=init").await;
}
