//! Test guest: a destination whose answers would cost the host more than itself. With
//! `--config mode=repeat` (the default) it rejects row 0 ten times; with `mode=out-of-range`,
//! a row past the end of the batch; with `mode=wordy`, every row, each with a 20 KiB reason;
//! with `mode=flood`, row 0 four million times (48 MB of answer in its memory, 128 MiB once
//! copied into the host's); with `mode=huge-reason`, row 0 once, with a 50 MiB reason.

use tidemark_sdk::{Batch, Error, Rejection};

fn deliver(batch: Batch) -> Result<Vec<Rejection>, Error> {
    let rows = batch.changes.len() as u32;
    Ok(match tidemark_sdk::config("mode").as_deref() {
        Some("out-of-range") => vec![Rejection {
            index: rows,
            reason: "no such row".into(),
        }],
        Some("wordy") => (0..rows)
            .map(|index| Rejection {
                index,
                reason: format!("row {index}: {}", "why ".repeat(5 << 10)),
            })
            .collect(),
        // Empty reasons: the answer costs the module 12 bytes a rejection, nothing more.
        Some("flood") => (0..4_000_000)
            .map(|_| Rejection {
                index: 0,
                reason: String::new(),
            })
            .collect(),
        Some("huge-reason") => vec![Rejection {
            index: 0,
            reason: "why ".repeat(50 << 18),
        }],
        _ => (0..10)
            .map(|_| Rejection {
                index: 0,
                reason: "again".into(),
            })
            .collect(),
    })
}

tidemark_sdk::destination!(deliver);
