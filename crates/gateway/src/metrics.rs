//! Prometheus metrics: requests by route and status, latency histograms, tokens, queue depth.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;
use enclave_service::dispatch::UpstreamClock;

/// Latency buckets in seconds: from a cache-hit health check to a long generation.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The process-wide recorder's handle. The `metrics` macros write to one global recorder, so every
/// app built in this process (tests build many) shares it.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

impl Metrics {
    /// Installs the global recorder on first use and returns its handle.
    pub fn install() -> Result<Self, String> {
        HANDLE
            .get_or_init(|| {
                PrometheusBuilder::new()
                    .set_buckets_for_metric(
                        Matcher::Full("enclave_gateway_overhead_seconds".to_string()),
                        OVERHEAD_BUCKETS,
                    )
                    .map_err(|e| e.to_string())?
                    .set_buckets_for_metric(
                        Matcher::Suffix("_seconds".to_string()),
                        LATENCY_BUCKETS,
                    )
                    .map_err(|e| e.to_string())?
                    .install_recorder()
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map(|handle| Self { handle })
    }
}

/// Buckets for the gateway's own overhead: tens of microseconds to tens of milliseconds.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// Records every request: route template (not the raw path, so ids do not explode cardinality),
/// method, status and duration.
pub async fn track(mut req: Request, next: Next) -> Response {
    let clock = UpstreamClock::default();
    req.extensions_mut().insert(clock.clone());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    let elapsed = start.elapsed();
    // The gateway's own share: everything but the wait on a backend (to the first token when
    // streamed, since the response leaves then). Only calls that reached a backend count.
    if let Some(waited) = clock.waited() {
        metrics::histogram!("enclave_gateway_overhead_seconds")
            .record(elapsed.saturating_sub(waited).as_secs_f64());
    }
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("enclave_http_requests_total", &labels).increment(1);
    metrics::histogram!("enclave_http_request_duration_seconds", &labels[..2])
        .record(elapsed.as_secs_f64());
    response
}

/// `GET /metrics` in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()), responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn render(State(state): State<AppState>) -> Response {
    if let Some(chat) = state.models.chat.get() {
        let stats = chat.stats();
        metrics::gauge!("enclave_engine_queue_depth")
            .set(stats.queued.load(Ordering::Relaxed) as f64);
        metrics::gauge!("enclave_engine_active_sequences")
            .set(stats.active.load(Ordering::Relaxed) as f64);
        metrics::gauge!("enclave_engine_sequence_slots").set(f64::from(chat.config().slots));
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics().handle.render(),
    )
        .into_response()
}
