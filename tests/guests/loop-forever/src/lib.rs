//! Test guest: never returns, so the host's deadline must stop it.

use tidemark_sdk::{Batch, Change, Result};

fn spin(batch: Batch) -> Result<Vec<Change>> {
    let mut counter: u64 = 0;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(batch.changes.len() as u64 + 1));
    }
}

tidemark_sdk::transform!(spin);
