//! {{name}}: a Tidemark destination. Each batch of changed rows goes to `deliver`, which sends
//! it to another system over HTTP and tells the host what became of it.
//!
//! It POSTs the rows that have an email as JSON to `--set url=…` and rejects the others. Build
//! and try it against a local receiver:
//!
//! ```text
//! cargo build --release
//! host check --module target/wasm32-wasip2/release/{{crate}}.wasm
//! host test --module target/wasm32-wasip2/release/{{crate}}.wasm --input rows.json \
//!   --set url=http://127.0.0.1:8080/hook --allow-host http://127.0.0.1:8080
//! ```

use tidemark_sdk::http::{origin, Request};
use tidemark_sdk::{json, log, Batch, ConfigKey, Error, Rejection, Result, Value};

/// The configuration keys this module takes: the host refuses any other key (a typo) and a
/// missing required one before it reads a row, and `host check` lists them.
const KEYS: &[ConfigKey] = &[
    // `--set url=https://…`; the host lets requests reach only the origins given with
    // `--allow-host`.
    ConfigKey::required("url", "where each batch is POSTed"),
    // A secret, given as `--secret token=ENV_VAR`, masked by the host in every log line.
    ConfigKey::optional("token", "sent as Authorization: Bearer <token>").secret(),
];

/// Called once before any row is read: checks the configuration. An error stops the run at
/// start (exit 2) with its message.
fn init() -> Result<()> {
    let url = tidemark_sdk::require_config("url")?;
    let web = url.starts_with("http://") || url.starts_with("https://");
    if !web || origin(&url).is_none() {
        return Err(Error::fatal(format!("url {url:?} is not an http:// or https:// URL")));
    }
    Ok(())
}

fn deliver(batch: Batch) -> Result<Vec<Rejection>> {
    let url = tidemark_sdk::require_config("url")?;

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
    if let Some(token) = tidemark_sdk::config("token") {
        request = request.bearer_auth(&token);
    }
    // `?` on a request that got no response: refused by the host's allow-list is fatal
    // (naming --allow-host), a network error makes the host retry the batch later.
    let response = request
        .json(&json!({"batch": batch.id, "rows": rows}))?
        .send()?;
    if !response.is_success() {
        // 408, 429 and 5xx: the host offers the same batch again later (after Retry-After);
        // other statuses stop the pipeline with this message.
        return Err(response.error(&url, &response.body_excerpt(200)));
    }
    log::info(format!(
        "batch {}: posted {} rows, rejected {}",
        batch.id,
        rows.len(),
        rejected.len()
    ));
    Ok(rejected)
}

tidemark_sdk::destination!(deliver, keys = KEYS, init = init);
