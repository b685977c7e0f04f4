//! The events that log and count together; the gateway's metric names live with every
//! other component's in [`dho_telemetry::names::ingest`]. Labels are bounded: endpoint,
//! outcome, reason, principal kind. Never identifiers, organisation numbers, subscriber ids
//! or tokens.

use std::time::Duration;

pub use dho_telemetry::names::ingest::{
    AUTH_FAILURES, ENTRIES, IN_FLIGHT, PRODUCER_QUEUE_DEPTH, PUBLISH_LATENCY, REQUESTS,
};

/// The endpoints, as bounded label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    FhirBundle,
    FhirConsent,
    Measurements,
    SelfReports,
    Subscriptions,
    CarePlans,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::FhirBundle => "fhir_bundle",
            Endpoint::FhirConsent => "fhir_consent",
            Endpoint::Measurements => "measurements",
            Endpoint::SelfReports => "selfreports",
            Endpoint::Subscriptions => "subscriptions",
            Endpoint::CarePlans => "careplans",
        }
    }
}

/// A request finished.
pub fn request(endpoint: Endpoint, outcome: &'static str) {
    metrics::counter!(REQUESTS, "endpoint" => endpoint.as_str(), "outcome" => outcome).increment(1);
}

/// Entries finished with the same outcome and reason.
pub fn entries(outcome: &'static str, reason: &'static str, count: u64) {
    if count > 0 {
        metrics::counter!(ENTRIES, "outcome" => outcome, "reason" => reason).increment(count);
    }
}

/// A refused credential (401) or role (403): counted, and logged with the bounded reason and nothing else
/// (never the token, never the header).
pub fn auth_failure(endpoint: Endpoint, reason: &'static str) {
    metrics::counter!(AUTH_FAILURES, "endpoint" => endpoint.as_str(), "reason" => reason)
        .increment(1);
    tracing::warn!(
        endpoint = endpoint.as_str(),
        reason,
        "request refused by authentication or authorisation"
    );
}

/// One record acknowledged (or not) after `elapsed`.
pub fn published(elapsed: Duration) {
    metrics::histogram!(PUBLISH_LATENCY).record(elapsed.as_secs_f64());
}

pub fn queue_depth(depth: i32, in_flight: usize) {
    metrics::gauge!(PRODUCER_QUEUE_DEPTH).set(f64::from(depth));
    metrics::gauge!(IN_FLIGHT).set(in_flight as f64);
}
