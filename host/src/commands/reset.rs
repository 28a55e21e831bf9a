//! `host reset`: forget a pipeline's watermark, so that its next run is a full sync.

use super::{open_store, unknown_pipeline};
use crate::front::cli::ResetArgs;

/// Runs `host reset`.
pub async fn run(args: ResetArgs) -> anyhow::Result<()> {
    let store = open_store(&args.state.state).await?;
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
