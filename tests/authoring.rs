//! Writing a module, as a new user does it: `host test` gates what `host run` would refuse,
//! `--expect` compares the output, and the mistakes of a first module (a missing file, a text
//! file, a core module or an `.rlib`, a path in a pipelines file) get errors that name the fix.
//! `host new` projects, built and tested in each language, are in [`crate::templates`].

use std::path::Path;

use serde_json::{json, Value};

use crate::modules::{refs, sqlite_users, with_modules};
use crate::support::guests::guest;
use crate::support::host::{assert_mentions, error_report, Outcome};
use crate::support::http_server::{Reply, Server};
use crate::support::{at, Backend, Host, TestDb, Val};

/// `host test` over `rows` (written to `rows.json`), then `args`.
async fn host_test(host: &Host, rows: &Value, args: &[String]) -> Outcome {
    let input = host.dir().join("rows.json");
    std::fs::write(&input, rows.to_string()).expect("writing the input rows");
    let mut all = vec!["test".to_owned(), "--input".to_owned()];
    all.push(input.display().to_string());
    all.extend(args.iter().cloned());
    host.exec(&all).await
}

/// Scenario: a transform returns its rows without their envelope, wrapped in an object, or
/// with an op the contract lacks. `host run` refuses each; `host test` must refuse each too,
/// with the same message, so that it can gate a user's CI. Rows passed on unchanged pass both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_test_refuses_the_output_host_run_refuses() {
    let (_db, host) = sqlite_users(2).await;
    for shape in ["bare", "wrapped", "insert", "unchanged"] {
        let set = format!("shape={shape}");
        let args = with_modules(&host, &["guest_bad_output"], &["--set", &set]);
        let run = host.run_once(&refs(&args)).await;
        let test = host_test(&host, &json!([{"id": 1, "name": "Ada"}]), &args).await;
        if shape == "unchanged" {
            assert_eq!(run.code(), Some(0), "host run, {shape}: {run}");
            assert_eq!(test.code(), Some(0), "host test, {shape}: {test}");
            continue;
        }
        assert_eq!(run.code(), Some(1), "host run, {shape}: {run}");
        assert_eq!(test.code(), Some(1), "host test, {shape}: {test}");
        let expected = "module guest_bad_output returned rows that are not a JSON array of {\"op\", \"row\"} objects";
        assert_mentions(error_report(&run), "host run's error", &[expected]);
        assert_mentions(error_report(&test), "host test's error", &[expected]);
        assert!(test.stdout.is_empty(), "host test printed rows: {test}");
    }
}

/// Scenario: the webhook destination under `host test`, against a receiver that answers 401,
/// 503, then 200 with a rejected row. Fatal and retry-later exit 1 with the destination's
/// message (as `host run` stops on them); rejections are shown and exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_test_fails_on_a_fatal_or_retry_later_answer() {
    let host = Host::scratch();
    let rows = json!([{"id": 1, "email": "a@example.com"}, {"id": 2, "email": "bad"}]);
    let cases = [
        (Reply::status(401).body("bad token"), 1, "HTTP 401"),
        (
            Reply::status(503),
            1,
            "asked to retry batch test-batch later",
        ),
        (
            Reply::json(
                200,
                &json!({"rejected": [{"index": 1, "reason": "no such mailbox"}]}),
            ),
            0,
            "",
        ),
    ];
    for (reply, code, mention) in cases {
        let server = Server::scripted(vec![], reply);
        let url = format!("url={}", server.url("/hook"));
        let origin = server.origin();
        let args = with_modules(
            &host,
            &["webhook"],
            &["--set", &url, "--allow-host", &origin],
        );
        let outcome = host_test(&host, &rows, &args).await;
        assert_eq!(outcome.code(), Some(code), "{mention}: {outcome}");
        if code == 1 {
            assert_mentions(
                error_report(&outcome),
                "host test's error",
                &["webhook", mention],
            );
        } else {
            let printed: Value = serde_json::from_str(&outcome.stdout).expect("JSON on stdout");
            assert_eq!(
                printed,
                json!({"rejected": [{"index": 1, "reason": "no such mailbox"}]}),
                "{outcome}"
            );
        }
    }
}

/// Scenario: `--expect` with the rows a chain returns passes (columns in any order); with
/// other rows it exits 1 and names the row and the column that differ, and the row missing.
#[tokio::test]
async fn host_test_expect_compares_the_output_rows() {
    let host = Host::scratch();
    let rows = json!([{"id": 1, "name": "Ada", "phone": "555"}, {"id": 2, "name": "Bob"}]);
    let expect = host.dir().join("expected.json");
    let args = |expect: &Path| {
        with_modules(
            &host,
            &["mask_pii"],
            &[
                "--set",
                "drop=phone",
                "--expect",
                &expect.display().to_string(),
            ],
        )
    };
    // What the chain returns, from a run without --expect.
    let plain = with_modules(&host, &["mask_pii"], &["--set", "drop=phone"]);
    let outcome = host_test(&host, &rows, &plain).await;
    let printed: Value = serde_json::from_str(&outcome.stdout).expect("rows on stdout");
    // The same rows with their columns in another order.
    let reordered: Vec<Value> = printed
        .as_array()
        .expect("an array of rows")
        .iter()
        .map(|row| {
            let mut columns: Vec<(String, Value)> = row["row"]
                .as_object()
                .unwrap()
                .clone()
                .into_iter()
                .collect();
            columns.reverse();
            json!({"row": Value::Object(columns.into_iter().collect()), "op": row["op"]})
        })
        .collect();
    std::fs::write(&expect, Value::Array(reordered).to_string()).unwrap();
    let outcome = host_test(&host, &rows, &args(&expect)).await;
    assert_eq!(
        outcome.code(),
        Some(0),
        "--expect with the same rows: {outcome}"
    );
    assert_mentions(&outcome.stderr, "the log", &["output matches"]);

    let mut changed = printed.as_array().cloned().expect("an array of rows");
    changed[0]["row"]["name"] = json!("Eve");
    changed.pop();
    std::fs::write(&expect, Value::Array(changed).to_string()).unwrap();
    let outcome = host_test(&host, &rows, &args(&expect)).await;
    assert_eq!(
        outcome.code(),
        Some(1),
        "--expect with other rows: {outcome}"
    );
    assert_mentions(
        error_report(&outcome),
        "the mismatch",
        &[
            "differs from",
            "row 0: expected",
            "\"name\": expected \"Eve\", got \"Ada\"",
            "row 1: not expected",
        ],
    );
}

/// Scenario: a transform that fails its batch because of two of its rows (a fatal answer on
/// rows 4 and 13 of 20, and a trap on row 7 of the 0.1 fixture). `host test` still exits 1
/// with the module's message, and says which rows `host run` would park: it splits the batch
/// as `host run` does, so the user learns the rows at fault without a database. A transform
/// that fails an empty batch too is not about rows: the hint says `host run` would stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_test_names_the_rows_host_run_would_park() {
    let host = Host::scratch();
    let rows: Value = (1..=20).map(|id| json!({"id": id})).collect();

    let args = with_modules(&host, &["guest_reject_rows"], &["--set", "fatal_on=4,13"]);
    let outcome = host_test(&host, &rows, &args).await;
    assert_eq!(
        outcome.code(),
        Some(1),
        "a fatal answer on two rows: {outcome}"
    );
    assert_mentions(
        &outcome.stderr,
        "host test's log",
        &[
            "guest_reject_rows fails row 3 alone: {\"op\":\"upsert\",\"row\":{\"id\":4}}",
            "guest_reject_rows fails row 12 alone: {\"op\":\"upsert\",\"row\":{\"id\":13}}",
            "host run would park the 2 row(s) of 20 listed above",
        ],
    );
    assert_mentions(
        error_report(&outcome),
        "host test's error",
        &["guest_reject_rows answered fatal for batch test-batch"],
    );
    assert!(
        !outcome.stderr.contains("fails row 0 alone"),
        "only the rows at fault are named: {outcome}"
    );
    assert!(
        outcome.stdout.is_empty(),
        "host test printed rows: {outcome}"
    );

    let args = with_modules(
        &host,
        &["guest_poison_row"],
        &["--set", "poison=7", "--set", "how=trap"],
    );
    let outcome = host_test(&host, &rows, &args).await;
    assert_eq!(outcome.code(), Some(1), "a trap on one row: {outcome}");
    assert_mentions(
        &outcome.stderr,
        "host test's log",
        &[
            "guest_poison_row fails row 6 alone",
            "host run would park the 1 row(s) of 20",
        ],
    );

    let args = with_modules(&host, &["guest_reject_rows"], &["--set", "fail=fatal"]);
    let outcome = host_test(&host, &rows, &args).await;
    assert_eq!(outcome.code(), Some(1), "fatal on every batch: {outcome}");
    assert_mentions(
        error_report(&outcome),
        "host test's error",
        &[
            "host run would stop the pipeline, not park a row",
            "fails even an empty batch",
        ],
    );
    assert!(
        !outcome.stderr.contains("alone:"),
        "no row is named: {outcome}"
    );
}

/// Scenario: the first mistakes with a module file. A path that does not exist is input to
/// fix (exit 2, as docs/guide/run.md says), for `host run` and `host check` alike; a source file, an
/// `.rlib` and a core module are each refused with what they are and how to build a component.
#[tokio::test]
async fn a_wrong_module_file_names_the_fix() {
    let (_db, host) = sqlite_users(1).await;
    let missing = host.dir().join("missing.wasm").display().to_string();
    let outcome = host.run_once(&["--module", &missing]).await;
    assert_eq!(outcome.code(), Some(2), "a missing module: {outcome}");
    assert_mentions(
        error_report(&outcome),
        "the error",
        &["missing.wasm does not exist", "--module"],
    );

    let cases: [(&str, &[u8], &[&str]); 4] = [
        ("missing.wasm", b"", &["does not exist"]),
        (
            "app.js",
            b"export const transformer = { transform(batch) { return batch.rows; } };\n",
            &["is not a WebAssembly component: it is a text file"],
        ),
        (
            "libshout.rlib",
            b"!<arch>\n/               0           0     0     0       8         `\n",
            &["an archive", "crate-type = [\"cdylib\"]", "wasm32-wasip2"],
        ),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0",
            &[
                "core WebAssembly module",
                "wasm32-wasip2",
                "wasm-tools component new",
            ],
        ),
    ];
    for (name, bytes, mentions) in cases {
        let path = host.dir().join(name);
        if !bytes.is_empty() {
            std::fs::write(&path, bytes).unwrap();
        }
        let path = path.display().to_string();
        let outcome = host.exec(["check", "--module", &path]).await;
        assert_eq!(outcome.code(), Some(2), "host check {name}: {outcome}");
        assert_mentions(error_report(&outcome), "host check's error", mentions);
        assert!(
            !outcome.stderr.contains("expected '('") && !outcome.stderr.contains("utf-8"),
            "the WebAssembly text parser answered: {outcome}"
        );
    }
}

/// Scenario: a pipelines file in a folder of its own names its module, output and state by
/// relative paths; run from another directory, the host reads them from the file's folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_in_a_pipelines_file_are_read_from_its_folder() {
    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("sqlite always runs");
    let host = Host::scratch();
    let folder = host.dir().join("conf");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(guest("passthrough"), folder.join("passthrough.wasm")).unwrap();
    let table = db.create_users().await;
    db.insert_users(&table, (1..=3).map(|id| (id, Val::Ts(at(id)))))
        .await;
    std::fs::write(
        folder.join("tidemark.toml"),
        format!(
            "state = \"sqlite://state.db\"\n\n[[pipeline]]\nname = \"users\"\nsource = \"{}\"\ntable = \"{table}\"\nsettle = \"0s\"\nmodules = [\"passthrough.wasm\"]\noutput = \"out.jsonl\"\ncache_dir = \"cache\"\n",
            db.url()
        ),
    )
    .unwrap();
    let outcome = host
        .exec(["run", "--config", "conf/tidemark.toml", "--once"])
        .await;
    assert_eq!(
        outcome.code(),
        Some(0),
        "host run --config conf/tidemark.toml: {outcome}"
    );
    let written = std::fs::read_to_string(folder.join("out.jsonl")).unwrap_or_default();
    assert_eq!(
        written.lines().count(),
        3,
        "conf/out.jsonl: {written}\n{outcome}"
    );
    assert!(
        folder.join("state.db").exists(),
        "no conf/state.db: {outcome}"
    );
    assert!(
        !host.dir().join("out.jsonl").exists(),
        "output written beside the working directory"
    );
}

/// Scenario: the run log adds up. Three rows through the webhook, which rejects one: the pass
/// line says read 3, passed on 2, rejected 1. A batch handed on again after a kill -9 is
/// counted as redelivered. Rows newer than `--settle` are not passed over in silence: the log
/// says how many wait, and when the first is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_log_counts_what_each_pass_did() {
    let (_db, host) = sqlite_users(3).await;
    let server = Server::scripted(
        vec![],
        Reply::json(200, &json!({"rejected": [{"index": 0, "reason": "no"}]})),
    );
    let url = format!("url={}", server.url("/hook"));
    let origin = server.origin();
    let args = with_modules(
        &host,
        &["webhook"],
        &["--set", &url, "--allow-host", &origin],
    );
    let outcome = host.run_once(&refs(&args)).await;
    assert_eq!(outcome.code(), Some(0), "{outcome}");
    assert_mentions(
        &outcome.stderr,
        "the run's log",
        &["read 3 rows in 1 batch, passed on 2, rejected 1"],
    );

    // Killed after its second batch was handed on, before that batch's checkpoint: the next
    // pass hands those rows on again, under the same batch id, and says so.
    let (_db, host) = sqlite_users(5).await;
    let mut running = host.spawn(
        &["--once", "--batch-size", "2"],
        Some("after_deliver=wait@2"),
    );
    running.reached("after_deliver", 2).await;
    running.kill9().await;
    let outcome = host.run_once(&["--batch-size", "2"]).await;
    assert_eq!(outcome.code(), Some(0), "{outcome}");
    assert_mentions(
        &outcome.stderr,
        "the log of the run after kill -9",
        &["read 3 rows in 2 batches, passed on 3, rejected 0 (2 of them redelivered"],
    );

    let (_db, host) = sqlite_users(2).await;
    let outcome = host.run_once(&["--settle", "36500days"]).await;
    assert_eq!(outcome.code(), Some(0), "{outcome}");
    assert_mentions(
        &outcome.stderr,
        "the run's log",
        &[
            "read 0 rows in 0 batches",
            "2 rows changed too recently and wait for a later pass (--settle 3153600000s",
            "the first changed at 2024-01-01 00:00:00.000001",
            "so it is read once the database's clock passes",
        ],
    );
}
