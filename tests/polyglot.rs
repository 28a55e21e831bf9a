//! Processors written in other languages, end to end: the JavaScript and Python examples
//! (`examples/js-filter`, `examples/py-enrich`, `examples/py-webhook`, built by
//! `scripts/build-polyglot`) run by the real host on real tables.
//!
//! - `js_filter` keeps the rows its `where` condition matches and reshapes them (`select`),
//!   on PostgreSQL and SQLite; an update that makes a row match brings it out; a bad `where`
//!   stops the run at start. Contract 0.2.0's rejections, `init` and config keys from
//!   JavaScript and Python: [`crate::polyglot_contract`].
//! - `py_enrich` splits names and normalises countries, on PostgreSQL and SQLite, and under
//!   `host test` over a file.
//! - The chain `js_filter` → `py_enrich`, on both databases, and over one 5,000-row batch with
//!   the default memory and time limits; a too-small `--memory-limit` fails the batch with an
//!   error that names the flag.
//! - `py_webhook` and `js_webhook` (world `destination`, outbound HTTP from Python through
//!   `wasi:http`, from JavaScript through `fetch()`), one scenario each for both, against a
//!   receiver on 127.0.0.1: the body and headers of each batch, a retry of the same batch id
//!   after 503, giving up after `--max-retries`, a fatal 4xx that leaves the watermark where
//!   it was, rejected rows kept as dead letters; `js_webhook` asking to retry after the host
//!   refused its origin (`fetch()` does not tell that from a receiver that is down), which the
//!   host turns into a stop at once, naming `--allow-host`.
//!
//! The components are 12–18 MB and take ~11 s each to compile: every test loads them from one
//! compile cache under the target directory ([`crate::support::guests::warmed`]).

use serde_json::{json, Map, Value};

use crate::support::guests::{shared_cache_dir, warmed};
use crate::support::host::{assert_mentions, error_report};
use crate::support::http_server::{Recorded, Reply, Server};
use crate::support::lines::{batches, ids, Line};
use crate::support::{at, Backend, Col, Host, TestDb, Val};

crate::support::on_databases!(
    [postgres => Postgres, sqlite => Sqlite],
    [
    js_filter_keeps_matching_rows_and_reshapes_them,
    py_enrich_splits_names_and_normalises_countries,
    chain_of_js_filter_and_py_enrich,
    py_webhook_posts_each_batch_with_its_id,
    js_webhook_posts_each_batch_with_its_id,
]
);

// ---------------------------------------------------------------------------------------------
// Helpers

/// `--module PATH` for each of `names` (compiled into the shared cache first), the shared
/// `--cache-dir`, then `extra`.
pub(crate) async fn with_modules(names: &[&str], extra: &[&str]) -> Vec<String> {
    let mut args = Vec::new();
    for name in names {
        args.push("--module".to_owned());
        args.push(warmed(name).await.display().to_string());
    }
    args.push("--cache-dir".to_owned());
    args.push(shared_cache_dir().display().to_string());
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    args
}

pub(crate) fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn row_value(line: &Line) -> Value {
    Value::Object(line.row.clone())
}

/// `rows_synced` of pipeline `name` in `host status --json` (0 when the state lacks it).
pub(crate) async fn rows_synced(host: &Host, name: &str) -> i64 {
    host.status_json()
        .await
        .into_iter()
        .find(|pipeline| pipeline["pipeline"] == name)
        .map_or(0, |pipeline| {
            pipeline["rows_synced"]
                .as_i64()
                .unwrap_or_else(|| panic!("rows_synced of {name}: {pipeline}"))
        })
}

/// `people(id, name, country, plan, updated_at)`: the table of the Python and chain tests.
const PEOPLE: &[(&str, Col)] = &[
    ("id", Col::Key),
    ("name", Col::Text),
    ("country", Col::Text),
    ("plan", Col::Text),
    ("updated_at", Col::Stamp),
];
const PEOPLE_COLUMNS: &[&str] = &["id", "name", "country", "plan", "updated_at"];

fn text(value: &str) -> Val {
    Val::Text(value.to_owned())
}

fn opt_text(value: Option<&str>) -> Val {
    value.map_or(Val::Null, text)
}

/// A person: `(id, name, country, plan)`, stamped `at(id)`.
type Person = (
    i64,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
);

/// A person and what `py_enrich` makes of them: `(person, first_name, last_name, country
/// after)`.
type PersonCase = (
    Person,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

/// Names and countries in the forms `py_enrich` handles.
const PEOPLE_CASES: &[PersonCase] = &[
    (
        (1, Some("Ada Lovelace"), Some("gbr"), "pro"),
        Some("Ada"),
        Some("Lovelace"),
        Some("GB"),
    ),
    (
        (2, Some("  Grace   Brewster Hopper "), Some("usa"), "free"),
        Some("Grace"),
        Some("Brewster Hopper"),
        Some("US"),
    ),
    (
        (3, Some("Turing, Alan"), Some("United Kingdom"), "pro"),
        Some("Alan"),
        Some("Turing"),
        Some("GB"),
    ),
    (
        (4, Some("Plato"), Some("Atlantis"), "pro"),
        Some("Plato"),
        None,
        Some("Atlantis"),
    ),
    ((5, None, Some("de"), "team"), None, None, Some("DE")),
    (
        (6, Some("Edsger W. Dijkstra"), None, "pro"),
        Some("Edsger"),
        Some("W. Dijkstra"),
        None,
    ),
];

pub(crate) async fn people_table(db: &TestDb) -> String {
    let table = db.create_table("people", PEOPLE).await;
    let rows: Vec<Vec<Val>> = PEOPLE_CASES
        .iter()
        .map(|((id, name, country, plan), ..)| {
            vec![
                Val::Int(*id),
                opt_text(*name),
                opt_text(*country),
                text(plan),
                Val::Ts(at(*id)),
            ]
        })
        .collect();
    db.insert(&table, PEOPLE_COLUMNS, &rows).await;
    table
}

// ---------------------------------------------------------------------------------------------
// js_filter

/// Scenario: `js_filter` with `where=score >= 50` and `select=id,name:full_name,plan` over 7
/// accounts in batches of 3: exactly the 5 matching rows come out, in order, each as
/// `{id, full_name, plan}`; an update that makes row 3 match brings it out, one that makes
/// row 1 stop matching brings nothing.
async fn js_filter_keeps_matching_rows_and_reshapes_them(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let table = db
        .create_table(
            "accounts",
            &[
                ("id", Col::Key),
                ("name", Col::Text),
                ("plan", Col::Text),
                ("score", Col::Int),
                ("updated_at", Col::Stamp),
            ],
        )
        .await;
    let accounts = [
        (1, "Ada Lovelace", "pro", 90),
        (2, "Grace Hopper", "free", 75),
        (3, "Alan Turing", "pro", 40),
        (4, "Edsger Dijkstra", "pro", 50),
        (5, "Barbara Liskov", "team", 99),
        (6, "Ken Thompson", "pro", 10),
        (7, "Niklaus Wirth", "pro", 51),
    ];
    let rows: Vec<Vec<Val>> = accounts
        .iter()
        .map(|(id, name, plan, score)| {
            vec![
                Val::Int(*id),
                text(name),
                text(plan),
                Val::Int(*score),
                Val::Ts(at(*id)),
            ]
        })
        .collect();
    db.insert(
        &table,
        &["id", "name", "plan", "score", "updated_at"],
        &rows,
    )
    .await;
    let mut host = Host::new(&db, &table);
    let args = with_modules(
        &["js_filter"],
        &[
            "--set",
            "where=score >= 50",
            "--set",
            "select=id,name:full_name,plan",
            "--batch-size",
            "3",
            "--pipeline",
            "filtered",
        ],
    )
    .await;

    let lines = host.once(&refs(&args)).await;

    let expected: Vec<Value> = accounts
        .iter()
        .filter(|(.., score)| *score >= 50)
        .map(|(id, name, plan, _)| json!({"id": id, "full_name": name, "plan": plan}))
        .collect();
    let got: Vec<Value> = lines.iter().map(row_value).collect();
    assert_eq!(got, expected, "rows out of js_filter");
    assert!(
        lines.iter().all(|line| line.op == "upsert"),
        "ops: {lines:?}"
    );
    let per_batch: Vec<Vec<i64>> = batches(&lines).into_iter().map(|(_, ids)| ids).collect();
    assert_eq!(
        per_batch,
        [vec![1, 2], vec![4, 5], vec![7]],
        "the kept rows of each batch of 3"
    );
    assert_eq!(
        rows_synced(&host, "filtered").await,
        7,
        "every row read counts as synced, kept or not"
    );

    db.execute(&format!(
        "UPDATE {table} SET score = 60, updated_at = {} WHERE id = 3",
        db.lit(&Val::Ts(at(100)))
    ))
    .await;
    db.execute(&format!(
        "UPDATE {table} SET score = 5, updated_at = {} WHERE id = 1",
        db.lit(&Val::Ts(at(101)))
    ))
    .await;
    let update = host.once(&refs(&args)).await;
    assert_eq!(
        update.iter().map(row_value).collect::<Vec<_>>(),
        [json!({"id": 3, "full_name": "Alan Turing", "plan": "pro"})],
        "after row 3 came to match and row 1 stopped matching"
    );
}

/// A `where` that is not a condition stops the run at start (the module's `init`, contract
/// 0.2.0): exit 2 with the module's message, nothing read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_filter_refuses_a_bad_condition_at_start() {
    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("sqlite always runs");
    let table = people_table(&db).await;
    let host = Host::new(&db, &table);
    let args = with_modules(
        &["js_filter"],
        &["--set", "where=plan is pro", "--pipeline", "bad"],
    )
    .await;

    let outcome = host.run_once(&refs(&args)).await;

    assert_eq!(outcome.code(), Some(2), "exit code; {outcome}");
    assert_mentions(
        error_report(&outcome),
        "the error of a bad condition",
        &["js_filter", "is not a condition", "COLUMN OP VALUE"],
    );
    assert_eq!(rows_synced(&host, "bad").await, 0, "rows synced");
    assert!(host.all_lines().is_empty(), "rows written: {outcome}");
}

// ---------------------------------------------------------------------------------------------
// py_enrich

/// What `py_enrich` makes of person `id` of [`PEOPLE_CASES`] with the default configuration.
fn enriched(db: &TestDb, id: i64) -> Value {
    let ((_, name, _, plan), first, last, country) = PEOPLE_CASES
        .iter()
        .find(|((case, ..), ..)| *case == id)
        .unwrap_or_else(|| panic!("no person {id}"));
    json!({
        "id": id,
        "name": name,
        "country": country,
        "plan": plan,
        "updated_at": db.rendered_stamp(at(id)),
        "first_name": first,
        "last_name": last,
    })
}

/// Scenario: `py_enrich` over [`PEOPLE_CASES`] in batches of 4: every row once, in order,
/// with `first_name`, `last_name` and the country code exactly as expected.
async fn py_enrich_splits_names_and_normalises_countries(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let table = people_table(&db).await;
    let mut host = Host::new(&db, &table);
    let args = with_modules(&["py_enrich"], &["--batch-size", "4"]).await;

    let lines = host.once(&refs(&args)).await;

    assert_eq!(ids(&lines), [1, 2, 3, 4, 5, 6], "rows out of py_enrich");
    for line in &lines {
        assert_eq!(
            row_value(line),
            enriched(&db, line.id()),
            "row {}",
            line.id()
        );
        assert_eq!(line.op, "upsert", "op of row {}", line.id());
    }
    let sizes: Vec<usize> = batches(&lines).iter().map(|(_, ids)| ids.len()).collect();
    assert_eq!(sizes, [4, 2], "batches of 4 over 6 rows");
}

/// `host test --module py_enrich.wasm --input rows.json`: bare rows and `{op, row}` elements,
/// `name_column` and `country_column` from `--set`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_test_runs_py_enrich_over_a_file() {
    let host = Host::scratch();
    let input = host.dir().join("rows.json");
    let rows = json!([
        {"id": 1, "full": "Ada Lovelace", "land": "Deutschland", "country": "usa"},
        {"op": "delete", "row": {"id": 2, "full": "Hopper, Grace", "land": "nz"}},
        {"id": 3, "full": "", "land": "Narnia"},
    ]);
    std::fs::write(&input, rows.to_string()).expect("writing the input rows");
    let mut args = vec!["test".to_owned(), "--input".to_owned()];
    args.push(input.display().to_string());
    args.extend(
        with_modules(
            &["py_enrich"],
            &["--set", "name_column=full", "--set", "country_column=land"],
        )
        .await,
    );

    let outcome = host.exec(&args).await;

    assert!(outcome.success(), "host test: {outcome}");
    let printed: Value = serde_json::from_str(&outcome.stdout)
        .unwrap_or_else(|err| panic!("host test printed no JSON ({err}): {outcome}"));
    let expected = json!([
        {"op": "upsert", "row": {
            "id": 1, "full": "Ada Lovelace", "land": "DE", "country": "usa",
            "first_name": "Ada", "last_name": "Lovelace",
        }},
        {"op": "delete", "row": {
            "id": 2, "full": "Hopper, Grace", "land": "NZ",
            "first_name": "Grace", "last_name": "Hopper",
        }},
        {"op": "upsert", "row": {
            "id": 3, "full": "", "land": "Narnia", "first_name": null, "last_name": null,
        }},
    ]);
    assert_eq!(printed, expected, "host test output");
    assert_mentions(
        &outcome.stderr,
        "the log of py_enrich",
        &[
            "1 rows with a land not recognised",
            "py_enrich: ",
            "peak memory",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// The chain

/// Scenario: `js_filter` (`where=plan = pro`, `select=id,name:full,country`) then `py_enrich`
/// (`name_column=full`; both modules see every `--set`): the `pro` rows, reshaped, then
/// enriched.
async fn chain_of_js_filter_and_py_enrich(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let table = people_table(&db).await;
    let mut host = Host::new(&db, &table);
    let args = with_modules(
        &["js_filter", "py_enrich"],
        &[
            "--set",
            "where=plan = pro",
            "--set",
            "select=id,name:full,country",
            "--set",
            "name_column=full",
            "--pipeline",
            "chained",
        ],
    )
    .await;

    let lines = host.once(&refs(&args)).await;

    let expected: Vec<Value> = PEOPLE_CASES
        .iter()
        .filter(|((.., plan), ..)| *plan == "pro")
        .map(|((id, name, ..), first, last, country)| {
            json!({
                "id": id,
                "full": name,
                "country": country,
                "first_name": first,
                "last_name": last,
            })
        })
        .collect();
    assert_eq!(
        lines.iter().map(row_value).collect::<Vec<_>>(),
        expected,
        "rows out of js_filter then py_enrich"
    );
}

/// People `1..=count`: `First<i> Last<i>`, country `usa`, plan `pro` for even ids.
async fn many_people(db: &TestDb, count: i64, name: impl Fn(i64) -> String) -> String {
    let table = db.create_table("people", PEOPLE).await;
    let rows: Vec<Vec<Val>> = (1..=count)
        .map(|id| {
            vec![
                Val::Int(id),
                Val::Text(name(id)),
                text("usa"),
                text(if id % 2 == 0 { "pro" } else { "free" }),
                Val::Ts(at(id)),
            ]
        })
        .collect();
    db.insert(&table, PEOPLE_COLUMNS, &rows).await;
    table
}

/// One batch of 5,000 rows through `js_filter` and `py_enrich` with the default memory limit
/// and deadline: the 2,500 `pro` rows, each enriched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_takes_a_5000_row_batch_under_the_default_limits() {
    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("sqlite always runs");
    let table = many_people(&db, 5_000, |id| format!("First{id} Last{id}")).await;
    let mut host = Host::new(&db, &table);
    let args = with_modules(
        &["js_filter", "py_enrich"],
        &["--set", "where=plan = pro", "--batch-size", "5000"],
    )
    .await;

    let lines = host.once(&refs(&args)).await;

    assert_eq!(
        ids(&lines),
        (1..=2_500).map(|n| n * 2).collect::<Vec<_>>(),
        "the pro rows of the batch"
    );
    assert_eq!(batches(&lines).len(), 1, "one batch");
    for line in &lines {
        let id = line.id();
        let mut expected = Map::new();
        expected.insert("first_name".into(), json!(format!("First{id}")));
        expected.insert("last_name".into(), json!(format!("Last{id}")));
        expected.insert("country".into(), json!("US"));
        for (column, value) in expected {
            assert_eq!(line.row.get(&column), Some(&value), "{column} of row {id}");
        }
    }
}

/// A batch that needs more memory than `--memory-limit` (3,000 names of 2,000 characters
/// under 16 MiB) with `--on-poison stop`: exit 1, an error that names the module, the limit
/// and the flag; nothing synced. (With `park`, the default, the batch is split until its parts
/// fit, and every row arrives: no row fails alone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_enrich_over_its_memory_limit_names_the_flag() {
    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("sqlite always runs");
    let long = "x".repeat(2_000);
    let table = many_people(&db, 3_000, |id| format!("Ada{id} {long}")).await;
    let host = Host::new(&db, &table);
    let args = with_modules(
        &["py_enrich"],
        &[
            "--memory-limit",
            "16MiB",
            "--batch-size",
            "3000",
            "--pipeline",
            "hungry",
            "--on-poison",
            "stop",
        ],
    )
    .await;

    let outcome = host.run_once(&refs(&args)).await;

    assert_eq!(outcome.code(), Some(1), "exit code; {outcome}");
    assert_mentions(
        error_report(&outcome),
        "the error of py_enrich over its memory limit",
        &["py_enrich", "hungry", "memory limit", "--memory-limit"],
    );
    assert_eq!(rows_synced(&host, "hungry").await, 0, "rows synced");
}

// ---------------------------------------------------------------------------------------------
// py_webhook and js_webhook: the same program in two languages, so the same scenarios

const HOOK_PIPELINE: &str = "hook";

/// Webhook destination `module` posting to `server`'s `/hook` (allowed), with a 50 ms retry
/// backoff, then `extra`.
async fn webhook_args(module: &str, server: &Server, extra: &[&str]) -> Vec<String> {
    let url = format!("url={}", server.url("/hook"));
    let origin = server.origin();
    let mut flags = vec![
        "--set",
        &url,
        "--allow-host",
        &origin,
        "--pipeline",
        HOOK_PIPELINE,
        "--retry-backoff",
        "50ms",
    ];
    flags.extend(extra);
    with_modules(&[module], &flags).await
}

/// The body of a webhook request: `(id, pipeline, rows)`, checked to have exactly those keys
/// and the batch id as `Idempotency-Key`.
fn webhook_body(request: &Recorded) -> (String, String, Vec<Value>) {
    assert_eq!(request.method, "POST", "{request:?}");
    assert_eq!(request.path, "/hook", "{request:?}");
    assert_eq!(
        request.header("content-type"),
        Some("application/json"),
        "{request:?}"
    );
    let body = request.json();
    let Some(object) = body.as_object() else {
        panic!("webhook body is not an object: {body}");
    };
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(keys, ["id", "pipeline", "rows"], "keys of the body {body}");
    let id = body["id"].as_str().expect("id as a string").to_owned();
    assert_eq!(
        request.header("idempotency-key"),
        Some(id.as_str()),
        "Idempotency-Key of the batch {id}"
    );
    let pipeline = body["pipeline"]
        .as_str()
        .expect("pipeline as a string")
        .to_owned();
    let rows = body["rows"].as_array().expect("rows as an array").clone();
    (id, pipeline, rows)
}

/// What the host hands on for user `id`: `{"op": "upsert", "row": {...}}`.
fn user_change(db: &TestDb, id: i64) -> Value {
    json!({"op": "upsert", "row": {
        "id": id,
        "email": format!("user{id}@example.com"),
        "name": format!("user {id}"),
        "updated_at": db.rendered_stamp(at(id)),
    }})
}

async fn users(db: &TestDb, count: i64) -> String {
    let table = db.create_users().await;
    db.insert_users(&table, (1..=count).map(|id| (id, Val::Ts(at(id)))))
        .await;
    table
}

async fn py_webhook_posts_each_batch_with_its_id(backend: Backend) {
    webhook_posts_each_batch_with_its_id("py_webhook", backend).await;
}

async fn js_webhook_posts_each_batch_with_its_id(backend: Backend) {
    webhook_posts_each_batch_with_its_id("js_webhook", backend).await;
}

/// Scenario: 5 users in batches of 2 to a receiver that takes everything: three POSTs, each
/// with its own batch id as body `id` and `Idempotency-Key`, the pipeline's name, the
/// batch's rows exactly, and the bearer token from a secret, which the log never shows.
async fn webhook_posts_each_batch_with_its_id(module: &str, backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let table = users(&db, 5).await;
    let mut host = Host::new(&db, &table);
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let variable = format!(
        "TM_TEST_HOOK_TOKEN_{}",
        uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase()
    );
    host.set_env(&variable, &token);
    let server = Server::accepting();
    let secret = format!("token={variable}");
    let args = webhook_args(module, &server, &["--batch-size", "2", "--secret", &secret]).await;

    let outcome = host.run_once(&refs(&args)).await;

    assert!(outcome.success(), "{module} run: {outcome}");
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "POSTs for 5 rows in batches of 2");
    let mut batch_ids = Vec::new();
    let mut next_id = 1;
    for request in &requests {
        let (id, pipeline, rows) = webhook_body(request);
        assert_eq!(pipeline, HOOK_PIPELINE, "pipeline of batch {id}");
        assert_eq!(id.len(), 32, "a batch id of 32 hex digits: {id}");
        let expected: Vec<Value> = (next_id..(next_id + 2).min(6))
            .map(|n| user_change(&db, n))
            .collect();
        next_id += expected.len() as i64;
        assert_eq!(rows, expected, "rows of batch {id}");
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {token}").as_str()),
            "Authorization of batch {id}"
        );
        batch_ids.push(id);
    }
    batch_ids.dedup();
    assert_eq!(batch_ids.len(), 3, "distinct batch ids: {batch_ids:?}");
    assert!(
        !outcome.stderr.contains(&token) && !outcome.stdout.contains(&token),
        "the token leaked into the host's output: {outcome}"
    );
    assert_eq!(rows_synced(&host, HOOK_PIPELINE).await, 5, "rows synced");
    assert!(
        host.new_lines().is_empty(),
        "a destination run wrote JSON Lines"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_webhook_retries_the_same_batch_after_503() {
    webhook_retries_the_same_batch_after_503("py_webhook").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_webhook_retries_the_same_batch_after_503() {
    webhook_retries_the_same_batch_after_503("js_webhook").await;
}

/// 503 (with `Retry-After: 0`), 503, then 200: the same batch, under the same id and with the
/// same body, three times, and the run succeeds. A receiver that always answers 503 is given
/// up on after `--max-retries`, naming the flag, with nothing synced.
async fn webhook_retries_the_same_batch_after_503(module: &str) {
    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("sqlite always runs");
    let table = users(&db, 2).await;
    let host = Host::new(&db, &table);
    let server = Server::scripted(
        vec![
            Reply::status(503).header("Retry-After", "0").body("busy"),
            Reply::status(503).body("still busy"),
        ],
        Reply::ok(),
    );
    let args = webhook_args(module, &server, &[]).await;

    let outcome = host.run_once(&refs(&args)).await;

    assert!(outcome.success(), "{module} run with two 503s: {outcome}");
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "attempts of the one batch");
    let first = webhook_body(&requests[0]);
    for request in &requests[1..] {
        assert_eq!(
            webhook_body(request),
            first,
            "a retry sends the same batch id and rows"
        );
    }
    assert_eq!(
        first.2,
        [user_change(&db, 1), user_change(&db, 2)],
        "rows of the batch"
    );
    assert_mentions(
        &outcome.stderr,
        "the host's log of the retries",
        &["HTTP 503: busy", "HTTP 503: still busy"],
    );
    assert_eq!(rows_synced(&host, HOOK_PIPELINE).await, 2, "rows synced");

    let (_db, host) = {
        let db = TestDb::new(Backend::Sqlite)
            .await
            .expect("sqlite always runs");
        let table = users(&db, 2).await;
        let host = Host::new(&db, &table);
        (db, host)
    };
    let server = Server::start(|_| Reply::status(503).body("down"));
    let args = webhook_args(module, &server, &["--max-retries", "2"]).await;

    let outcome = host.run_once(&refs(&args)).await;

    assert_eq!(outcome.code(), Some(1), "exit code; {outcome}");
    assert_eq!(server.request_count(), 3, "the first attempt and 2 retries");
    let ids: Vec<String> = server
        .requests()
        .iter()
        .map(|request| webhook_body(request).0)
        .collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] == pair[1]),
        "batch ids of the attempts: {ids:?}"
    );
    assert_mentions(
        error_report(&outcome),
        "the error after the last retry",
        &[module, "HTTP 503: down", &ids[0], "--max-retries"],
    );
    assert_eq!(rows_synced(&host, HOOK_PIPELINE).await, 0, "rows synced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_webhook_stops_at_once_on_401() {
    webhook_stops_at_once_on("py_webhook", 401, "bad token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_webhook_stops_at_once_on_400() {
    webhook_stops_at_once_on("js_webhook", 400, "bad row").await;
}

/// Nothing of pipeline `hook` synced, and its watermark where it was.
async fn assert_hook_unmoved(host: &Host) {
    assert_eq!(rows_synced(host, HOOK_PIPELINE).await, 0, "rows synced");
    let status = host.status_json().await;
    let hook = status
        .iter()
        .find(|pipeline| pipeline["pipeline"] == HOOK_PIPELINE)
        .unwrap_or_else(|| panic!("no pipeline {HOOK_PIPELINE} in {status:?}"));
    assert!(hook["watermark"].is_null(), "the watermark moved: {hook}");
}

/// A 4xx answer (`status` with `body`) is fatal: one request, exit 1 with the status and
/// body, nothing synced and no watermark.
async fn webhook_stops_at_once_on(module: &str, status: u16, body: &'static str) {
    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("sqlite always runs");
    let table = users(&db, 3).await;
    let host = Host::new(&db, &table);
    let server = Server::start(move |_| Reply::status(status).body(body));
    let args = webhook_args(module, &server, &[]).await;

    let outcome = host.run_once(&refs(&args)).await;

    assert_eq!(outcome.code(), Some(1), "exit code; {outcome}");
    assert_eq!(server.request_count(), 1, "a fatal answer is not retried");
    let answer = format!("HTTP {status}: {body}");
    assert_mentions(
        error_report(&outcome),
        "the error of a fatal answer",
        &[module, &answer],
    );
    assert_hook_unmoved(&host).await;
}

/// `fetch()` rejects alike whatever `wasi:http` answered, so `js_webhook` cannot tell the
/// host's refusal of an origin from a receiver that is down: it asks to retry. The host knows
/// it refused the call's request, so it stops the run at once (exit 1) rather than retry with
/// the default back-off (minutes), with the module's message, the origin and the flag that
/// allows it; nothing sent and nothing synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_webhook_stops_at_once_when_the_host_refuses_its_origin() {
    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("sqlite always runs");
    let table = users(&db, 2).await;
    let host = Host::new(&db, &table);
    let server = Server::accepting();
    let url = format!("url={}", server.url("/hook"));
    // Default --max-retries and --retry-backoff: a retry would wait for minutes.
    let args = with_modules(
        &["js_webhook"],
        &[
            "--set",
            &url,
            "--allow-host",
            "http://127.0.0.1:1",
            "--pipeline",
            HOOK_PIPELINE,
        ],
    )
    .await;

    let started = std::time::Instant::now();
    let outcome = host.run_once(&refs(&args)).await;
    let took = started.elapsed();

    eprintln!(
        "js_webhook refused by the allow-list stopped in {took:?}: {}",
        error_report(&outcome)
    );
    assert_eq!(outcome.code(), Some(1), "exit code; {outcome}");
    assert!(
        took < std::time::Duration::from_secs(10),
        "the run took {took:?}: the refused batch was retried"
    );
    assert_eq!(
        server.request_count(),
        0,
        "requests that reached the receiver"
    );
    let allow = format!("--allow-host {}", server.origin());
    let refused = format!("the host refused its request to {}", server.origin());
    assert_mentions(
        error_report(&outcome),
        "the error of a refused origin",
        &[
            "js_webhook",
            "no response",
            &refused,
            &allow,
            "retrying cannot help",
        ],
    );
    assert_hook_unmoved(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_webhook_rejected_rows_become_dead_letters() {
    webhook_rejected_rows_become_dead_letters("py_webhook").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_webhook_rejected_rows_become_dead_letters() {
    webhook_rejected_rows_become_dead_letters("js_webhook").await;
}

/// The receiver rejects the second row of each batch: the batches count as delivered, and
/// `host dead-letters --json` lists exactly those rows, as sent, with the receiver's reason.
async fn webhook_rejected_rows_become_dead_letters(module: &str) {
    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("sqlite always runs");
    let table = users(&db, 5).await;
    let host = Host::new(&db, &table);
    // Batches [1, 2], [3, 4], [5]: row 1 of each batch that has one.
    let server = Server::start(|request| {
        let body = request.json();
        match body["rows"].get(1) {
            Some(second) => Reply::json(
                200,
                &json!({"rejected": [
                    {"index": 1, "reason": format!("no thanks: {}", second["row"]["email"])},
                ]}),
            ),
            None => Reply::json(200, &json!({"rejected": []})),
        }
    });
    let args = webhook_args(module, &server, &["--batch-size", "2"]).await;

    let outcome = host.run_once(&refs(&args)).await;

    assert!(outcome.success(), "{module} run: {outcome}");
    assert_eq!(server.request_count(), 3, "POSTs");
    assert_eq!(rows_synced(&host, HOOK_PIPELINE).await, 5, "rows synced");
    let listed = host
        .exec([
            "dead-letters",
            "--pipeline",
            HOOK_PIPELINE,
            "--state",
            &host.state_url(),
            "--json",
        ])
        .await;
    assert!(listed.success(), "host dead-letters: {listed}");
    let letters: Value = serde_json::from_str(listed.stdout.trim())
        .unwrap_or_else(|err| panic!("host dead-letters --json printed no JSON ({err}): {listed}"));
    let letters = letters.as_array().expect("an array of dead letters");
    let got: Vec<(Value, String)> = letters
        .iter()
        .map(|letter| {
            (
                letter["row"].clone(),
                letter["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                user_change(&db, 2),
                "no thanks: \"user2@example.com\"".to_owned()
            ),
            (
                user_change(&db, 4),
                "no thanks: \"user4@example.com\"".to_owned()
            ),
        ],
        "dead letters: {letters:?}"
    );
}
