//! Many pipelines in one process, for tests: a directory with a pipelines file, its state
//! store, one JSON Lines output per pipeline and a compile cache, and the waits and reads
//! that tests of tenants (`tenants`, the hostile-module tests) share.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::guests::{guest, names_a_destination};
use super::host::{Outcome, Running};
use super::http_server::Recorded;
use super::lines::{ids, parse_lines, Line};
use super::{at, Host, TestDb, Val};

/// Generous bound for anything that should happen within a few polls.
pub const PROMPTLY: Duration = Duration::from_secs(10);

/// One process of many pipelines: a directory with the pipelines file, the state store, one
/// JSON Lines output per pipeline and the compile cache.
pub struct Tenants {
    pub host: Host,
}

impl Tenants {
    pub fn new() -> Tenants {
        Tenants {
            host: Host::scratch(),
        }
    }

    pub fn file(&self) -> PathBuf {
        self.host.dir().join("tidemark.toml")
    }

    pub fn file_arg(&self) -> String {
        self.file().display().to_string()
    }

    pub fn output(&self, pipeline: &str) -> PathBuf {
        self.host.dir().join(format!("{pipeline}.jsonl"))
    }

    /// Writes the pipelines file: this test's state store, `top` (more process-wide keys),
    /// defaults for quick tests (settle 0s, poll 100ms, this test's compile cache, a 50 ms
    /// retry backoff), then the pipelines.
    pub fn write(&self, top: &str, pipelines: &[String]) {
        let text = format!(
            "state = {state}\n{top}\n\n[defaults]\nsettle = \"0s\"\npoll = \"100ms\"\n\
             retry_backoff = \"50ms\"\ncache_dir = {cache}\n\n{pipelines}",
            state = quote(&self.host.state_url()),
            cache = quote(&self.host.cache_dir().display().to_string()),
            pipelines = pipelines.join("\n"),
        );
        self.write_raw(&text);
    }

    pub fn write_raw(&self, text: &str) {
        std::fs::write(self.file(), text)
            .unwrap_or_else(|err| panic!("writing {}: {err}", self.file().display()));
    }

    /// A `[[pipeline]]` table named `name` reading `table` from `source` into its own output,
    /// with `extra` keys.
    /// A pipeline that ends in a destination module gets no `output`: the module delivers.
    pub fn pipeline(&self, name: &str, source: &str, table: &str, extra: &str) -> String {
        let output = match names_a_destination(extra) {
            true => String::new(),
            false => format!(
                "output = {}\n",
                quote(&self.output(name).display().to_string())
            ),
        };
        format!(
            "[[pipeline]]\nname = {}\nsource = {}\ntable = {}\n{output}{extra}\n",
            quote(name),
            quote(source),
            quote(table),
        )
    }

    pub fn lines(&self, pipeline: &str) -> Vec<Line> {
        match std::fs::read_to_string(self.output(pipeline)) {
            Ok(text) => parse_lines(&text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => panic!("reading the output of {pipeline}: {err}"),
        }
    }

    /// `host run --config FILE` and `extra`, waited for.
    pub async fn run(&self, extra: &[&str]) -> Outcome {
        let mut args = vec!["run", "--config"];
        let file = self.file_arg();
        args.push(&file);
        args.extend_from_slice(extra);
        self.host.exec(&args).await
    }

    /// `host run --config FILE` and `extra` in the background.
    pub fn spawn(&self, extra: &[&str]) -> Running {
        let mut args = vec!["run".to_owned(), "--config".to_owned(), self.file_arg()];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        self.host.spawn_exact(args, None)
    }

    /// Compiles the built guests `names` into this test's compile cache, one at a time and
    /// before the host starts: a test that times a tenant then times the tenant, not the
    /// compilation of every module of the file at once on a machine that may be busy.
    pub async fn warm(&self, names: &[&str]) {
        let cache = self.host.cache_dir().display().to_string();
        for name in names {
            let module = guest(name).display().to_string();
            let outcome = self
                .host
                .exec(["check", "--module", &module, "--cache-dir", &cache])
                .await;
            assert!(outcome.success(), "host check --module {module}: {outcome}");
        }
    }

    /// `host status --json`, by pipeline name.
    pub async fn status(&self) -> BTreeMap<String, Value> {
        self.host
            .status_json()
            .await
            .into_iter()
            .map(|pipeline| (pipeline["pipeline"].as_str().unwrap().to_owned(), pipeline))
            .collect()
    }

    /// Inserts five new rows into table `table` of pipeline `healthy`, `rounds` times (ids from
    /// `first_id` on, ten apart per round), pausing `pause` after each so that bad neighbours
    /// act in between; returns the longest it waited for one round to arrive.
    pub async fn healthy_keeps_moving(
        &self,
        running: &mut Running,
        db: &TestDb,
        table: &str,
        first_id: i64,
        rounds: i64,
        pause: Duration,
    ) -> Duration {
        let mut slowest = Duration::ZERO;
        for round in 0..rounds {
            let new: Vec<i64> = (0..5).map(|n| first_id + round * 10 + n).collect();
            db.insert_users(table, new.iter().map(|id| (*id, Val::Now)))
                .await;
            let took = self.wait_for_ids(running, "healthy", &new, PROMPTLY).await;
            slowest = slowest.max(took);
            tokio::time::sleep(pause).await;
        }
        slowest
    }

    /// Waits for the healthy tenant's first rows (ids 1 to 5), then runs
    /// [`Tenants::healthy_keeps_moving`] from id 100: the slowest wait of all, the first one
    /// (host start included) too.
    pub async fn healthy_starts_and_keeps_moving(
        &self,
        running: &mut Running,
        db: &TestDb,
        table: &str,
        rounds: i64,
        pause: Duration,
    ) -> Duration {
        let first = self
            .wait_for_ids(running, "healthy", &[1, 2, 3, 4, 5], PROMPTLY)
            .await;
        self.healthy_keeps_moving(running, db, table, 100, rounds, pause)
            .await
            .max(first)
    }

    /// Waits until `pipeline`'s output holds every id of `expected` (and returns how long that
    /// took); fails the test after `timeout` or if the host exits.
    pub async fn wait_for_ids(
        &self,
        running: &mut Running,
        pipeline: &str,
        expected: &[i64],
        timeout: Duration,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let delivered = ids(&self.lines(pipeline));
            if expected.iter().all(|id| delivered.contains(id)) {
                return start.elapsed();
            }
            if let Some(outcome) = running.try_finish() {
                panic!("host exited while {pipeline} waited for rows {expected:?}: {outcome}");
            }
            assert!(
                start.elapsed() < timeout,
                "{pipeline}: rows {expected:?} not delivered within {timeout:?} (delivered \
                 {delivered:?}); host stderr:\n{}",
                running.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A TOML basic string (JSON's escapes are TOML's).
pub fn quote(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// `modules = [...]` for the built guests `names`.
pub fn modules(names: &[&str]) -> String {
    let paths: Vec<String> = names
        .iter()
        .map(|name| quote(&guest(name).display().to_string()))
        .collect();
    format!("modules = [{}]", paths.join(", "))
}

/// The webhook posting to `url`, its origin allowed, and `extra` keys.
pub fn webhook(url: &str, origin: &str, extra: &str) -> String {
    format!(
        "modules = [{{ path = {}, config = {{ url = {} }} }}]\nallow_hosts = [{}]\n{extra}",
        quote(&guest("webhook").display().to_string()),
        quote(url),
        quote(origin),
    )
}

/// A `users` table named `name` in `db` with rows `ids` stamped in the past.
pub async fn users(db: &TestDb, name: &str, ids: impl IntoIterator<Item = i64>) -> String {
    let table = db.create_table(name, crate::support::db::USERS).await;
    db.insert_users(&table, ids.into_iter().map(|id| (id, Val::Ts(at(id)))))
        .await;
    table
}

/// Waits until `check` holds on `status --json`; fails the test with the last status after
/// `timeout`.
pub async fn wait_for_status(
    tenants: &Tenants,
    running: &mut Running,
    what: &str,
    timeout: Duration,
    check: impl Fn(&BTreeMap<String, Value>) -> bool,
) -> BTreeMap<String, Value> {
    let start = Instant::now();
    loop {
        let status = tenants.status().await;
        if check(&status) {
            return status;
        }
        if let Some(outcome) = running.try_finish() {
            panic!("host exited while waiting for {what}: {outcome}");
        }
        assert!(
            start.elapsed() < timeout,
            "{what}: not within {timeout:?}; status: {status:#?}\nhost stderr:\n{}",
            running.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every pipeline of `names` has counted an error; returns the status then.
pub async fn wait_for_errors(
    tenants: &Tenants,
    running: &mut Running,
    names: &[&str],
    what: &str,
    timeout: Duration,
) -> BTreeMap<String, Value> {
    wait_for_status(tenants, running, what, timeout, |status| {
        names.iter().all(|name| {
            status
                .get(*name)
                .is_some_and(|own| number(own, "errors") > 0.0)
        })
    })
    .await
}

/// Waits until the host's log mentions `text`.
pub async fn wait_for_log(running: &mut Running, text: &str, timeout: Duration) {
    let start = Instant::now();
    while !running.stderr().contains(text) {
        if let Some(outcome) = running.try_finish() {
            panic!("host exited before logging {text:?}: {outcome}");
        }
        assert!(
            start.elapsed() < timeout,
            "the host did not log {text:?} within {timeout:?}:\n{}",
            running.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn number(status: &Value, field: &str) -> f64 {
    status[field]
        .as_f64()
        .unwrap_or_else(|| panic!("status field {field} is not a number: {status}"))
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a port");
    listener.local_addr().expect("its address").port()
}

/// `GET /metrics` from `address`, the body; `None` while nothing answers there.
pub fn scrape(address: &str) -> Option<String> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "GET /metrics answered {head}"
    );
    Some(body.to_owned())
}

/// The value of `metric{pipeline="name"}` in a scrape.
pub fn metric(text: &str, metric: &str, pipeline: &str) -> f64 {
    let prefix = format!("{metric}{{pipeline=\"{pipeline}\"}} ");
    let line = text
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in the metrics:\n{text}"));
    line[prefix.len()..]
        .split_whitespace()
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("unreadable metric line {line:?}"))
}

pub fn row_ids_of(request: &Recorded) -> Vec<i64> {
    request.json()["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("a webhook body without rows: {}", request.json()))
        .iter()
        .map(|change| change["row"]["id"].as_i64().expect("an integer id"))
        .collect()
}

/// The peak resident set of process `pid` in KiB (`VmHWM` of `/proc/PID/status`).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|err| panic!("reading /proc/{pid}/status: {err}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}
