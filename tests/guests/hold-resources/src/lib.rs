//! Test guest: a destination that makes the host hold resources and never lets go: with
//! `--set hold=fields` (the default) HTTP header sets of 24 KiB each, with `--set
//! hold=pollables` clock pollables, with `--set hold=headers` one header set that grows until
//! it is refused, with `--set hold=requests` unsent requests, each given a 512 KiB method and
//! a 512 KiB authority. Its own memory stays small: what grows is the host's, until the host's
//! caps stop it.

use tidemark_sdk::destination::wasi::clocks::monotonic_clock;
use tidemark_sdk::destination::wasi::http::types::{Fields, Method, OutgoingRequest};
use tidemark_sdk::{Batch, Error, Rejection};

fn hold(_batch: Batch) -> Result<Vec<Rejection>, Error> {
    let value = vec![b'x'; 8 << 10];
    let mut fields = Vec::new();
    let mut pollables = Vec::new();
    let mut requests = Vec::new();
    let method = Method::Other("X".repeat(512 << 10));
    let authority = "a".repeat(512 << 10);
    let hold = tidemark_sdk::config("hold").unwrap_or_else(|| "fields".to_owned());
    for n in 0u64.. {
        match hold.as_str() {
            "pollables" => {
                pollables.push(monotonic_clock::subscribe_duration(3_600_000_000_000 + n));
            }
            "requests" => {
                let request = OutgoingRequest::new(Fields::new());
                // Refused or not, the request is kept.
                let _ = request.set_method(&method);
                let _ = request.set_authority(Some(&authority));
                requests.push(request);
            }
            "headers" => {
                let headers = Fields::new();
                for name in 0.. {
                    if headers.append(&format!("x-hold-{name}"), &value).is_err() {
                        break;
                    }
                }
                fields.push(headers);
            }
            _ => {
                let headers = Fields::new();
                for name in 0..3 {
                    // Refused or not, the set is kept.
                    let _ = headers.append(&format!("x-hold-{name}"), &value);
                }
                fields.push(headers);
            }
        }
    }
    Err(Error::Fatal(format!(
        "still holding {} header sets, {} pollables and {} requests",
        fields.len(),
        pollables.len(),
        requests.len()
    )))
}

tidemark_sdk::destination!(hold);
