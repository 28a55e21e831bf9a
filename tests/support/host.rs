//! Running the real `host` binary: one temp directory per test as its working directory,
//! holding the state database, the JSON Lines output, the failpoint files, the compile cache
//! of modules and the logs of hosts that run in the background.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::db::TestDb;
use super::lines::{parse_lines, Line};
use super::temp::TempDir;

pub const HOST: &str = env!("CARGO_BIN_EXE_host");

/// No single host run in these tests should take longer; past it the host is killed and the
/// test fails instead of hanging.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The end of a host process.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stderr ---\n{}\n--- stdout (first 2000 bytes) ---\n{}",
            self.status,
            self.stderr,
            self.stdout.chars().take(2000).collect::<String>()
        )
    }
}

/// A host bound to one source table, with its own state and output file.
pub struct Host {
    dir: TempDir,
    source: String,
    table: String,
    /// Output lines already handed out by [`Host::new_lines`].
    seen: usize,
    /// Environment variables set on every host this starts.
    env: Vec<(String, String)>,
    /// A hosts file that every host this starts sees as `/etc/hosts` (see [`Host::resolve`]).
    hosts: Option<PathBuf>,
    /// `--state` when not this host's own SQLite file (see [`Host::set_state`]).
    state: Option<String>,
}

impl Host {
    pub fn new(db: &TestDb, table: &str) -> Host {
        Host::with_source(db.url(), table)
    }

    pub fn with_source(source: &str, table: &str) -> Host {
        let dir = TempDir::new();
        fs::create_dir_all(dir.path().join("failpoints")).expect("failpoint dir");
        Host {
            dir,
            source: source.to_owned(),
            table: table.to_owned(),
            seen: 0,
            env: Vec::new(),
            hosts: None,
            state: None,
        }
    }

    /// A host for commands that read no database (`check`, `test`).
    pub fn scratch() -> Host {
        Host::with_source("sqlite://no-source.db", "no_table")
    }

    /// Sets `key=value` in the environment of every host started from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Makes every host started from now on resolve each `(name, address)` of `names` to its
    /// address, through the system resolver as in production: the host runs in a mount
    /// namespace of its own (`unshare`, as root or as a user of a user namespace), where a
    /// hosts file of this test's is bind-mounted over `/etc/hosts`.
    pub fn resolve(&mut self, names: &[(&str, &str)]) {
        let path = self.dir().join("hosts");
        let text: String = names
            .iter()
            .map(|(name, address)| format!("{address} {name}\n"))
            .collect();
        fs::write(&path, text).expect("writing the hosts file");
        self.hosts = Some(path);
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `host dead-letters --pipeline PIPELINE --json` on this host's state store, parsed.
    pub async fn dead_letters(&self, pipeline: &str) -> Vec<serde_json::Value> {
        self.dead_letters_as("dead-letters", pipeline).await
    }

    /// [`Host::dead_letters`] under `command`: `dead-letters` or its old name.
    pub async fn dead_letters_as(&self, command: &str, pipeline: &str) -> Vec<serde_json::Value> {
        let state = self.state_url();
        let outcome = self
            .exec([command, "--pipeline", pipeline, "--state", &state, "--json"])
            .await;
        assert!(outcome.success(), "host {command} failed: {outcome}");
        match serde_json::from_str(outcome.stdout.trim()) {
            Ok(serde_json::Value::Array(letters)) => letters,
            other => panic!("host {command} --json printed {other:?}: {outcome}"),
        }
    }

    pub fn state_url(&self) -> String {
        match &self.state {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.dir().join("state.db").display()),
        }
    }

    /// Keeps the state in the store at `url` (e.g. a PostgreSQL database) instead of this
    /// host's own SQLite file.
    pub fn set_state(&mut self, url: &str) {
        self.state = Some(url.to_owned());
    }

    pub fn output_path(&self) -> PathBuf {
        self.dir().join("out.jsonl")
    }

    pub fn failpoint_dir(&self) -> PathBuf {
        self.dir().join("failpoints")
    }

    /// This test's compile cache for `--cache-dir`, so that tests never share the user's.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir().join("cache")
    }

    /// `host run` with this host's source, table, state and output, `--settle 0s` unless
    /// `extra` sets it, then `extra`.
    /// A chain that ends in a destination module gets no `--output`: the module delivers.
    pub fn run_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "--source",
            &self.source,
            "--table",
            &self.table,
            "--state",
            &self.state_url(),
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        let modules = extra.windows(2).filter(|pair| pair[0] == "--module");
        if !modules
            .clone()
            .any(|pair| super::guests::names_a_destination(pair[1]))
        {
            args.extend([
                "--output".to_owned(),
                self.output_path().display().to_string(),
            ]);
        }
        if !extra.contains(&"--settle") {
            args.extend(["--settle".to_owned(), "0s".to_owned()]);
        }
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    }

    fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = match &self.hosts {
            None => Command::new(HOST),
            Some(hosts) => {
                let mut command = Command::new("unshare");
                command
                    .args(["--mount", "--map-root-user", "sh", "-c"])
                    .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
                    .arg(hosts)
                    .arg(HOST);
                command
            }
        };
        command
            .args(args)
            .current_dir(self.dir())
            .env_remove("TIDEMARK_FAILPOINTS")
            .env_remove("TIDEMARK_FAILPOINT_DIR")
            .env_remove("DATABASE_URL")
            .env_remove("TIDEMARK_CACHE_DIR")
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs the host with exactly `args` and waits for it.
    pub async fn exec<I, S>(&self, args: I) -> Outcome
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<String> = args
            .into_iter()
            .map(|arg| arg.as_ref().to_string_lossy().into_owned())
            .collect();
        let mut command = self.command(&args);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("starting {HOST}: {err}"));
        match tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output()).await {
            Ok(Ok(output)) => {
                // Kept with the directory when the test fails: the log of every run.
                let log = self.dir().join(format!("exec-{}.stderr", unique()));
                let _ = fs::write(&log, format!("{args:?}\n{}\n", output.status));
                let _ = fs::OpenOptions::new()
                    .append(true)
                    .open(&log)
                    .and_then(|mut file| std::io::Write::write_all(&mut file, &output.stderr));
                Outcome {
                    status: output.status,
                    stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                }
            }
            Ok(Err(err)) => panic!("waiting for host {args:?}: {err}"),
            // Dropping the future drops the child, which kill_on_drop kills.
            Err(_) => panic!("host {args:?} still running after {RUN_TIMEOUT:?}"),
        }
    }

    /// `host run --once` with `extra`; fails the test unless it exits 0. Returns the lines
    /// this run appended to the output.
    pub async fn once(&mut self, extra: &[&str]) -> Vec<Line> {
        let mut args = self.run_args(extra);
        args.push("--once".to_owned());
        let outcome = self.exec(&args).await;
        assert!(
            outcome.success(),
            "host {args:?} failed: {outcome}\n(output in {})",
            self.output_path().display()
        );
        self.new_lines()
    }

    /// `host run --once` with `extra`, whatever its exit code.
    pub async fn run_once(&self, extra: &[&str]) -> Outcome {
        let mut args = self.run_args(extra);
        args.push("--once".to_owned());
        self.exec(&args).await
    }

    /// `host run` in the background, with `failpoints` armed if given.
    pub fn spawn(&self, extra: &[&str], failpoints: Option<&str>) -> Running {
        self.spawn_exact(self.run_args(extra), failpoints)
    }

    /// The host in the background with exactly `args` (say, `run --config FILE`).
    pub fn spawn_exact(&self, args: Vec<String>, failpoints: Option<&str>) -> Running {
        let stdout_path = self.dir().join(format!("host-{}.stdout", unique()));
        let stderr_path = self.dir().join(format!("host-{}.stderr", unique()));
        let mut command = self.command(&args);
        // Files, not pipes: nobody reads a background host's pipes, and a full pipe would
        // block it.
        command
            .stdout(fs::File::create(&stdout_path).expect("stdout file"))
            .stderr(fs::File::create(&stderr_path).expect("stderr file"));
        if let Some(failpoints) = failpoints {
            command
                .env("TIDEMARK_FAILPOINTS", failpoints)
                .env("TIDEMARK_FAILPOINT_DIR", self.failpoint_dir());
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("starting {HOST}: {err}"));
        Running {
            child: Some(child),
            args,
            failpoint_dir: self.failpoint_dir(),
            stdout_path,
            stderr_path,
        }
    }

    /// Every line in the output file so far.
    pub fn all_lines(&self) -> Vec<Line> {
        match fs::read_to_string(self.output_path()) {
            Ok(text) => parse_lines(&text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => panic!("reading {}: {err}", self.output_path().display()),
        }
    }

    /// The lines appended since the last call.
    pub fn new_lines(&mut self) -> Vec<Line> {
        let all = self.all_lines();
        let new = all[self.seen.min(all.len())..].to_vec();
        self.seen = all.len();
        new
    }

    /// `host status --json`, parsed; fails the test unless it exits 0 with a JSON array.
    pub async fn status_json(&self) -> Vec<serde_json::Value> {
        let outcome = self
            .exec(["status", "--state", &self.state_url(), "--json"])
            .await;
        assert!(outcome.success(), "host status --json failed: {outcome}");
        match serde_json::from_str::<serde_json::Value>(outcome.stdout.trim()) {
            Ok(serde_json::Value::Array(pipelines)) => pipelines,
            Ok(other) => panic!("host status --json printed {other}, not an array"),
            Err(err) => panic!("host status --json printed no JSON ({err}): {outcome}"),
        }
    }

    /// `host reset --pipeline NAME`; fails the test unless it exits 0.
    pub async fn reset(&self, pipeline: &str) {
        let outcome = self
            .exec([
                "reset",
                "--pipeline",
                pipeline,
                "--state",
                &self.state_url(),
            ])
            .await;
        assert!(outcome.success(), "host reset failed: {outcome}");
    }
}

/// A host running in the background.
pub struct Running {
    child: Option<Child>,
    args: Vec<String>,
    failpoint_dir: PathBuf,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Running {
    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("host already reaped")
    }

    /// The host's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn outcome(&self, status: ExitStatus) -> Outcome {
        Outcome {
            status,
            stdout: fs::read_to_string(&self.stdout_path).unwrap_or_default(),
            stderr: self.stderr(),
        }
    }

    /// The host's end if it has exited (it is then reaped), `None` while it runs.
    pub fn try_finish(&mut self) -> Option<Outcome> {
        let status = self.child().try_wait().expect("polling host")?;
        self.child = None;
        Some(self.outcome(status))
    }

    /// Waits until the host reports the `hit`-th hit of failpoint `name`; fails the test if
    /// the host exits first or takes over 30 s.
    pub async fn reached(&mut self, name: &str, hit: u32) {
        let file = self.failpoint_dir.join(format!("{name}.{hit}.reached"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if file.exists() {
                return;
            }
            if let Some(status) = self.child().try_wait().expect("polling host") {
                self.child = None;
                panic!(
                    "host {:?} exited before failpoint {name} hit {hit}: {}",
                    self.args,
                    self.outcome(status)
                );
            }
            assert!(
                Instant::now() < deadline,
                "failpoint {name} hit {hit} not reached within 30 s; host stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Lets the host go on past the `hit`-th hit of failpoint `name`.
    pub fn go(&self, name: &str, hit: u32) {
        let file = self.failpoint_dir.join(format!("{name}.{hit}.go"));
        fs::write(&file, b"").unwrap_or_else(|err| panic!("creating {}: {err}", file.display()));
    }

    /// SIGKILL, then reap.
    pub async fn kill9(mut self) {
        let child = self.child();
        child.start_kill().expect("kill -9 host");
        let _ = child.wait().await;
        self.child = None;
    }

    /// Sends SIGTERM and returns at once.
    pub fn sigterm(&mut self) {
        self.signal("TERM");
    }

    /// Sends signal `name` (`HUP`, `TERM`, …) and returns at once.
    pub fn signal(&mut self, name: &str) {
        let pid = self.child().id().expect("host pid").to_string();
        let status = std::process::Command::new("kill")
            .args([format!("-{name}").as_str(), &pid])
            .status()
            .unwrap_or_else(|err| panic!("running kill -{name}: {err}"));
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Waits at most `timeout` for the host to exit by itself.
    pub async fn finish_within(mut self, timeout: Duration) -> Outcome {
        self.wait(timeout).await
    }

    /// SIGTERM, then waits (at most 15 s) for the host to exit.
    pub async fn terminate(mut self) -> Outcome {
        self.sigterm();
        self.wait(Duration::from_secs(15)).await
    }

    /// Waits for the host to exit by itself.
    pub async fn finish(mut self) -> Outcome {
        self.wait(RUN_TIMEOUT).await
    }

    async fn wait(&mut self, timeout: Duration) -> Outcome {
        let args = self.args.clone();
        let waited = tokio::time::timeout(timeout, self.child().wait()).await;
        match waited {
            Ok(Ok(status)) => {
                self.child = None;
                self.outcome(status)
            }
            Ok(Err(err)) => panic!("waiting for host {args:?}: {err}"),
            Err(_) => panic!(
                "host {args:?} still running after {timeout:?}; stderr:\n{}",
                self.stderr()
            ),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// The host's report of what stopped it: stderr from its first `error:` line on (the error
/// and its hint), without the log lines before it, which carry the guests' own output.
pub fn error_report(outcome: &Outcome) -> &str {
    let stderr = outcome.stderr.as_str();
    let start = if stderr.starts_with("error:") {
        Some(0)
    } else {
        stderr.find("\nerror:").map(|at| at + 1)
    };
    match start {
        Some(start) => &stderr[start..],
        None => panic!("no `error:` line in the host's stderr: {outcome}"),
    }
}

/// Asserts that `text` (described as `what`) contains each of `mentions`.
pub fn assert_mentions(text: &str, what: &str, mentions: &[&str]) {
    for mention in mentions {
        assert!(
            text.contains(mention),
            "{what} should mention {mention:?}:\n{text}"
        );
    }
}
