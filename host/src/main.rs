//! The `host` binary: parse flags, build the configuration, run, map errors to exit codes
//! (2 for input the user must fix, 1 for everything else).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use tidemark::cli::{
    CheckArgs, Cli, Command, NullCursor, ResetArgs, RunArgs, StatusArgs, TestArgs,
};
use tidemark::config::{ProcessorConfig, RunConfig};
use tidemark::output::{Destination, JsonLines};
use tidemark::runtime::chain::Chain;
use tidemark::runtime::engine::EngineOptions;
use tidemark::runtime::{self, Outcome, Processor, Runtime};
use tidemark::source::mysql::MySqlSource;
use tidemark::source::postgres::PgSource;
use tidemark::source::sqlite::SqliteSource;
use tidemark::source::{redact_url, Driver, Position, Source};
use tidemark::state::{Identity, PipelineState, StateStore};
use tidemark::sync::{self, Shutdown};
use tidemark::{Error, ErrorKind};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::Status(args) => status(args).await,
            Command::Reset(args) => reset(args).await,
            Command::Check(args) => check(args),
            Command::Test(args) => test(*args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Prints the error chain and its hint; picks the exit code from the engine's error kind.
fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err:#}");
    let engine_error = err.chain().find_map(|cause| cause.downcast_ref::<Error>());
    if let Some(hint) = engine_error.and_then(Error::hint) {
        eprintln!("hint: {hint}");
    }
    match engine_error.map(Error::kind) {
        Some(ErrorKind::Invalid) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = RunConfig::from_args(args)?;
    let store = StateStore::open(&config.state_url)
        .await
        .context("opening the state store")?;
    // Modules are loaded and checked before the first row is read.
    let processors = load_processors(&config.processors, &config.pipeline)?;
    let output = match &config.output {
        Some(path) => JsonLines::append(path)?,
        None => JsonLines::stdout(),
    };
    let mut destination = Chain::new(processors, output)?;
    let shutdown = Shutdown::default();
    watch_signals(shutdown.clone());
    let table = &config.table;
    let context = || {
        format!(
            "syncing {} from {}",
            table.table,
            redact_url(&config.source_url)
        )
    };
    match config.driver {
        Driver::Postgres => {
            let mut source = PgSource::connect(&config.source_url, table)
                .await
                .with_context(context)?;
            sync_with(&mut source, &mut destination, &store, &config, &shutdown)
                .await
                .with_context(context)
        }
        Driver::MySql => {
            let mut source = MySqlSource::connect(&config.source_url, table)
                .await
                .with_context(context)?;
            sync_with(&mut source, &mut destination, &store, &config, &shutdown)
                .await
                .with_context(context)
        }
        Driver::Sqlite => {
            let mut source = SqliteSource::connect(&config.source_url, table)
                .await
                .with_context(context)?;
            sync_with(&mut source, &mut destination, &store, &config, &shutdown)
                .await
                .with_context(context)
        }
    }
}

async fn sync_with<S: Source, D: Destination>(
    source: &mut S,
    destination: &mut D,
    store: &StateStore,
    config: &RunConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let identity = Identity {
        source: redact_url(&config.source_url),
        table: config.table.table.to_string(),
        cursor: config.table.cursor.clone(),
        key: source.key_column().to_owned(),
    };
    let initial = match config.sync.null_cursor {
        NullCursor::Oldest => Position::Nulls { after_key: None },
        NullCursor::Refuse => Position::Start,
    };
    let mut state: PipelineState = store
        .load_or_create(&config.pipeline, &identity, initial.clone())
        .await?;
    // A pipeline that has delivered nothing yet (say, its first run refused NULL cursors)
    // starts where the policy it runs with now says.
    if state.batches_synced == 0 && state.pending.is_none() && state.position != initial {
        store.advance(&mut state, &initial).await?;
    }
    let totals = sync::run(
        source,
        destination,
        store,
        &mut state,
        &config.sync,
        shutdown,
    )
    .await?;
    tracing::debug!(
        "{}: {} rows in {} batches",
        state.name,
        totals.rows,
        totals.batches
    );
    Ok(())
}

/// The first SIGINT or SIGTERM finishes the batch in hand; a second one exits at once
/// (the watermark is still safe: it never moves before delivery).
fn watch_signals(shutdown: Shutdown) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("cannot listen for signals; stop with SIGKILL");
            return;
        };
        for round in 0.. {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            if round > 0 {
                eprintln!("stopping now; the batch in hand will be delivered again next run");
                std::process::exit(130);
            }
            tracing::info!("stopping after the batch in hand");
            shutdown.request();
        }
    });
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let store = StateStore::open(&args.state.state)
        .await
        .context("opening the state store")?;
    let pipelines = store.list().await?;
    if args.json {
        let list: Vec<serde_json::Value> = pipelines.iter().map(status_json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if pipelines.is_empty() {
        println!("no pipelines in {}", args.state.state);
        return Ok(());
    }
    println!(
        "{:<20} {:<24} {:>12} {:>9} {:<21} {:>9}  WATERMARK",
        "PIPELINE", "TABLE", "ROWS", "BATCHES", "LAST RUN", "LAG"
    );
    for state in &pipelines {
        println!(
            "{:<20} {:<24} {:>12} {:>9} {:<21} {:>9}  {}",
            state.name,
            state.identity.table,
            state.rows_synced,
            state.batches_synced,
            state.last_run_at.as_deref().unwrap_or("never"),
            state
                .lag_seconds
                .map(|lag| format!("{lag:.1}s"))
                .unwrap_or_else(|| "-".into()),
            state.shown_position()
        );
    }
    Ok(())
}

fn status_json(state: &PipelineState) -> serde_json::Value {
    let shown = |value: &str| state.shown_value(value).to_owned();
    let watermark = match &state.position {
        Position::After(mark) => {
            serde_json::json!({"cursor": shown(&mark.cursor), "key": shown(&mark.key)})
        }
        Position::Nulls {
            after_key: Some(key),
        } => serde_json::json!({"cursor": null, "key": shown(key)}),
        Position::Nulls { after_key: None } | Position::Start => serde_json::Value::Null,
    };
    serde_json::json!({
        "pipeline": state.name,
        "source": state.identity.source,
        "table": state.identity.table,
        "cursor": state.identity.cursor,
        "key": state.identity.key,
        "watermark": watermark,
        "pending_batch": state.pending.as_ref().map(|pending| pending.id.clone()),
        "rows_synced": state.rows_synced,
        "batches_synced": state.batches_synced,
        "last_batch": state.last_batch,
        "last_run_at": state.last_run_at,
        "lag_seconds": state.lag_seconds,
    })
}

async fn reset(args: ResetArgs) -> anyhow::Result<()> {
    let store = StateStore::open(&args.state.state)
        .await
        .context("opening the state store")?;
    if store.reset(&args.pipeline).await? {
        println!(
            "pipeline {:?} reset: its next run is a full sync",
            args.pipeline
        );
        Ok(())
    } else {
        Err(
            Error::invalid(format!("no pipeline named {:?}", args.pipeline))
                .with_hint("run `host status` to list pipelines")
                .into(),
        )
    }
}

/// Loads the modules of a pipeline, in order, under one engine.
fn load_processors(config: &ProcessorConfig, pipeline: &str) -> anyhow::Result<Vec<Processor>> {
    if config.modules.is_empty() {
        return Ok(Vec::new());
    }
    let runtime = Runtime::new(&EngineOptions {
        fuel: config.limits.fuel.is_some(),
        max_memory: config.limits.memory,
        cache_dir: config.cache_dir.clone(),
    })?;
    config
        .modules
        .iter()
        .map(|path| {
            runtime
                .load(path, pipeline, config.config.clone(), config.limits)
                .with_context(|| format!("loading module {}", path.display()))
        })
        .collect()
}

fn check(args: CheckArgs) -> anyhow::Result<()> {
    let runtime = Runtime::new(&EngineOptions {
        fuel: false,
        max_memory: runtime::limits::DEFAULT_MEMORY,
        cache_dir: args.cache_dir.or_else(runtime::engine::default_cache_dir),
    })?;
    let inspection = runtime
        .inspect(&args.module)
        .with_context(|| format!("checking module {}", args.module.display()))?;
    println!("module:  {}", args.module.display());
    println!(
        "world:   {} ({}@{})",
        inspection.world.name(),
        runtime::PACKAGE,
        inspection.version
    );
    println!("exports:");
    for export in &inspection.exports {
        println!("  {export}");
    }
    println!("imports:");
    for import in &inspection.imports {
        println!("  {import}");
    }
    println!(
        "{} in {:.1?}",
        if inspection.from_cache {
            "loaded from the compile cache"
        } else {
            "compiled (now cached)"
        },
        inspection.load_time
    );
    Ok(())
}

async fn test(args: TestArgs) -> anyhow::Result<()> {
    let config = ProcessorConfig::from_args(args.processors)?;
    if config.modules.is_empty() {
        return Err(Error::invalid("no module to test")
            .with_hint("pass --module PATH")
            .into());
    }
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let rows = input_rows(&text).map_err(|detail| {
        Error::invalid(format!(
            "{} is not a JSON array of rows: {detail}",
            args.input.display()
        ))
        .with_hint("write [{\"id\": 1, ...}, ...] or [{\"op\": \"upsert\", \"row\": {...}}, ...]")
    })?;
    let processors = load_processors(&config, &args.pipeline)?;
    let mut batch = runtime::Batch {
        id: args.batch_id,
        pipeline: args.pipeline,
        rows,
    };
    for processor in &processors {
        let (outcome, usage) = processor.call(&batch).await?;
        eprintln!(
            "{}: {:.2?}, fuel {}, peak memory {:.1} MiB",
            processor.name(),
            usage.time,
            usage
                .fuel
                .map(|fuel| fuel.to_string())
                .unwrap_or_else(|| "not metered".into()),
            usage.peak_memory as f64 / (1 << 20) as f64
        );
        match outcome {
            Outcome::Rows(rows) => batch.rows = rows,
            Outcome::Delivered(Ok(rejections)) => {
                let rejected: Vec<serde_json::Value> = rejections
                    .iter()
                    .map(|r| serde_json::json!({"index": r.index, "reason": r.reason}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"rejected": rejected}))?
                );
                return Ok(());
            }
            Outcome::Delivered(Err(runtime::DeliveryError::RetryLater(retry))) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"retry_later": {"message": retry.message, "after_ms": retry.after_ms}})
                    )?
                );
                return Ok(());
            }
            Outcome::Delivered(Err(runtime::DeliveryError::Fatal(message))) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"fatal": message}))?
                );
                return Ok(());
            }
        }
    }
    let output: serde_json::Value = serde_json::from_str(&batch.rows)
        .context("the last module returned rows that are not JSON")?;
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

/// The rows of a `host test` input as the processors receive them: plain objects become upserts.
fn input_rows(text: &str) -> Result<String, String> {
    let items: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|err| err.to_string())?;
    let mut envelopes = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let is_envelope =
            item.get("op").is_some() && item.get("row").is_some_and(|row| row.is_object());
        envelopes.push(match item {
            item if is_envelope => item,
            serde_json::Value::Object(row) => serde_json::json!({"op": "upsert", "row": row}),
            other => return Err(format!("element {index} is not an object: {other}")),
        });
    }
    serde_json::to_string(&envelopes).map_err(|err| err.to_string())
}
