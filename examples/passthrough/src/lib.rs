//! Returns every row unchanged: the cost of the processor boundary, and nothing else.

use tidemark_sdk::{Batch, Change, Result};

fn passthrough(batch: Batch) -> Result<Vec<Change>> {
    Ok(batch.changes)
}

tidemark_sdk::transform!(passthrough);
