//! `--metrics ADDR`: the pipelines' accounting as Prometheus (OpenMetrics) metrics on
//! `GET /metrics`. The numbers come from the state store, the same numbers `host status`
//! shows, so the two cannot disagree and a restart loses no counter.
//!
//! A scrape must never slow the pipelines down, however many arrive: the store is read on a
//! connection of its own (never the one checkpoints are written on), at most once per
//! [`REFRESH`] whatever the number of scrapes (one scrape renders, the others wait for it or
//! take its text), and the listener holds at most [`MAX_CONNECTIONS`] connections, each for
//! at most `CONNECTION_LIFETIME`; connections beyond that are closed at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::model::error::{Error, Result};
use crate::state::StateStore;

/// How old the served text may be: Prometheus scrapes every 15 s or more.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Connections served at once; more are closed as they are accepted.
pub const MAX_CONNECTIONS: usize = 16;

/// How long a client may take to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one connection is kept, whatever it does: a slow or idle client gives its slot up.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PipelineLabel {
    pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

/// Listens on `address` and serves metrics until the process ends. `store` is only used to
/// open a reading handle of its own.
pub async fn serve(address: SocketAddr, store: Arc<StateStore>) -> Result<()> {
    let listener = TcpListener::bind(address).await.map_err(|err| {
        Error::invalid(format!("cannot listen on {address} for metrics: {err}"))
            .with_hint("pass --metrics with a free address, such as 127.0.0.1:9464")
    })?;
    tracing::info!("serving metrics on http://{address}/metrics");
    let cached = Arc::new(Cached::new(store.reader()));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!("metrics: cannot accept a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Full: closed unanswered, which costs less than queueing it.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!("metrics: {MAX_CONNECTIONS} connections open; closing another");
                continue;
            };
            let cached = cached.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let cached = cached.clone();
                    async move { Ok::<_, Infallible>(respond(request, &cached).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => tracing::debug!("metrics: connection ended: {err}"),
                    Err(_) => {
                        tracing::debug!("metrics: connection closed after {CONNECTION_LIFETIME:?}")
                    }
                }
                drop(slot);
            });
        }
    });
    Ok(())
}

/// The last rendering, and the one refresh that may run at a time.
struct Cached {
    store: StateStore,
    latest: Mutex<Option<(Instant, std::result::Result<Bytes, String>)>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl Cached {
    fn new(store: StateStore) -> Self {
        Cached {
            store,
            latest: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn fresh(&self) -> Option<std::result::Result<Bytes, String>> {
        let latest = self
            .latest
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        match &*latest {
            Some((at, text)) if at.elapsed() < REFRESH => Some(text.clone()),
            _ => None,
        }
    }

    /// The metrics text, rendered at most once per [`REFRESH`]: while one scrape renders,
    /// the others wait for its text.
    async fn text(&self) -> std::result::Result<Bytes, String> {
        if let Some(text) = self.fresh() {
            return text;
        }
        let _refreshing = self.refreshing.lock().await;
        if let Some(text) = self.fresh() {
            return text;
        }
        let text = render(&self.store)
            .await
            .map(Bytes::from)
            .map_err(|err| err.to_string());
        *self
            .latest
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some((Instant::now(), text.clone()));
        text
    }
}

async fn respond(
    request: Request<hyper::body::Incoming>,
    cached: &Cached,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: Bytes| {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"metrics are at /metrics\n"),
        );
    }
    match cached.text().await {
        Ok(text) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text,
        ),
        Err(err) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            Bytes::from(format!("cannot read the state store: {err}\n")),
        ),
    }
}

/// The live workers' figures, as of their last heartbeat: every worker of the store serves
/// the same ones, so any of them can be scraped.
async fn register_workers(store: &StateStore, registry: &mut Registry) -> Result<()> {
    let workers = store.live_workers().await?;
    let live: Gauge = Gauge::default();
    live.set(workers.len() as i64);
    registry.register(
        "workers_live",
        "Workers whose heartbeat has not expired",
        live,
    );
    let owned = Family::<WorkerLabel, Gauge>::default();
    registry.register(
        "worker_pipelines",
        "Pipelines a worker holds the lease of",
        owned.clone(),
    );
    let lost = Family::<WorkerLabel, Counter>::default();
    registry.register(
        "worker_leases_lost",
        "Leases a worker lost to another after being paused past them",
        lost.clone(),
    );
    let fenced = Family::<WorkerLabel, Counter>::default();
    registry.register(
        "worker_fenced_checkpoints",
        "Pipelines given up because a checkpoint, dead-letter write or delivery found their lease no longer current",
        fenced.clone(),
    );
    for worker in workers {
        let label = WorkerLabel {
            worker: worker.worker,
        };
        owned.get_or_create(&label).set(worker.pipelines);
        lost.get_or_create(&label)
            .inc_by(worker.leases_lost.max(0) as u64);
        fenced
            .get_or_create(&label)
            .inc_by(worker.fenced.max(0) as u64);
    }
    Ok(())
}

/// The metrics text for every pipeline in the store.
pub async fn render(store: &StateStore) -> Result<String> {
    let pipelines = store.list().await?;
    let mut registry = Registry::with_prefix("tidemark");
    let counter = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<PipelineLabel, Counter>::default();
        registry.register(name, help, family.clone());
        family
    };
    let rows = counter(&mut registry, "rows_delivered", "Rows delivered");
    let batches = counter(&mut registry, "batches_delivered", "Batches delivered");
    let rejected = counter(
        &mut registry,
        "rows_rejected",
        "Rows the destination rejected (kept as dead letters)",
    );
    let parked = counter(
        &mut registry,
        "rows_parked",
        "Rows a module failed on alone, parked as dead letters so the rest went on",
    );
    let retries = counter(
        &mut registry,
        "retries",
        "Times a destination asked for a batch again",
    );
    let errors = counter(&mut registry, "errors", "Failed passes and runs");
    let fuel = counter(&mut registry, "fuel_used", "Fuel burned by modules");
    let guest_seconds = Family::<PipelineLabel, Counter<f64, AtomicU64>>::default();
    registry.register(
        "guest_seconds",
        "Time spent inside module calls, failed ones included",
        guest_seconds.clone(),
    );
    let gauge = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<PipelineLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(name, help, family.clone());
        family
    };
    let peak_memory = gauge(
        &mut registry,
        "peak_guest_memory_bytes",
        "Largest linear memory one module instance reached",
    );
    let lag = gauge(
        &mut registry,
        "lag_seconds",
        "The database's clock minus the watermark, at the end of the last pass",
    );
    let letters = gauge(
        &mut registry,
        "dead_letters",
        "Rejected and parked rows kept",
    );
    let last_run = gauge(
        &mut registry,
        "last_run_timestamp_seconds",
        "When the last pass ended (Unix time)",
    );
    let deletes = counter(
        &mut registry,
        "deletes_detected",
        "Keys found gone from the table by delete checks and delivered as deletes",
    );
    let check_seconds = gauge(
        &mut registry,
        "last_delete_check_seconds",
        "How long the last delete check took",
    );
    let check_ranges = gauge(
        &mut registry,
        "last_delete_check_ranges",
        "Ranges of keys the last delete check read key by key",
    );
    for state in &pipelines {
        let label = PipelineLabel {
            pipeline: state.name.clone(),
        };
        let count = |value: i64| value.max(0) as u64;
        let accounting = &state.accounting;
        rows.get_or_create(&label).inc_by(count(state.rows_synced));
        batches
            .get_or_create(&label)
            .inc_by(count(state.batches_synced));
        rejected
            .get_or_create(&label)
            .inc_by(count(accounting.rows_rejected));
        parked
            .get_or_create(&label)
            .inc_by(count(accounting.rows_parked));
        retries
            .get_or_create(&label)
            .inc_by(count(accounting.retries));
        errors
            .get_or_create(&label)
            .inc_by(count(accounting.errors));
        fuel.get_or_create(&label).inc_by(accounting.usage.fuel);
        guest_seconds
            .get_or_create(&label)
            .inc_by(accounting.usage.time.as_secs_f64());
        peak_memory
            .get_or_create(&label)
            .set(accounting.usage.peak_memory as f64);
        if let Some(seconds) = state.lag_seconds {
            lag.get_or_create(&label).set(seconds);
        }
        letters
            .get_or_create(&label)
            .set(accounting.dead_letters as f64);
        let checks = &state.deletes;
        if checks.inventory || checks.deletes_detected > 0 {
            deletes
                .get_or_create(&label)
                .inc_by(count(checks.deletes_detected));
        }
        if let Some(seconds) = checks.last_check_seconds {
            check_seconds.get_or_create(&label).set(seconds);
        }
        if let Some(ranges) = checks.last_check_ranges {
            check_ranges.get_or_create(&label).set(ranges as f64);
        }
        if let Some(at) = state
            .last_run_at
            .as_deref()
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        {
            last_run.get_or_create(&label).set(at.timestamp() as f64);
        }
    }
    register_workers(store, &mut registry).await?;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|err| Error::fatal(format!("cannot encode metrics: {err}")))?;
    Ok(text)
}
