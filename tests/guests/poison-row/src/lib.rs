//! Test guest, and the fixture of contract 0.1.0: built with wit-bindgen straight from
//! `wit/legacy/0.1.0`, without the SDK (which implements 0.2), it shows that the host still
//! runs modules built before 0.2, whose transforms fail a batch with an error string.
//!
//! It passes rows through, except the rows whose column `--set column=` (default `id`) holds
//! a value listed in `--set poison=13,42`, on which it fails the whole call the way
//! `--set how=` says: `error` (returns 0.1's error string), `trap` (panics), `loop` (spins
//! until its deadline) or `memory` (allocates until its memory limit). With
//! `--set every=true` it fails every row. It passes an empty batch, so a host can tell a bad
//! row from a module that cannot run at all.

wit_bindgen::generate!({
    world: "transform",
    path: "../../../wit/legacy/0.1.0",
});

use exports::tidemark::processor::transformer::Guest;
use serde_json::Value;
use tidemark::processor::host::config;
use tidemark::processor::types::Batch;

struct Poisoned;

impl Guest for Poisoned {
    fn transform(batch: Batch) -> Result<String, String> {
        let listed: Vec<String> = config("poison")
            .unwrap_or_default()
            .split(',')
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty())
            .collect();
        let every = config("every").as_deref() == Some("true");
        let column = config("column").unwrap_or_else(|| "id".to_owned());
        let changes: Vec<Value> = serde_json::from_str(&batch.rows).map_err(|e| e.to_string())?;
        let bad = changes.iter().find(|change| {
            every
                || change["row"].get(&column).is_some_and(|value| {
                    let text = value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_owned);
                    listed.contains(&text)
                })
        });
        let Some(bad) = bad else {
            return Ok(batch.rows);
        };
        let id = bad["row"]
            .get("id")
            .map(ToString::to_string)
            .unwrap_or_default();
        match config("how").as_deref().unwrap_or("error") {
            "trap" => panic!("cannot handle row {id}"),
            "loop" => {
                let mut counter: u64 = 0;
                loop {
                    counter = std::hint::black_box(counter.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            _ => Err(format!("cannot handle row {id}")),
        }
    }
}

export!(Poisoned);
