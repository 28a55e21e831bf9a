//! Returns every row unchanged, without parsing them: the cost of the processor boundary
//! (instance, call, copying the batch in and out), and nothing else.

use tidemark_sdk::{ConfigKey, RawBatch, Result};

/// It takes no configuration: any key given is a mistake the host reports at start.
const KEYS: &[ConfigKey] = &[];

fn passthrough(batch: RawBatch) -> Result<String> {
    Ok(batch.rows)
}

tidemark_sdk::transform_raw!(passthrough, keys = KEYS);
