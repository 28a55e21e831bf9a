//! Test guest: returns its rows in the shape `--set shape=…` names, so that a test can check
//! that `host test` refuses exactly what `host run` refuses:
//! `bare` (rows without their `{"op", "row"}` envelope), `wrapped` (`{"rows": […]}`),
//! `insert` (an op the contract does not have); anything else passes the rows on unchanged.

use tidemark_sdk::{RawBatch, Result, Value};

fn reshape(batch: RawBatch) -> Result<String> {
    let changes: Vec<Value> = serde_json::from_str(&batch.rows)?;
    let shaped = match tidemark_sdk::config("shape").as_deref() {
        Some("bare") => Value::Array(changes.into_iter().map(|c| c["row"].clone()).collect()),
        Some("wrapped") => tidemark_sdk::json!({ "rows": changes }),
        Some("insert") => Value::Array(
            changes
                .into_iter()
                .map(|c| tidemark_sdk::json!({"op": "insert", "row": c["row"]}))
                .collect(),
        ),
        _ => Value::Array(changes),
    };
    Ok(shaped.to_string())
}

tidemark_sdk::transform_raw!(reshape);
