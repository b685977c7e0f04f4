//! The HTTP API: the route table, and one module per endpoint group. Each handler:
//! authenticate, authorise, bound, parse, validate, publish, and answer only after the
//! broker acknowledged.

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};

use crate::Gateway;

mod bundle;
mod careplans;
mod consent;
mod measurements;
mod operations;
mod readings;
mod refusal;
mod roles;
mod steps;
mod subscriptions;

pub use careplans::is_own_care_plan_id;
pub use subscriptions::is_own_subscription_id;

pub(crate) fn app(gateway: Gateway) -> axum::Router {
    let limit = gateway.inner.config.max_body_bytes;
    axum::Router::new()
        .route("/fhir", post(bundle::fhir_bundle))
        .route("/fhir/Bundle", post(bundle::fhir_bundle))
        .route("/fhir/Consent", post(consent::fhir_consent))
        .route("/measurements", post(measurements::measurement))
        .route("/selfreports", post(measurements::self_report))
        .route("/subscriptions", post(subscriptions::create_subscription))
        .route(
            "/subscriptions/{id}",
            put(subscriptions::put_subscription).delete(subscriptions::delete_subscription),
        )
        .route("/careplans", post(careplans::create_care_plan))
        .route(
            "/careplans/{id}",
            put(careplans::put_care_plan).delete(careplans::delete_care_plan),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(operations::readyz))
        .route("/metrics", get(operations::render_metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(gateway)
}
