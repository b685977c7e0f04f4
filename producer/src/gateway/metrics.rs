//! The gateway's metric names, in one place, and the events that log and count together.
//! Labels are bounded: endpoint, outcome, reason, principal kind. Never identifiers,
//! organisation numbers, subscriber ids or tokens.

use std::time::Duration;

/// Requests by endpoint and outcome (`accepted`, `partial`, `rejected`, `unauthorized`,
/// `forbidden`, `too_large`, `unavailable`, `error`).
pub const REQUESTS: &str = "dho_ingest_requests_total";
/// Entries (bundle entries, JSON records, consents, subscriptions) by outcome
/// (`accepted`, `rejected`, `forbidden`, `unavailable`, `failed`) and reason.
pub const ENTRIES: &str = "dho_ingest_entries_total";
/// Authentication and authorisation refusals, by reason and endpoint.
pub const AUTH_FAILURES: &str = "dho_ingest_auth_failures_total";
/// Time from handing a record to the producer until the broker acknowledged it.
pub const PUBLISH_LATENCY: &str = "dho_ingest_publish_latency_seconds";
/// Records handed to the producer and not yet acknowledged (librdkafka's queue).
pub const PRODUCER_QUEUE_DEPTH: &str = "dho_ingest_producer_queue_depth";
/// Entries being published right now by this gateway (bounded by `max_in_flight`).
pub const IN_FLIGHT: &str = "dho_ingest_in_flight_entries";

/// The endpoints, as bounded label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    FhirBundle,
    FhirConsent,
    Measurements,
    SelfReports,
    Subscriptions,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::FhirBundle => "fhir_bundle",
            Endpoint::FhirConsent => "fhir_consent",
            Endpoint::Measurements => "measurements",
            Endpoint::SelfReports => "selfreports",
            Endpoint::Subscriptions => "subscriptions",
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
