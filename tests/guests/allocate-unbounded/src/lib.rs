//! Test guest: allocates until something stops it, so the host's memory cap must.

use tidemark_sdk::{Batch, Change, Result};

fn hoard(_batch: Batch) -> Result<Vec<Change>> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
}

tidemark_sdk::transform!(hoard);
