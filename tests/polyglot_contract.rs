//! Contract `tidemark:processor@0.2.0` from JavaScript and Python, end to end: the examples
//! (`examples/js-filter`, `examples/py-enrich`, built by `scripts/build-polyglot`) reject rows
//! through the transform's result, declare their configuration keys and check them in `init`.
//!
//! - `js_filter` with `reject=COND`: the matching row is a dead letter naming the module and
//!   the condition; every other row arrives (PostgreSQL and SQLite).
//! - `py_enrich` rejects a name that is not text, under `host test`.
//! - `py_enrich`'s `init` refuses a blank column name: exit 2 at start, nothing read.
//! - `js_filter` declares `where`, `select`, `reject`, and `js_webhook` `url` and `token`: a
//!   typo (`wher=`, `tokn=`) is refused at start, exit 2, naming the accepted keys.
//!
//! A bad `where` stopping at start is in [`crate::polyglot`]; a JavaScript `throw new
//! Error("boom")` and the Python traceback reaching the host's error, in [`crate::templates`].

use serde_json::json;

use crate::polyglot::{people_table, refs, rows_synced, with_modules};
use crate::support::host::{assert_mentions, error_report, Outcome};
use crate::support::http_server::Server;
use crate::support::lines::ids;
use crate::support::{Backend, Host, TestDb};

crate::support::on_databases!(
    [postgres => Postgres, sqlite => Sqlite],
    [js_filter_rejected_rows_are_dead_letters_naming_the_module]
);

/// Scenario: `js_filter` with `reject=plan = free` over the six people in batches of 4: the
/// `free` person (id 2) is rejected through the transform's result and kept as a dead letter
/// with the module and the condition; the other five arrive, and all six count as synced.
async fn js_filter_rejected_rows_are_dead_letters_naming_the_module(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let table = people_table(&db).await;
    let mut host = Host::new(&db, &table);
    let args = with_modules(
        &["js_filter"],
        &[
            "--set",
            "reject=plan = free",
            "--batch-size",
            "4",
            "--pipeline",
            "picky",
        ],
    )
    .await;

    let lines = host.once(&refs(&args)).await;

    assert_eq!(ids(&lines), [1, 3, 4, 5, 6], "rows past js_filter");
    let letters = host.dead_letters("picky").await;
    assert_eq!(letters.len(), 1, "one dead letter: {letters:#?}");
    let letter = &letters[0];
    assert_eq!(letter["row"]["row"]["id"], 2, "{letter}");
    assert_eq!(letter["row"]["row"]["plan"], "free", "{letter}");
    assert_eq!(
        letter["stage"], "js_filter",
        "the module that rejected it: {letter}"
    );
    assert_mentions(
        letter["reason"].as_str().unwrap_or_default(),
        "the dead letter's reason",
        &["matches reject=plan = free"],
    );
    assert_eq!(rows_synced(&host, "picky").await, 6, "rows synced");
}

/// `host test` of `py_enrich` over three rows, the second with a name that is not text: it is
/// rejected with the reason (shown on standard error), the other two are enriched, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_enrich_rejects_a_name_that_is_not_text() {
    let host = Host::scratch();
    let input = host.dir().join("rows.json");
    let rows = json!([
        {"id": 1, "name": "Ada Lovelace"},
        {"id": 2, "name": 42},
        {"id": 3, "name": "Grace Hopper"},
    ]);
    std::fs::write(&input, rows.to_string()).expect("writing the input rows");
    let mut args = vec!["test".to_owned(), "--input".to_owned()];
    args.push(input.display().to_string());
    args.extend(with_modules(&["py_enrich"], &[]).await);

    let outcome = host.exec(&args).await;

    assert_eq!(outcome.code(), Some(0), "host test; {outcome}");
    assert_mentions(
        &format!("{}{}", outcome.stdout, outcome.stderr),
        "host test of a name that is not text",
        &[
            "py_enrich rejected row 1",
            "name is 42, not text",
            "Lovelace",
            "Hopper",
        ],
    );
}

/// A run of `modules` with `flags` on the six people that must stop at start: exit 2,
/// nothing read, nothing written.
async fn refused_at_start(modules: &[&str], flags: &[&str]) -> Outcome {
    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("sqlite always runs");
    let table = people_table(&db).await;
    let host = Host::new(&db, &table);
    let mut flags = flags.to_vec();
    flags.extend(["--pipeline", "refused"]);
    let args = with_modules(modules, &flags).await;

    let outcome = host.run_once(&refs(&args)).await;

    assert_eq!(outcome.code(), Some(2), "exit code of {flags:?}; {outcome}");
    assert_eq!(rows_synced(&host, "refused").await, 0, "rows synced");
    assert!(host.all_lines().is_empty(), "rows written: {outcome}");
    outcome
}

/// `py_enrich`'s `init` refuses `name_column=` (blank) before any row is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_enrich_init_refuses_a_blank_column_at_start() {
    let outcome = refused_at_start(&["py_enrich"], &["--set", "name_column= "]).await;
    assert_mentions(
        error_report(&outcome),
        "the refusal of init",
        &["py_enrich", "name_column is blank"],
    );
}

/// `js_filter` declares `where`, `select` and `reject`: `wher=` (a typo) is refused at start
/// with the key and the accepted ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_filter_refuses_an_unknown_config_key() {
    let outcome = refused_at_start(&["js_filter"], &["--set", "wher=score >= 50"]).await;
    assert_mentions(
        error_report(&outcome),
        "the refusal of an unknown key",
        &["js_filter", "wher", "where", "select", "reject"],
    );
}

/// `js_webhook` declares `url` and `token`: `tokn=` (a typo) is refused at start with the key
/// and the accepted ones, before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_webhook_refuses_an_unknown_config_key() {
    let server = Server::accepting();
    let url = format!("url={}", server.url("/hook"));
    let origin = server.origin();
    let outcome = refused_at_start(
        &["js_webhook"],
        &["--set", &url, "--allow-host", &origin, "--set", "tokn=abc"],
    )
    .await;
    assert_mentions(
        error_report(&outcome),
        "the refusal of an unknown key",
        &["js_webhook", "tokn", "url", "token"],
    );
    assert_eq!(server.request_count(), 0, "requests sent");
}
