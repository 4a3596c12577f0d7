//! `GET /metrics`: every metric of the process in the Prometheus text format, rendered by
//! `metrics-exporter-prometheus` from the `metrics` facade the engine and [`crate::observe`]
//! record to.
//!
//! The recorder is process-wide and installed once, by the first router built with
//! metrics enabled; an application that installed its own recorder keeps it (then
//! `/metrics` answers 404 and its own exporter sees our metrics). Access: a bearer token,
//! the metrics token when one is configured, or the platform admin token; anything else is
//! `401 unauthorized`.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::ApiError;
use crate::AppState;

/// Latency buckets (seconds) of every `_seconds` histogram: 1 ms to 30 s.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first call; `None` when another
/// recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    tenancy::telemetry::describe();
                    describe_http();
                    spawn_upkeep(handle.clone());
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "another metrics recorder is installed; /metrics is off");
                    None
                }
            }
        })
        .as_ref()
}

fn describe_http() {
    metrics::describe_counter!(
        crate::observe::HTTP_REQUESTS,
        "HTTP requests by method, route template and status"
    );
    metrics::describe_histogram!(
        crate::observe::HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency by method, route template and status"
    );
}

/// Histograms keep their samples until upkeep folds them in; without a runtime the next
/// render does it.
fn spawn_upkeep(handle: PrometheusHandle) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
}

/// `GET /metrics`.
pub async fn handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(handle) = state.config.metrics.enabled.then(install).flatten() else {
        return ApiError::not_found().into_response();
    };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer);
    let allowed = presented.is_some_and(|token| {
        state.admin_token.verify(token)
            || state
                .config
                .metrics
                .token
                .as_ref()
                .is_some_and(|t| t.verify(token))
    });
    if !allowed {
        return ApiError::unauthorized().into_response();
    }
    if let Err(e) = state.engine.record_gauges().await {
        tracing::warn!(error = %e, "metrics: the tenant counts could not be read");
    }
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
