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
    let config = &gateway.inner.config;
    // Readings come in Bundles of up to `max_bundle_entries`; a state change is one record.
    let readings = axum::Router::new()
        .route("/fhir", post(bundle::fhir_bundle))
        .route("/fhir/Bundle", post(bundle::fhir_bundle))
        .route("/measurements", post(measurements::measurement))
        .route("/selfreports", post(measurements::self_report))
        .layer(DefaultBodyLimit::max(config.max_body_bytes));
    let state = axum::Router::new()
        .route("/fhir/Consent", post(consent::fhir_consent))
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
        .layer(DefaultBodyLimit::max(config.max_state_body_bytes));
    axum::Router::new()
        .merge(readings)
        .merge(state)
        .layer(axum::middleware::from_fn_with_state(
            config.body_timeout,
            crate::limits::body_deadline,
        ))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(operations::readyz))
        .route("/metrics", get(operations::render_metrics))
        .route("/openapi.json", get(crate::openapi::document))
        .with_state(gateway)
}
