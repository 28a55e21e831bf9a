//! `host test`: modules over rows from a JSON file, without a database; prints what the
//! last one returned, and each module's time, fuel and memory on standard error.

use std::sync::Arc;

use anyhow::Context as _;

use super::{load_modules, module_values_only};
use crate::cli::TestArgs;
use crate::config::ModulesConfig;
use crate::error::Error;
use crate::runtime::{self, Outcome};

/// Runs `host test`.
pub async fn run(mut args: TestArgs) -> anyhow::Result<()> {
    module_values_only(
        std::mem::take(&mut args.config),
        &mut args.modules_config.set,
    )?;
    let config = ModulesConfig::from_args(args.modules_config)?;
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
    let modules = load_modules(&config, &args.pipeline)?;
    let mut batch = Arc::new(runtime::Batch {
        id: args.batch_id,
        pipeline: args.pipeline,
        rows,
    });
    for module in &modules {
        let (outcome, usage) = module.call(batch.clone()).await;
        let outcome = outcome?;
        eprintln!(
            "{}: {:.2?}, fuel {}, peak memory {:.1} MiB",
            module.name(),
            usage.time,
            match module.fuel_metered() {
                true => usage.fuel.to_string(),
                false => "not metered".into(),
            },
            usage.peak_memory as f64 / (1 << 20) as f64
        );
        let answer = match outcome {
            Outcome::Rows(rows) => {
                Arc::make_mut(&mut batch).rows = rows;
                continue;
            }
            Outcome::Delivered(Ok(rejections)) => {
                let rejected: Vec<serde_json::Value> = rejections
                    .iter()
                    .map(|r| serde_json::json!({"index": r.index, "reason": r.reason}))
                    .collect();
                serde_json::json!({"rejected": rejected})
            }
            Outcome::Delivered(Err(runtime::DeliveryError::RetryLater(retry))) => {
                serde_json::json!({"retry_later": {"message": retry.message, "after_ms": retry.after_ms}})
            }
            Outcome::Delivered(Err(runtime::DeliveryError::Fatal(message))) => {
                serde_json::json!({"fatal": message})
            }
        };
        // A destination's answer ends the chain: nothing comes after a destination.
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let output: serde_json::Value = serde_json::from_str(&batch.rows)
        .context("the last module returned rows that are not JSON")?;
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

/// The rows of a `host test` input as the modules receive them: plain objects become upserts.
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
