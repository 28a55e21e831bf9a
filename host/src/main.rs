//! The `host` binary: parse flags, build the configuration, run, map errors to exit codes
//! (2 for input the user must fix, 1 for everything else).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use tidemark::cli::{
    CheckArgs, Cli, Command, DeadLettersArgs, ResetArgs, RetryArgs, RunArgs, StatusArgs, TestArgs,
};
use tidemark::config::{check_batch_size, retry_policy, ProcessorConfig, RunConfig};
use tidemark::model;
use tidemark::model::{Position, Rows};
use tidemark::pipelines_file::PipelinesFile;
use tidemark::runtime::chain::Chain;
use tidemark::runtime::engine::EngineOptions;
use tidemark::runtime::{self, Outcome, Processor, Runtime};
use tidemark::source::Driver;
use tidemark::state::{DeadLetter, PipelineState, StateStore};
use tidemark::supervisor::Supervisor;
use tidemark::sync::{self, Shutdown};
use tidemark::{metrics, pipeline};
use tidemark::{Error, ErrorKind};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    // Flags given on the command line (not defaults): a pipelines file takes the place of most.
    let explicit: Vec<String> = matches
        .subcommand_matches("run")
        .map(|run| {
            run.ids()
                .filter(|id| run.value_source(id.as_str()) == Some(ValueSource::CommandLine))
                .map(|id| id.as_str().to_owned())
                .collect()
        })
        .unwrap_or_default();
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
            Command::Run(args) => run(*args, &explicit).await,
            Command::Status(args) => status(args).await,
            Command::Reset(args) => reset(args).await,
            Command::Check(args) => check(args),
            Command::Test(args) => test(*args).await,
            Command::Deadletters(args) => dead_letters(args).await,
            Command::Retry(args) => retry(*args).await,
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

async fn run(args: RunArgs, explicit: &[String]) -> anyhow::Result<()> {
    if args
        .processors
        .config
        .iter()
        .any(|entry| !entry.contains('='))
    {
        return run_pipelines_file(args, explicit).await;
    }
    let metrics = args.metrics;
    let config = RunConfig::from_args(args)?;
    let store = Arc::new(
        StateStore::open(&config.state_url)
            .await
            .context("opening the state store")?,
    );
    if let Some(address) = metrics {
        metrics::serve(address, store.clone()).await?;
    }
    let runtime = new_runtime(&config.processors)?;
    let shutdown = Shutdown::default();
    watch_signals(shutdown.clone());
    pipeline::run(&config, runtime.as_ref(), &store, &shutdown, None).await?;
    Ok(())
}

/// `host run --config tidemark.toml`: every pipeline of the file, in this process.
async fn run_pipelines_file(args: RunArgs, explicit: &[String]) -> anyhow::Result<()> {
    let [path] = &args.processors.config[..] else {
        return Err(Error::invalid(
            "--config names a pipelines file, and then it must be the only --config",
        )
        .with_hint("put module configuration in the file: config = { key = \"value\" }")
        .into());
    };
    const ALLOWED: [&str; 3] = ["config", "once", "metrics"];
    if let Some(flag) = explicit.iter().find(|id| !ALLOWED.contains(&id.as_str())) {
        return Err(Error::invalid(format!(
            "the flag for {flag:?} cannot be combined with a pipelines file"
        ))
        .with_hint("set it in the file, in a pipeline or under [defaults]; only --once and --metrics go with --config FILE")
        .into());
    }
    let file = PipelinesFile::load(Path::new(path))?;
    let metrics = args.metrics.or(file.metrics);
    let supervisor = Supervisor::new(file, args.once).await?;
    if let Some(address) = metrics {
        metrics::serve(address, supervisor.store()).await?;
    }
    let shutdown = Shutdown::default();
    watch_signals(shutdown.clone());
    supervisor.run(&shutdown).await?.into_result()?;
    Ok(())
}

/// An engine for these modules; none when there are no modules.
fn new_runtime(config: &ProcessorConfig) -> anyhow::Result<Option<Runtime>> {
    if config.modules.is_empty() {
        return Ok(None);
    }
    Ok(Some(Runtime::new(&config.engine_options())?))
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
        "{:<20} {:<20} {:>10} {:>8} {:>8} {:>7} {:>6} {:>8} {:>8} {:>8}  {:<20}  WATERMARK",
        "PIPELINE",
        "TABLE",
        "ROWS",
        "BATCHES",
        "REJECTED",
        "RETRIES",
        "ERRORS",
        "GUEST",
        "PEAK MEM",
        "LAG",
        "LAST RUN"
    );
    for state in &pipelines {
        let accounting = &state.accounting;
        println!(
            "{:<20} {:<20} {:>10} {:>8} {:>8} {:>7} {:>6} {:>8} {:>8} {:>8}  {:<20}  {}",
            state.name,
            state.identity.table,
            state.rows_synced,
            state.batches_synced,
            accounting.dead_letters,
            accounting.retries,
            accounting.errors,
            format!("{:.1}s", accounting.usage.time.as_secs_f64()),
            format!(
                "{:.1}M",
                accounting.usage.peak_memory as f64 / (1 << 20) as f64
            ),
            state
                .lag_seconds
                .map(|lag| format!("{lag:.1}s"))
                .unwrap_or_else(|| "-".into()),
            state.last_run_at.as_deref().unwrap_or("never"),
            Driver::from_url(&state.identity.source).map_or_else(
                |_| state.position.to_string(),
                |driver| driver.shown_position(&state.position)
            )
        );
        if let Some(error) = &accounting.last_error {
            println!(
                "{:<20} last error at {}: {error}",
                "",
                accounting.last_error_at.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(())
}

fn status_json(state: &PipelineState) -> serde_json::Value {
    let driver = Driver::from_url(&state.identity.source).ok();
    let shown = |value: &str| {
        driver
            .map_or(value, |driver| driver.shown_value(value))
            .to_owned()
    };
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
        "dead_letters": state.accounting.dead_letters,
        "rows_rejected": state.accounting.rows_rejected,
        "retries": state.accounting.retries,
        "errors": state.accounting.errors,
        "guest_seconds": state.accounting.usage.time.as_secs_f64(),
        "fuel_used": state.accounting.usage.fuel,
        "peak_guest_memory_bytes": state.accounting.usage.peak_memory,
        "last_error": state.accounting.last_error,
        "last_error_at": state.accounting.last_error_at,
    })
}

async fn dead_letters(args: DeadLettersArgs) -> anyhow::Result<()> {
    let store = StateStore::open(&args.state.state)
        .await
        .context("opening the state store")?;
    let mut letters: Vec<DeadLetter> = Vec::new();
    let mut after = 0;
    loop {
        let page = store.dead_letters(&args.pipeline, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        letters.extend(page);
    }
    if letters.is_empty() && store.load(&args.pipeline).await?.is_none() {
        return Err(unknown_pipeline(&args.pipeline).into());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&letters)?);
        return Ok(());
    }
    if letters.is_empty() {
        println!("no rejected rows for pipeline {:?}", args.pipeline);
        return Ok(());
    }
    println!(
        "{:>8} {:<32} {:>6} {:>8} {:<21} REASON / ROW",
        "ID", "BATCH", "INDEX", "ATTEMPTS", "LAST FAILED"
    );
    for letter in &letters {
        println!(
            "{:>8} {:<32} {:>6} {:>8} {:<21} {}",
            letter.id,
            letter.batch_id,
            letter.index,
            letter.attempts,
            letter.last_failed_at,
            letter.reason
        );
        println!("{:>79}{}", "", letter.row.get());
    }
    println!(
        "{} rejected rows; `host retry --pipeline {} --module …` sends them again",
        letters.len(),
        args.pipeline
    );
    Ok(())
}

/// Sends a pipeline's dead letters to its destination again, a batch at a time, with the
/// same retry policy as a run. Each batch's id is derived from its dead letters' ids, so a
/// retry that is itself retried carries the same id.
async fn retry(args: RetryArgs) -> anyhow::Result<()> {
    check_batch_size(args.batch_size)?;
    let policy = retry_policy(&args.retry)?;
    let mut config = ProcessorConfig::from_args(args.processors)?;
    let store = StateStore::open(&args.state.state)
        .await
        .context("opening the state store")?;
    // Only the destination: the rows were stored as it received them.
    config.modules = config
        .modules
        .split_off(config.modules.len().saturating_sub(1));
    let processors = load_processors(&config, &args.pipeline)?;
    if processors.first().map(Processor::world) != Some(runtime::World::Destination) {
        return Err(Error::invalid("host retry needs the pipeline's destination module")
            .with_hint("pass the destination module as the last --module, with its --config, --secret and --allow-host")
            .into());
    }
    let mut chain = Chain::new(processors, None)?;
    let known = store.load(&args.pipeline).await?.is_some();
    if !known && store.dead_letters(&args.pipeline, 0, 1).await?.is_empty() {
        return Err(unknown_pipeline(&args.pipeline).into());
    }
    let shutdown = Shutdown::default();
    watch_signals(shutdown.clone());
    let (mut retried, mut delivered, mut rejected) = (0usize, 0usize, 0usize);
    let mut after = 0;
    while !shutdown.is_requested() {
        let letters = store
            .dead_letters(&args.pipeline, after, args.batch_size as i64)
            .await?;
        let Some(last) = letters.last() else { break };
        after = last.id;
        let text = format!(
            "[{}]",
            letters
                .iter()
                .map(|letter| letter.row.get())
                .collect::<Vec<_>>()
                .join(",")
        );
        let rows = Rows::from_json_array(&text).map_err(|detail| {
            Error::fatal(format!(
                "dead letters {}..{} of pipeline {:?} hold damaged rows: {detail}",
                letters[0].id, after, args.pipeline
            ))
        })?;
        let ids: Vec<i64> = letters.iter().map(|letter| letter.id).collect();
        let batch_id = sync::retry_batch_id(&args.pipeline, &ids);
        let (outcome, _usage) = sync::deliver_with_retries(
            &mut chain,
            model::Batch {
                id: &batch_id,
                pipeline: &args.pipeline,
                rows: &rows,
            },
            &policy,
            &shutdown,
            Some(&store),
        )
        .await;
        let outcome = outcome
            .with_context(|| format!("retrying dead letters of pipeline {:?}", args.pipeline))?;
        for (index, letter) in letters.iter().enumerate() {
            match outcome
                .rejected
                .iter()
                .find(|row| row.index as usize == index)
            {
                Some(again) => {
                    store.reject_again(letter.id, &again.reason).await?;
                    rejected += 1;
                }
                None => {
                    store.remove_dead_letter(letter.id).await?;
                    delivered += 1;
                }
            }
        }
        retried += letters.len();
    }
    tracing::info!(
        "{}: retried {retried} rows: {delivered} delivered, {rejected} rejected again",
        args.pipeline
    );
    Ok(())
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
        Err(unknown_pipeline(&args.pipeline).into())
    }
}

/// Loads the modules of a pipeline, in order, under one engine.
fn load_processors(config: &ProcessorConfig, pipeline: &str) -> anyhow::Result<Vec<Processor>> {
    match new_runtime(config)? {
        Some(runtime) => Ok(pipeline::load_processors(&runtime, config, pipeline)?),
        None => Ok(Vec::new()),
    }
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
        let (outcome, usage) = processor.call(&batch).await;
        let outcome = outcome?;
        eprintln!(
            "{}: {:.2?}, fuel {}, peak memory {:.1} MiB",
            processor.name(),
            usage.time,
            match processor.fuel_metered() {
                true => usage.fuel.to_string(),
                false => "not metered".into(),
            },
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

/// A pipeline name the state store has never seen (a reset pipeline keeps its dead letters).
fn unknown_pipeline(name: &str) -> Error {
    Error::invalid(format!("no pipeline named {name:?}"))
        .with_hint("run `host status` to list pipelines")
}
