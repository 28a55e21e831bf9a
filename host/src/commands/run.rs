//! `host run`: one pipeline from flags, or every pipeline of a pipelines file
//! (`--config tidemark.toml`), until `--once` is done or a signal stops it.

use std::path::Path;
use std::sync::Arc;

use super::{new_runtime, open_store, split_config, watch_signals};
use crate::cluster::metrics;
use crate::cluster::settings::PipelinesFile;
use crate::cluster::supervisor::Supervisor;
use crate::engine::pipeline;
use crate::engine::settings::RunConfig;
use crate::front::cli::RunArgs;
use crate::model::error::Error;
use crate::model::shutdown::Shutdown;

/// Flags that may go with a pipelines file, by clap id (`StateArgs` is the group `--state`
/// comes in); the file sets everything else.
const WITH_A_FILE: [&str; 5] = ["config", "once", "metrics", "state", "StateArgs"];

/// Runs `host run`. `explicit` holds the ids of the flags given on the command line (not
/// defaults): a pipelines file takes the place of most.
pub async fn run(mut args: RunArgs, explicit: &[String]) -> anyhow::Result<()> {
    let files = split_config(
        std::mem::take(&mut args.config),
        &mut args.modules_config.set,
    );
    match &files[..] {
        [] => run_flags(args).await,
        [file] => run_file(args, Path::new(file), explicit).await,
        _ => Err(Error::invalid(
            "--config names a pipelines file, and then it must be the only --config",
        )
        .with_hint("list every pipeline in one file; a host runs one pipelines file")
        .into()),
    }
}

/// One pipeline, described by the flags.
async fn run_flags(args: RunArgs) -> anyhow::Result<()> {
    let metrics = args.metrics;
    let config = RunConfig::from_args(args)?;
    let store = Arc::new(open_store(&config.state_url).await?);
    if let Some(address) = metrics {
        metrics::serve(address, store.clone()).await?;
    }
    let runtime = new_runtime(&config.modules_config)?;
    let shutdown = Shutdown::default();
    watch_signals(shutdown.clone());
    pipeline::run(&config, runtime.as_ref(), &store, &shutdown, None, None).await?;
    Ok(())
}

/// `host run --config tidemark.toml`: every pipeline of the file, in this process.
async fn run_file(args: RunArgs, path: &Path, explicit: &[String]) -> anyhow::Result<()> {
    if !args.modules_config.set.is_empty() {
        return Err(Error::invalid(
            "module configuration (--set, or --config KEY=VALUE) cannot be combined with a pipelines file",
        )
        .with_hint("put module configuration in the file: config = { key = \"value\" }")
        .into());
    }
    if let Some(flag) = explicit
        .iter()
        .find(|id| !WITH_A_FILE.contains(&id.as_str()))
    {
        return Err(Error::invalid(format!(
            "the flag for {flag:?} cannot be combined with a pipelines file"
        ))
        .with_hint("set it in the file, in a pipeline or under [defaults]; only --once, --metrics and --state go with --config FILE")
        .into());
    }
    let mut file = PipelinesFile::load(path)?;
    // The same file on every worker, the state store per deployment (a secret).
    if explicit.iter().any(|id| id == "state") {
        file.state_url = args.state.state.clone();
    }
    let metrics = args.metrics.or(file.metrics);
    let supervisor = Supervisor::new(file, args.once, PipelinesFile::load).await?;
    if let Some(address) = metrics {
        metrics::serve(address, supervisor.store()).await?;
    }
    let shutdown = Shutdown::default();
    watch_signals(shutdown.clone());
    supervisor.run(&shutdown).await?.into_result()?;
    Ok(())
}
