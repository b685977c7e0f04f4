//! `GET /healthz`, `/readyz` and `/metrics`, for the load balancer and Prometheus.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::Gateway;

/// Ready while there is room to publish; a saturated gateway is taken out of the load
/// balancer's rotation until it drains.
pub(super) async fn readyz(State(gw): State<Gateway>) -> Response {
    gw.observe_queue();
    if gw.inner.in_flight.available_permits() > 0 {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "saturated").into_response()
    }
}

pub(super) async fn render_metrics(State(gw): State<Gateway>) -> Response {
    gw.observe_queue();
    dho_telemetry::server::metrics_response(gw.inner.metrics.as_ref())
}
