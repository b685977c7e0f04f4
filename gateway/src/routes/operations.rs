//! `GET /healthz`, `/readyz` and `/metrics`, for the load balancer and Prometheus.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Gateway;

/// Ready while there is room to publish; a saturated gateway is taken out of the load
/// balancer's rotation until it drains. Its 503 says when to look again, as every 503 of
/// the gateway's does.
pub(super) async fn readyz(State(gw): State<Gateway>) -> Response {
    gw.observe_queue();
    if gw.inner.in_flight.available_permits() > 0 {
        (StatusCode::OK, "ready").into_response()
    } else {
        let retry_after = gw.inner.config.retry_after.as_secs().to_string();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, retry_after)],
            "saturated",
        )
            .into_response()
    }
}

pub(super) async fn render_metrics(State(gw): State<Gateway>) -> Response {
    gw.observe_queue();
    dho_telemetry::server::metrics_response(gw.inner.metrics.as_ref())
}
