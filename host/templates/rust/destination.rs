//! {{name}}: a Tidemark destination. Each batch of changed rows goes to `deliver`, which sends
//! it to another system over HTTP and tells the host what became of it.
//!
//! It POSTs the rows that have an email as JSON to `--set url=…` and rejects the others. Build
//! and try it against a local receiver:
//!
//! ```text
//! cargo build --release
//! host test --module target/wasm32-wasip2/release/{{crate}}.wasm --input rows.json \
//!   --set url=http://127.0.0.1:8080/hook --allow-host http://127.0.0.1:8080
//! ```

use tidemark_sdk::http::Request;
use tidemark_sdk::{json, log, Batch, DeliveryError, Rejection, Value};

fn deliver(batch: Batch) -> Result<Vec<Rejection>, DeliveryError> {
    // Configuration: `--set url=https://…`; the host lets requests reach only the origins
    // given with `--allow-host`. A missing key is fatal: the pipeline stops with this message.
    let url = tidemark_sdk::require_config("url").map_err(|err| DeliveryError::Fatal(err.0))?;

    // A row this destination cannot take is rejected: the host keeps it as a dead letter
    // (`host dead-letters`, `host retry`) and the rest of the batch counts as delivered.
    let mut rejected = Vec::new();
    let mut rows = Vec::new();
    for (index, change) in batch.changes.iter().enumerate() {
        match change.row.get("email").and_then(Value::as_str) {
            Some(_) => rows.push(json!({"op": change.op, "row": change.row})),
            None => rejected.push(Rejection {
                index: index as u32,
                reason: "the row has no email".into(),
            }),
        }
    }

    // The batch id is the same on every delivery of the same rows: an idempotency key.
    let mut request = Request::post(&url).header("idempotency-key", &batch.id);
    // A secret, given as `--secret token=ENV_VAR`, masked by the host in every log line.
    if let Some(token) = tidemark_sdk::config("token") {
        request = request.bearer_auth(&token);
    }
    let response = request
        .json(&json!({"batch": batch.id, "rows": rows}))
        .and_then(Request::send)
        // Refused by the host's allow-list: fatal, naming --allow-host; a network error: retry.
        .map_err(|err| err.delivery_error(&url))?;
    if !response.is_success() {
        // 408, 429 and 5xx: the host offers the same batch again later (after Retry-After);
        // other statuses stop the pipeline with this message.
        return Err(response.delivery_error(&url, &response.body_excerpt(200)));
    }
    log::info(format!(
        "batch {}: posted {} rows, rejected {}",
        batch.id,
        rows.len(),
        rejected.len()
    ));
    Ok(rejected)
}

tidemark_sdk::destination!(deliver);
