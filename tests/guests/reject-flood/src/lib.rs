//! Test guest: a destination whose answers would cost the host more than itself. With
//! `--config mode=repeat` (the default) it rejects row 0 a million times; with
//! `mode=out-of-range`, a row past the end of the batch; with `mode=wordy`, every row, each
//! with a 20 KiB reason.

use tidemark_sdk::{Batch, DeliveryError, Rejection};

fn deliver(batch: Batch) -> Result<Vec<Rejection>, DeliveryError> {
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
        _ => (0..1_000_000)
            .map(|_| Rejection {
                index: 0,
                reason: "again".into(),
            })
            .collect(),
    })
}

tidemark_sdk::destination!(deliver);
