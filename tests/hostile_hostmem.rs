//! Hostile tenants (issue 11), what a module makes the host hold and say, and whose secrets it
//! sees, each next to a healthy tenant in the same process:
//!
//! - Host memory outside the memory limit: a destination that holds HTTP header sets filled to
//!   their limit, clock pollables, or unsent requests given huge methods and authorities, and
//!   never drops them, fails its call at the cap on host resources that comes with
//!   `--memory-limit` (the text refused past 1 KiB); the process stays small.
//! - Log floods: a transform that logs millions of lines (with forged host log lines and ANSI
//!   escapes among them) is cut to its log budget per call, its forgeries escaped, and one line
//!   says what was dropped.
//! - Secret scope: a secret given to one module of a chain reaches that module only; one given
//!   to the pipeline reaches every module.

use std::time::Duration;

use serde_json::json;

use crate::support::host::assert_mentions;
use crate::support::http_server::Server;
use crate::support::tenants::*;
use crate::support::{Backend, TestDb, Val};

// ---------------------------------------------------------------------------------------------
// Host memory outside the memory limit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_module_makes_the_host_hold_is_capped() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let tenants = Tenants::new();
    let healthy = users(&db, "healthy", 1..=5).await;
    let fields = users(&db, "fields", 1..=5).await;
    let pollables = users(&db, "pollables", 1..=5).await;
    let headers = users(&db, "headers", 1..=5).await;
    let requests = users(&db, "requests", 1..=5).await;
    let hold = |what: &str| {
        format!(
            "{}\nconfig = {{ hold = {} }}\nmax_retries = 0",
            modules(&["guest_hold_resources"]),
            quote(what)
        )
    };
    tenants.write(
        "",
        &[
            tenants.pipeline("healthy", db.url(), &healthy, &modules(&["passthrough"])),
            tenants.pipeline("fields", db.url(), &fields, &hold("fields")),
            tenants.pipeline("pollables", db.url(), &pollables, &hold("pollables")),
            tenants.pipeline("headers", db.url(), &headers, &hold("headers")),
            tenants.pipeline("requests", db.url(), &requests, &hold("requests")),
        ],
    );
    let mut running = tenants.spawn(&[]);
    tenants
        .wait_for_ids(&mut running, "healthy", &[1, 2, 3, 4, 5], PROMPTLY)
        .await;
    let status = wait_for_errors(
        &tenants,
        &mut running,
        &["fields", "pollables", "headers", "requests"],
        "every hoarder failed",
        Duration::from_secs(20),
    )
    .await;
    let slowest = tenants
        .healthy_keeps_moving(
            &mut running,
            &db,
            &healthy,
            100,
            3,
            Duration::from_millis(200),
        )
        .await;
    assert!(
        slowest < Duration::from_secs(3),
        "the healthy tenant waited {slowest:?} for its rows next to the hoarders"
    );
    // Without the caps the header sets alone would take the host past many GiB (a million
    // handles of 128 KiB each), and the requests 1 GiB (1,024 of 1 MiB of method and
    // authority); with them each instance holds at most 1,024 handles of 32 KiB, 32 MiB, or
    // 1,024 requests of 2 KiB of text.
    let peak = peak_rss_kib(running.pid().expect("the host runs"));
    assert!(peak < 256 << 10, "peak RSS {peak} KiB next to the hoarders");
    eprintln!("peak RSS next to the hoarders: {peak} KiB");

    for (name, says) in [
        (
            "fields",
            &["limit of 1024 host resources", "--memory-limit of 256 MiB"][..],
        ),
        (
            "pollables",
            &["limit of 1024 host resources", "--memory-limit of 256 MiB"],
        ),
        ("headers", &["limit of 32 KiB per HTTP header set"]),
        (
            "requests",
            &["limit of 1024 host resources", "--memory-limit of 256 MiB"],
        ),
    ] {
        let own = &status[name];
        assert!(
            own["watermark"].is_null(),
            "{name}'s watermark moved: {own}"
        );
        assert_eq!(own["rows_synced"], json!(0), "{name}: {own}");
        let error = own["last_error"].as_str().unwrap_or_default();
        assert_mentions(
            error,
            &format!("{name}'s last error"),
            &["module guest_hold_resources"],
        );
        assert_mentions(error, &format!("{name}'s last error"), says);
        // The guest's backtrace comes escaped, on one line.
        assert!(
            !error.contains('\n'),
            "{name}'s last error spans lines: {error}"
        );
    }
    let healthy_status = &tenants.status().await["healthy"];
    assert_eq!(healthy_status["errors"], json!(0), "{healthy_status}");
    assert!(running.try_finish().is_none(), "the host exited");
    running.sigterm();
    running.finish_within(Duration::from_secs(15)).await;
}

// ---------------------------------------------------------------------------------------------
// Log floods

/// `--max-log-lines` and `--max-log-bytes` by default.
const LOG_LINES: usize = 1000;
const LOG_BYTES: usize = 64 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_is_cut_to_its_budget_and_forges_nothing() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let tenants = Tenants::new();
    let healthy = users(&db, "healthy", 1..=5).await;
    let flood = users(&db, "flood", 1..=5).await;
    tenants.write(
        "",
        &[
            tenants.pipeline("healthy", db.url(), &healthy, &modules(&["passthrough"])),
            tenants.pipeline("flood", db.url(), &flood, &modules(&["guest_log_flood"])),
        ],
    );
    let mut running = tenants.spawn(&[]);
    tenants
        .wait_for_ids(&mut running, "healthy", &[1, 2, 3, 4, 5], PROMPTLY)
        .await;
    tenants
        .wait_for_ids(&mut running, "flood", &[1, 2, 3, 4, 5], PROMPTLY)
        .await;
    // A second flooding call while the healthy tenant takes new rows.
    db.insert_users(&flood, (6..=10).map(|id| (id, Val::Now)))
        .await;
    let slowest = tenants
        .healthy_keeps_moving(
            &mut running,
            &db,
            &healthy,
            100,
            3,
            Duration::from_millis(200),
        )
        .await;
    assert!(
        slowest < Duration::from_secs(3),
        "the healthy tenant waited {slowest:?} for its rows next to the flood"
    );
    // Logging is not a failure: the flood's rows pass, its two calls each cut.
    tenants
        .wait_for_ids(
            &mut running,
            "flood",
            &(1..=10).collect::<Vec<_>>(),
            PROMPTLY,
        )
        .await;
    let stderr = running.stderr();
    let notices = stderr
        .lines()
        .filter(|line| line.contains("dropped") && line.contains("--max-log-lines"))
        .count();
    // One notice per flooding call, and there were two at least.
    assert!(
        notices >= 2,
        "{notices} notices of dropped log lines in:\n{}",
        tail(&stderr)
    );
    let calls = notices;
    // Each call: at most its budget of guest text plus a line's prefix (timestamp, level,
    // module, pipeline: under 200 bytes) per line, and the notice.
    let bound = calls * (LOG_BYTES + LOG_LINES * 200) + (64 << 10);
    assert!(
        stderr.len() < bound,
        "the host wrote {} bytes of log for {calls} flooding calls (bound {bound})",
        stderr.len()
    );
    eprintln!(
        "host stderr after {calls} flooding calls: {} bytes (bound {bound})",
        stderr.len()
    );
    let flood_lines = stderr
        .lines()
        .filter(|line| line.contains("flood line") || line.contains("stdout flood"))
        .count();
    assert!(
        flood_lines <= calls * LOG_LINES,
        "{flood_lines} flood lines for {calls} calls"
    );
    // The forgeries are there, escaped, and start no line of their own.
    assert!(
        stderr.contains("log-flood starts\\n2026-01-01T00:00:00Z  INFO forged"),
        "the forged log line is not shown escaped:\n{}",
        tail(&stderr)
    );
    assert!(stderr.contains("\\x1b[31mred"), "ANSI not escaped");
    assert!(stderr.contains("\\u{2028}"), "line separator not escaped");
    for line in stderr.lines() {
        assert!(
            !line.starts_with("2026-01-01T00:00:00Z"),
            "a forged line in the host log: {line:?}"
        );
    }
    assert!(
        !stderr.contains('\x1b'),
        "an escape sequence in the host log"
    );
    assert!(!stderr.contains('\r'), "a carriage return in the host log");
    assert!(
        !stderr.contains('\u{2028}'),
        "a line separator in the host log"
    );

    let status = tenants.status().await;
    assert_eq!(
        status["healthy"]["errors"],
        json!(0),
        "{:?}",
        status["healthy"]
    );
    assert_eq!(status["flood"]["errors"], json!(0), "{:?}", status["flood"]);
    assert!(running.try_finish().is_none(), "the host exited");
    running.sigterm();
    running.finish_within(Duration::from_secs(15)).await;
}

fn tail(text: &str) -> &str {
    let start = text.len().saturating_sub(4000);
    let start = (start..text.len())
        .find(|&at| text.is_char_boundary(at))
        .unwrap_or(text.len());
    &text[start..]
}

// ---------------------------------------------------------------------------------------------
// Secret scope

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_given_to_one_module_reaches_only_that_module() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let mut tenants = Tenants::new();
    let table = users(&db, "users", 1..=3).await;
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase();
    // The pipeline's secret (api_key), and the one the destination alone is given (token).
    let secrets: Vec<(String, String)> = ["API", "TOKEN"]
        .iter()
        .map(|what| {
            (
                format!("TM_SCOPE_{what}_{suffix}"),
                format!(
                    "tm-{}-{}",
                    what.to_lowercase(),
                    uuid::Uuid::new_v4().simple()
                ),
            )
        })
        .collect();
    for (variable, value) in &secrets {
        tenants.host.set_env(variable, value);
    }
    let [(api_var, api), (token_var, token)] = &secrets[..] else {
        unreachable!()
    };
    let receiver = Server::accepting();
    // The transform reports whether it sees `token` and how long its `api_key` is.
    let chain =
        format!(
        "modules = [{}, {{ path = {}, config = {{ url = {} }}, secrets = {{ token = {} }} }}]\n\
         secrets = {{ api_key = {} }}\nallow_hosts = [{}]\n",
        quote(&crate::support::guests::guest("guest_leaky_secret").display().to_string()),
        quote(&crate::support::guests::guest("webhook").display().to_string()),
        quote(&receiver.url("/hook")),
        quote(token_var),
        quote(api_var),
        quote(&receiver.origin()),
    );
    tenants.write("", &[tenants.pipeline("scoped", db.url(), &table, &chain)]);
    let outcome = tenants.run(&["--once"]).await;
    assert!(outcome.success(), "{outcome}");

    let requests = receiver.requests();
    assert!(!requests.is_empty(), "nothing delivered");
    let mut delivered = Vec::new();
    for request in &requests {
        // The destination's own secret reached it...
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {token}").as_str())
        );
        for change in request.json()["rows"].as_array().unwrap() {
            let row = &change["row"];
            // ...but not the transform before it; the pipeline's secret reached both.
            assert_eq!(row["sees_token"], json!(false), "{row}");
            assert_eq!(row["secret_length"], json!(api.len()), "{row}");
            delivered.push(row["id"].as_i64().unwrap());
        }
    }
    delivered.sort_unstable();
    assert_eq!(delivered, vec![1, 2, 3]);

    // No secret in the log, the status or the state store.
    let status = serde_json::to_string(&tenants.status().await).unwrap();
    let state = std::fs::read(tenants.host.dir().join("state.db")).expect("the state store");
    let state = String::from_utf8_lossy(&state);
    for secret in [api, token] {
        assert!(
            !outcome.stderr.contains(secret.as_str()),
            "a secret in the log"
        );
        assert!(!status.contains(secret.as_str()), "a secret in the status");
        assert!(
            !state.contains(secret.as_str()),
            "a secret in the state store"
        );
    }
    assert_mentions(
        &outcome.stderr,
        "the transform's log",
        &["the api key is ***"],
    );
}
