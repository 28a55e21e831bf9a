//! One bad row never wedges a pipeline (poison isolation), end to end.
//!
//! - A transform that errors on one row, traps on it, loops on it or exhausts its memory on
//!   it (`guest_poison_row`), or answers fatal for the batch because of it (the `?` of a
//!   contract 0.2 transform, `guest_reject_rows`): every other row of that batch and of later
//!   batches arrives once, the bad row is a dead letter naming the module and the reason, the
//!   run exits 0 (erroring and fatal: on all three databases; the others on SQLite). A fatal
//!   answer is not retried before the batch is split.
//! - Never older over newer: a parked row updated and delivered since is superseded; `host
//!   retry` with the module fixed skips it (and says so) and replays the other parked row
//!   through the module that parked it.
//! - Not about rows, never split: a module that fails every row, `--on-poison stop` (a
//!   trap and a fatal answer), a destination that is down. A transform answering fatal to an
//!   empty batch is in [`crate::contract`].

use serde_json::Value;

use crate::support::guests::guest;
use crate::support::host::{assert_mentions, Outcome};
use crate::support::http_server::{Reply, Server};
use crate::support::lines::{assert_each_once, ids};
use crate::support::{at, Backend, Host, TestDb, Val};

crate::support::on_databases!(
    [postgres => Postgres, mariadb => MariaDb, sqlite => Sqlite],
    [
        a_row_the_transform_errors_on_is_parked,
        a_row_the_transform_answers_fatal_for_is_parked
    ]
);

const PIPELINE: &str = "poisoned";

/// Quick retries: the batch's attempts are not what these tests are about.
const QUICK: &[&str] = &["--max-retries", "1", "--retry-backoff", "10ms"];

/// A `users` table with rows `1..=count` on `backend`, and a host reading it.
async fn users(backend: Backend, count: i64) -> Option<(TestDb, String, Host)> {
    let db = TestDb::new(backend).await?;
    let table = db.create_users().await;
    db.insert_users(&table, (1..=count).map(|id| (id, Val::Ts(at(id)))))
        .await;
    let host = Host::new(&db, &table);
    Some((db, table, host))
}

/// `--module PATH` for each of `modules`, this test's cache, the pipeline, then `extra`.
fn args(host: &Host, modules: &[&str], extra: &[&str]) -> Vec<String> {
    let mut args = Vec::new();
    for name in modules {
        args.push("--module".to_owned());
        args.push(guest(name).display().to_string());
    }
    for arg in [
        "--cache-dir",
        &host.cache_dir().display().to_string(),
        "--pipeline",
        PIPELINE,
    ] {
        args.push(arg.to_owned());
    }
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    args
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

async fn status(host: &Host) -> Value {
    host.status_json()
        .await
        .into_iter()
        .find(|pipeline| pipeline["pipeline"] == PIPELINE)
        .unwrap_or_else(|| panic!("no pipeline {PIPELINE} in host status"))
}

/// The id of a letter's row.
fn letter_id(letter: &Value) -> i64 {
    letter["row"]["row"]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("a dead letter without an id: {letter}"))
}

/// Runs `module` (with `flags`: the row it fails on is 13) over 30 users in batches of 10,
/// then 5 more users in a later run; checks that every other row arrived once, row 13 is the
/// one dead letter naming the module and `reason`, and both runs exited 0. Returns the first
/// run's outcome.
async fn parks_row_13(
    backend: Backend,
    module: &str,
    flags: &[&str],
    reason: &[&str],
) -> Option<Outcome> {
    let (db, table, host) = users(backend, 30).await?;
    let mut extra = vec!["--batch-size", "10"];
    extra.extend(QUICK);
    extra.extend(flags);
    let args = args(&host, &[module], &extra);

    let outcome = host.run_once(&refs(&args)).await;
    assert_eq!(outcome.code(), Some(0), "a run with a bad row; {outcome}");
    db.insert_users(&table, (31..=35).map(|id| (id, Val::Ts(at(id)))))
        .await;
    let later = host.run_once(&refs(&args)).await;
    assert_eq!(later.code(), Some(0), "the run after; {later}");

    assert_each_once(&host.all_lines(), (1..=35).filter(|&id| id != 13));
    let letters = host.dead_letters(PIPELINE).await;
    assert_eq!(letters.len(), 1, "one dead letter: {letters:#?}");
    let letter = &letters[0];
    assert_eq!(letter_id(letter), 13, "{letter}");
    assert_eq!(letter["stage"], module, "{letter}");
    assert_eq!(letter["parked"], true, "{letter}");
    let text = letter["reason"].as_str().unwrap_or_default();
    let mut mentions = vec![module];
    mentions.extend(reason);
    assert_mentions(text, "the parked row's reason", &mentions);
    assert_mentions(
        &outcome.stderr,
        "the log of the run that parked it",
        &["parked row id=13"],
    );
    let status = status(&host).await;
    assert_eq!(status["rows_parked"], 1, "{status}");
    assert_eq!(status["rows_synced"], 35, "{status}");
    Some(outcome)
}

/// The contract 0.1 fixture: fails on the rows `poison=` lists, the way `how=` says.
const POISON_ROW: &str = "guest_poison_row";

async fn a_row_the_transform_errors_on_is_parked(backend: Backend) {
    let flags = ["--set", "poison=13", "--set", "how=error"];
    parks_row_13(backend, POISON_ROW, &flags, &["cannot handle row 13"]).await;
}

/// A contract 0.2 transform whose `?` on row 13 answers fatal for the batch: the row is
/// parked with the module's message, and the batch is split without a retry first.
async fn a_row_the_transform_answers_fatal_for_is_parked(backend: Backend) {
    let flags = ["--set", "fatal_on=13"];
    let reason = ["answered fatal", "cannot read row 13: no such plan"];
    let Some(outcome) = parks_row_13(backend, "guest_reject_rows", &flags, &reason).await else {
        return;
    };
    assert!(
        !outcome.stderr.contains("(--max-retries)"),
        "a fatal answer is split, not retried: {outcome}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_transform_traps_on_is_parked() {
    let flags = ["--set", "poison=13", "--set", "how=trap"];
    parks_row_13(Backend::Sqlite, POISON_ROW, &flags, &["panicked"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_transform_loops_on_is_parked() {
    let flags = [
        "--set",
        "poison=13",
        "--set",
        "how=loop",
        "--deadline",
        "300ms",
    ];
    parks_row_13(
        Backend::Sqlite,
        POISON_ROW,
        &flags,
        &["deadline", "--deadline"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_transform_runs_out_of_memory_on_is_parked() {
    let flags = ["--set", "poison=13", "--set", "how=memory"];
    parks_row_13(
        Backend::Sqlite,
        POISON_ROW,
        &[&flags[..], &["--memory-limit", "32MiB"]].concat(),
        &["memory limit", "--memory-limit"],
    )
    .await;
}

/// Scenario: rows 7 and 13 (version 1) are parked by a transform that fails on their names.
/// Row 13 is updated (version 2, another name) and delivered by the next run, which
/// supersedes its letter. The module fixed, `host retry` skips row 13's letter, saying so,
/// and sends row 7 through the module again: version 2 of row 13 stays the last one written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superseded_dead_letters_are_not_sent_over_newer_versions() {
    let Some((db, table, mut host)) = users(Backend::Sqlite, 20).await else {
        return;
    };
    let broken = ["--set", "column=name", "--set", "poison=user 7,user 13"];
    let mut extra = broken.to_vec();
    extra.extend(QUICK);
    extra.extend(["--batch-size", "10"]);
    let run_args = args(&host, &["guest_poison_row"], &extra);
    let first = host.once(&refs(&run_args)).await;
    assert_each_once(&first, (1..=20).filter(|id| ![7, 13].contains(id)));
    assert_eq!(host.dead_letters(PIPELINE).await.len(), 2);

    db.execute(&format!(
        "UPDATE {table} SET name = 'renamed', updated_at = {} WHERE id = 13",
        db.lit(&Val::Ts(at(100)))
    ))
    .await;
    let second = host.once(&refs(&run_args)).await;
    assert_eq!(ids(&second), [13], "version 2 of row 13");
    assert_eq!(second[0].name(), "renamed");
    let letters = host.dead_letters(PIPELINE).await;
    let superseded: Vec<(i64, bool)> = letters
        .iter()
        .map(|letter| (letter_id(letter), !letter["superseded_at"].is_null()))
        .collect();
    assert_eq!(superseded, [(7, false), (13, true)], "{letters:#?}");

    // The module fixed: it fails on no row.
    let mut retry = vec![
        "retry".to_owned(),
        "--state".to_owned(),
        host.state_url(),
        "--output".to_owned(),
        host.output_path().display().to_string(),
    ];
    retry.extend(args(&host, &["guest_poison_row"], QUICK));
    let outcome = host.exec(&retry).await;
    assert!(outcome.success(), "host retry: {outcome}");
    assert_mentions(
        &outcome.stderr,
        "host retry's log",
        &["superseded", "1 delivered"],
    );
    let replayed = host.new_lines();
    assert_eq!(ids(&replayed), [7], "only row 7 is sent again");
    let last_13 = host
        .all_lines()
        .into_iter()
        .rfind(|line| line.id() == 13)
        .expect("row 13 was written");
    assert_eq!(last_13.name(), "renamed", "version 2 of row 13 stays");
    assert!(host.dead_letters(PIPELINE).await.is_empty());
}

/// A module that fails every row is not split to its last row, and parks nothing: the run
/// fails as before, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_fails_every_row_parks_nothing() {
    let Some((_db, _table, host)) = users(Backend::Sqlite, 40).await else {
        return;
    };
    let mut extra = vec!["--set", "every=true"];
    extra.extend(QUICK);
    let args = args(&host, &["guest_poison_row"], &extra);
    let outcome = host.run_once(&refs(&args)).await;
    assert_eq!(outcome.code(), Some(1), "{outcome}");
    assert_mentions(&outcome.stderr, "the error", &["fails every row"]);
    assert!(host.dead_letters(PIPELINE).await.is_empty());
    assert!(host.all_lines().is_empty());
}

/// `--on-poison stop`: the batch fails at its first failure, as before poison isolation: a
/// trap, and a transform's fatal answer for the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_poison_stop_fails_the_batch() {
    let cases = [
        (POISON_ROW, "poison=3", "cannot handle row 3"),
        ("guest_reject_rows", "fatal_on=3", "cannot read row 3"),
    ];
    for (module, setting, says) in cases {
        let Some((_db, _table, host)) = users(Backend::Sqlite, 10).await else {
            return;
        };
        let mut extra = vec!["--set", setting, "--on-poison", "stop"];
        extra.extend(QUICK);
        let args = args(&host, &[module], &extra);
        let outcome: Outcome = host.run_once(&refs(&args)).await;
        assert_eq!(outcome.code(), Some(1), "{module}: {outcome}");
        assert_mentions(&outcome.stderr, "the error", &[module, says]);
        assert!(host.dead_letters(PIPELINE).await.is_empty());
        assert!(host.all_lines().is_empty());
    }
}

/// A destination that is down answers "retry later": the batch is offered again whole, under
/// its one id, and never split; the run gives up as before, with no dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_is_down_is_not_split() {
    let Some((_db, _table, host)) = users(Backend::Sqlite, 10).await else {
        return;
    };
    let server = Server::start(|_| Reply::status(503));
    let url = format!("url={}", server.url("/hook"));
    let origin = server.origin();
    let mut extra = vec!["--set", &url, "--allow-host", &origin];
    extra.extend(QUICK);
    let args = args(&host, &["webhook"], &extra);
    let outcome = host.run_once(&refs(&args)).await;
    assert_eq!(outcome.code(), Some(1), "{outcome}");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "the batch and one retry");
    for request in &requests {
        assert_eq!(request.json()["rows"].as_array().map(Vec::len), Some(10));
    }
    let keys: std::collections::HashSet<&str> = requests
        .iter()
        .map(|request| request.header("idempotency-key").unwrap_or(""))
        .collect();
    assert_eq!(keys.len(), 1, "one batch id for every attempt");
    assert!(host.dead_letters(PIPELINE).await.is_empty());
}
