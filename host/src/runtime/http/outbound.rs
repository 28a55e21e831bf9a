//! The network side of one destination module in one pipeline ([`Outbound`]), shared by the
//! instances that deliver its batches: its client (connections kept alive from batch to
//! batch), the allow-list, the in-flight slots and their queue, the budget of request bodies
//! waiting for a slot, the pacer, and the response body that holds its slot until it ends
//! ([`CappedBody`]). What one call may do is counted in `hooks.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use super::HttpOptions;
use crate::model::error::{Error, Result};
use crate::runtime::http::origin::Origin;
use crate::runtime::http::pacer::Pacer;
use crate::runtime::http::refused::{NotSent, Refused};
use crate::runtime::http::resolve::{chain, find_cause, PublicResolver, ResolveError};

/// The network side of one destination module in one pipeline, shared by the instances
/// that deliver its batches.
pub struct Outbound {
    pub(super) module: Arc<str>,
    pub(super) pipeline: Arc<str>,
    pub(super) options: HttpOptions,
    client: reqwest::Client,
    /// Requests sent whose response body is not yet read to its end or dropped.
    in_flight: Arc<Semaphore>,
    /// Bytes of request bodies held by the host, from taking them in until they are sent:
    /// `--max-request-size` for the whole pipeline, so that many requests waiting for a slot
    /// cannot hold many bodies.
    body_bytes: Arc<Semaphore>,
    pacer: Option<Pacer>,
}

impl Outbound {
    pub fn new(module: Arc<str>, pipeline: Arc<str>, options: &HttpOptions) -> Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect to addresses the resolver never checked.
            .no_proxy()
            .dns_resolver(Arc::new(PublicResolver))
            .connect_timeout(options.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            // Connections in use are bounded by the in-flight slots; idle ones by this.
            .pool_max_idle_per_host(options.max_in_flight.max(1))
            .build()
            .map_err(|err| Error::fatal(format!("cannot create the HTTP client: {err}")))?;
        Ok(Outbound {
            module,
            pipeline,
            client,
            in_flight: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
            body_bytes: Arc::new(Semaphore::new(permits(options.max_request_bytes))),
            pacer: options.requests_per_second.map(Pacer::new),
            options: options.clone(),
        })
    }

    /// Queues for an in-flight slot, in the order the guest starts its requests: the guest
    /// reads responses in that order (the SDK's `send_all` does), and a later request that took
    /// a slot first would hold it with a response the guest does not read until the earlier
    /// one, which waits for that slot, is answered. Tasks run in any order, so the place in
    /// the queue is taken here, synchronously, when the guest starts the request.
    pub(super) fn queue_for_slot(&self) -> Slot {
        let mut slot: Slot = Box::pin(self.in_flight.clone().acquire_owned());
        // The first poll joins the semaphore's queue (or takes a free slot); the request's
        // task polls it again with its own waker.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match slot.as_mut().poll(&mut cx) {
            Poll::Ready(taken) => Box::pin(std::future::ready(taken)),
            Poll::Pending => slot,
        }
    }

    pub(super) async fn send(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        slot: Slot,
    ) -> std::result::Result<http::Response<WasiBody>, NotSent> {
        let uri = request.uri().clone();
        let origin = match Origin::of(&uri) {
            Some(origin) if self.options.allow.contains(&origin) => origin,
            Some(origin) => {
                let why = format!(
                    "its origin is not on the allow-list; allow it with --allow-host {origin}"
                );
                return Err(self.refuse(&origin, why, HttpError::HttpRequestDenied));
            }
            None => {
                let refused = Refused {
                    origin: "a URL without an http:// or https:// origin".into(),
                    why: "only http:// and https:// origins can be allowed (--allow-host)".into(),
                };
                return Err(self.refused(refused, HttpError::HttpRequestDenied));
            }
        };
        let (parts, body) = request.into_parts();
        let (body, held) = self.take_body(body, &origin).await?;
        let slot = slot
            .await
            .map_err(|_| HttpError::InternalError(Some("the request queue closed".into())))?;
        if let Some(pacer) = &self.pacer {
            pacer.wait().await;
        }
        let response = self
            .client
            .request(parts.method, uri.to_string())
            .headers(parts.headers)
            .body(body)
            .timeout(self.options.timeout)
            .send()
            .await
            .map_err(|err| self.request_error(&origin, err))?;
        // The body went out with the request.
        drop(held);
        let max = self.options.max_response_bytes;
        if let Some(length) = response.content_length().filter(|&length| length > max) {
            tracing::warn!(
                module = &*self.module,
                pipeline = &*self.pipeline,
                "response from {origin} has {length} bytes, over the cap of {max}; raise --max-response-size to accept it"
            );
            return Err(HttpError::HttpResponseBodySize(Some(length)).into());
        }
        let response: http::Response<reqwest::Body> = response.into();
        Ok(response.map(|body| {
            CappedBody {
                body,
                remaining: max,
                max,
                slot: Some(slot),
            }
            .boxed_unsync()
        }))
    }

    /// Takes in a request body, refusing it past `--max-request-size`. It is taken in before
    /// the request waits for its slot: a guest that writes the bodies of several requests
    /// before reading any response must never block on a full pipe while the slot it waits
    /// for is held by a response it has not read yet. Bodies waiting for slots share one
    /// budget of `--max-request-size` per pipeline (a guest past it waits to write); the
    /// returned permit holds this body's share until the request is sent. The body is sent
    /// whole, with its `Content-Length`, as receivers expect.
    async fn take_body(
        &self,
        mut body: WasiBody,
        origin: &Origin,
    ) -> std::result::Result<(Bytes, Option<OwnedSemaphorePermit>), NotSent> {
        let max = self.options.max_request_bytes;
        let mut taken = bytes::BytesMut::new();
        let mut held: Option<OwnedSemaphorePermit> = None;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            if taken.len() as u64 + data.len() as u64 > max {
                let why = format!(
                    "its body is over the cap of {max} bytes; raise --max-request-size to send it"
                );
                return Err(self.refuse(origin, why, HttpError::HttpRequestBodySize(Some(max))));
            }
            let share = u32::try_from(data.len()).map_err(|_| {
                HttpError::InternalError(Some("a request body frame over 4 GiB".into()))
            })?;
            let permit = self
                .body_bytes
                .clone()
                .acquire_many_owned(share)
                .await
                .map_err(|_| HttpError::InternalError(Some("the request queue closed".into())))?;
            match &mut held {
                Some(held) => held.merge(permit),
                None => held = Some(permit),
            }
            taken.extend_from_slice(&data);
        }
        Ok((taken.freeze(), held))
    }

    /// A request refused by policy: logged, and told to the guest as `error`.
    fn refuse(&self, origin: &Origin, why: String, error: HttpError) -> NotSent {
        let refused = Refused {
            origin: origin.to_string(),
            why,
        };
        self.refused(refused, error)
    }

    fn refused(&self, refused: Refused, error: HttpError) -> NotSent {
        tracing::warn!(
            module = &*self.module,
            pipeline = &*self.pipeline,
            "refused outbound request to {refused}"
        );
        NotSent::Refused(refused, error)
    }

    fn request_error(&self, origin: &Origin, err: reqwest::Error) -> NotSent {
        // reqwest's message names the whole URL, which may carry a secret.
        let err = err.without_url();
        if let Some(refusal) = find_cause::<ResolveError>(&err) {
            return match refusal {
                ResolveError::NotPublic {
                    host,
                    address,
                    kind,
                } => {
                    let literal = Origin {
                        host: address.to_string(),
                        ..origin.clone()
                    };
                    let why = format!("{host} resolves to the {kind} address {address}; to reach it, list it by address: --allow-host {literal}");
                    self.refuse(origin, why, HttpError::DestinationIpProhibited)
                }
                ResolveError::Lookup { host, source } => NotSent::Failed(HttpError::DnsError {
                    rcode: Some(format!("cannot resolve {host}: {source}")),
                    info_code: None,
                }),
            };
        }
        tracing::debug!(
            module = &*self.module,
            pipeline = &*self.pipeline,
            "request to {origin} failed: {}",
            chain(&err)
        );
        NotSent::Failed(if err.is_timeout() {
            if err.is_connect() {
                HttpError::ConnectionTimeout
            } else {
                HttpError::HttpResponseTimeout
            }
        } else if err.is_connect() {
            HttpError::ConnectionRefused
        } else {
            HttpError::InternalError(Some(chain(&err)))
        })
    }
}

/// A place in the queue for an in-flight slot, taken when the guest starts the request.
pub(super) type Slot = Pin<
    Box<
        dyn Future<Output = std::result::Result<OwnedSemaphorePermit, tokio::sync::AcquireError>>
            + Send,
    >,
>;

/// Semaphore permits for a number of bytes (a semaphore holds fewer than `usize::MAX`).
fn permits(bytes: u64) -> usize {
    usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .clamp(1, Semaphore::MAX_PERMITS)
}

/// A response body that fails once it passes the cap, and holds its request's in-flight slot
/// until it ends, fails or is dropped: an open body is an open connection.
struct CappedBody {
    body: reqwest::Body,
    remaining: u64,
    max: u64,
    slot: Option<OwnedSemaphorePermit>,
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, HttpError>>> {
        let frame = match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                self.slot = None;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(err))) => {
                self.slot = None;
                return Poll::Ready(Some(Err(if err.is_timeout() {
                    HttpError::HttpResponseTimeout
                } else {
                    HttpError::HttpResponseIncomplete
                })));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let length = data.len() as u64;
            if length > self.remaining {
                self.slot = None;
                let max = self.max;
                return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(max)))));
            }
            self.remaining -= length;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
