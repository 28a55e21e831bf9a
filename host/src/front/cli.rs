//! Command-line flags as clap parses them. No I/O and no validation beyond syntax here:
//! [`crate::front::config`] turns these into one checked configuration.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::delivery::retry::OnPoison;

/// Tidemark keeps another system in sync with a database table, delta by delta.
#[derive(Debug, Parser)]
#[command(name = "host", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read the rows changed since the last run and write them out, then keep polling.
    Run(Box<RunArgs>),
    /// List pipelines: watermark, rows synced, last run, lag.
    Status(StatusArgs),
    /// Forget a pipeline's watermark so that its next run is a full sync.
    Reset(ResetArgs),
    /// Say which world and version a module implements, and what it imports.
    Check(CheckArgs),
    /// Run modules over rows from a JSON file, without a database, and print the result.
    Test(Box<TestArgs>),
    /// Start a module project: sources, sample rows, one build command.
    New(NewArgs),
    /// List the rows a pipeline's destination rejected.
    #[command(alias = "deadletters")]
    DeadLetters(DeadLettersArgs),
    /// Send a pipeline's rejected rows to its destination again; drop those it takes.
    Retry(Box<RetryArgs>),
}

/// Processors and their sandbox, shared by `run`, `test` and `retry`.
#[derive(Debug, Args)]
pub struct ModuleArgs {
    /// A module component (.wasm); repeat to chain transforms, in order. A destination
    /// module, if any, comes last.
    #[arg(long = "module", value_name = "PATH")]
    pub modules: Vec<PathBuf>,

    /// A configuration value for the modules, which they read with `config(key)`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,

    /// A secret for every module of the chain, read from the host's environment variable
    /// ENV_VAR; never logged or shown. Repeatable. (A pipelines file can give a secret to one
    /// module only.)
    #[arg(long = "secret", value_name = "KEY=ENV_VAR")]
    pub secrets: Vec<String>,

    /// Linear memory one module instance may use.
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    pub memory_limit: String,

    /// Wall-clock time one module call may take.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub deadline: Duration,

    /// Fuel (about one unit per WebAssembly instruction) one module may burn per batch
    /// [default: unmetered].
    #[arg(long, value_name = "N")]
    pub fuel: Option<u64>,

    /// Log lines one module call may write (its `log`, stdout and stderr together); past this
    /// or --max-log-bytes, lines are dropped and one line at the end of the call counts them.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_log_lines: u64,

    /// Bytes of log text one module call may write.
    #[arg(long, value_name = "SIZE", default_value = "64KiB")]
    pub max_log_bytes: String,

    /// Where compiled modules are cached [default: $TIDEMARK_CACHE_DIR, else ~/.cache/tidemark].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    #[command(flatten)]
    pub compile: CompileArgs,

    #[command(flatten)]
    pub http: HttpArgs,
}

/// What compiling one (untrusted) module may cost.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// Largest module file loaded; a larger one is refused before it is read.
    #[arg(long, value_name = "SIZE", default_value = "64MiB")]
    pub max_module_size: String,

    /// Time one module may take to compile (a module in the compile cache loads without
    /// compiling).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub compile_timeout: Duration,
}

/// What a destination module may do on the network.
#[derive(Debug, Args)]
#[command(next_help_heading = "Outbound HTTP (destination modules)")]
pub struct HttpArgs {
    /// An origin the destination may send requests to, as `scheme://host[:port]`; repeatable.
    /// Loopback and private addresses must be listed by IP address (http://127.0.0.1:8080).
    #[arg(long = "allow-host", value_name = "ORIGIN")]
    pub allow_hosts: Vec<String>,

    /// Time one request may take, from sending it to the end of the response.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub http_timeout: Duration,

    /// Largest response body a destination may receive.
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    pub max_response_size: String,

    /// Largest request body a destination may send.
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    pub max_request_size: String,

    /// Requests one pipeline may have in flight at once, from sending one until its response
    /// body is read to the end or dropped.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_in_flight: usize,

    /// Requests one module call (one batch) may start; the rest are refused.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_requests_per_batch: usize,

    /// Requests one pipeline may start per second (e.g. 10, or 0.5) [default: no cap].
    #[arg(long, value_name = "RATE")]
    pub max_requests_per_second: Option<f64>,
}

/// How often a batch is offered again to a destination that asks to retry later.
#[derive(Debug, Args)]
#[command(next_help_heading = "Retries")]
pub struct RetryPolicyArgs {
    /// Retries of one batch before the pipeline stops (its watermark unmoved).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_retries: u32,

    /// First wait before a retry; doubled each time, with jitter, up to 5 minutes. A
    /// destination's Retry-After takes precedence.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub retry_backoff: Duration,

    /// What to do once a module failed a batch on every attempt (a transform that answered
    /// fatal for it: at once): park the rows it fails on alone as dead letters and deliver
    /// the rest, or stop (the watermark unmoved).
    #[arg(long, value_name = "POLICY", value_enum, default_value_t = OnPoison::Park)]
    pub on_poison: OnPoison,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The component to inspect.
    #[arg(long, value_name = "PATH")]
    pub module: PathBuf,

    /// Where compiled modules are cached.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    #[command(flatten)]
    pub compile: CompileArgs,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub modules_config: ModuleArgs,

    /// The deprecated spelling of --set KEY=VALUE.
    #[arg(long = "config", value_name = "KEY=VALUE", hide = true)]
    pub config: Vec<String>,

    /// A JSON array of rows: objects, or `{"op": "upsert"|"delete", "row": {...}}` envelopes.
    #[arg(long, value_name = "PATH")]
    pub input: PathBuf,

    /// Rows the output must equal, in the form of --input (exit 1 with the differences if not).
    #[arg(long, value_name = "PATH")]
    pub expect: Option<PathBuf>,

    /// The pipeline name the modules see.
    #[arg(long, value_name = "NAME", default_value = "test")]
    pub pipeline: String,

    /// The batch id the modules see.
    #[arg(long, value_name = "ID", default_value = "test-batch")]
    pub batch_id: String,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The module's name: lowercase letters, digits, - and _.
    pub name: String,

    /// The language of the module.
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Lang,

    /// What the module is: a transform (rows in, rows out) or a destination (delivers rows
    /// over HTTP).
    #[arg(long, value_enum, default_value = "transform")]
    pub world: NewWorld,

    /// Where to write the project [default: ./NAME].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// The Rust guest SDK: a guest-sdk folder or a git URL [default: the SDK this host was
    /// built with].
    #[arg(long, value_name = "PATH|URL")]
    pub sdk: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    #[value(alias = "javascript")]
    Js,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NewWorld {
    Transform,
    Destination,
}

#[derive(Debug, Args)]
pub struct StateArgs {
    /// Where watermarks live: sqlite://PATH or postgres://… (tables in a `tidemark` schema).
    #[arg(
        long,
        value_name = "URL",
        default_value = "sqlite://.tidemark/state.db"
    )]
    pub state: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Database to read: postgres://…, mysql://… (MariaDB too) or sqlite://PATH.
    #[arg(long, value_name = "URL", env = "DATABASE_URL", hide_env_values = true)]
    pub source: Option<String>,

    /// Table to watch, optionally schema-qualified (app.users).
    #[arg(long, value_name = "NAME")]
    pub table: Option<String>,

    /// Column that increases whenever a row changes: a timestamp, or an integer for
    /// append-only tables.
    #[arg(long, value_name = "COLUMN", default_value = "updated_at")]
    pub cursor: String,

    /// Unique, non-null column that orders rows tied on the cursor [default: the primary key].
    #[arg(long, value_name = "COLUMN")]
    pub key: Option<String>,

    /// Rows read, delivered and checkpointed together.
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub batch_size: usize,

    #[command(flatten)]
    pub state: StateArgs,

    /// Name of this sync's state [default: the table name].
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,

    /// Run one pass over the pending rows, then exit.
    #[arg(long)]
    pub once: bool,

    /// Time between passes when not --once.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub poll: Duration,

    /// Leave rows newer than the database's clock minus this lag for a later pass, so that
    /// rows stamped by the application, or committed late, are not passed over.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub settle: Duration,

    /// Append JSON Lines to this file instead of standard output.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Rows where this column is not NULL are delivered as deletes.
    #[arg(long, value_name = "COLUMN")]
    pub deleted_column: Option<String>,

    /// Every INTERVAL, between passes, find the delivered keys that are no longer in the
    /// table and deliver them as deletes (hard deletes; keeps an inventory of keys).
    #[arg(long, value_name = "INTERVAL", value_parser = parse_duration)]
    pub detect_deletes: Option<Duration>,

    /// What to do with rows whose cursor is NULL.
    #[arg(long, value_name = "POLICY", value_enum, default_value_t = NullCursor::Refuse)]
    pub null_cursor: NullCursor,

    #[command(flatten)]
    pub modules_config: ModuleArgs,

    /// A pipelines file (tidemark.toml) that lists many pipelines to run together; then only
    /// --once and --metrics may be given besides. (`--config KEY=VALUE` is the deprecated
    /// spelling of --set KEY=VALUE.)
    #[arg(long = "config", value_name = "FILE")]
    pub config: Vec<String>,

    #[command(flatten)]
    pub retry: RetryPolicyArgs,

    /// Serve the pipelines' counters as Prometheus metrics on this address (GET /metrics).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Time zone in which the application writes cursor values that carry no zone
    /// (PostgreSQL `timestamp`, MySQL DATETIME), e.g. `+02:00` or `Europe/Berlin`.
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub time_zone: String,
}

/// How rows whose cursor is NULL are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NullCursor {
    /// Refuse to run while any row has a NULL cursor.
    Refuse,
    /// Deliver rows with a NULL cursor first, in key order, on a full sync.
    Oldest,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub state: StateArgs,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    #[command(flatten)]
    pub state: StateArgs,

    /// Pipeline whose rejected rows to list.
    #[arg(long, value_name = "NAME")]
    pub pipeline: String,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    #[command(flatten)]
    pub state: StateArgs,

    /// Pipeline whose rejected rows to send again.
    #[arg(long, value_name = "NAME")]
    pub pipeline: String,

    /// Rows sent together.
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub batch_size: usize,

    /// The pipeline's modules, as for `run`: each row was stored as the module that left it
    /// behind received it, and goes through that module and the ones after it again.
    #[command(flatten)]
    pub modules_config: ModuleArgs,

    /// Append JSON Lines to this file instead of standard output, when the chain has no
    /// destination.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// The deprecated spelling of --set KEY=VALUE.
    #[arg(long = "config", value_name = "KEY=VALUE", hide = true)]
    pub config: Vec<String>,

    #[command(flatten)]
    pub retry: RetryPolicyArgs,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub state: StateArgs,

    /// Pipeline to forget.
    #[arg(long, value_name = "NAME")]
    pub pipeline: String,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|err| format!("{err}; write a duration such as 500ms, 2s or 1m"))
}
