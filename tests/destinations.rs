//! Destinations, end to end: the `webhook` and `mailchimp` examples deliver real tables to a
//! fake receiver ([`crate::support::http_server`]) on 127.0.0.1.
//!
//! - Delivery: every row reaches the receiver in the webhook's body shape, with the batch id as
//!   `Idempotency-Key`; a bearer token from a secret is sent and never shown (all databases).
//! - The allow-list: an origin not listed, `localhost` listed by name (a loopback address),
//!   names resolving to IPv6 addresses that carry 127.0.0.1 (NAT64, IPv4-mapped, 6to4, Teredo)
//!   and a redirect to another origin reach nothing; the run stops with the watermark unmoved.
//! - Limits: `--http-timeout` on a receiver that never answers, `--max-response-size`.
//! - Retries: 503s then success under the same batch id, `Retry-After` honoured, the run
//!   giving up after `--max-retries`.
//! - Rejected rows: kept as dead letters (`host dead-letters`), sent again by `host retry`.
//! - Fatal answers (400, 401) stop the run at once.
//! - Mailchimp: batch subscribe with basic auth, a member error as a dead letter, archive of a
//!   deleted row, 429 then success, a refused key; `--max-requests-per-second`.
//! - Crashes and concurrent writes: `kill -9` while the receiver holds a batch, rows changed
//!   while a batch is in flight; afterwards the receiver has every row's latest version.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use md5::{Digest, Md5};
use serde_json::{json, Value};

use crate::support::db::{user_values, USERS_COLUMNS};
use crate::support::guests::guest;
use crate::support::host::{assert_mentions, Outcome};
use crate::support::http_server::{Recorded, Reply, Server};
use crate::support::{at, Backend, Col, Host, TestDb, Val};

const PIPELINE: &str = "dest";

/// Generous bound on how long a host may take to reach a held request.
const HELD_WITHIN: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers

/// `--module <name>.wasm`, this test's cache, `--pipeline dest`, a 50 ms retry backoff, then
/// `extra`.
fn module_args(host: &Host, name: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--module".to_owned(),
        guest(name).display().to_string(),
        "--cache-dir".to_owned(),
        host.cache_dir().display().to_string(),
        "--pipeline".to_owned(),
        PIPELINE.to_owned(),
    ];
    if !extra.contains(&"--retry-backoff") {
        args.extend(["--retry-backoff".to_owned(), "50ms".to_owned()]);
    }
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    args
}

/// The webhook posting to `server`'s `/hook`, which is allowed, then `extra`.
fn webhook_args(host: &Host, server: &Server, extra: &[&str]) -> Vec<String> {
    let url = format!("url={}", server.url("/hook"));
    let origin = server.origin();
    let mut all = vec!["--set", &url, "--allow-host", &origin];
    all.extend_from_slice(extra);
    module_args(host, "webhook", &all)
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A `users` table with rows `1..=count` at `at(id)` on `backend`, and a host reading it.
async fn users(backend: Backend, count: i64) -> Option<(TestDb, String, Host)> {
    let db = TestDb::new(backend).await?;
    let table = db.create_users().await;
    db.insert_users(&table, (1..=count).map(|id| (id, Val::Ts(at(id)))))
        .await;
    let host = Host::new(&db, &table);
    Some((db, table, host))
}

async fn pipeline_status(host: &Host) -> Option<Value> {
    host.status_json()
        .await
        .into_iter()
        .find(|pipeline| pipeline["pipeline"] == PIPELINE)
}

async fn assert_nothing_synced(host: &Host, what: &str) {
    if let Some(status) = pipeline_status(host).await {
        assert!(
            status["watermark"].is_null(),
            "{what}: the watermark moved: {status}"
        );
        assert_eq!(status["rows_synced"], 0, "{what}: rows synced: {status}");
    }
}

async fn assert_rows_synced(host: &Host, rows: i64, what: &str) {
    let status = pipeline_status(host)
        .await
        .unwrap_or_else(|| panic!("{what}: no pipeline {PIPELINE} in host status"));
    assert!(
        !status["watermark"].is_null(),
        "{what}: no watermark: {status}"
    );
    assert_eq!(status["rows_synced"], rows, "{what}: rows synced: {status}");
}

fn assert_exit(outcome: &Outcome, code: i32, what: &str) {
    assert_eq!(outcome.code(), Some(code), "{what}: exit code; {outcome}");
}

/// The `{"op", "row"}` elements of every webhook body, in arrival order, with the request's
/// `Idempotency-Key`.
fn delivered(requests: &[Recorded]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for request in requests {
        let body = request.json();
        let key = request.header("idempotency-key").unwrap_or("").to_owned();
        for change in body["rows"].as_array().expect("a rows array") {
            out.push((key.clone(), change.clone()));
        }
    }
    out
}

fn row_id(change: &Value) -> i64 {
    change["row"]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("a delivered row without an integer id: {change}"))
}

/// Each id of `expected` delivered exactly once and nothing else.
fn assert_each_once(changes: &[(String, Value)], expected: impl IntoIterator<Item = i64>) {
    let mut got: Vec<i64> = changes.iter().map(|(_, change)| row_id(change)).collect();
    got.sort_unstable();
    let mut expected: Vec<i64> = expected.into_iter().collect();
    expected.sort_unstable();
    assert_eq!(got, expected, "ids delivered (sorted)");
}

/// The receiver's last version of each row's `name`, by id.
fn last_names(changes: &[(String, Value)]) -> BTreeMap<i64, String> {
    changes
        .iter()
        .map(|(_, change)| {
            let name = change["row"]["name"].as_str().unwrap_or("").to_owned();
            (row_id(change), name)
        })
        .collect()
}

/// `(Idempotency-Key, [(id, name)])` of each request, for failure messages.
fn batches_received(requests: &[Recorded]) -> Vec<(String, Vec<(i64, String)>)> {
    requests
        .iter()
        .map(|request| {
            let key = request.header("idempotency-key").unwrap_or("").to_owned();
            let rows = delivered(std::slice::from_ref(request))
                .iter()
                .map(|(_, change)| {
                    let name = change["row"]["name"].as_str().unwrap_or("").to_owned();
                    (row_id(change), name)
                })
                .collect();
            (key, rows)
        })
        .collect()
}

fn is_batch_id(text: &str) -> bool {
    text.len() == 32 && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// Distinct idempotency keys in order of first appearance.
fn keys(requests: &[Recorded]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for request in requests {
        let key = request.header("idempotency-key").unwrap_or("").to_owned();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// Runs `--once` until a run sends nothing (at most `max` runs), each exiting 0.
async fn run_until_quiet(host: &Host, server: &Server, args: &[String], max: usize) {
    for _ in 0..max {
        let before = server.request_count();
        let outcome = host.run_once(&refs(args)).await;
        assert_exit(&outcome, 0, "a catch-up run");
        if server.request_count() == before {
            return;
        }
    }
    panic!("the host still sent requests after {max} runs");
}

// ---------------------------------------------------------------------------------------------
// Webhook delivery

/// Scenario: 20 users through the webhook with `--detect-deletes 0s`; ids 3, 11 and 20 are
/// deleted from the table. The next run POSTs them as `{"op": "delete", "row": {"id": N}}`
/// (the key alone), once each, in one batch of its own id; the run after that sends nothing.
async fn detected_deletes_reach_the_webhook(backend: Backend) {
    let Some((db, table, host)) = users(backend, 20).await else {
        return;
    };
    let server = Server::accepting();
    let args = webhook_args(
        &host,
        &server,
        &["--detect-deletes", "0s", "--batch-size", "10"],
    );
    assert_exit(&host.run_once(&refs(&args)).await, 0, "first run");
    assert_each_once(&delivered(&server.requests()), 1..=20);

    db.execute(&format!("DELETE FROM {table} WHERE id IN (3, 11, 20)"))
        .await;
    assert_exit(
        &host.run_once(&refs(&args)).await,
        0,
        "run after the deletes",
    );
    let requests = server.requests();
    let deletes = &requests[2..];
    assert_eq!(deletes.len(), 1, "one delete batch: {deletes:#?}");
    let changes = delivered(deletes);
    assert_each_once(&changes, [3, 11, 20]);
    for (key, change) in &changes {
        assert!(is_batch_id(key), "idempotency key {key:?}");
        assert_eq!(
            change,
            &json!({"op": "delete", "row": {"id": row_id(change)}})
        );
    }
    assert!(
        !keys(&requests[..2]).contains(&changes[0].0),
        "a batch id of its own"
    );
    let status = pipeline_status(&host).await.expect("the pipeline's status");
    assert_eq!(status["deletes_detected"], 3, "{status}");

    assert_exit(&host.run_once(&refs(&args)).await, 0, "run after that");
    assert_eq!(server.request_count(), 3, "nothing more to send");
}

crate::support::on_databases!(
    [postgres => Postgres, mariadb => MariaDb, sqlite => Sqlite],
    [webhook_delivers_every_row_with_its_batch_id, detected_deletes_reach_the_webhook]
);

/// Scenario: 7 users in batches of 3 through the webhook, with a bearer token from a secret
/// and debug logging. Three POSTs to `/hook`, each `{"id", "pipeline", "rows"}` with JSON
/// content type, `Idempotency-Key` = the body's id (a batch id), distinct per batch, and the
/// token; every row once, as `{"op": "upsert", "row": {...}}` with all its columns. The token
/// appears nowhere in the host's output. A second run sends nothing.
async fn webhook_delivers_every_row_with_its_batch_id(backend: Backend) {
    let Some((db, _table, mut host)) = users(backend, 7).await else {
        return;
    };
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    host.set_env("WEBHOOK_TOKEN", &token);
    host.set_env("TIDEMARK_LOG", "debug");
    let server = Server::accepting();
    let args = webhook_args(
        &host,
        &server,
        &["--secret", "token=WEBHOOK_TOKEN", "--batch-size", "3"],
    );
    let outcome = host.run_once(&refs(&args)).await;
    assert_exit(&outcome, 0, "webhook run");
    assert!(
        !outcome.stderr.contains(&token) && !outcome.stdout.contains(&token),
        "the token leaked into the host's output: {outcome}"
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 3, "one POST per batch: {requests:#?}");
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hook");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {token}").as_str())
        );
        let body = request.json();
        let id = body["id"].as_str().expect("a batch id");
        assert!(is_batch_id(id), "batch id {id:?}");
        assert_eq!(request.header("idempotency-key"), Some(id));
        assert_eq!(body["pipeline"], PIPELINE);
        let object = body.as_object().expect("an object body");
        assert_eq!(
            object.keys().collect::<Vec<_>>(),
            ["id", "pipeline", "rows"],
            "body keys"
        );
    }
    assert_eq!(keys(&requests).len(), 3, "a distinct id per batch");
    let changes = delivered(&requests);
    assert_each_once(&changes, 1..=7);
    for (_, change) in &changes {
        let id = row_id(change);
        assert_eq!(
            change,
            &json!({
                "op": "upsert",
                "row": {
                    "id": id,
                    "email": format!("user{id}@example.com"),
                    "name": format!("user {id}"),
                    "updated_at": db.rendered_stamp(at(id)),
                }
            })
        );
    }
    assert_rows_synced(&host, 7, "after the webhook run").await;

    let outcome = host.run_once(&refs(&args)).await;
    assert_exit(&outcome, 0, "second run");
    assert_eq!(server.request_count(), 3, "a second run sends nothing");
}

// ---------------------------------------------------------------------------------------------
// The allow-list

/// Scenario: the webhook's origin is not on the list (another port of the same address is).
/// The host refuses the request and logs it, the guest stops the run naming the flag; the
/// receiver gets nothing and the watermark stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_not_allowed_is_refused() {
    let Some((_db, _table, host)) = users(Backend::Postgres, 3).await else {
        return;
    };
    let server = Server::accepting();
    let other = Server::accepting();
    let url = format!("url={}", server.url("/hook"));
    let args = module_args(
        &host,
        "webhook",
        &["--set", &url, "--allow-host", &other.origin()],
    );
    let outcome = host.run_once(&refs(&args)).await;
    assert_exit(&outcome, 1, "a request to an origin not allowed");
    let hint = format!("--allow-host {}", server.origin());
    assert_mentions(
        &outcome.stderr,
        "the host's log",
        &["refused outbound request", &server.url("/hook"), &hint],
    );
    assert_eq!(server.request_count(), 0, "the receiver got a request");
    assert_eq!(other.request_count(), 0, "the allowed origin got a request");
    assert_nothing_synced(&host, "a refused request").await;
}

/// Scenario: `--allow-host http://localhost:PORT` and a request to `http://localhost:PORT/`:
/// localhost resolves to a loopback address, which only an origin naming the IP address may
/// reach. Refused, with the address and the hint in the log; the destination stops the run
/// without retrying; the receiver (listening on 127.0.0.1) gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_by_name_is_refused_as_loopback() {
    let Some((_db, _table, host)) = users(Backend::Postgres, 2).await else {
        return;
    };
    let server = Server::accepting();
    let origin = format!("http://localhost:{}", server.port());
    let url = format!("url={origin}/hook");
    let args = module_args(&host, "webhook", &["--set", &url, "--allow-host", &origin]);
    let outcome = host.run_once(&refs(&args)).await;
    assert_exit(&outcome, 1, "a request to localhost by name");
    assert_mentions(
        &outcome.stderr,
        "the host's log",
        &["refused outbound request", &format!("{origin}/hook")],
    );
    assert!(
        outcome.stderr.contains("127.0.0.1") || outcome.stderr.contains("::1"),
        "the log should name the loopback address: {outcome}"
    );
    assert!(
        outcome.stderr.contains("by IP address") || outcome.stderr.contains("by address"),
        "the refusal should say to list the address: {outcome}"
    );
    // A refusal is final: the destination stops the run instead of retrying.
    assert!(
        !outcome.stderr.contains("retries"),
        "a refused request was retried: {outcome}"
    );
    assert_eq!(server.request_count(), 0, "the receiver got a request");
    assert_nothing_synced(&host, "a request to localhost").await;
}

/// Scenario: allowed host names that resolve to IPv6 addresses carrying the receiver's
/// loopback address 127.0.0.1 (NAT64's well-known prefix, IPv4-mapped, 6to4, Teredo's client
/// and server), or to NAT64's local-use prefix or the deprecated IPv4-compatible form: each
/// request is refused before a connection is made, the log names the address and its kind,
/// and the receiver gets nothing. A gateway or relay on the way would deliver these to the
/// address they carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolving_to_translated_private_addresses_are_refused() {
    let Some((_db, _table, mut host)) = users(Backend::Postgres, 2).await else {
        return;
    };
    let server = Server::accepting();
    let names = [
        ("nat64.test", "64:ff9b::7f00:1", "loopback"),
        ("nat64-local.test", "64:ff9b:1::7f00:1", "NAT64 (local use)"),
        ("mapped.test", "::ffff:127.0.0.1", "loopback"),
        (
            "compatible.test",
            "::7f00:1",
            "IPv4-compatible (deprecated)",
        ),
        ("sixtofour.test", "2002:7f00:1::1", "loopback"),
        // Teredo: a public server (65.54.227.120), the client 127.0.0.1 written inverted.
        (
            "teredo.test",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            "loopback",
        ),
        ("teredo-server.test", "2001:0:7f00:1::1", "loopback"),
    ];
    host.resolve(&names.map(|(name, address, _)| (name, address)));
    for (name, address, kind) in names {
        let origin = format!("http://{name}:{}", server.port());
        let url = format!("url={origin}/hook");
        let args = module_args(&host, "webhook", &["--set", &url, "--allow-host", &origin]);
        let outcome = host.run_once(&refs(&args)).await;
        assert_exit(&outcome, 1, &format!("a request to {name} ({address})"));
        let shown: std::net::IpAddr = address.parse().unwrap();
        assert_mentions(
            &outcome.stderr,
            "the host's log",
            &[
                "refused outbound request",
                &format!("{name} resolves to the {kind} address {shown}"),
                &format!("--allow-host http://[{shown}]:{}", server.port()),
            ],
        );
    }
    assert_eq!(server.request_count(), 0, "the receiver got a request");
    assert_nothing_synced(&host, "requests to translated private addresses").await;
}

/// Scenario: the receiver answers 302 to a second server. The host never follows it: the
/// guest sees the 302 and stops the run (3xx is fatal), whether or not the second origin is
/// allowed; the second server gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_is_not_followed() {
    let Some((_db, _table, host)) = users(Backend::Postgres, 2).await else {
        return;
    };
    let elsewhere = Server::accepting();
    let location = elsewhere.url("/stolen");
    let server = Server::start(move |_| Reply::status(302).header("Location", &location));
    for allow_second in [false, true] {
        let mut extra = vec![];
        let second = elsewhere.origin();
        if allow_second {
            extra.extend(["--allow-host", second.as_str()]);
        }
        let args = webhook_args(&host, &server, &extra);
        let outcome = host.run_once(&refs(&args)).await;
        let what = format!("a 302 (second origin allowed: {allow_second})");
        assert_exit(&outcome, 1, &what);
        assert_mentions(&outcome.stderr, &what, &["HTTP 302"]);
        assert_eq!(
            elsewhere.request_count(),
            0,
            "{what}: the redirect was followed"
        );
        assert_nothing_synced(&host, &what).await;
    }
    assert_eq!(server.request_count(), 2, "one request per run");
}

// ---------------------------------------------------------------------------------------------
// Timeouts, sizes, retries

/// Scenario: a receiver that never answers, `--http-timeout 300ms --max-retries 2`. Each
/// attempt times out (retry later), three attempts of the same batch arrive, then the run
/// gives up: exit 1, "after 2 retries", watermark unmoved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_retries_then_gives_up() {
    let Some((_db, _table, host)) = users(Backend::Postgres, 3).await else {
        return;
    };
    let server = Server::start(|_| Reply::ok().delayed(Duration::from_secs(5)));
    let args = webhook_args(
        &host,
        &server,
        &["--http-timeout", "300ms", "--max-retries", "2"],
    );
    let started = Instant::now();
    let outcome = host.run_once(&refs(&args)).await;
    let took = started.elapsed();
    assert_exit(&outcome, 1, "a receiver that never answers");
    assert_mentions(&outcome.stderr, "the host's error", &["after 2 retries"]);
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "the first attempt and two retries");
    assert_eq!(keys(&requests).len(), 1, "one batch id for every attempt");
    assert!(
        took >= Duration::from_millis(900),
        "three attempts of 300 ms took only {took:?}"
    );
    assert_nothing_synced(&host, "timeouts").await;

    // The next run starts with the same batch.
    server.set_handler(|_| Reply::ok());
    let outcome = host.run_once(&refs(&args)).await;
    assert_exit(&outcome, 0, "a run against a receiver that answers");
    let requests = server.requests();
    assert_eq!(requests.len(), 4, "{requests:#?}");
    assert_eq!(keys(&requests).len(), 1, "the next run sent another batch");
    assert_rows_synced(&host, 3, "after the receiver answered").await;
}

/// Scenario: a response of 64 KiB against `--max-response-size 1KiB` fails the request in the
/// guest (retry later, then the run gives up, watermark unmoved); the same run with a small
/// response delivers everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_over_the_size_limit_fails_the_request() {
    let Some((_db, _table, host)) = users(Backend::Postgres, 3).await else {
        return;
    };
    let server = Server::start(|_| Reply::ok().body(vec![b'x'; 64 * 1024]));
    let args = webhook_args(
        &host,
        &server,
        &["--max-response-size", "1KiB", "--max-retries", "1"],
    );
    let outcome = host.run_once(&refs(&args)).await;
    assert_exit(&outcome, 1, "a response over the limit");
    assert_mentions(&outcome.stderr, "the host's error", &["after 1 retries"]);
    assert_eq!(server.request_count(), 2, "an attempt and a retry");
    assert_nothing_synced(&host, "responses over the limit").await;

    server.set_handler(|_| Reply::ok().body(vec![b'x'; 512]));
    let outcome = host.run_once(&refs(&args)).await;
    assert_exit(&outcome, 0, "a response under the limit");
    assert_rows_synced(&host, 3, "a response under the limit").await;
}

/// Scenario: the receiver answers 503 twice, then 200. The first batch arrives three times
/// under one `Idempotency-Key`, the second once; every row is delivered and the watermark moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_unavailable_is_retried_with_the_same_batch_id() {
    let Some((_db, _table, host)) = users(Backend::Postgres, 4).await else {
        return;
    };
    let server = Server::scripted(
        vec![
            Reply::status(503).body("busy"),
            Reply::status(503).body("busy"),
        ],
        Reply::ok(),
    );
    let args = webhook_args(&host, &server, &["--batch-size", "2"]);
    let outcome = host.run_once(&refs(&args)).await;
    assert_exit(&outcome, 0, "503, 503, then 200");
    let requests = server.requests();
    assert_eq!(
        requests.len(),
        4,
        "three attempts of batch 1, one of batch 2"
    );
    let attempts: Vec<&str> = requests
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or(""))
        .collect();
    assert_eq!(attempts[0], attempts[1], "a retry under another id");
    assert_eq!(attempts[0], attempts[2], "a retry under another id");
    assert_ne!(attempts[2], attempts[3], "batch 2 under batch 1's id");
    assert_eq!(
        requests[0].body, requests[2].body,
        "a retry with other rows"
    );
    // Only the accepted attempts count.
    let accepted = [requests[2].clone(), requests[3].clone()];
    assert_each_once(&delivered(&accepted), 1..=4);
    assert_rows_synced(&host, 4, "after the retries").await;
}

/// Scenario: 429 with `Retry-After: 1`, then 200, with a 50 ms backoff: the second attempt
/// comes about a second after the first, not 50 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let Some((_db, _table, host)) = users(Backend::Postgres, 2).await else {
        return;
    };
    let server = Server::scripted(
        vec![Reply::status(429).header("Retry-After", "1")],
        Reply::ok(),
    );
    let args = webhook_args(&host, &server, &[]);
    let outcome = host.run_once(&refs(&args)).await;
    assert_exit(&outcome, 0, "429 then 200");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "an attempt and a retry");
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "the retry came {gap:?} after a Retry-After of 1 s"
    );
    assert_eq!(keys(&requests).len(), 1, "one batch id");
    assert_rows_synced(&host, 2, "after the 429").await;
}

/// Scenario: the receiver answers 400, then (another pipeline state) 401. The run stops at
/// once: exit 1, the guest's message with the status and the receiver's words, a single
/// request, watermark unmoved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_status_stops_at_once() {
    for (status, says) in [(400, "malformed payload"), (401, "who are you")] {
        let Some((_db, _table, host)) = users(Backend::Postgres, 3).await else {
            return;
        };
        let server = Server::start(move |_| Reply::status(status).body(says));
        let args = webhook_args(&host, &server, &[]);
        let outcome = host.run_once(&refs(&args)).await;
        let what = format!("a {status}");
        assert_exit(&outcome, 1, &what);
        assert_mentions(&outcome.stderr, &what, &[&format!("HTTP {status}"), says]);
        assert!(
            !outcome.stderr.contains("retries"),
            "{what} was retried: {outcome}"
        );
        assert_eq!(server.request_count(), 1, "{what}: retried");
        assert_nothing_synced(&host, &what).await;
    }
}

/// Scenario: `--output FILE` with a chain that ends in a destination module. The destination
/// delivers the rows, so the file would never be written: the run is refused at start (exit
/// 2) naming both, before any row is read or the file is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_file_with_a_destination_is_refused() {
    let Some((_db, _table, host)) = users(Backend::Sqlite, 3).await else {
        return;
    };
    let server = Server::accepting();
    let mut args = host.run_args(&refs(&webhook_args(&host, &server, &[])));
    let output = host.dir().join("never.jsonl");
    args.extend([
        "--output".to_owned(),
        output.display().to_string(),
        "--once".to_owned(),
    ]);
    let outcome = host.exec(&args).await;
    assert_exit(&outcome, 2, "--output with a destination module");
    assert_mentions(
        &outcome.stderr,
        "the refusal",
        &["--output", "destination module webhook", "hint:"],
    );
    assert!(!output.exists(), "the refused run created its output file");
    assert_eq!(server.request_count(), 0, "the refused run sent a request");
    assert_nothing_synced(&host, "a refused run").await;
}

// ---------------------------------------------------------------------------------------------
// Rejected rows

/// `host retry --pipeline dest` with the webhook posting to `server`.
async fn retry_dead_letters(host: &Host, server: &Server) -> Outcome {
    let state = host.state_url();
    let mut args = vec![
        "retry".to_owned(),
        "--pipeline".to_owned(),
        PIPELINE.to_owned(),
        "--state".to_owned(),
        state,
    ];
    // `module_args` adds `--pipeline dest` again; retry takes the run's flags, so drop it.
    let flags = webhook_args(host, server, &[]);
    let mut flags = flags.into_iter().peekable();
    while let Some(flag) = flags.next() {
        if flag == "--pipeline" {
            flags.next();
            continue;
        }
        args.push(flag);
    }
    host.exec(&args).await
}

/// Scenario: the receiver rejects row 1 of the only batch. The run succeeds and the watermark
/// moves past the batch; `host dead-letters --json` lists exactly that row as the receiver got
/// it, with the reason, the batch id and one attempt. `host retry` against a receiver that
/// rejects it again counts a second attempt with the new reason; against one that accepts it,
/// the row arrives and the dead letters are empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_rows_are_dead_letters_until_retried() {
    let Some((_db, _table, host)) = users(Backend::Postgres, 3).await else {
        return;
    };
    let server = Server::start(|_| {
        Reply::json(
            200,
            &json!({"rejected": [{"index": 1, "reason": "bad email"}]}),
        )
    });
    let args = webhook_args(&host, &server, &[]);
    let outcome = host.run_once(&refs(&args)).await;
    assert_exit(&outcome, 0, "a batch with a rejected row");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let batch_id = requests[0].header("idempotency-key").unwrap().to_owned();
    let sent = requests[0].json()["rows"][1].clone();
    assert_eq!(row_id(&sent), 2);
    let status = pipeline_status(&host).await.expect("pipeline status");
    assert!(
        !status["watermark"].is_null(),
        "the watermark stayed: {status}"
    );
    assert_eq!(status["dead_letters"], 1, "host status: {status}");

    let letters = host.dead_letters(PIPELINE).await;
    assert_eq!(letters.len(), 1, "dead letters: {letters:#?}");
    let letter = &letters[0];
    assert!(letter["id"].is_i64(), "{letter}");
    assert_eq!(letter["pipeline"], PIPELINE, "{letter}");
    assert_eq!(letter["batch_id"], batch_id.as_str(), "{letter}");
    assert_eq!(letter["index"], 1, "{letter}");
    assert_eq!(letter["row"], sent, "the row as the destination got it");
    assert_eq!(letter["reason"], "bad email", "{letter}");
    assert_eq!(letter["attempts"], 1, "{letter}");
    assert!(letter["first_failed_at"].is_string(), "{letter}");
    assert!(letter["last_failed_at"].is_string(), "{letter}");
    assert_eq!(
        host.dead_letters_as("deadletters", PIPELINE).await,
        letters,
        "the old name of host dead-letters"
    );

    let still_bad = Server::start(|_| {
        Reply::json(
            200,
            &json!({"rejected": [{"index": 0, "reason": "still bad"}]}),
        )
    });
    let outcome = retry_dead_letters(&host, &still_bad).await;
    assert_exit(&outcome, 0, "a retry rejected again");
    let retried = still_bad.requests();
    assert_eq!(retried.len(), 1, "one request for one dead letter");
    assert_eq!(
        retried[0].json()["rows"],
        json!([sent]),
        "the row sent again"
    );
    let letters = host.dead_letters(PIPELINE).await;
    assert_eq!(letters.len(), 1, "dead letters: {letters:#?}");
    assert_eq!(letters[0]["attempts"], 2, "{}", letters[0]);
    assert_eq!(letters[0]["reason"], "still bad", "{}", letters[0]);
    assert_eq!(letters[0]["row"], sent, "{}", letters[0]);

    let accepting = Server::accepting();
    let outcome = retry_dead_letters(&host, &accepting).await;
    assert_exit(&outcome, 0, "a retry accepted");
    assert_mentions(&outcome.stderr, "host retry's log", &["retried 1 rows"]);
    let retried = accepting.requests();
    assert_eq!(retried.len(), 1);
    assert_eq!(
        retried[0].json()["rows"],
        json!([sent]),
        "the row sent again"
    );
    assert!(
        host.dead_letters(PIPELINE).await.is_empty(),
        "dead letters remain"
    );
    let status = pipeline_status(&host).await.expect("pipeline status");
    assert_eq!(status["dead_letters"], 0, "host status: {status}");
    // The first receiver got nothing more.
    assert_eq!(server.request_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Mailchimp

const API_KEY: &str = "0123456789abcdef0123456789abcdef-us6";
const LIST: &str = "abc123";

fn subscriber_hash(email: &str) -> String {
    hex::encode(Md5::digest(email.to_lowercase().as_bytes()))
}

fn problem(status: u16, title: &str, detail: &str) -> Reply {
    let body = json!({
        "type": "https://mailchimp.com/developer/marketing/docs/errors/",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": "0b1e4c2a-5d3e-4f6a-9b7c-8d9e0f1a2b3c",
    });
    Reply::status(status)
        .header("Content-Type", "application/problem+json")
        .body(body.to_string())
}

/// A fake Mailchimp: checks basic auth, answers batch subscribe in Mailchimp's shape (an error
/// for every address at `fake.invalid`), archives with 204.
fn mailchimp_reply(request: &Recorded) -> Reply {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("anystring:{API_KEY}"))
    );
    if request.header("authorization") != Some(expected.as_str()) {
        return problem(
            401,
            "API Key Invalid",
            "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
        );
    }
    let list = format!("/3.0/lists/{LIST}");
    match request.method.as_str() {
        "POST" if request.path == list => {
            let body = request.json();
            let members = body["members"].as_array().cloned().unwrap_or_default();
            let (errors, accepted): (Vec<Value>, Vec<Value>) = members.into_iter().partition(|m| {
                m["email_address"]
                    .as_str()
                    .unwrap_or("")
                    .ends_with("fake.invalid")
            });
            let errors: Vec<Value> = errors
                .iter()
                .map(|m| {
                    json!({
                        "email_address": m["email_address"],
                        "error": format!(
                            "{} looks fake or invalid, please enter a real email address.",
                            m["email_address"].as_str().unwrap_or("")
                        ),
                        "error_code": "ERROR_FAKE_EMAIL",
                    })
                })
                .collect();
            Reply::json(
                200,
                &json!({
                    "new_members": accepted,
                    "updated_members": [],
                    "errors": errors,
                    "total_created": accepted.len(),
                    "total_updated": 0,
                    "error_count": errors.len(),
                }),
            )
        }
        "DELETE" if request.path.starts_with(&format!("{list}/members/")) => Reply::status(204),
        _ => problem(
            404,
            "Resource Not Found",
            "The requested resource could not be found.",
        ),
    }
}

/// `users` with a `deleted_at` column on PostgreSQL.
async fn mailchimp_users(rows: &[(i64, Option<&str>, bool)]) -> Option<(TestDb, Host)> {
    let db = TestDb::new(Backend::Postgres).await?;
    let table = db
        .create_table(
            "members",
            &[
                ("id", Col::Key),
                ("email", Col::Text),
                ("name", Col::Text),
                ("deleted_at", Col::NullableStamp),
                ("updated_at", Col::Stamp),
            ],
        )
        .await;
    let values: Vec<Vec<Val>> = rows
        .iter()
        .map(|(id, email, deleted)| {
            vec![
                Val::Int(*id),
                email.map_or(Val::Null, |e| Val::Text(e.to_owned())),
                Val::Text(format!("User {id}")),
                if *deleted { Val::Ts(at(0)) } else { Val::Null },
                Val::Ts(at(*id)),
            ]
        })
        .collect();
    db.insert(
        &table,
        &["id", "email", "name", "deleted_at", "updated_at"],
        &values,
    )
    .await;
    let mut host = Host::new(&db, &table);
    host.set_env("MAILCHIMP_API_KEY", API_KEY);
    Some((db, host))
}

/// Members 1..=`count` with addresses `m<id>@example.com` (returned), none deleted.
async fn mailchimp_members(count: i64) -> Option<(Vec<String>, TestDb, Host)> {
    let emails: Vec<String> = (1..=count).map(|id| format!("m{id}@example.com")).collect();
    let rows: Vec<(i64, Option<&str>, bool)> = emails
        .iter()
        .enumerate()
        .map(|(n, email)| (n as i64 + 1, Some(email.as_str()), false))
        .collect();
    let (db, host) = mailchimp_users(&rows).await?;
    Some((emails, db, host))
}

fn mailchimp_args(host: &Host, server: &Server, extra: &[&str]) -> Vec<String> {
    let base = format!("base_url={}", server.origin());
    let list = format!("list_id={LIST}");
    let origin = server.origin();
    let mut all = vec![
        "--set",
        &list,
        "--set",
        &base,
        "--secret",
        "api_key=MAILCHIMP_API_KEY",
        "--allow-host",
        &origin,
        "--deleted-column",
        "deleted_at",
    ];
    all.extend_from_slice(extra);
    module_args(host, "mailchimp", &all)
}

/// Scenario: five rows in one batch: two members, one address Mailchimp calls fake, one row
/// without an address, one deleted row. One batch subscribe request with basic auth, the
/// four addresses minus the deleted one, `update_existing` and the merge field; one archive
/// call for the deleted member's hash. The fake address and the row without one are dead
/// letters with the reasons; the watermark moves; the API key is never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailchimp_subscribes_rejects_and_archives() {
    let rows = [
        (1, Some("ada@example.com"), false),
        (2, Some("Bob@Example.com"), false),
        (3, Some("robot@fake.invalid"), false),
        (4, None, false),
        (5, Some("Gone@Example.com"), true),
    ];
    let Some((_db, host)) = mailchimp_users(&rows).await else {
        return;
    };
    let server = Server::start(mailchimp_reply);
    let args = mailchimp_args(&host, &server, &["--set", "merge_fields=FNAME=name"]);
    let outcome = host.run_once(&refs(&args)).await;
    assert_exit(&outcome, 0, "mailchimp run");
    assert!(
        !outcome.stderr.contains(API_KEY),
        "the API key leaked: {outcome}"
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let post = &requests[0];
    assert_eq!(
        (post.method.as_str(), post.path.as_str()),
        ("POST", "/3.0/lists/abc123")
    );
    assert_eq!(
        post.json(),
        json!({
            "members": [
                {"email_address": "ada@example.com", "status": "subscribed",
                 "merge_fields": {"FNAME": "User 1"}},
                {"email_address": "Bob@Example.com", "status": "subscribed",
                 "merge_fields": {"FNAME": "User 2"}},
                {"email_address": "robot@fake.invalid", "status": "subscribed",
                 "merge_fields": {"FNAME": "User 3"}},
            ],
            "update_existing": true,
        })
    );
    let archive = &requests[1];
    assert_eq!(archive.method, "DELETE");
    assert_eq!(
        archive.path,
        format!(
            "/3.0/lists/abc123/members/{}",
            subscriber_hash("gone@example.com")
        )
    );
    assert_rows_synced(&host, 5, "after the mailchimp run").await;

    let letters = host.dead_letters(PIPELINE).await;
    let by_id: BTreeMap<i64, &Value> = letters
        .iter()
        .map(|letter| (row_id(&letter["row"]), letter))
        .collect();
    assert_eq!(
        by_id.keys().copied().collect::<Vec<_>>(),
        [3, 4],
        "dead letters: {letters:#?}"
    );
    let fake = by_id[&3]["reason"].as_str().unwrap_or("");
    assert!(
        fake.contains("robot@fake.invalid looks fake or invalid"),
        "reason {fake:?}"
    );
    let missing = by_id[&4]["reason"].as_str().unwrap_or("");
    assert!(missing.contains("email"), "reason {missing:?}");
    for letter in &letters {
        assert_eq!(letter["attempts"], 1, "{letter}");
    }
}

/// Scenario: 1001 members in one batch: batch subscribe takes at most 500 a request, so three
/// requests (500, 500, 1) carry every address once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailchimp_splits_a_batch_into_requests_of_500() {
    let Some((emails, _db, host)) = mailchimp_members(1001).await else {
        return;
    };
    let server = Server::start(mailchimp_reply);
    let args = mailchimp_args(&host, &server, &["--batch-size", "1001"]);
    let outcome = host.run_once(&refs(&args)).await;
    assert_exit(&outcome, 0, "a batch of 1001 members");
    let requests = server.requests();
    let sizes: Vec<usize> = requests
        .iter()
        .map(|request| request.json()["members"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [500, 500, 1], "members per request");
    let mut sent: Vec<String> = requests
        .iter()
        .flat_map(|request| {
            request.json()["members"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|member| member["email_address"].as_str().unwrap_or("").to_owned())
        .collect();
    sent.sort();
    let mut expected = emails.clone();
    expected.sort();
    assert_eq!(sent, expected, "every address once");
    assert_rows_synced(&host, 1001, "after the big batch").await;
}

/// Scenario: the same 1001 members with `--max-requests-per-batch 2`: the host refuses the
/// third request, and Mailchimp, which cannot tell the refusal from a network error, asks to
/// retry. The host knows the same cap would refuse it at every retry: the run stops at once
/// (default back-off, which would wait for seconds, then minutes), naming the flag; the
/// receiver got the two requests of the one attempt; the watermark stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailchimp_past_the_requests_per_batch_cap_stops_at_once() {
    let Some((_, _db, host)) = mailchimp_members(1001).await else {
        return;
    };
    let server = Server::start(mailchimp_reply);
    let args = mailchimp_args(
        &host,
        &server,
        &[
            "--batch-size",
            "1001",
            "--max-requests-per-batch",
            "2",
            "--retry-backoff",
            "1s",
        ],
    );
    let started = Instant::now();
    let outcome = host.run_once(&refs(&args)).await;
    let took = started.elapsed();
    eprintln!("a batch past --max-requests-per-batch stopped in {took:?}");
    assert_exit(&outcome, 1, "a batch past the requests cap");
    assert!(
        took < Duration::from_secs(10),
        "the run took {took:?}: the refused batch was retried"
    );
    let refused = format!("the host refused its request to {}", server.origin());
    assert_mentions(
        &outcome.stderr,
        "the error of a batch past the requests cap",
        &[
            "mailchimp",
            &refused,
            "more than 2 requests in one batch; raise --max-requests-per-batch",
            "retrying cannot help",
        ],
    );
    assert_eq!(server.request_count(), 2, "requests of the one attempt");
    assert_nothing_synced(&host, "a batch past the requests cap").await;
}

/// Scenario: Mailchimp answers 429 with `Retry-After: 1`, then as usual: the batch comes
/// again about a second later and is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailchimp_rate_limited_then_delivered() {
    let Some((_db, host)) = mailchimp_users(&[(1, Some("ada@example.com"), false)]).await else {
        return;
    };
    let server = Server::start(mailchimp_reply);
    server.push_replies([problem(
        429,
        "Too Many Requests",
        "You have exceeded the limit of 10 simultaneous connections.",
    )
    .header("Retry-After", "1")]);
    let args = mailchimp_args(&host, &server, &[]);
    let outcome = host.run_once(&refs(&args)).await;
    assert_exit(&outcome, 0, "429 then success");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(requests[0].body, requests[1].body, "the same batch again");
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "retried after only {gap:?}"
    );
    assert_rows_synced(&host, 1, "after the 429").await;
    assert!(host.dead_letters(PIPELINE).await.is_empty());
}

/// Scenario: a key Mailchimp refuses (401): the run stops at once with Mailchimp's words,
/// one request, watermark unmoved, the key not shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailchimp_refused_key_is_fatal() {
    let Some((_db, mut host)) = mailchimp_users(&[(1, Some("ada@example.com"), false)]).await
    else {
        return;
    };
    let wrong_key = "ffffffffffffffffffffffffffffffff-us6";
    host.set_env("MAILCHIMP_API_KEY", wrong_key);
    let server = Server::start(mailchimp_reply);
    let args = mailchimp_args(&host, &server, &[]);
    let outcome = host.run_once(&refs(&args)).await;
    assert_exit(&outcome, 1, "a refused key");
    assert_mentions(
        &outcome.stderr,
        "the host's error",
        &["API Key Invalid", "HTTP 401"],
    );
    assert!(
        !outcome.stderr.contains(wrong_key),
        "the key leaked: {outcome}"
    );
    assert_eq!(server.request_count(), 1, "a refused key was retried");
    assert_nothing_synced(&host, "a refused key").await;
}

/// Scenario: 8 rows in batches of 1 (8 batch subscribe requests) with
/// `--max-requests-per-second 5`: consecutive requests arrive at least ~200 ms apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_second_are_capped() {
    let Some((_, _db, host)) = mailchimp_members(8).await else {
        return;
    };
    let server = Server::start(mailchimp_reply);
    let args = mailchimp_args(
        &host,
        &server,
        &["--batch-size", "1", "--max-requests-per-second", "5"],
    );
    let outcome = host.run_once(&refs(&args)).await;
    assert_exit(&outcome, 0, "a rate-limited run");
    let requests = server.requests();
    assert_eq!(requests.len(), 8);
    let gaps: Vec<Duration> = requests.windows(2).map(|w| w[1].at - w[0].at).collect();
    // 200 ms apart at the host; arrival times carry some scheduling noise.
    for gap in &gaps {
        assert!(
            *gap >= Duration::from_millis(100),
            "requests {gaps:?} apart, at 5 per second"
        );
    }
    let span = requests[7].at - requests[0].at;
    assert!(
        span >= Duration::from_millis(1200),
        "8 requests in {span:?}"
    );
    assert_rows_synced(&host, 8, "after the rate-limited run").await;
}

// ---------------------------------------------------------------------------------------------
// Crashes and concurrent writes

/// Scenario: the receiver holds the first batch; the host is killed with SIGKILL. A row of
/// that batch is then updated. The next run sends the same batch under the same
/// `Idempotency-Key` first, and afterwards the receiver has every row's latest version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_delivery_redelivers_the_batch() {
    let Some((db, table, host)) = users(Backend::Sqlite, 6).await else {
        return;
    };
    let server = Server::start(|_| Reply::ok().held());
    let mut args = webhook_args(&host, &server, &["--batch-size", "3"]);
    args.push("--once".to_owned());
    let running = host.spawn(&refs(&args), None);
    server.wait_held(1, HELD_WITHIN).await;
    running.kill9().await;
    let first = server.requests();
    assert_eq!(first.len(), 1, "{first:#?}");
    let held_key = first[0].header("idempotency-key").unwrap().to_owned();
    server.set_handler(|_| Reply::ok());
    server.release();
    assert_nothing_synced(&host, "after kill -9").await;

    db.execute(&format!(
        "UPDATE {table} SET name = 'user 2 v2', updated_at = {} WHERE id = 2",
        db.lit(&Val::Now)
    ))
    .await;
    args.pop();
    run_until_quiet(&host, &server, &args, 3).await;
    let requests = server.requests();
    assert_eq!(
        requests[1].header("idempotency-key"),
        Some(held_key.as_str()),
        "the rerun's first batch under another id"
    );
    // The same cursor range: the rows of the held batch, but row 2 has moved on since.
    let redelivered: Vec<i64> = delivered(&requests[1..2])
        .iter()
        .map(|(_, change)| row_id(change))
        .collect();
    assert_eq!(redelivered, [1, 3], "the redelivered batch");
    let changes = delivered(&requests[1..]);
    assert_eq!(
        last_names(&changes),
        db.names(&table).await,
        "the receiver's last versions"
    );
}

/// Scenario (the sync post's "rows change while a batch is processed"): 6 rows in batches of
/// 3. While the receiver holds batch 1, the test updates a row of batch 1 and a row of batch
/// 2 and inserts a new row, all stamped with the database's clock. After the runs, the last
/// version the receiver got of each row is the database's. (A row stamped with a time before
/// the pass's safe horizon, written later, is outside the guarantee: see docs/guarantees.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_changed_while_a_batch_is_in_flight_arrive() {
    let Some((db, table, host)) = users(Backend::Postgres, 6).await else {
        return;
    };
    let server = Server::scripted(vec![Reply::ok().held()], Reply::ok());
    let mut args = webhook_args(&host, &server, &["--batch-size", "3"]);
    args.push("--once".to_owned());
    let running = host.spawn(&refs(&args), None);
    server.wait_held(1, HELD_WITHIN).await;
    let held = server.requests();
    let in_flight: Vec<i64> = delivered(&held).iter().map(|(_, c)| row_id(c)).collect();
    assert_eq!(in_flight, [1, 2, 3], "batch 1");

    let now = db.lit(&Val::Now);
    db.execute(&format!(
        "UPDATE {table} SET name = 'user 2 v2', updated_at = {now} WHERE id = 2"
    ))
    .await;
    db.execute(&format!(
        "UPDATE {table} SET name = 'user 5 v2', updated_at = {now} WHERE id = 5"
    ))
    .await;
    db.insert(&table, USERS_COLUMNS, &[user_values(8, Val::Now)])
        .await;
    server.release();
    let outcome = running.finish().await;
    assert_exit(&outcome, 0, "the run that had a batch in flight");

    args.pop();
    run_until_quiet(&host, &server, &args, 4).await;
    let requests = server.requests();
    let changes = delivered(&requests);
    let expected = db.names(&table).await;
    assert_eq!(expected.len(), 7);
    assert_eq!(
        last_names(&changes),
        expected,
        "the receiver's last versions; batches received: {:?}",
        batches_received(&requests)
    );
}
