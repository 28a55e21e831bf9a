//! Masks personal data before it leaves: the `email` column is lowercased and replaced by its
//! SHA-256 (hex), columns named in `--set drop=a,b` are removed, and `masked: true` is added.
//!
//! ```text
//! host run --source sqlite://demo.db --table users \
//!   --module target/wasm32-wasip2/release/mask_pii.wasm --set drop=phone
//! ```

use sha2::{Digest, Sha256};
use tidemark_sdk::{Batch, Change, ConfigKey, Result, Value};

const KEYS: &[ConfigKey] = &[
    ConfigKey::optional("email_column", "the column hashed (default email)"),
    ConfigKey::optional("drop", "columns removed, comma-separated"),
];

/// An empty column name is a typo (`--set email_column=`): refused at start.
fn init() -> Result<()> {
    match tidemark_sdk::config("email_column") {
        Some(column) if column.trim().is_empty() => {
            Err("email_column is empty: name the column to hash, or leave it out".into())
        }
        _ => Ok(()),
    }
}

fn mask_pii(batch: Batch) -> Result<Vec<Change>> {
    let email_column = tidemark_sdk::config("email_column").unwrap_or_else(|| "email".into());
    let drop = tidemark_sdk::config("drop").unwrap_or_default();
    let dropped: Vec<&str> = drop
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let mut changes = batch.changes;
    for change in &mut changes {
        if let Some(Value::String(email)) = change.row.get(&email_column) {
            let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
            change
                .row
                .insert(email_column.clone(), Value::String(hex::encode(digest)));
        }
        for column in &dropped {
            change.row.shift_remove(*column);
        }
        change.row.insert("masked".into(), Value::Bool(true));
    }
    Ok(changes)
}

tidemark_sdk::transform!(mask_pii, keys = KEYS, init = init);
