//! `host retry`: a pipeline's dead letters, sent to its destination again with the retry
//! policy of a run; the loop itself is [`crate::replay::replay`].

use super::{load_modules, module_values_only, open_store, unknown_pipeline, watch_signals};
use crate::cli::RetryArgs;
use crate::config::{check_batch_size, retry_policy, ModulesConfig};
use crate::error::Error;
use crate::replay;
use crate::runtime::chain::Chain;
use crate::runtime::{Module, World};
use crate::sync::Shutdown;

/// Runs `host retry`.
pub async fn run(mut args: RetryArgs) -> anyhow::Result<()> {
    module_values_only(
        std::mem::take(&mut args.config),
        &mut args.modules_config.set,
    )?;
    check_batch_size(args.batch_size)?;
    let policy = retry_policy(&args.retry)?;
    let mut config = ModulesConfig::from_args(args.modules_config)?;
    let store = open_store(&args.state.state).await?;
    // Only the destination: the rows were stored as it received them.
    config.modules = config
        .modules
        .split_off(config.modules.len().saturating_sub(1));
    let modules = load_modules(&config, &args.pipeline)?;
    if modules.first().map(Module::world) != Some(World::Destination) {
        return Err(Error::invalid("host retry needs the pipeline's destination module")
            .with_hint("pass the destination module as the last --module, with its --set, --secret and --allow-host")
            .into());
    }
    let mut chain = Chain::new(modules, None)?;
    let known = store.load(&args.pipeline).await?.is_some();
    if !known && store.dead_letters(&args.pipeline, 0, 1).await?.is_empty() {
        return Err(unknown_pipeline(&args.pipeline).into());
    }
    let shutdown = Shutdown::default();
    watch_signals(shutdown.clone());
    let done = replay::replay(
        &mut chain,
        &store,
        &args.pipeline,
        args.batch_size,
        &policy,
        &shutdown,
    )
    .await?;
    tracing::info!(
        "{}: retried {} rows: {} delivered, {} rejected again",
        args.pipeline,
        done.retried,
        done.delivered,
        done.rejected
    );
    Ok(())
}
