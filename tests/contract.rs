//! Contract `tidemark:processor@0.2.0` end to end, with `guest_reject_rows` (a 0.2 transform
//! that rejects rows, asks to retry later or says fatal, and declares its keys and an
//! `init`) and `guest_poison_row` (built straight from contract 0.1.0):
//!
//! - a transform's rejections become dead letters naming it, the rest arrives, exit 0, and
//!   `host retry` sends them through that transform again (on all three databases);
//! - a 0.1 module still runs, and `host check` says which version each implements;
//! - `init` refusing the configuration stops the run at start: exit 2, nothing read, no
//!   watermark (on all three databases); a key no module takes, and a required key missing,
//!   stop it the same way, naming the key and the keys the module takes;
//! - `host check` lists the declared keys;
//! - a transform's retry-later brings its batch again until it passes; its fatal answer to
//!   every batch, an empty one too (its configuration, not a row, is at fault), stops the
//!   pipeline with exit 1, as a destination's does, without a retry and without parking a
//!   row (a fatal answer because of one row: [`crate::hostile_poison`]).

use serde_json::Value;

use crate::support::guests::guest;
use crate::support::host::{assert_mentions, Outcome};
use crate::support::lines::assert_each_once;
use crate::support::{at, Backend, Host, TestDb, Val};

crate::support::on_databases!(
    [postgres => Postgres, mariadb => MariaDb, sqlite => Sqlite],
    [
        rejected_rows_are_dead_letters_of_the_transform,
        init_refusing_the_configuration_stops_the_run_at_start
    ]
);

const PIPELINE: &str = "contract";
const MODULE: &str = "guest_reject_rows";
const QUICK: &[&str] = &["--max-retries", "1", "--retry-backoff", "10ms"];

async fn users(backend: Backend, count: i64) -> Option<(TestDb, Host)> {
    let db = TestDb::new(backend).await?;
    let table = db.create_users().await;
    db.insert_users(&table, (1..=count).map(|id| (id, Val::Ts(at(id)))))
        .await;
    let host = Host::new(&db, &table);
    Some((db, host))
}

/// `--module` for each of `modules`, this test's cache and pipeline, then `extra`.
fn args(host: &Host, modules: &[&str], extra: &[&str]) -> Vec<String> {
    let mut args = Vec::new();
    for name in modules {
        args.push("--module".to_owned());
        args.push(guest(name).display().to_string());
    }
    let cache = host.cache_dir().display().to_string();
    for arg in ["--cache-dir", &cache, "--pipeline", PIPELINE] {
        args.push(arg.to_owned());
    }
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    args
}

async fn run(host: &Host, modules: &[&str], extra: &[&str]) -> Outcome {
    let args = args(host, modules, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    host.run_once(&args).await
}

async fn pipeline_status(host: &Host) -> Option<Value> {
    host.status_json()
        .await
        .into_iter()
        .find(|pipeline| pipeline["pipeline"] == PIPELINE)
}

async fn check(host: &Host, module: &str) -> Outcome {
    let module = guest(module).display().to_string();
    let cache = host.cache_dir().display().to_string();
    host.exec(["check", "--module", &module, "--cache-dir", &cache])
        .await
}

/// Scenario: 20 users in batches of 10; the transform rejects rows 3 and 13. Both become dead
/// letters naming the transform and its reason (not parked), every other row arrives once
/// with the transform's mark, the run exits 0 and the watermark moves past them. `host
/// retry` with the transform no longer rejecting sends both through it again.
async fn rejected_rows_are_dead_letters_of_the_transform(backend: Backend) {
    let Some((_db, mut host)) = users(backend, 20).await else {
        return;
    };
    let extra = ["--set", "reject=3,13", "--batch-size", "10"];
    let outcome = run(&host, &[MODULE], &extra).await;
    assert_eq!(outcome.code(), Some(0), "{outcome}");
    let lines = host.new_lines();
    assert_each_once(&lines, (1..=20).filter(|id| ![3, 13].contains(id)));
    assert!(
        lines.iter().all(|line| line.row["checked"] == true),
        "every row went through the transform: {lines:?}"
    );
    let letters = host.dead_letters(PIPELINE).await;
    let ids: Vec<i64> = letters
        .iter()
        .map(|letter| letter["row"]["row"]["id"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(ids, [3, 13], "{letters:#?}");
    for letter in &letters {
        assert_eq!(letter["stage"], MODULE, "{letter}");
        assert_eq!(letter["parked"], false, "{letter}");
        let reason = letter["reason"].as_str().unwrap_or_default();
        assert!(reason.ends_with("is on the reject list"), "{letter}");
    }
    let status = pipeline_status(&host).await.expect("the pipeline's status");
    assert_eq!(status["rows_synced"], 20, "{status}");
    assert_eq!(status["rows_rejected"], 2, "{status}");

    let mut retry = vec![
        "retry".to_owned(),
        "--state".to_owned(),
        host.state_url(),
        "--output".to_owned(),
        host.output_path().display().to_string(),
    ];
    retry.extend(args(&host, &[MODULE], QUICK));
    let retried = host.exec(&retry).await;
    assert!(retried.success(), "host retry: {retried}");
    let replayed = host.new_lines();
    assert_each_once(&replayed, [3, 13]);
    assert!(replayed.iter().all(|line| line.row["checked"] == true));
    assert!(host.dead_letters(PIPELINE).await.is_empty());
}

/// Scenario: `init` refuses `fail=bogus`: exit 2 with the module's message, no row read or
/// written, no watermark.
async fn init_refusing_the_configuration_stops_the_run_at_start(backend: Backend) {
    let Some((_db, host)) = users(backend, 5).await else {
        return;
    };
    let outcome = run(&host, &[MODULE], &["--set", "fail=bogus"]).await;
    assert_eq!(outcome.code(), Some(2), "{outcome}");
    assert_mentions(
        &outcome.stderr,
        "the refusal",
        &[
            "module guest_reject_rows refused its configuration",
            "fail=\"bogus\": use fail=fatal or fail=retry-later",
            "nothing was read",
        ],
    );
    assert!(host.all_lines().is_empty());
    if let Some(status) = pipeline_status(&host).await {
        assert!(status["watermark"].is_null(), "{status}");
        assert_eq!(status["rows_synced"], 0, "{status}");
    }
}

/// A key the module does not declare, and a required key missing, stop the run at start
/// with exit 2, naming the key, the module and the keys it takes; a 0.1 module takes any key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_a_module_does_not_take_or_needs_stop_the_run_at_start() {
    let Some((_db, host)) = users(Backend::Sqlite, 5).await else {
        return;
    };
    let typo = run(&host, &[MODULE], &["--set", "rejct=3"]).await;
    assert_eq!(typo.code(), Some(2), "{typo}");
    assert_mentions(
        &typo.stderr,
        "the unknown key",
        &[
            "module guest_reject_rows does not take configuration key \"rejct\"",
            "it takes reject, fatal_on, fail, until, after_ms",
        ],
    );
    // In a chain, a key of the pipeline is for any module that takes it.
    let chain = run(&host, &["passthrough", "mask_pii"], &["--set", "dorp=name"]).await;
    assert_eq!(chain.code(), Some(2), "{chain}");
    assert_mentions(
        &chain.stderr,
        "the unknown key of a chain",
        &[
            "no module of pipeline \"contract\" takes configuration key \"dorp\"",
            "passthrough takes no keys; mask_pii takes email_column, drop",
        ],
    );
    let missing = run(
        &host,
        &["mailchimp"],
        &["--set", "base_url=http://127.0.0.1:9"],
    )
    .await;
    assert_eq!(missing.code(), Some(2), "{missing}");
    assert_mentions(
        &missing.stderr,
        "the missing key",
        &[
            "module mailchimp needs configuration key \"list_id\"",
            "--set list_id=VALUE",
        ],
    );
    assert!(host.all_lines().is_empty());
    // A 0.1 module declares nothing: any key is taken.
    let legacy = run(&host, &["guest_poison_row"], &["--set", "anything=1"]).await;
    assert_eq!(legacy.code(), Some(0), "{legacy}");
    assert_each_once(&host.all_lines(), 1..=5);
}

/// `host check` says which contract version a module implements and lists the keys it
/// declares, or says it declares none; a 0.1 module runs as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_check_lists_declared_keys_and_versions() {
    let host = Host::scratch();
    let current = check(&host, "mailchimp").await;
    assert!(current.success(), "{current}");
    assert_mentions(
        &current.stdout,
        "host check of mailchimp",
        &[
            "world:   destination (tidemark:processor@0.2.0)",
            "tidemark:processor/lifecycle@0.2.0",
            "config keys:\n  list_id (required): the audience rows are synced into\n  api_key (required, secret):",
            "  on_delete: archive (default) or unsubscribe deleted rows",
        ],
    );
    let legacy = check(&host, "guest_poison_row").await;
    assert!(legacy.success(), "{legacy}");
    assert_mentions(
        &legacy.stdout,
        "host check of the 0.1 fixture",
        &[
            "world:   transform (tidemark:processor@0.1.0)",
            "config keys: not declared (the module takes any key; contract 0.1 has no lifecycle export)",
        ],
    );
    assert_mentions(
        &legacy.stderr,
        "the load's log line",
        &["module guest_poison_row: transform world, tidemark:processor@0.1.0"],
    );
}

/// A transform that asks to retry later gets the same batch again, after the delay it asked
/// for, until it passes: every row arrives once and the run exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_asking_to_retry_later_gets_its_batch_again() {
    let Some((_db, host)) = users(Backend::Sqlite, 6).await else {
        return;
    };
    // Compiled ahead, so that the run asks within the window however busy the machine.
    assert!(check(&host, MODULE).await.success());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let until = format!("until={}", now + 2_000);
    let extra = [
        "--set",
        "fail=retry-later",
        "--set",
        &until,
        "--set",
        "after_ms=200",
        "--max-retries",
        "30",
    ];
    let outcome = run(&host, &[MODULE], &extra).await;
    assert_eq!(outcome.code(), Some(0), "{outcome}");
    assert_mentions(
        &outcome.stderr,
        "the retries",
        &[
            "transform guest_reject_rows asked to retry batch",
            "not ready yet",
        ],
    );
    assert_each_once(&host.all_lines(), 1..=6);
    assert!(host.dead_letters(PIPELINE).await.is_empty());
}

/// A transform that answers fatal to every batch, an empty one too, stops the pipeline as a
/// destination does: exit 1 with its message, nothing written, no dead letter; the batch is
/// neither retried nor split (the empty batch it fails shows no row is at fault).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_failing_every_batch_as_fatal_stops_the_pipeline() {
    let Some((_db, host)) = users(Backend::Sqlite, 6).await else {
        return;
    };
    let mut extra = vec!["--set", "fail=fatal"];
    extra.extend(QUICK);
    let outcome = run(&host, &[MODULE], &extra).await;
    assert_eq!(outcome.code(), Some(1), "{outcome}");
    assert_mentions(
        &outcome.stderr,
        "the fatal answer",
        &[
            "module guest_reject_rows fails even an empty batch, so no row is at fault",
            "transform guest_reject_rows answered fatal for batch",
            "of pipeline \"contract\": told to fail batch",
        ],
    );
    assert!(
        !outcome.stderr.contains("(--max-retries)"),
        "a fatal answer is not retried: {outcome}"
    );
    assert!(host.all_lines().is_empty());
    assert!(host.dead_letters(PIPELINE).await.is_empty());
    let status = pipeline_status(&host).await.expect("the pipeline's status");
    assert!(status["watermark"].is_null(), "{status}");
}
