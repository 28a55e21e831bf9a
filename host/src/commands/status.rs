//! `host status`: every pipeline of a state store, as a table or as JSON.

use super::open_store;
use crate::cli::StatusArgs;
use crate::model::Position;
use crate::source::Driver;
use crate::state::PipelineState;

/// Runs `host status`.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let store = open_store(&args.state.state).await?;
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
        "{:<20} {:<20} {:>10} {:>8} {:>8} {:>7} {:>7} {:>6} {:>8} {:>8} {:>8}  {:<20}  WATERMARK",
        "PIPELINE",
        "TABLE",
        "ROWS",
        "BATCHES",
        "REJECTED",
        "PARKED",
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
            "{:<20} {:<20} {:>10} {:>8} {:>8} {:>7} {:>7} {:>6} {:>8} {:>8} {:>8}  {:<20}  {}",
            state.name,
            state.identity.table,
            state.rows_synced,
            state.batches_synced,
            accounting.dead_letters,
            accounting.rows_parked,
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
        let checks = &state.deletes;
        if let Some(at) = &checks.last_check_at {
            println!(
                "{:<20} deletes detected: {}; last check at {at}: {:.2}s, {} ranges and {} keys read",
                "",
                checks.deletes_detected,
                checks.last_check_seconds.unwrap_or_default(),
                checks.last_check_ranges.unwrap_or_default(),
                checks.last_check_keys.unwrap_or_default()
            );
        }
        if let Some(why) = &state.held_back {
            println!("{:<20} held back: {why}", "");
        }
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
        "held_back": state.held_back,
        "dead_letters": state.accounting.dead_letters,
        "rows_rejected": state.accounting.rows_rejected,
        "rows_parked": state.accounting.rows_parked,
        "retries": state.accounting.retries,
        "errors": state.accounting.errors,
        "guest_seconds": state.accounting.usage.time.as_secs_f64(),
        "fuel_used": state.accounting.usage.fuel,
        "peak_guest_memory_bytes": state.accounting.usage.peak_memory,
        "last_error": state.accounting.last_error,
        "last_error_at": state.accounting.last_error_at,
        "key_inventory": state.deletes.inventory,
        "deletes_detected": state.deletes.deletes_detected,
        "last_delete_check_at": state.deletes.last_check_at,
        "last_delete_check_seconds": state.deletes.last_check_seconds,
        "last_delete_check_ranges": state.deletes.last_check_ranges,
        "last_delete_check_keys": state.deletes.last_check_keys,
    })
}
