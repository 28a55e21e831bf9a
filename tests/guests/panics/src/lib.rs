//! Test guest: panics on every batch.

use tidemark_sdk::{Batch, Change, Result};

fn explode(batch: Batch) -> Result<Vec<Change>> {
    panic!("guest panicked on batch {}", batch.id);
}

tidemark_sdk::transform!(explode);
