//! Test guest: passes rows through, except the rows whose column `--set column=` (default
//! `id`) holds a value listed in `--set poison=13,42`, on which it fails the whole call the
//! way `--set how=` says: `error` (returns an error), `trap` (panics), `loop` (spins until
//! its deadline) or `memory` (allocates until its memory limit). With `--set every=true` it
//! fails every row. It passes an empty batch, so a host can tell a bad row from a module
//! that cannot run at all.

use tidemark_sdk::{config, Batch, Change, Result};

fn poisoned(batch: Batch) -> Result<Vec<Change>> {
    let listed: Vec<String> = config("poison")
        .unwrap_or_default()
        .split(',')
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .collect();
    let every = config("every").as_deref() == Some("true");
    let column = config("column").unwrap_or_else(|| "id".to_owned());
    let bad = batch.changes.iter().find(|change| {
        every
            || change.row.get(&column).is_some_and(|value| {
                let text = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                listed.contains(&text)
            })
    });
    let Some(bad) = bad else {
        return Ok(batch.changes);
    };
    let id = bad
        .row
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
        _ => Err(format!("cannot handle row {id}").into()),
    }
}

tidemark_sdk::transform!(poisoned);
