//! What the subscriber reports: one type per thing, each logging and counting together
//! (see [`dho_telemetry::events`]); the names are in [`crate::metrics`].

use std::time::Duration;

use dho_schemas::model::{Delivery, Millis, Payload};
use dho_telemetry::InternalEvent;
use dho_telemetry::names::consumer as names;
use tracing::{debug, error, warn};

/// The handler finished a delivery after `elapsed`.
#[derive(Debug)]
pub(crate) struct DeliveryHandled {
    pub(crate) elapsed: Duration,
}

impl InternalEvent for DeliveryHandled {
    fn emit(self) {
        metrics::histogram!(names::HANDLER_DURATION).record(self.elapsed.as_secs_f64());
        metrics::counter!(names::DELIVERIES_HANDLED).increment(1);
    }
}

/// What happens after a failed handler call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    Retry,
    Stop,
    Park,
}

impl AfterFailure {
    fn as_str(self) -> &'static str {
        match self {
            AfterFailure::Retry => "retry",
            AfterFailure::Stop => "stop",
            AfterFailure::Park => "park",
        }
    }
}

/// A failed handler call; `next` says what happens now.
pub(crate) struct HandlerFailed<'a> {
    pub(crate) elapsed: Duration,
    pub(crate) next: AfterFailure,
    pub(crate) attempt: u32,
    pub(crate) error: &'a dyn std::fmt::Display,
}

impl InternalEvent for HandlerFailed<'_> {
    fn emit(self) {
        let (attempt, error, outcome) = (self.attempt, self.error, self.next.as_str());
        metrics::histogram!(names::HANDLER_DURATION).record(self.elapsed.as_secs_f64());
        metrics::counter!(names::HANDLER_FAILURES, "outcome" => outcome).increment(1);
        // The handler's error text is the application's; it is logged as the application
        // wrote it, so applications keep identifiers out of their error messages.
        if self.next == AfterFailure::Retry {
            warn!(attempt, error = %error, "handler failed; retrying");
        } else {
            error!(attempt, outcome, error = %error, "handler failed for the last time");
        }
    }
}

/// A delivery dropped because its id was handled before.
#[derive(Debug)]
pub(crate) struct DuplicateDropped {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

impl InternalEvent for DuplicateDropped {
    fn emit(self) {
        metrics::counter!(names::DUPLICATES_DROPPED).increment(1);
        let (partition, offset) = (self.partition, self.offset);
        debug!(partition, offset, "dropped a delivery handled before");
    }
}

/// A delivery parked on the `.dlq` topic.
#[derive(Debug)]
pub(crate) struct DeliveryParked {
    /// One of [`crate::metrics::reasons`].
    pub(crate) reason: &'static str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

impl InternalEvent for DeliveryParked {
    fn emit(self) {
        let (reason, partition, offset) = (self.reason, self.partition, self.offset);
        metrics::counter!(names::DELIVERIES_PARKED, "reason" => reason).increment(1);
        warn!(
            reason,
            partition, offset, "parked a delivery on the dlq topic"
        );
    }
}

/// A delivery handed to the application at `now`: records [`end_to_end`] if it has one.
#[derive(Debug)]
pub(crate) struct HandedOver<'a> {
    pub(crate) delivery: &'a Delivery,
    pub(crate) now: Millis,
}

impl InternalEvent for HandedOver<'_> {
    fn emit(self) {
        if let Some((category, seconds)) = end_to_end(self.delivery, self.now) {
            metrics::histogram!(names::END_TO_END_LATENCY, "category" => category).record(seconds);
        }
    }
}

/// Deliveries retention deleted before this subscriber's group read them (see
/// [`dho_kafka::retention`]).
#[derive(Debug)]
pub(crate) struct RetentionGap<'a> {
    pub(crate) gap: &'a dho_kafka::retention::Gap,
}

impl InternalEvent for RetentionGap<'_> {
    fn emit(self) {
        let gap = self.gap;
        metrics::counter!(names::RETENTION_GAPS).increment(1);
        metrics::counter!(names::RETENTION_LOST).increment(gap.records().max(0) as u64);
        warn!(
            topic = %gap.topic,
            partition = gap.partition,
            first_offset = gap.first,
            last_offset = gap.last,
            records = gap.records(),
            "retention deleted deliveries before this subscriber read them: they were never \
             handed over (a retention gap)"
        );
    }
}

/// The category label and the seconds since the gateway acknowledged the event a delivery
/// carries (its `received_time`). A MINIMAL reference, or an alert without its reading,
/// carries no ingest time: `None`. A clock behind the gateway's counts as 0.
fn end_to_end(delivery: &Delivery, now: Millis) -> Option<(&'static str, f64)> {
    let (category, received) = match delivery.payload()? {
        Payload::Measurement(m) => ("measurement", m.received_time),
        Payload::SelfReport(r) => ("self_report", r.received_time),
        Payload::Alert(a) => ("alert", a.reading.as_ref()?.received_time),
        Payload::Reference(_) | Payload::SharingEnded(_) => return None,
    };
    Some((category, (now - received).max(0) as f64 / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_schemas::fixtures;
    use dho_schemas::model::{ContentLevel, EventReference, SelfReport};

    #[test]
    fn end_to_end_runs_from_the_ingest_acknowledgement() {
        let patient = fixtures::patient(1);
        let m = fixtures::spo2(&patient, 95.0, 1_000_000);
        let delivery = fixtures::delivery_of(&m);
        let now = m.received_time + 1_250;
        assert_eq!(end_to_end(&delivery, now), Some(("measurement", 1.25)));
        // Not the routing time, not the reading's own time.
        assert_ne!(delivery.routed_at, m.received_time);
        assert_ne!(m.effective_time, m.received_time);
        // A clock behind the gateway's never gives a negative latency.
        assert_eq!(
            end_to_end(&delivery, m.received_time - 10),
            Some(("measurement", 0.0))
        );

        let r: SelfReport = fixtures::self_report(&patient, 1_000_000);
        let mut delivery = fixtures::delivery_of(&m);
        delivery.measurement = None;
        delivery.self_report = Some(r.clone());
        assert_eq!(
            end_to_end(&delivery, r.received_time + 500),
            Some(("self_report", 0.5))
        );

        // MINIMAL: a reference has no ingest time.
        let mut minimal = fixtures::delivery_of(&m);
        minimal.measurement = None;
        minimal.content_level = ContentLevel::Minimal;
        minimal.reference = Some(EventReference {
            event_id: m.event_id.clone(),
            category: dho_schemas::model::DataCategory::Measurement,
            code: Some(m.code.clone()),
            effective_time: m.effective_time,
        });
        assert_eq!(end_to_end(&minimal, now), None);
    }

    #[test]
    fn a_failed_call_counts_its_outcome_and_logs_at_the_level_of_what_follows() {
        let error = "the journal is down";
        let seen = dho_telemetry::events::capture(|| {
            for (next, attempt) in [(AfterFailure::Retry, 1), (AfterFailure::Park, 2)] {
                HandlerFailed {
                    elapsed: Duration::from_millis(5),
                    next,
                    attempt,
                    error: &error,
                }
                .emit();
            }
            DeliveryParked {
                reason: crate::metrics::reasons::HANDLER_FAILED,
                partition: 0,
                offset: 7,
            }
            .emit();
        });
        let failures = |outcome| seen.value(names::HANDLER_FAILURES, &[("outcome", outcome)]);
        assert_eq!(failures("retry"), Some(1.0), "{}", seen.metrics);
        assert_eq!(failures("park"), Some(1.0));
        assert_eq!(failures("stop"), None);
        assert_eq!(
            seen.value(&format!("{}_count", names::HANDLER_DURATION), &[]),
            Some(2.0)
        );
        let parked = [("reason", "handler_failed")];
        assert_eq!(seen.value(names::DELIVERIES_PARKED, &parked), Some(1.0));
        let line = |text| {
            seen.logs
                .lines()
                .find(|l| l.contains(text))
                .unwrap_or_default()
        };
        assert!(line("retrying").contains("WARN"), "{}", seen.logs);
        assert!(line("for the last time").contains("ERROR"), "{}", seen.logs);
        assert!(line("parked a delivery").contains("WARN"), "{}", seen.logs);
    }
}
