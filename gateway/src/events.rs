//! What the gateway reports: one type per thing, each logging and counting together (see
//! [`dho_telemetry::events`]); the metric names live with every other component's in
//! [`dho_telemetry::names::ingest`]. Labels are bounded: endpoint, outcome, reason. Never
//! identifiers, organisation numbers, subscriber ids or tokens; a patient appears in a log
//! line only as a [`Pseudonym`].

use std::time::Duration;

use dho_schemas::model::ConsentStatus;
use dho_telemetry::names::ingest as names;
use dho_telemetry::{InternalEvent, Pseudonym};

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

/// A request answered, by `outcome` (`accepted`, `partial`, `rejected`, `unauthorized`,
/// `forbidden`, `too_large`, `unavailable`, `error`).
#[derive(Debug)]
pub struct RequestAnswered {
    pub endpoint: Endpoint,
    pub outcome: &'static str,
}

impl InternalEvent for RequestAnswered {
    fn emit(self) {
        let (endpoint, outcome) = (self.endpoint.as_str(), self.outcome);
        metrics::counter!(names::REQUESTS, "endpoint" => endpoint, "outcome" => outcome)
            .increment(1);
    }
}

fn count_entry(outcome: &'static str, reason: &'static str) {
    metrics::counter!(names::ENTRIES, "outcome" => outcome, "reason" => reason).increment(1);
}

/// One entry of a bundle published.
#[derive(Debug)]
pub struct EntryAccepted;

impl InternalEvent for EntryAccepted {
    fn emit(self) {
        count_entry("accepted", "none");
    }
}

/// A request of one entry published: the entry and the request accepted.
#[derive(Debug)]
pub struct Published {
    pub endpoint: Endpoint,
}

impl InternalEvent for Published {
    fn emit(self) {
        EntryAccepted.emit();
        RequestAnswered {
            endpoint: self.endpoint,
            outcome: "accepted",
        }
        .emit();
    }
}

/// An entry the validators refused, by the bounded validation code.
#[derive(Debug)]
pub struct EntryRejected {
    pub reason: &'static str,
}

impl InternalEvent for EntryRejected {
    fn emit(self) {
        count_entry("rejected", self.reason);
    }
}

/// An entry the caller may not publish (another platform's, another organisation's).
#[derive(Debug)]
pub struct EntryForbidden {
    pub reason: &'static str,
}

impl InternalEvent for EntryForbidden {
    fn emit(self) {
        count_entry("forbidden", self.reason);
    }
}

/// An entry the broker did not take (`reason` says whether retrying may help).
#[derive(Debug)]
pub struct EntryNotPublished<'a> {
    pub endpoint: Endpoint,
    pub reason: &'static str,
    pub error: &'a dho_publisher::Error,
}

impl InternalEvent for EntryNotPublished<'_> {
    fn emit(self) {
        count_entry("failed", self.reason);
        let message = match self.endpoint {
            Endpoint::Measurements | Endpoint::SelfReports => "record not published",
            Endpoint::FhirBundle => "bundle entry not published",
            Endpoint::FhirConsent => "consent not recorded",
            Endpoint::Subscriptions | Endpoint::CarePlans => "state change not published",
        };
        tracing::warn!(
            endpoint = self.endpoint.as_str(),
            reason = self.reason,
            error = %self.error,
            "{message}"
        );
    }
}

/// A refused credential (401) or role (403): counted, and logged with the bounded reason and
/// nothing else (never the token, never the header).
#[derive(Debug)]
pub struct AuthRefused {
    pub endpoint: Endpoint,
    pub reason: &'static str,
}

impl InternalEvent for AuthRefused {
    fn emit(self) {
        let (endpoint, reason) = (self.endpoint.as_str(), self.reason);
        metrics::counter!(names::AUTH_FAILURES, "endpoint" => endpoint, "reason" => reason)
            .increment(1);
        tracing::warn!(
            endpoint,
            reason,
            "request refused by authentication or authorisation"
        );
    }
}

/// The broker answered (or not) a record handed to the producer `elapsed` ago.
#[derive(Debug)]
pub struct PublishAnswered {
    pub elapsed: Duration,
}

impl InternalEvent for PublishAnswered {
    fn emit(self) {
        metrics::histogram!(names::PUBLISH_LATENCY).record(self.elapsed.as_secs_f64());
    }
}

/// The producer's queue and the entries in flight, seen when a request starts publishing.
#[derive(Debug)]
pub struct PublishQueueMeasured {
    pub depth: i32,
    pub in_flight: usize,
}

impl InternalEvent for PublishQueueMeasured {
    fn emit(self) {
        metrics::gauge!(names::PRODUCER_QUEUE_DEPTH).set(f64::from(self.depth));
        metrics::gauge!(names::IN_FLIGHT).set(self.in_flight as f64);
    }
}

/// A consent directive recorded (the request's one entry accepted).
#[derive(Debug)]
pub struct ConsentRecorded<'a> {
    pub patient: Pseudonym,
    /// The authenticated principal's configured name.
    pub recorder: &'a str,
    pub status: ConsentStatus,
}

impl InternalEvent for ConsentRecorded<'_> {
    fn emit(self) {
        Published {
            endpoint: Endpoint::FhirConsent,
        }
        .emit();
        tracing::info!(
            patient = %self.patient,
            recorder = %self.recorder,
            status = ?self.status,
            "consent recorded"
        );
    }
}

/// A consent change asked for by `credential`, and what became of it.
#[derive(Debug)]
pub struct ConsentChangeJudged<'a> {
    pub credential: &'a str,
    /// `recorded`, or why not (see [`names::CONSENT_CHANGES`]).
    pub outcome: &'static str,
}

impl InternalEvent for ConsentChangeJudged<'_> {
    fn emit(self) {
        metrics::counter!(
            names::CONSENT_CHANGES,
            "credential" => self.credential.to_string(),
            "outcome" => self.outcome
        )
        .increment(1);
    }
}

/// The audit record of a refused request was not taken by the broker.
#[derive(Debug)]
pub struct RefusalNotAudited<'a> {
    /// The refused credential's configured name.
    pub credential: &'a str,
    /// Why: the broker did not take it, or too many refusals were being audited at once.
    pub error: String,
}

impl InternalEvent for RefusalNotAudited<'_> {
    fn emit(self) {
        metrics::counter!(names::REFUSALS_NOT_AUDITED).increment(1);
        tracing::error!(
            credential = self.credential,
            error = %self.error,
            "the audit record of a refused request was not written"
        );
    }
}

/// A care plan recorded (counted as the state change it is, when published).
#[derive(Debug)]
pub struct CarePlanRecorded<'a> {
    pub patient: Pseudonym,
    /// The authenticated principal's configured name.
    pub author: &'a str,
    pub version: i32,
    pub targets: usize,
}

impl InternalEvent for CarePlanRecorded<'_> {
    fn emit(self) {
        tracing::info!(
            patient = %self.patient,
            author = %self.author,
            version = self.version,
            targets = self.targets,
            "care plan recorded"
        );
    }
}

/// A care plan deleted (counted as the state change it is, when published).
#[derive(Debug)]
pub struct CarePlanDeleted<'a> {
    pub patient: Pseudonym,
    pub author: &'a str,
}

impl InternalEvent for CarePlanDeleted<'_> {
    fn emit(self) {
        tracing::info!(patient = %self.patient, author = %self.author, "care plan deleted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_schemas::model::PatientIdentifier;
    use dho_telemetry::events::capture;

    #[test]
    fn a_recorded_consent_counts_its_entry_and_request_and_logs_only_a_pseudonym() {
        let patient = PatientIdentifier::fnr("01010101006");
        let seen = capture(|| {
            ConsentRecorded {
                patient: Pseudonym::from(&patient),
                recorder: "home-care",
                status: ConsentStatus::Active,
            }
            .emit()
        });
        let accepted = [("outcome", "accepted"), ("reason", "none")];
        assert_eq!(
            seen.value(names::ENTRIES, &accepted),
            Some(1.0),
            "{}",
            seen.metrics
        );
        let request = [("endpoint", "fhir_consent"), ("outcome", "accepted")];
        assert_eq!(seen.value(names::REQUESTS, &request), Some(1.0));
        assert_eq!(seen.lines_with("consent recorded"), 1, "{}", seen.logs);
        assert_eq!(seen.lines_with(&patient.log_tag()), 1, "{}", seen.logs);
        assert!(!seen.logs.contains(&patient.value), "{}", seen.logs);
    }

    #[test]
    fn a_refused_token_is_counted_and_logged_with_its_reason_only() {
        let seen = capture(|| {
            AuthRefused {
                endpoint: Endpoint::Measurements,
                reason: "unknown_token",
            }
            .emit()
        });
        let labels = [("endpoint", "measurements"), ("reason", "unknown_token")];
        assert_eq!(seen.value(names::AUTH_FAILURES, &labels), Some(1.0));
        let line = seen
            .logs
            .lines()
            .find(|l| l.contains("request refused"))
            .unwrap();
        assert!(
            line.contains("WARN") && line.contains("unknown_token"),
            "{line}"
        );
    }
}
