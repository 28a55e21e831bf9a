//! The command line, on SQLite: bad input exits 2 with a message that names the table,
//! column or flag at fault; `status --json` and `reset` work on what runs left behind; the
//! output defaults to standard output.

use serde_json::Value;

use crate::support::lines::{assert_each_once, ids, parse_lines};
use crate::support::{at, host::Outcome, Backend, Col, Host, TestDb, Val};

/// A SQLite `users` table with rows 1..=5 and a host reading it.
async fn five_users() -> (TestDb, String, Host) {
    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("sqlite always runs");
    let table = db.create_users().await;
    db.insert_users(&table, (1..=5).map(|id| (id, Val::Ts(at(id)))))
        .await;
    let host = Host::new(&db, &table);
    (db, table, host)
}

fn assert_bad_input(outcome: &Outcome, what: &str, mentions: &[&str]) {
    assert_eq!(outcome.code(), Some(2), "{what}: exit code; {outcome}");
    for text in mentions {
        assert!(
            outcome.stderr.contains(text),
            "{what}: stderr should mention {text:?}; {outcome}"
        );
    }
}

async fn run_once_with(host: &Host, args: &[&str]) -> Outcome {
    let mut full = host.run_args(args);
    full.push("--once".to_owned());
    host.exec(&full).await
}

#[tokio::test]
async fn missing_table_exits_2_naming_table_and_flag() {
    let (db, _table, _) = five_users().await;
    let host = Host::new(&db, "no_such_table");

    let outcome = run_once_with(&host, &[]).await;

    assert_bad_input(&outcome, "missing table", &["no_such_table", "--table"]);
    assert!(host.all_lines().is_empty(), "a failed run wrote output");
}

#[tokio::test]
async fn missing_cursor_column_exits_2_naming_column_and_flag() {
    let (_db, _table, host) = five_users().await;

    let outcome = run_once_with(&host, &["--cursor", "modified_at"]).await;

    assert_bad_input(
        &outcome,
        "missing cursor column",
        &["modified_at", "--cursor"],
    );
}

#[tokio::test]
async fn unsupported_source_url_exits_2_naming_it() {
    let host = Host::with_source("foo://x", "users");

    let outcome = run_once_with(&host, &[]).await;

    assert_bad_input(&outcome, "source URL foo://x", &["foo://x"]);
    assert!(
        outcome.stderr.contains("--source") || outcome.stderr.contains("sqlite://"),
        "the error should say how to fix it (the flag, or the URL forms it takes): {outcome}"
    );
}

#[tokio::test]
async fn table_without_primary_key_needs_key() {
    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("sqlite always runs");
    let table = db
        .create_table(
            "events",
            &[
                ("id", Col::Int),
                ("email", Col::Text),
                ("name", Col::Text),
                ("updated_at", Col::Stamp),
            ],
        )
        .await;
    db.insert(
        &table,
        crate::support::db::USERS_COLUMNS,
        &(1..=3)
            .map(|id| crate::support::db::user_values(id, Val::Ts(at(id))))
            .collect::<Vec<_>>(),
    )
    .await;
    let mut host = Host::new(&db, &table);

    let outcome = run_once_with(&host, &[]).await;
    assert_bad_input(&outcome, "table without primary key", &["events", "--key"]);

    // --key must name a column the database keeps unique: the host checks for an index.
    db.execute("CREATE UNIQUE INDEX events_id ON events (id)")
        .await;
    let lines = host.once(&["--key", "id"]).await;
    assert_eq!(ids(&lines), [1, 2, 3], "with --key id");
}

#[tokio::test]
async fn unknown_flag_exits_2_naming_it() {
    let (_db, _table, host) = five_users().await;

    let outcome = run_once_with(&host, &["--frobnicate"]).await;

    assert_bad_input(&outcome, "unknown flag", &["--frobnicate"]);
}

#[tokio::test]
async fn output_defaults_to_stdout() {
    let (db, table, host) = five_users().await;
    let state = host.state_url();
    let args = [
        "run",
        "--source",
        db.url(),
        "--table",
        table.as_str(),
        "--state",
        state.as_str(),
        "--settle",
        "0s",
        "--once",
    ];

    let outcome = host.exec(args).await;

    assert!(outcome.success(), "run without --output: {outcome}");
    let lines = parse_lines(&outcome.stdout);
    assert_each_once(&lines, 1..=5);
    assert_eq!(
        lines[0].updated_at(),
        Some("2024-01-01 00:00:00.000001"),
        "SQLite text cursors come out as stored"
    );
}

/// The pipeline named after the table.
fn pipeline<'a>(status: &'a [Value], name: &str) -> &'a Value {
    status
        .iter()
        .find(|p| p["pipeline"] == name)
        .unwrap_or_else(|| panic!("no pipeline {name:?} in status --json: {status:?}"))
}

#[tokio::test]
async fn status_json_reports_rows_batches_and_watermark() {
    let (db, table, mut host) = five_users().await;
    host.once(&["--batch-size", "2"]).await;

    let status = host.status_json().await;

    let users = pipeline(&status, "users");
    assert_eq!(users["table"], "users", "{users}");
    assert_eq!(users["rows_synced"], 5, "{users}");
    assert_eq!(
        users["batches_synced"], 3,
        "batches of 2 over 5 rows: {users}"
    );
    assert_eq!(users["watermark"]["key"], "5", "{users}");
    let cursor = users["watermark"]["cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("watermark cursor should be a string: {users}"));
    assert!(
        cursor.contains("00:00:00.000005"),
        "watermark cursor {cursor:?} is not row 5's 2024-01-01 00:00:00.000005"
    );
    assert!(
        !users["last_run_at"].is_null(),
        "last_run_at after a run: {users}"
    );

    db.insert_users(&table, [(6, Val::Ts(at(6))), (7, Val::Ts(at(7)))])
        .await;
    host.once(&["--batch-size", "2"]).await;
    let status = host.status_json().await;
    let users = pipeline(&status, "users");
    assert_eq!(users["rows_synced"], 7, "after two more rows: {users}");
    assert_eq!(users["watermark"]["key"], "7", "{users}");
}

#[tokio::test]
async fn reset_makes_the_next_run_a_full_sync() {
    let (_db, _table, mut host) = five_users().await;
    assert_each_once(&host.once(&[]).await, 1..=5);
    assert!(host.once(&[]).await.is_empty(), "second run delivered rows");

    host.reset("users").await;

    let status = host.status_json().await;
    if let Some(users) = status.iter().find(|p| p["pipeline"] == "users") {
        assert!(
            users["watermark"].is_null(),
            "a reset pipeline still has a watermark: {users}"
        );
    }
    let lines = host.once(&[]).await;
    assert_eq!(ids(&lines), [1, 2, 3, 4, 5], "the run after reset");
}

#[tokio::test]
async fn pipelines_on_one_table_keep_separate_watermarks() {
    let (db, table, mut host) = five_users().await;
    assert_each_once(&host.once(&["--pipeline", "a"]).await, 1..=5);
    assert_each_once(&host.once(&["--pipeline", "b"]).await, 1..=5);

    db.insert_users(&table, [(6, Val::Ts(at(6)))]).await;
    assert_eq!(ids(&host.once(&["--pipeline", "a"]).await), [6]);
    assert_eq!(ids(&host.once(&["--pipeline", "b"]).await), [6]);

    let status = host.status_json().await;
    assert_eq!(pipeline(&status, "a")["rows_synced"], 6);
    assert_eq!(pipeline(&status, "b")["rows_synced"], 6);
}

/// `host run --config FILE` runs the pipelines the file lists (not a module value: the path has
/// no `=`); `--set` cannot go with it, since module values belong in the file.
#[tokio::test]
async fn config_file_runs_the_pipelines_it_lists() {
    let (db, table, mut host) = five_users().await;
    let quote = |text: &str| serde_json::to_string(text).expect("a string serializes");
    let file = host.dir().join("tidemark.toml");
    let text = format!(
        "state = {}\n\n[[pipeline]]\nname = \"from-file\"\nsource = {}\ntable = {}\n\
         output = {}\nsettle = \"0s\"\n",
        quote(&host.state_url()),
        quote(db.url()),
        quote(&table),
        quote(&host.output_path().display().to_string()),
    );
    std::fs::write(&file, text).expect("writing the pipelines file");
    let file = file.display().to_string();

    let outcome = host.exec(["run", "--config", &file, "--once"]).await;

    assert!(outcome.success(), "host run --config FILE: {outcome}");
    assert!(
        !outcome.stderr.contains("deprecated"),
        "a pipelines file is no deprecated spelling: {outcome}"
    );
    assert_each_once(&host.new_lines(), 1..=5);
    let status = host.status_json().await;
    assert_eq!(pipeline(&status, "from-file")["rows_synced"], 5);

    let outcome = host
        .exec(["run", "--config", &file, "--set", "x=y", "--once"])
        .await;
    assert_bad_input(
        &outcome,
        "a pipelines file and --set",
        &["--set", "config = {"],
    );
}

/// Scenario (issue 11, hole 8): a PostgreSQL password given as a query parameter
/// (`?password=…`, which sqlx reads) never shows: not in the error of a failed run, not in
/// `status --json`, not in the state store's files. (The server trusts local connections, so
/// the password is carried but not needed.)
#[tokio::test]
async fn a_password_in_the_source_query_never_shows() {
    const SECRET: &str = "hunter2-in-the-query";
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let table = db.create_users().await;
    db.insert_users(&table, (1..=3).map(|id| (id, Val::Ts(at(id)))))
        .await;
    let separator = if db.url().contains('?') { '&' } else { '?' };
    let source = format!(
        "{}{separator}password={SECRET}&application_name=tidemark",
        db.url()
    );

    let missing = Host::with_source(&source, "no_such_table");
    let failed = run_once_with(&missing, &[]).await;
    assert_bad_input(
        &failed,
        "a missing table",
        &["no_such_table", "password=***"],
    );
    assert!(
        !failed.stderr.contains(SECRET),
        "the error shows the password: {failed}"
    );

    let mut host = Host::with_source(&source, &table);
    let lines = host.once(&[]).await;
    assert_eq!(ids(&lines), vec![1, 2, 3]);
    let status = host.status_json().await;
    let shown = serde_json::to_string(&status).unwrap();
    assert!(
        shown.contains("password=***"),
        "status hides the source: {shown}"
    );
    assert!(
        !shown.contains(SECRET),
        "status shows the password: {shown}"
    );
    for file in ["state.db", "state.db-wal"] {
        let path = host.dir().join(file);
        let bytes = std::fs::read(&path).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(SECRET),
            "{} holds the password",
            path.display()
        );
    }
}
