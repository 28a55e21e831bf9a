//! Test guest: a destination that sends `--config requests=N` (default 3) GETs to `--config
//! url=…` at once with `http::send_all`, so that the host's `--max-in-flight` decides how many
//! are in flight together. Delivered when every answer is a success, else retry later.

use tidemark_sdk::http::{send_all, Request};
use tidemark_sdk::{require_config, Batch, Error, Rejection};

fn deliver(_batch: Batch) -> Result<Vec<Rejection>, Error> {
    let url = require_config("url")?;
    let count: usize = tidemark_sdk::config("requests")
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let requests = (0..count)
        .map(|n| Request::get(format!("{url}?n={n}")))
        .collect();
    for response in send_all(requests) {
        match response {
            Ok(response) if response.is_success() => {}
            Ok(response) => return Err(response.error("the receiver", "")),
            Err(err) => return Err(Error::from(err)),
        }
    }
    Ok(Vec::new())
}

tidemark_sdk::destination!(deliver);
