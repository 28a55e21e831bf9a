//! `host new` projects, built and run as a user would: each template of each language is
//! written into a temp directory outside the workspace, built with its one command, and must
//! pass `host check` and `host test` on the sample rows it ships (`--expect` for transforms;
//! a local receiver for destinations). So the templates cannot rot.
//!
//! Toolchains: cargo with the `wasm32-wasip2` target (the Rust templates build into
//! `<target>/host-new`, warm after the first run); the pinned componentize-py and
//! componentize-js that `scripts/build-polyglot` installs (`<target>/py-venv`,
//! `examples/js-filter/node_modules`), so CI downloads nothing more.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::support::guests::{repo_dir, shared_cache_dir, target_dir, warm};
use crate::support::host::{assert_mentions, error_report, Host, Outcome};
use crate::support::http_server::{Reply, Server};

/// `host new NAME --lang LANG --world WORLD --dir <host dir>/NAME`; the project's directory.
async fn new_project(host: &Host, name: &str, lang: &str, world: &str) -> PathBuf {
    let dir = host.dir().join(name);
    let dir_arg = dir.display().to_string();
    let outcome = host
        .exec([
            "new", name, "--lang", lang, "--world", world, "--dir", &dir_arg,
        ])
        .await;
    assert_eq!(outcome.code(), Some(0), "host new {name}: {outcome}");
    dir
}

/// Runs the shell command `command` in `dir`, with `path` ahead of `PATH`; panics with its
/// output when it fails.
async fn build(dir: &Path, command: &str, path: Option<&Path>) {
    let mut shell = tokio::process::Command::new("sh");
    shell.arg("-c").arg(command).current_dir(dir);
    shell.env("CARGO_TARGET_DIR", target_dir().join("host-new"));
    if let Some(path) = path {
        let old = std::env::var("PATH").unwrap_or_default();
        shell.env("PATH", format!("{}:{old}", path.display()));
    }
    let output = shell.output().await.expect("starting sh");
    assert!(
        output.status.success(),
        "`{command}` in {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A `host new` project of `lang` and `world`, built with `command` (`path` ahead of `PATH`):
/// its directory and the component the build wrote.
async fn built_project(
    host: &Host,
    name: &str,
    lang: &str,
    world: &str,
    command: &str,
    path: Option<&Path>,
) -> (PathBuf, PathBuf) {
    let dir = new_project(host, name, lang, world).await;
    if lang == "js" {
        link_js_tools(&dir);
    }
    build(&dir, command, path).await;
    let file = format!("{}.wasm", name.replace('-', "_"));
    let wasm = match lang {
        "rust" => target_dir()
            .join("host-new/wasm32-wasip2/release")
            .join(file),
        _ => dir.join(file),
    };
    (dir, wasm)
}

/// `host check`, then `host test --input rows.json` with `extra`, of the component `wasm`.
async fn check_and_test(host: &Host, dir: &Path, wasm: &Path, extra: &[&str]) -> Outcome {
    assert!(wasm.exists(), "the build wrote no {}", wasm.display());
    // Compiled first, one component at a time and without the deadline of a host run: on a
    // busy machine a JavaScript or Python component takes well over ten seconds.
    warm(wasm).await;
    let module = wasm.display().to_string();
    let cache = shared_cache_dir().display().to_string();
    let checked = host
        .exec(["check", "--module", &module, "--cache-dir", &cache])
        .await;
    assert_eq!(checked.code(), Some(0), "host check {module}: {checked}");
    let rows = dir.join("rows.json").display().to_string();
    let mut args = vec![
        "test",
        "--module",
        &module,
        "--cache-dir",
        &cache,
        "--input",
        &rows,
    ];
    args.extend_from_slice(extra);
    host.exec(args).await
}

/// Links the pinned componentize-js that `scripts/build-polyglot` installs into `dir`.
fn link_js_tools(dir: &Path) {
    let tools = repo_dir().join("examples/js-filter/node_modules");
    assert!(
        tools.exists(),
        "{} is missing: run `bash scripts/build-guests` first",
        tools.display()
    );
    std::os::unix::fs::symlink(&tools, dir.join("node_modules")).unwrap();
}

/// A transform project of `lang`, built with `command`, passes `host test --expect`.
async fn transform_passes_its_own_test(lang: &str, command: &str, path: Option<&Path>) {
    let host = Host::scratch();
    let name = format!("sample-{lang}");
    let (dir, wasm) = built_project(&host, &name, lang, "transform", command, path).await;
    let expected = dir.join("expected.json").display().to_string();
    let outcome = check_and_test(&host, &dir, &wasm, &["--expect", &expected]).await;
    assert_eq!(
        outcome.code(),
        Some(0),
        "host test of the {lang} template: {outcome}"
    );
    assert_mentions(
        &outcome.stderr,
        "host test's log",
        &["output matches", "passed on 2 of 3 rows"],
    );
    runs_on_its_sample_table(&host, &dir, &wasm).await;

    rejects_and_fails_as_contract_0_2_says(&host, &dir, &wasm, lang).await;
}

/// `host run` on the sample database `host new` wrote (`app.db`, table `users`), as the
/// project's README says: users 1 and 3 come out with their `email_domain`, user 2 (plan
/// free) is left out; a second run hands on nothing.
async fn runs_on_its_sample_table(host: &Host, dir: &Path, wasm: &Path) {
    let source = format!("sqlite://{}", dir.join("app.db").display());
    let state = format!("sqlite://{}", dir.join("state.db").display());
    let output = dir.join("out.jsonl");
    let module = wasm.display().to_string();
    let cache = shared_cache_dir().display().to_string();
    let output_arg = output.display().to_string();
    let run = [
        "run",
        "--source",
        &source,
        "--table",
        "users",
        "--module",
        &module,
        "--once",
        "--state",
        &state,
        "--output",
        &output_arg,
        "--cache-dir",
        &cache,
    ];
    for pass in ["first", "second"] {
        let outcome = host.exec(run).await;
        assert_eq!(
            outcome.code(),
            Some(0),
            "{pass} host run on app.db: {outcome}"
        );
        let rows: Vec<Value> = std::fs::read_to_string(&output)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line")["row"].clone())
            .collect();
        assert_eq!(
            rows.iter()
                .map(|row| (row["id"].clone(), row["email_domain"].clone()))
                .collect::<Vec<_>>(),
            [
                (json!(1), json!("example.com")),
                (json!(3), json!("example.net"))
            ],
            "the output after the {pass} run on app.db: {outcome}"
        );
    }
}

/// Each template (contract 0.2.0) rejects a row whose email is no address, with its reason,
/// while the other rows go on (exit 0); a row without "id" fails the batch as `fatal`: exit 1
/// with the message, the module and the batch, and the JavaScript stack or the Python
/// traceback, and the row that `host run` would park.
async fn rejects_and_fails_as_contract_0_2_says(host: &Host, dir: &Path, wasm: &Path, lang: &str) {
    std::fs::write(
        dir.join("rows.json"),
        r#"[{"id": 1, "email": "not an address"}, {"id": 2, "email": "a@Example.com", "plan": "pro"}]"#,
    )
    .unwrap();
    let rejected = check_and_test(host, dir, wasm, &[]).await;
    assert_eq!(
        rejected.code(),
        Some(0),
        "a row with no address: {rejected}"
    );
    assert_mentions(
        &format!("{}{}", rejected.stdout, rejected.stderr),
        "host test over a row with no address",
        &["the email is not an address", "example.com", "rejected 1"],
    );

    std::fs::write(dir.join("rows.json"), r#"[{"name": "no id"}]"#).unwrap();
    let failed = check_and_test(host, dir, wasm, &[]).await;
    assert_eq!(failed.code(), Some(1), "a row without id: {failed}");
    // A fatal error (contract 0.2): `host test` fails with the module's message; `host run`
    // would park the row at fault.
    let fatal = format!("sample_{lang} answered fatal for batch test-batch");
    let mut mentions = vec![
        fatal.as_str(),
        "a row has no \"id\" column",
        "host run would park the 1 row(s) of 1 listed above",
    ];
    match lang {
        "js" => mentions.push("app.js:"),
        "python" => mentions.extend(["Traceback (most recent call last)", "app.py", "ValueError"]),
        _ => {}
    }
    assert_mentions(error_report(&failed), "the template's error", &mentions);
    assert_mentions(
        &failed.stderr,
        "host test's log",
        &[&format!(
            "sample_{lang} fails row 0 alone: {{\"op\":\"upsert\",\"row\":{{\"name\":\"no id\"}}}}"
        )],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_transform_template_builds_and_passes_host_test() {
    transform_passes_its_own_test("rust", "cargo build --release --quiet", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_transform_template_builds_and_passes_host_test() {
    let venv = target_dir().join("py-venv/bin");
    assert!(
        venv.exists(),
        "{} is missing: run `bash scripts/build-guests` first",
        venv.display()
    );
    transform_passes_its_own_test("python", "sh build.sh", Some(&venv)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_transform_template_builds_and_passes_host_test() {
    transform_passes_its_own_test("js", "npm run build --silent", None).await;
}

/// A JavaScript transform whose code throws `new Error("boom")`: `host test` exits 1 with an
/// error that holds the message, the module, the batch and the stack (the line of `app.js`),
/// not "expected a string, received [object]".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_error_keeps_its_message_and_stack() {
    let host = Host::scratch();
    let dir = new_project(&host, "boom", "js", "transform").await;
    link_js_tools(&dir);
    let app = std::fs::read_to_string(dir.join("app.js")).unwrap();
    let body = "function transform(batch, { dropPlan }) {\n";
    assert!(app.contains(body), "the template's transform: {app}");
    let app = app.replace(body, &format!("{body}  throw new Error(\"boom\");\n"));
    std::fs::write(dir.join("app.js"), app).unwrap();
    build(&dir, "npm run build --silent", None).await;

    let failed = check_and_test(&host, &dir, &dir.join("boom.wasm"), &[]).await;

    assert_eq!(failed.code(), Some(1), "a module that throws: {failed}");
    assert_mentions(
        error_report(&failed),
        "the error of throw new Error(\"boom\")",
        &["transform boom", "boom\\ntransform@app.js:", "test-batch"],
    );
    assert!(
        !failed.stderr.contains("expected a string"),
        "the message was lost: {failed}"
    );
}

/// A destination project of `lang`, built with `command`, is a destination for `host check`
/// and passes `host test` against a local receiver that takes everything: one POST of the
/// sample rows with the batch id as `Idempotency-Key`. Returns what `host test` printed (the
/// rows the destination rejected itself) and the rows the receiver got.
async fn destination_posts_to_a_local_receiver(
    lang: &str,
    command: &str,
    path: Option<&Path>,
) -> (Value, Vec<Value>) {
    let host = Host::scratch();
    let name = format!("hook-{lang}");
    let (dir, wasm) = built_project(&host, &name, lang, "destination", command, path).await;
    let server = Server::scripted(vec![], Reply::ok());
    let url = format!("url={}", server.url("/hook"));
    let origin = server.origin();

    let outcome = check_and_test(
        &host,
        &dir,
        &wasm,
        &["--set", &url, "--allow-host", &origin],
    )
    .await;

    assert_eq!(
        outcome.code(),
        Some(0),
        "host test of the {lang} destination: {outcome}"
    );
    let module = wasm.display().to_string();
    let cache = shared_cache_dir().display().to_string();
    let checked = host
        .exec(["check", "--module", &module, "--cache-dir", &cache])
        .await;
    assert_mentions(&checked.stdout, "host check", &["world:   destination"]);
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "one POST per batch");
    assert_eq!(requests[0].header("idempotency-key"), Some("test-batch"));
    let printed = serde_json::from_str(&outcome.stdout).expect("JSON on stdout");
    let rows = requests[0].json()["rows"]
        .as_array()
        .expect("the rows as an array")
        .clone();
    (printed, rows)
}

/// The Rust destination posts the rows with an email and rejects the row without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_destination_template_posts_and_rejects() {
    let (printed, rows) =
        destination_posts_to_a_local_receiver("rust", "cargo build --release --quiet", None).await;
    assert_eq!(
        printed,
        json!({"rejected": [{"index": 2, "reason": "the row has no email"}]})
    );
    assert_eq!(rows.len(), 2, "the rows with an email: {rows:?}");
}

/// The Python and JavaScript destinations (the `py-webhook` and `js-webhook` examples) post
/// every row and reject none themselves.
async fn webhook_template_posts_every_row(lang: &str, command: &str, path: Option<&Path>) {
    let (printed, rows) = destination_posts_to_a_local_receiver(lang, command, path).await;
    assert_eq!(printed, json!({"rejected": []}));
    assert_eq!(rows.len(), 3, "every sample row: {rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_destination_template_posts_every_row() {
    let venv = target_dir().join("py-venv/bin");
    webhook_template_posts_every_row("python", "sh build.sh", Some(&venv)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_destination_template_posts_every_row() {
    webhook_template_posts_every_row("js", "npm run build --silent", None).await;
}
