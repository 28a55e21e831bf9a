//! Test guest of contract 0.2: a transform that answers with each kind of 0.2 result.
//!
//! - `--set reject=13,42`: rejects the rows whose `id` is listed (reason "row 13 is on the
//!   reject list") and passes the others on, each with `"checked": true`;
//! - `--set fatal_on=13`: fails a batch that holds a row whose `id` is listed as fatal, with
//!   `?` on the row's result, as a transform that cannot read one row does (an empty batch
//!   passes);
//! - `--set fail=fatal`: fails every batch as fatal, an empty one too;
//! - `--set fail=retry-later --set until=<Unix time in ms>`: asks for every batch to be
//!   retried later (after `after_ms`, default 100) until the wall clock passes `until`, then
//!   transforms as above.
//!
//! It declares its keys, so a key it does not take stops the run at start, and its `init`
//! refuses a `fail` it does not know and an `until` that is not a number.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tidemark_sdk::{config, Batch, ConfigKey, Error, Result, Transformed, Value};

const KEYS: &[ConfigKey] = &[
    ConfigKey::optional("reject", "ids of the rows to reject, comma-separated"),
    ConfigKey::optional(
        "fatal_on",
        "ids of the rows that fail their batch as fatal, comma-separated",
    ),
    ConfigKey::optional("fail", "fatal, or retry-later (until `until`)"),
    ConfigKey::optional(
        "until",
        "Unix time in ms until which retry-later is answered",
    ),
    ConfigKey::optional("after_ms", "the delay retry-later asks for (default 100)"),
];

fn init() -> Result<()> {
    match config("fail").as_deref() {
        None | Some("fatal") | Some("retry-later") => {}
        Some(other) => {
            return Err(Error::fatal(format!(
                "fail={other:?}: use fail=fatal or fail=retry-later"
            )))
        }
    }
    number("until")?;
    number("after_ms")?;
    Ok(())
}

fn number(key: &str) -> Result<Option<u64>> {
    config(key)
        .map(|value| {
            value
                .trim()
                .parse()
                .map_err(|_| Error::fatal(format!("{key}={value:?} is not a number")))
        })
        .transpose()
}

fn answer(batch: Batch) -> Result<Transformed> {
    match config("fail").as_deref() {
        Some("fatal") => return Err(Error::fatal(format!("told to fail batch {}", batch.id))),
        Some("retry-later") => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64);
            if now < number("until")?.unwrap_or(u64::MAX) {
                let after = Duration::from_millis(number("after_ms")?.unwrap_or(100));
                return Err(Error::retry_after("not ready yet", after));
            }
        }
        _ => {}
    }
    let listed = config("reject").unwrap_or_default();
    let listed: Vec<&str> = listed.split(',').map(str::trim).collect();
    let unreadable = config("fatal_on").unwrap_or_default();
    let unreadable: Vec<&str> = unreadable.split(',').map(str::trim).collect();
    let mut out = Transformed::new();
    for (index, mut change) in batch.changes.into_iter().enumerate() {
        let id = change
            .row
            .get("id")
            .map(Value::to_string)
            .unwrap_or_default();
        read(&id, &unreadable)?;
        if listed.contains(&id.as_str()) {
            out.reject(index, format!("row {id} is on the reject list"));
            continue;
        }
        change.row.insert("checked".into(), Value::Bool(true));
        out.push(change);
    }
    Ok(out)
}

/// A row's parse as a user writes it: its error string becomes the batch's fatal answer
/// through `?`.
fn read(id: &str, unreadable: &[&str]) -> std::result::Result<(), String> {
    match unreadable.contains(&id) {
        true => Err(format!("cannot read row {id}: no such plan")),
        false => Ok(()),
    }
}

tidemark_sdk::transform!(answer, keys = KEYS, init = init);
