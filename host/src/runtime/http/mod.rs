//! Outbound HTTP for destinations. A destination reaches the network only through wasi:http,
//! and every request it makes passes here:
//!
//! 1. its origin must be on the pipeline's allow-list (`--allow-host`);
//! 2. a host name must resolve to public addresses only; loopback, link-local and private
//!    addresses are reachable only when the allow-list names them as IP literals, so neither
//!    DNS rebinding nor a `localhost` alias reaches inside the network. The address that was
//!    checked is the one connected to: the check runs inside the client's resolver;
//! 3. one call (one batch) may start `--max-requests-per-batch` requests; later ones are
//!    refused;
//! 4. the request body is taken in, up to `--max-request-size`, before the request waits for
//!    a slot (see [`Outbound::take_body`] for why);
//! 5. the pipeline's caps on requests in flight and per second are waited for. A request
//!    holds its in-flight slot until its response body is read to the end or dropped, so
//!    `--max-in-flight` bounds the pipeline's open connections too;
//! 6. the request is sent with a timeout that covers the whole response, whose body is cut
//!    off at `--max-response-size`. Redirects are returned to the guest, never followed, so a
//!    redirect to another origin is a new request that meets the allow-list again.
//!
//! The rule for a guest that sends several requests before reading their responses (the
//! SDK's `http::send_all`): requests past `--max-in-flight` wait for a slot in the order they
//! were started, their bodies already taken in (all waiting bodies of a pipeline together up
//! to `--max-request-size`), so the guest goes on to read the first responses, which frees
//! slots for the next ones. A guest that reads responses in the order it started the requests
//! never waits on itself; one that holds `--max-in-flight` unread response bodies and then
//! waits for another response does, until its deadline.
//!
//! The host's log names a request by its origin only: a path, query or user name may carry a
//! secret.
//!
//! Each call keeps the first request the host refused ([`HttpPolicy::refused`], see
//! `refused.rs` for why).
//!
//! One client per destination and pipeline keeps connections alive from batch to batch.
//!
//! This file holds the options ([`HttpOptions`]); the jobs live apart: `outbound.rs` (a
//! pipeline's network side: client, allow-list, slots, pacing, capped bodies), `hooks.rs`
//! (one call's hooks: its request count and first refusal), `origin.rs`, `resolve.rs`
//! (public addresses only), `pacer.rs`, `refused.rs` and `request_text.rs`.

mod hooks;
pub(super) mod origin;
mod outbound;
pub(super) mod pacer;
pub(super) mod refused;
pub(super) mod request_text;
pub(super) mod resolve;

use std::time::Duration;

pub(super) use hooks::HttpPolicy;
use origin::Origin;
pub(super) use outbound::Outbound;

/// What a pipeline's destination may do on the network.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HttpOptions {
    /// Origins requests may go to; empty: none.
    pub allow: Vec<Origin>,
    /// From sending a request to the end of its response body.
    pub timeout: Duration,
    pub max_response_bytes: u64,
    pub max_request_bytes: u64,
    /// Requests of the pipeline from sending to the end (or drop) of the response body.
    pub max_in_flight: usize,
    /// Requests one call may start.
    pub max_requests_per_batch: usize,
    pub requests_per_second: Option<f64>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            allow: Vec::new(),
            timeout: Duration::from_secs(30),
            max_response_bytes: 16 << 20,
            max_request_bytes: 16 << 20,
            max_in_flight: 4,
            max_requests_per_batch: 1000,
            requests_per_second: None,
        }
    }
}
