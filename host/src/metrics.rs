//! `--metrics ADDR`: the pipelines' accounting as Prometheus (OpenMetrics) metrics on
//! `GET /metrics`. Every scrape reads the state store, the same numbers `host status` shows,
//! so the two cannot disagree and a restart loses no counter.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::state::StateStore;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PipelineLabel {
    pipeline: String,
}

/// Listens on `address` and serves metrics until the process ends.
pub async fn serve(address: SocketAddr, store: Arc<StateStore>) -> Result<()> {
    let listener = TcpListener::bind(address).await.map_err(|err| {
        Error::invalid(format!("cannot listen on {address} for metrics: {err}"))
            .with_hint("pass --metrics with a free address, such as 127.0.0.1:9464")
    })?;
    tracing::info!("serving metrics on http://{address}/metrics");
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!("metrics: cannot accept a connection: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let store = store.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let store = store.clone();
                    async move { Ok::<_, Infallible>(respond(request, &store).await) }
                });
                if let Err(err) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!("metrics: connection ended: {err}");
                }
            });
        }
    });
    Ok(())
}

async fn respond(
    request: Request<hyper::body::Incoming>,
    store: &StateStore,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
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
            "metrics are at /metrics\n".into(),
        );
    }
    match render(store).await {
        Ok(text) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text,
        ),
        Err(err) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("cannot read the state store: {err}\n"),
        ),
    }
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
    let retries = counter(
        &mut registry,
        "retries",
        "Times a destination asked for a batch again",
    );
    let errors = counter(&mut registry, "errors", "Failed passes and runs");
    let fuel = counter(&mut registry, "fuel_used", "Fuel burned by processors");
    let guest_seconds = Family::<PipelineLabel, Counter<f64, AtomicU64>>::default();
    registry.register(
        "guest_seconds",
        "Time spent inside processor calls, failed ones included",
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
        "Largest linear memory one processor instance reached",
    );
    let lag = gauge(
        &mut registry,
        "lag_seconds",
        "The database's clock minus the watermark, at the end of the last pass",
    );
    let letters = gauge(&mut registry, "dead_letters", "Rejected rows kept");
    let last_run = gauge(
        &mut registry,
        "last_run_timestamp_seconds",
        "When the last pass ended (Unix time)",
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
        if let Some(at) = state
            .last_run_at
            .as_deref()
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        {
            last_run.get_or_create(&label).set(at.timestamp() as f64);
        }
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|err| Error::fatal(format!("cannot encode metrics: {err}")))?;
    Ok(text)
}
