//! Hostile tenants (issue 11), the wall-clock and outbound HTTP holes, each next to a healthy
//! tenant in one process:
//!
//! - A guest that waits in a host call (sleeps, or waits for a response that never comes) is
//!   stopped at its deadline, not at `--http-timeout`, and gives its batch permit back: three
//!   sleepers and a hanging destination with `max_batches_in_flight = 2` do not stop the
//!   healthy tenant.
//! - Request bodies are capped (`--max-request-size`) and so are the requests one batch may
//!   start (`--max-requests-per-batch`); a batch whose body the host refused is not retried.
//! - An unread response body keeps its request's in-flight slot: a guest hoarding response
//!   bodies holds at most `--max-in-flight` connections, and a guest that sends more requests
//!   than that before reading any (`http::send_all`) still delivers.
//! - A secret in a request URL (query, path, user info) and one split across the host's cut of
//!   a long log line appear nowhere: not in the log, `status --json`, the state store's bytes or
//!   the metrics.
//!
//! Measured on a 2-core machine: peak RSS of the whole process about 50 MiB in each test
//! (asserted under 128 MiB); the healthy tenant's slowest round under 2 s next to four guests
//! holding both batch permits for their 1 s deadline, under 0.6 s otherwise; every waiting
//! call charged 1.00 s with a deadline of 1 s and an HTTP timeout of 60 s.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::host::assert_mentions;
use crate::support::http_server::{Reply, Server};
use crate::support::tenants::*;
use crate::support::{Backend, TestDb};

/// A destination of the hostile guest in `mode`, reaching `url`, its origin allowed, with
/// `extra` keys.
fn hostile(mode: &str, url: &str, origin: &str, extra: &str) -> String {
    // A guest that fails each batch it is given fails it whole, as before poison isolation:
    // these tests count its failures.
    format!(
        "modules = [{{ path = {}, config = {{ mode = {}, url = {} }} }}]\nallow_hosts = [{}]\non_poison = \"stop\"\n{extra}",
        quote(&crate::support::guests::guest("guest_hostile_http").display().to_string()),
        quote(mode),
        quote(url),
        quote(origin),
    )
}

fn assert_unmoved(status: &BTreeMap<String, Value>, names: &[&str]) {
    for name in names {
        let own = &status[*name];
        assert!(
            own["watermark"].is_null(),
            "{name}'s watermark moved: {own}"
        );
        assert_eq!(own["rows_synced"], json!(0), "{name}: {own}");
    }
}

// ---------------------------------------------------------------------------------------------
// Hole 1: waiting in a host call

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_waiting_in_host_calls_stop_at_their_deadline_and_free_their_permits() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let tenants = Tenants::new();
    let healthy = users(&db, "healthy", 1..=5).await;
    // A receiver that takes requests and never answers (until it is dropped).
    let silent = Server::start(|_| Reply::ok().held());
    let sleepers = ["sleep-a", "sleep-b", "sleep-c"];
    let mut pipelines =
        vec![tenants.pipeline("healthy", db.url(), &healthy, &modules(&["passthrough"]))];
    for name in sleepers {
        let table = users(&db, &name.replace('-', "_"), 1..=3).await;
        pipelines.push(tenants.pipeline(
            name,
            db.url(),
            &table,
            &format!(
                "{}\ndeadline = \"1s\"\non_poison = \"stop\"",
                modules(&["guest_sleep_forever"])
            ),
        ));
    }
    let hang_table = users(&db, "hang", 1..=3).await;
    pipelines.push(tenants.pipeline(
        "hang",
        db.url(),
        &hang_table,
        &hostile(
            "hang",
            &silent.url("/hook"),
            &silent.origin(),
            "deadline = \"1s\"\nhttp_timeout = \"60s\"",
        ),
    ));
    // Two permits for five tenants, four of which would hold theirs forever.
    tenants.write(
        "max_batches_in_flight = 2\nstop_timeout = \"10s\"",
        &pipelines,
    );

    // Compiled first, so that the healthy tenant's bound times the host, not cold compiles.
    tenants
        .warm(&["passthrough", "guest_sleep_forever", "guest_hostile_http"])
        .await;
    let mut running = tenants.spawn(&[]);
    let slowest = tenants
        .healthy_starts_and_keeps_moving(&mut running, &db, &healthy, 4, Duration::from_millis(300))
        .await;
    eprintln!("the healthy tenant's slowest round next to waiting guests: {slowest:?}");
    // Each hostile call holds a permit for its deadline (1 s); with four of them on two
    // permits, the healthy tenant waits about a deadline at worst.
    assert!(
        slowest < Duration::from_secs(4),
        "the healthy tenant waited {slowest:?} for its rows next to waiting guests"
    );

    let mut bad = sleepers.to_vec();
    bad.push("hang");
    let status = wait_for_status(
        &tenants,
        &mut running,
        "every waiting guest stopped twice",
        Duration::from_secs(30),
        |status| {
            bad.iter().all(|name| {
                status
                    .get(*name)
                    .is_some_and(|own| number(own, "errors") >= 2.0)
            })
        },
    )
    .await;
    assert_unmoved(&status, &bad);
    for name in &bad {
        let own = &status[*name];
        // Calls end at their deadline (1 s), not at the 60 s HTTP timeout: the time charged
        // per failed call is about the deadline.
        let per_call = number(own, "guest_seconds") / number(own, "errors");
        eprintln!("{name}: {per_call:.2} s charged per failed call");
        assert!(
            (0.9..2.5).contains(&per_call),
            "{name}: {per_call} s per call with a deadline of 1 s: {own}"
        );
        let error = own["last_error"].as_str().unwrap_or_default();
        let module = if *name == "hang" {
            "guest_hostile_http"
        } else {
            "guest_sleep_forever"
        };
        assert_mentions(
            error,
            &format!("{name}'s last error"),
            &[
                module,
                "exceeded its deadline",
                "--deadline",
                "on batch",
                &format!("pipeline \"{name}\""),
            ],
        );
    }
    // The hanging destination's requests were dropped with its calls: each call sent anew.
    assert!(
        silent.request_count() >= 2,
        "the silent receiver saw {} requests",
        silent.request_count()
    );
    assert_eq!(
        status["healthy"]["errors"],
        json!(0),
        "{}",
        status["healthy"]
    );

    let peak = peak_rss_kib(running.pid().expect("the host runs"));
    eprintln!("peak RSS next to waiting guests: {peak} KiB");
    assert!(
        peak < 128 << 10,
        "peak RSS {peak} KiB next to waiting guests"
    );

    assert!(running.try_finish().is_none(), "the host exited");
    running.sigterm();
    let stopping = Instant::now();
    let outcome = running.finish_within(Duration::from_secs(15)).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        stopping.elapsed()
    );
    assert_eq!(outcome.code(), Some(0), "SIGTERM: {outcome}");
}

// ---------------------------------------------------------------------------------------------
// Hole 2: request bodies and request counts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_and_requests_per_batch_are_capped() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let tenants = Tenants::new();
    let healthy = users(&db, "healthy", 1..=5).await;
    let huge_table = users(&db, "huge", 1..=3).await;
    let flood_table = users(&db, "flood", 1..=3).await;
    let receiver = Server::start(|_| Reply::ok());
    tenants.write(
        "",
        &[
            tenants.pipeline("healthy", db.url(), &healthy, &modules(&["passthrough"])),
            tenants.pipeline(
                "huge",
                db.url(),
                &huge_table,
                &hostile(
                    "huge-body",
                    &receiver.url("/huge"),
                    &receiver.origin(),
                    "max_request_size = \"1MiB\"\ndeadline = \"5s\"",
                ),
            ),
            tenants.pipeline(
                "flood",
                db.url(),
                &flood_table,
                &hostile(
                    "flood",
                    &receiver.url("/flood"),
                    &receiver.origin(),
                    "max_requests_per_batch = 50\ndeadline = \"2s\"",
                ),
            ),
        ],
    );

    // Compiled first, so that the healthy tenant's bound times the host, not cold compiles.
    tenants.warm(&["passthrough", "guest_hostile_http"]).await;
    let mut running = tenants.spawn(&[]);
    let slowest = tenants
        .healthy_starts_and_keeps_moving(&mut running, &db, &healthy, 4, Duration::from_millis(300))
        .await;
    eprintln!("the healthy tenant's slowest round next to greedy senders: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(3),
        "the healthy tenant waited {slowest:?} for its rows next to greedy senders"
    );
    let status = wait_for_status(
        &tenants,
        &mut running,
        "both greedy senders failed twice",
        Duration::from_secs(30),
        |status| {
            ["huge", "flood"].iter().all(|name| {
                status
                    .get(*name)
                    .is_some_and(|own| number(own, "errors") + number(own, "retries") >= 2.0)
            })
        },
    )
    .await;
    assert_unmoved(&status, &["huge", "flood"]);
    wait_for_log(&mut running, "--max-request-size", PROMPTLY).await;
    wait_for_log(&mut running, "--max-requests-per-batch", PROMPTLY).await;
    let log = running.stderr();
    assert_mentions(
        &log,
        "the host's log",
        &[
            "its body is over the cap of 1048576 bytes; raise --max-request-size",
            "past the cap of 50 per batch; raise --max-requests-per-batch",
        ],
    );
    // The guest learns why its body was stopped, and asks to retry later saying so; the host,
    // which refused the body, fails the batch for good rather than retry it.
    assert_mentions(
        &log,
        "the host's log of huge's failures",
        &[
            "HttpRequestBodySize(Some(1048576))",
            "but the host refused its request to",
            "retrying cannot help",
        ],
    );

    let requests = receiver.requests();
    // A body over the cap never reaches the receiver: the host takes it in before sending.
    assert!(
        !requests
            .iter()
            .any(|request| request.path.starts_with("/huge")),
        "a request with a body over the cap was sent"
    );
    let mut per_call: BTreeMap<String, usize> = BTreeMap::new();
    for request in requests.iter().filter(|r| r.path.starts_with("/flood")) {
        let call = request
            .path
            .split(['?', '&'])
            .find_map(|part| part.strip_prefix("call="))
            .unwrap_or_default()
            .to_owned();
        *per_call.entry(call).or_default() += 1;
    }
    eprintln!("requests per flooding call: {per_call:?}");
    assert!(!per_call.is_empty(), "the flood sent nothing");
    assert!(
        per_call.values().all(|&count| count <= 50),
        "a call sent more than --max-requests-per-batch: {per_call:?}"
    );
    assert!(
        per_call.values().any(|&count| count == 50),
        "no call reached the cap: {per_call:?}"
    );

    let peak = peak_rss_kib(running.pid().expect("the host runs"));
    eprintln!("peak RSS next to greedy senders: {peak} KiB");
    assert!(
        peak < 128 << 10,
        "peak RSS {peak} KiB next to greedy senders"
    );
    assert!(running.try_finish().is_none(), "the host exited");
    let outcome = running.terminate().await;
    assert_eq!(outcome.code(), Some(0), "SIGTERM: {outcome}");
}

// ---------------------------------------------------------------------------------------------
// Hole 6: socket hoarding

/// A receiver that answers every request with an 8 MiB body, sent slowly, and counts the
/// connections open at once.
struct SlowReceiver {
    port: u16,
    open: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl SlowReceiver {
    fn start() -> SlowReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a port");
        let port = listener.local_addr().expect("its address").port();
        let open = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let counters = (open.clone(), peak.clone(), accepted.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (open, peak, accepted) = counters.clone();
                accepted.fetch_add(1, Ordering::SeqCst);
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                thread::spawn(move || {
                    serve_slowly(stream);
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        SlowReceiver {
            port,
            open,
            peak,
            accepted,
        }
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Reads request heads and answers each with a large body, 16 KiB every 20 ms, until the
/// client goes away.
fn serve_slowly(stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
    let mut reader = BufReader::new(stream.try_clone().expect("a second handle"));
    let mut writer = stream;
    loop {
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line.trim().is_empty() => break,
                Ok(_) => {}
            }
        }
        let total: usize = 8 << 20;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n");
        if writer.write_all(head.as_bytes()).is_err() {
            return;
        }
        let chunk = vec![b'y'; 16 << 10];
        let mut sent = 0;
        while sent < total {
            if writer.write_all(&chunk).is_err() {
                return;
            }
            sent += chunk.len();
            thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_response_bodies_keep_their_slots() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let tenants = Tenants::new();
    let healthy = users(&db, "healthy", 1..=5).await;
    let hoard_table = users(&db, "hoard", 1..=3).await;
    let fanout_table = users(&db, "fanout", 1..=4).await;
    let slow = SlowReceiver::start();
    let quick = Server::start(|_| Reply::ok().delayed(Duration::from_millis(50)));
    tenants.write(
        "",
        &[
            tenants.pipeline("healthy", db.url(), &healthy, &modules(&["passthrough"])),
            tenants.pipeline(
                "hoard",
                db.url(),
                &hoard_table,
                &hostile(
                    "hoard",
                    &format!("{}/stream", slow.origin()),
                    &slow.origin(),
                    "max_in_flight = 3\ndeadline = \"3s\"",
                ),
            ),
            // Six requests sent before any answer is read, two slots: the rest wait, and the
            // guest reads the first answers, which frees the slots.
            tenants.pipeline(
                "fanout",
                db.url(),
                &fanout_table,
                &format!(
                    "modules = [{{ path = {}, config = {{ url = {}, requests = \"6\" }} }}]\n\
                     allow_hosts = [{}]\nmax_in_flight = 2\nbatch_size = 2",
                    quote(
                        &crate::support::guests::guest("guest_concurrent_requests")
                            .display()
                            .to_string()
                    ),
                    quote(&quick.url("/fan")),
                    quote(&quick.origin()),
                ),
            ),
        ],
    );

    // Compiled first, so that the healthy tenant's bound times the host, not cold compiles.
    tenants
        .warm(&[
            "passthrough",
            "guest_hostile_http",
            "guest_concurrent_requests",
        ])
        .await;
    let mut running = tenants.spawn(&[]);
    let slowest = tenants
        .healthy_starts_and_keeps_moving(&mut running, &db, &healthy, 3, Duration::from_millis(300))
        .await;
    eprintln!("the healthy tenant's slowest round next to a hoarder: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(3),
        "the healthy tenant waited {slowest:?} next to a hoarder"
    );
    let status = wait_for_status(
        &tenants,
        &mut running,
        "the hoarder stopped twice and the fan-out delivered",
        Duration::from_secs(30),
        |status| {
            status
                .get("hoard")
                .is_some_and(|own| number(own, "errors") >= 2.0)
                && status
                    .get("fanout")
                    .is_some_and(|own| own["rows_synced"] == json!(4))
        },
    )
    .await;
    assert_unmoved(&status, &["hoard"]);
    assert_eq!(status["fanout"]["errors"], json!(0), "{}", status["fanout"]);
    assert_mentions(
        status["hoard"]["last_error"].as_str().unwrap_or_default(),
        "the hoarder's last error",
        &["guest_hostile_http", "--deadline"],
    );
    let peak_connections = slow.peak.load(Ordering::SeqCst);
    eprintln!(
        "the hoarder: {} connections accepted, at most {peak_connections} open at once, {} open now",
        slow.accepted.load(Ordering::SeqCst),
        slow.open.load(Ordering::SeqCst)
    );
    assert!(peak_connections >= 1, "the hoarder never connected");
    assert!(
        peak_connections <= 3,
        "{peak_connections} connections open at once with --max-in-flight 3"
    );
    assert!(
        slow.accepted.load(Ordering::SeqCst) > 3,
        "the hoarder's connections were not closed with its calls"
    );
    let peak = peak_rss_kib(running.pid().expect("the host runs"));
    eprintln!("peak RSS next to a hoarder: {peak} KiB");
    assert!(peak < 128 << 10, "peak RSS {peak} KiB next to a hoarder");
    let outcome = running.terminate().await;
    assert_eq!(outcome.code(), Some(0), "SIGTERM: {outcome}");
}

// ---------------------------------------------------------------------------------------------
// Hole 7: secrets in request URLs and in cut log lines

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_urls_and_cut_lines_appear_nowhere() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let mut tenants = Tenants::new();
    let healthy = users(&db, "healthy", 1..=5).await;
    let leaky_table = users(&db, "leaky", 1..=3).await;
    let secret = format!("tm-url-secret-{}", uuid::Uuid::new_v4().simple());
    let variable = format!(
        "TM_WALL_KEY_{}",
        uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase()
    );
    tenants.host.set_env(&variable, &secret);
    // Debug lines too: they name failed requests.
    tenants.host.set_env("TIDEMARK_LOG", "info,tidemark=debug");
    let closed = format!("http://127.0.0.1:{}", closed_port());
    tenants.write(
        "",
        &[
            tenants.pipeline("healthy", db.url(), &healthy, &modules(&["passthrough"])),
            tenants.pipeline(
                "leaky",
                db.url(),
                &leaky_table,
                &format!(
                    "modules = [{{ path = {}, config = {{ mode = \"secret-url\", closed = {} }} }}]\n\
                     allow_hosts = [{}]\nsecrets = {{ api_key = {} }}\nmax_retries = 1",
                    quote(
                        &crate::support::guests::guest("guest_hostile_http")
                            .display()
                            .to_string()
                    ),
                    quote(&closed),
                    quote(&closed),
                    quote(&variable),
                ),
            ),
        ],
    );
    let address = format!("127.0.0.1:{}", closed_port());
    let mut running = tenants.spawn(&["--metrics", &address]);
    tenants
        .wait_for_ids(&mut running, "healthy", &[1, 2, 3, 4, 5], PROMPTLY)
        .await;
    let slowest = tenants
        .healthy_keeps_moving(
            &mut running,
            &db,
            &healthy,
            100,
            2,
            Duration::from_millis(300),
        )
        .await;
    assert!(slowest < Duration::from_secs(3), "{slowest:?}");
    let status = wait_for_status(
        &tenants,
        &mut running,
        "the leaky tenant failed",
        Duration::from_secs(30),
        |status| {
            status
                .get("leaky")
                .is_some_and(|own| number(own, "errors") >= 1.0)
        },
    )
    .await;
    assert_unmoved(&status, &["leaky"]);
    let start = Instant::now();
    let metrics = loop {
        if let Some(text) = scrape(&address) {
            break text;
        }
        assert!(start.elapsed() < PROMPTLY, "nothing serves {address}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = running.stderr();
    // The requests were made and logged, by origin.
    assert_mentions(
        &log,
        "the host's log",
        &[
            "refused outbound request to https://not-allowed.example:443",
            &format!("request to {closed}"),
            "***",
        ],
    );
    let status_text = serde_json::to_string(&tenants.status().await).unwrap();
    let mut state = Vec::new();
    for entry in std::fs::read_dir(tenants.host.dir()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("state.db") {
            state.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    // The whole secret, and either half of it (a secret cut in two must not leak a part).
    let half = secret.len() / 2;
    let needles = [&secret[..], &secret[..half], &secret[half..]];
    for (what, text) in [
        ("the host's log", log.as_bytes()),
        ("status --json", status_text.as_bytes()),
        ("the state store", &state[..]),
        ("the metrics", metrics.as_bytes()),
    ] {
        for needle in needles {
            assert!(
                !text
                    .windows(needle.len())
                    .any(|window| window == needle.as_bytes()),
                "{what} shows (part of) the secret {needle:?}"
            );
        }
    }
    let outcome = running.terminate().await;
    assert_eq!(outcome.code(), Some(0), "SIGTERM: {outcome}");
}
