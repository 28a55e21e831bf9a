//! {{name}}: a Tidemark transform. Each batch of changed rows goes through `transform`; the
//! rows it returns go on to the next module, or to the host's output.
//!
//! It drops the rows of one plan, adds `email_domain`, and rejects rows whose email is no
//! address. Build and try it:
//!
//! ```text
//! cargo build --release
//! host check --module target/wasm32-wasip2/release/{{crate}}.wasm
//! host test --module target/wasm32-wasip2/release/{{crate}}.wasm --input rows.json --expect expected.json
//! ```

use tidemark_sdk::{json, log, Batch, ConfigKey, Error, Result, Transformed, Value};

/// The configuration keys this module takes: the host refuses any other key (a typo) and a
/// missing required one before it reads a row, and `host check` lists them.
const KEYS: &[ConfigKey] = &[
    // `--set drop_plan=trial` (a pipelines file: config = { drop_plan = "trial" }).
    ConfigKey::optional("drop_plan", "rows of this plan are left out (default free)"),
    // A secret, given as `--secret salt=ENV_VAR`: the host masks its value in everything
    // this module logs or returns.
    ConfigKey::optional("salt", "an example secret, unused").secret(),
];

/// Called once before any row is read: checks the configuration. An error stops the run at
/// start (exit 2) with its message.
fn init() -> Result<()> {
    match tidemark_sdk::config("drop_plan") {
        Some(plan) if plan.trim().is_empty() => {
            Err("drop_plan is empty: name a plan, or leave the key out".into())
        }
        _ => Ok(()),
    }
}

fn transform(batch: Batch) -> Result<Transformed> {
    let drop_plan = tidemark_sdk::config("drop_plan").unwrap_or_else(|| "free".into());
    let total = batch.changes.len();
    let mut out = Transformed::new();
    for (index, mut change) in batch.changes.into_iter().enumerate() {
        // An error fails the whole batch. `Error::fatal` (or `?`) is not tried again: `host
        // run` sets aside the rows that fail alone as dead letters with the message and
        // delivers the rest; `Error::retry_later` makes the host offer the same batch again
        // later, for what a later try can fix (a service that is down).
        if !change.row.contains_key("id") {
            return Err(Error::fatal(format!(
                "batch {}: a row has no \"id\" column",
                batch.id
            )));
        }
        // A transform passes a row on, changes it, or leaves it out...
        if change.row.get("plan").and_then(Value::as_str) == Some(drop_plan.as_str()) {
            continue;
        }
        let email = change.row.get("email").and_then(Value::as_str);
        // ...or rejects it: the host keeps the row as a dead letter with this reason
        // (`host dead-letters`, `host retry` once fixed) and the rest of the batch goes on.
        if email.is_some_and(|email| !email.contains('@')) && !change.is_delete() {
            out.reject(index, "the email is not an address");
            continue;
        }
        let domain = email
            .and_then(|email| email.split_once('@'))
            .map(|(_, domain)| domain.to_lowercase());
        change.row.insert("email_domain".into(), json!(domain));
        out.push(change);
    }
    // Lines in the host's log, tagged with this module and the pipeline.
    log::info(format!(
        "batch {}: passed on {} of {total} rows, rejected {}",
        batch.id,
        out.rows.len(),
        out.rejections.len()
    ));
    Ok(out)
}

tidemark_sdk::transform!(transform, keys = KEYS, init = init);
