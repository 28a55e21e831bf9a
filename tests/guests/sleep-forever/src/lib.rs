//! Test guest: a transform that sleeps and never returns. It waits in a host call
//! (wasi:clocks and wasi:io/poll), where epoch ticks never fire, so only the host's wall-clock
//! deadline stops it.

use std::time::Duration;

use tidemark_sdk::{Batch, Change, Result};

fn sleep(_batch: Batch) -> Result<Vec<Change>> {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

tidemark_sdk::transform!(sleep);
