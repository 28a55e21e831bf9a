//! `host retry`: a pipeline's dead letters, sent through its chain again with the retry
//! policy of a run, each from the module that left it behind; the loop itself is
//! [`crate::engine::replay::replay`].

use super::{load_modules, module_values_only, open_store, unknown_pipeline, watch_signals};
use crate::delivery::chain::Chain;
use crate::delivery::letters::Letters;
use crate::delivery::step::Step;
use crate::engine::replay;
use crate::engine::settings::ModulesConfig;
use crate::front::cli::RetryArgs;
use crate::front::config::{check_batch_size, retry_policy};
use crate::model::error::Error;
use crate::model::shutdown::Shutdown;

/// Runs `host retry`.
pub async fn run(mut args: RetryArgs) -> anyhow::Result<()> {
    module_values_only(
        std::mem::take(&mut args.config),
        &mut args.modules_config.set,
    )?;
    check_batch_size(args.batch_size)?;
    let policy = retry_policy(&args.retry)?;
    let config = ModulesConfig::from_args(args.modules_config)?;
    let store = open_store(&args.state.state).await?;
    // The whole chain: a letter goes through the module that left it behind and every module
    // after it, so that a transform's letter is transformed before it is delivered.
    let modules = load_modules(&config, &args.pipeline).await?;
    if modules.is_empty() {
        return Err(Error::invalid("host retry needs the pipeline's modules")
            .with_hint("pass the pipeline's modules as for run (--module, in order, with their --set, --secret and --allow-host)")
            .into());
    }
    let mut chain = Chain::new(modules, args.output.as_deref())?;
    let known = store.load(&args.pipeline).await?.is_some();
    if !known && store.dead_letters(&args.pipeline, 0, 1).await?.is_empty() {
        return Err(unknown_pipeline(&args.pipeline).into());
    }
    let shutdown = Shutdown::default();
    watch_signals(shutdown.clone());
    let mut step = Step {
        output: &mut chain,
        store: &store,
        retry: &policy,
        shutdown: &shutdown,
        pipeline: args.pipeline.clone(),
        letters: Letters::for_pipeline(&store, &args.pipeline).await?,
    };
    let done = replay::replay(&mut step, args.batch_size).await?;
    tracing::info!(
        "{}: retried {} rows: {} delivered, {} left behind again; {} superseded by newer \
         versions, skipped",
        args.pipeline,
        done.retried,
        done.delivered,
        done.rejected,
        done.superseded
    );
    Ok(())
}
