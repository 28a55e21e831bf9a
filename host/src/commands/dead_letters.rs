//! `host dead-letters` (once `host deadletters`): the rows a pipeline's modules rejected or
//! failed on alone (parked).

use super::{open_store, unknown_pipeline};
use crate::front::cli::DeadLettersArgs;
use crate::state::DeadLetter;

/// Runs `host dead-letters`.
pub async fn run(args: DeadLettersArgs) -> anyhow::Result<()> {
    let store = open_store(&args.state.state).await?;
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
        "{:>8} {:<32} {:>6} {:>8} {:<21} {:<9} {:<16} REASON / ROW",
        "ID", "BATCH", "INDEX", "ATTEMPTS", "LAST FAILED", "KIND", "MODULE"
    );
    for letter in &letters {
        let kind = match (&letter.superseded_at, letter.parked) {
            (Some(_), _) => "superseded",
            (None, true) => "parked",
            (None, false) => "rejected",
        };
        println!(
            "{:>8} {:<32} {:>6} {:>8} {:<21} {:<9} {:<16} {}",
            letter.id,
            letter.batch_id,
            letter.index,
            letter.attempts,
            letter.last_failed_at,
            kind,
            letter.stage.as_deref().unwrap_or("-"),
            letter.reason
        );
        println!("{:>106}{}", "", letter.row.get());
    }
    println!(
        "{} rejected or parked rows; `host retry --pipeline {} --module …` sends them \
         again, each from the module that left it behind",
        letters.len(),
        args.pipeline
    );
    Ok(())
}
