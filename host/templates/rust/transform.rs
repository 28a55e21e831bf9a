//! {{name}}: a Tidemark transform. Each batch of changed rows goes through `transform`; the
//! rows it returns go on to the next module, or to the host's output.
//!
//! It drops the rows of one plan and adds `email_domain`. Build and try it:
//!
//! ```text
//! cargo build --release
//! host test --module target/wasm32-wasip2/release/{{crate}}.wasm --input rows.json --expect expected.json
//! ```

use tidemark_sdk::{json, log, Batch, Change, Result, Value};

fn transform(batch: Batch) -> Result<Vec<Change>> {
    // Configuration: `--set drop_plan=trial` (a pipelines file: config = { drop_plan = "trial" }).
    let drop_plan = tidemark_sdk::config("drop_plan").unwrap_or_else(|| "free".into());
    // A secret is read the same way, given as `--secret salt=ENV_VAR`; the host masks its
    // value in everything this module logs or returns.
    let _salt = tidemark_sdk::config("salt");

    let total = batch.changes.len();
    let mut out = Vec::with_capacity(total);
    for mut change in batch.changes {
        // Returning an error fails the whole batch: the host keeps its watermark, shows the
        // message with the module and the batch id, and tries the batch again later.
        if !change.row.contains_key("id") {
            return Err(format!("batch {}: a row has no \"id\" column", batch.id).into());
        }
        // A transform passes a row on, changes it, or leaves it out. (A destination can also
        // reject a row, which the host keeps as a dead letter: `host new --world destination`.)
        if change.row.get("plan").and_then(Value::as_str) == Some(drop_plan.as_str()) {
            continue;
        }
        let domain = change
            .row
            .get("email")
            .and_then(Value::as_str)
            .and_then(|email| email.split_once('@'))
            .map(|(_, domain)| domain.to_lowercase());
        change.row.insert("email_domain".into(), json!(domain));
        out.push(change);
    }
    // Lines in the host's log, tagged with this module and the pipeline.
    log::info(format!("batch {}: passed on {} of {total} rows", batch.id, out.len()));
    Ok(out)
}

tidemark_sdk::transform!(transform);
