//! The operations endpoints every service binary serves (feature `server`):
//!
//! - `GET /metrics`: Prometheus text from the process-wide recorder;
//! - `GET /healthz`: `200 ok` while the process answers at all (liveness);
//! - `GET /readyz`: `200 ready` when every named readiness check is set, else `503` with a
//!   plain body naming the checks that are not (for example `not ready: kafka, state`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};
use tokio::net::TcpListener;

use crate::names;

/// Named readiness checks, each an `Arc<AtomicBool>` that its owner sets (and may clear).
/// Clones share the checks.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<Vec<Check>>>,
}

type Check = (&'static str, Arc<AtomicBool>);

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check, not ready yet, and returns its flag.
    pub fn check(&self, name: &'static str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.watch(name, flag.clone());
        flag
    }

    /// Adds a flag owned elsewhere (a component's own "state loaded", say).
    pub fn watch(&self, name: &'static str, flag: Arc<AtomicBool>) {
        self.lock().push((name, flag));
    }

    /// The checks not set now, in the order they were added.
    pub fn not_ready(&self) -> Vec<&'static str> {
        self.lock()
            .iter()
            .filter(|(_, flag)| !flag.load(Ordering::Relaxed))
            .map(|(name, _)| *name)
            .collect()
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Check>> {
        self.checks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The recorder could not be installed (another one was, first).
#[derive(Debug, Clone, thiserror::Error)]
#[error("installing the metrics recorder: {0}")]
pub struct InstallError(String);

/// Histogram buckets (seconds) for every `*_seconds` histogram: a millisecond up to five
/// minutes, so both a broker acknowledgement and a delivery that waited for a
/// restarted router are placed.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Installs the process-wide Prometheus recorder once (with [`LATENCY_BUCKETS`] and every
/// metric's description) and returns its handle; later calls return the same handle. Inside
/// a Tokio runtime it also starts the recorder's periodic upkeep. Fails if another recorder
/// was installed first.
pub fn install_recorder() -> Result<PrometheusHandle, InstallError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, InstallError>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = recorder_builder()
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|e| InstallError(e.to_string()))?;
            names::describe();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let handle = handle.clone();
                runtime.spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        tick.tick().await;
                        handle.run_upkeep();
                    }
                });
            }
            Ok(handle)
        })
        .clone()
}

/// The builder [`install_recorder`] uses, for callers that install it themselves.
pub fn recorder_builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
}

/// `/metrics`: the recorder's text, or 404 if the process exports none.
pub fn metrics_response(handle: Option<&PrometheusHandle>) -> Response {
    match handle {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}

/// `/readyz`'s answer for `readiness`.
pub fn readiness_response(readiness: &Readiness) -> Response {
    let not_ready = readiness.not_ready();
    if not_ready.is_empty() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", not_ready.join(", ")),
        )
            .into_response()
    }
}

#[derive(Clone)]
struct Ops {
    metrics: Option<PrometheusHandle>,
    readiness: Readiness,
}

/// The three endpoints as an axum application (to serve, or to merge into a service's own).
pub fn app(metrics: Option<PrometheusHandle>, readiness: Readiness) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(ops): State<Ops>| async move { readiness_response(&ops.readiness) }),
        )
        .route(
            "/metrics",
            get(|State(ops): State<Ops>| async move { metrics_response(ops.metrics.as_ref()) }),
        )
        .with_state(Ops { metrics, readiness })
}

/// Serves [`app`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Option<PrometheusHandle>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    axum::serve(listener, app(metrics, readiness))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(app: &axum::Router, path: &str) -> (StatusCode, String) {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_names_what_is_not_ready_until_every_check_is_set() {
        let readiness = Readiness::new();
        let kafka = readiness.check("kafka");
        let state = Arc::new(AtomicBool::new(false));
        readiness.watch("state", state.clone());
        let app = app(None, readiness.clone());

        assert_eq!(get(&app, "/healthz").await, (StatusCode::OK, "ok".into()));
        assert_eq!(
            get(&app, "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: kafka, state".into()
            )
        );
        kafka.store(true, Ordering::Relaxed);
        assert_eq!(
            get(&app, "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: state".into())
        );
        state.store(true, Ordering::Relaxed);
        assert_eq!(get(&app, "/readyz").await, (StatusCode::OK, "ready".into()));
        // A check may be cleared again (a lost connection, say).
        kafka.store(false, Ordering::Relaxed);
        assert_eq!(
            get(&app, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_renders_the_recorder_with_help_and_histogram_buckets() {
        let recorder = recorder_builder().unwrap().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            names::describe();
            metrics::counter!(names::router::DELIVERIES, "category" => "measurement").increment(3);
            metrics::histogram!(names::consumer::END_TO_END_LATENCY, "category" => "measurement")
                .record(0.7);
        });
        let app = app(Some(handle), Readiness::new());
        let (status, text) = get(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains(r#"dho_router_deliveries_total{category="measurement"} 3"#),
            "{text}"
        );
        assert!(
            text.contains("# HELP dho_router_deliveries_total Counter. Deliveries produced"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"dho_consumer_end_to_end_latency_seconds_bucket{category="measurement",le="1"} 1"#
            ),
            "a histogram, not a summary:\n{text}"
        );
        // Descriptions alone make no series.
        assert!(!text.contains(names::ingest::REQUESTS), "{text}");
        // No readiness checks: ready.
        assert_eq!(get(&app, "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn without_a_recorder_metrics_is_not_found() {
        let app = app(None, Readiness::new());
        assert_eq!(get(&app, "/metrics").await.0, StatusCode::NOT_FOUND);
    }
}
