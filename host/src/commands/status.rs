//! `host status`: every pipeline of a state store, as a table or as JSON.

use super::open_store;
use crate::front::cli::StatusArgs;
use crate::model::Position;
use crate::source::Driver;
use crate::state::{LeaseRow, PipelineState};

/// Runs `host status`.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let store = open_store(&args.state.state).await?;
    let pipelines = store.list().await?;
    let leases = store.leases().await?;
    let lease_of = |name: &str| leases.iter().find(|lease| lease.pipeline == name);
    if args.json {
        let list: Vec<serde_json::Value> = pipelines
            .iter()
            .map(|state| status_json(state, lease_of(&state.name)))
            .collect();
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
        if let Some(lease) = lease_of(&state.name) {
            println!("{:<20} {}", "", describe_lease(lease));
        }
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
    let workers = store.live_workers().await?;
    if !workers.is_empty() || !leases.is_empty() {
        println!("\n{} live workers", workers.len());
        for worker in &workers {
            println!(
                "  {:<32} {:>4} pipelines, {} leases lost, {} checkpoints fenced, since {}, heartbeat expires in {:.1}s",
                worker.worker,
                worker.pipelines,
                worker.leases_lost,
                worker.fenced,
                worker.started_at,
                worker.expires_in_ms as f64 / 1000.0
            );
        }
    }
    Ok(())
}

/// Who runs a pipeline, under which lease, until when.
fn describe_lease(lease: &LeaseRow) -> String {
    let seconds = lease.expires_in_ms as f64 / 1000.0;
    match &lease.owner {
        Some(owner) if lease.expires_in_ms >= 0 => {
            format!(
                "run by {owner} (lease {}, expires in {seconds:.1}s)",
                lease.token
            )
        }
        Some(owner) => format!(
            "lease {} of {owner} expired {:.1}s ago: free for any worker",
            lease.token, -seconds
        ),
        None => format!("lease {} released: free for any worker", lease.token),
    }
}

fn status_json(state: &PipelineState, lease: Option<&LeaseRow>) -> serde_json::Value {
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
        "lease": lease.map(|lease| serde_json::json!({
            "owner": lease.owner,
            "token": lease.token,
            "held": lease.is_held(),
            "expires_in_seconds": lease.expires_in_ms as f64 / 1000.0,
        })),
        "key_inventory": state.deletes.inventory,
        "deletes_detected": state.deletes.deletes_detected,
        "last_delete_check_at": state.deletes.last_check_at,
        "last_delete_check_seconds": state.deletes.last_check_seconds,
        "last_delete_check_ranges": state.deletes.last_check_ranges,
        "last_delete_check_keys": state.deletes.last_check_keys,
    })
}
