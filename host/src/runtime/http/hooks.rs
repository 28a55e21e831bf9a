//! The wasi:http hooks of one call ([`HttpPolicy`]): every request a destination's instance
//! starts goes through them. They count the call's requests against
//! `--max-requests-per-batch`, refuse everything to a module without network access, keep the
//! first request the host refused, and hand the rest to the pipeline's [`Outbound`].

use std::future::Future;
use std::sync::Arc;

use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::outbound::Outbound;
use crate::runtime::http::origin::Origin;
use crate::runtime::http::refused::{FirstRefusal, Refused};

/// The hooks one instance's wasi:http calls go through, so one per call. Transforms have no
/// outbound side: they do not even link wasi:http, and a destination without one is refused
/// everything.
pub struct HttpPolicy {
    outbound: Option<Arc<Outbound>>,
    /// Requests this call has started.
    started: usize,
    refusals: FirstRefusal,
}

impl HttpPolicy {
    pub fn new(outbound: Option<Arc<Outbound>>) -> Self {
        HttpPolicy {
            outbound,
            started: 0,
            refusals: FirstRefusal::default(),
        }
    }

    /// The first request of this call the host refused by policy, if any.
    pub fn refused(&self) -> Option<Refused> {
        self.refusals.first()
    }
}

type SendResult = std::result::Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = std::result::Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = std::result::Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let outbound = self.outbound.clone();
        self.started = self.started.saturating_add(1);
        let origin = || {
            Origin::of(request.uri())
                .map_or_else(|| "a URL without an origin".to_owned(), |o| o.to_string())
        };
        if let Some(outbound) = &outbound {
            let max = outbound.options.max_requests_per_batch;
            if self.started > max {
                // Logged once per call: a guest looping on refusals would flood the log.
                if self.started == max + 1 {
                    tracing::warn!(
                        module = &*outbound.module,
                        pipeline = &*outbound.pipeline,
                        "refused outbound requests past the cap of {max} per batch; raise --max-requests-per-batch if the module needs more"
                    );
                }
                let why = format!(
                    "more than {max} requests in one batch; raise --max-requests-per-batch"
                );
                self.refusals.keep(Refused {
                    origin: origin(),
                    why: why.clone(),
                });
                return Box::new(async move { Err(HttpError::InternalError(Some(why))) });
            }
        }
        let slot = outbound.as_ref().map(|outbound| outbound.queue_for_slot());
        let Some((outbound, slot)) = outbound.zip(slot) else {
            let refused = Refused {
                origin: origin(),
                why: "this module has no network access".into(),
            };
            tracing::warn!("refused outbound request to {refused}");
            self.refusals.keep(refused);
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        };
        let refusals = self.refusals.clone();
        Box::new(async move {
            let response = outbound
                .send(request, slot)
                .await
                .map_err(|not_sent| refusals.error_code(not_sent))?;
            let done: Box<dyn Future<Output = std::result::Result<(), HttpError>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }

    /// A request body buffers two writes of at most this much, so that the unsent requests a
    /// module holds stay within what its memory limit allows (see `limits::host_resources`).
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        crate::runtime::sched::limits::BODY_CHUNK_BYTES
    }
}
