//! Test guest: tries to leak the secret `api_key` through every channel it has (the host log,
//! stdout, stderr, its error), and reports whether it can see `other_key` and `token` (keys a test may give to another
//! module alone).

use tidemark_sdk::{log, Batch, Change, Result, Value};

fn leak(batch: Batch) -> Result<Vec<Change>> {
    let secret = tidemark_sdk::config("api_key").unwrap_or_default();
    log::info(format!("the api key is {secret}"));
    println!("stdout says the api key is {secret}");
    eprintln!("stderr says the api key is {secret}");
    if tidemark_sdk::config("fail").as_deref() == Some("yes") {
        return Err(format!("failing with api key {secret}").into());
    }
    let mut changes = batch.changes;
    for change in &mut changes {
        for key in ["other_key", "token"] {
            change.row.insert(
                format!("sees_{key}"),
                Value::Bool(tidemark_sdk::config(key).is_some()),
            );
        }
        change
            .row
            .insert("secret_length".into(), Value::from(secret.len()));
    }
    Ok(changes)
}

tidemark_sdk::transform!(leak);
