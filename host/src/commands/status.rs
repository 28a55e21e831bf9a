//! `host status`: every pipeline of a state store, as a table or as JSON.

use super::open_store;
use crate::cli::StatusArgs;
use crate::source::Position;
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
            format!("{:.1}s", accounting.guest_seconds),
            format!(
                "{:.1}M",
                accounting.peak_guest_memory as f64 / (1 << 20) as f64
            ),
            state
                .lag_seconds
                .map(|lag| format!("{lag:.1}s"))
                .unwrap_or_else(|| "-".into()),
            state.last_run_at.as_deref().unwrap_or("never"),
            state.shown_position()
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
        "dead_letters": state.accounting.dead_letters,
        "rows_rejected": state.accounting.rows_rejected,
        "retries": state.accounting.retries,
        "errors": state.accounting.errors,
        "guest_seconds": state.accounting.guest_seconds,
        "fuel_used": state.accounting.fuel_used,
        "peak_guest_memory_bytes": state.accounting.peak_guest_memory,
        "last_error": state.accounting.last_error,
        "last_error_at": state.accounting.last_error_at,
    })
}
