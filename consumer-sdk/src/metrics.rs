//! The SDK's metric names (kept with every component's in [`dho_telemetry::names`], with
//! their labels) and the observable events that log and count together so the two never
//! drift apart. Labels are bounded (an outcome, a reason, a category, the subscriber's own
//! group and topic); never patient ids, delivery ids or error text.
//!
//! The SDK records through the `metrics` facade; install any recorder (for example
//! `metrics-exporter-prometheus`) in the application to export them.

use std::time::Duration;

use dho_schemas::model::{Delivery, Millis, Payload};
use dho_telemetry::{KafkaStats, StatsContext};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use tracing::{debug, error, warn};

pub use dho_telemetry::names::consumer::{
    DELIVERIES_HANDLED, DELIVERIES_PARKED, DUPLICATES_DROPPED, END_TO_END_LATENCY,
    HANDLER_DURATION, HANDLER_FAILURES, LAG, RETENTION_GAPS, RETENTION_LOST,
};

/// Bounded reasons a delivery is parked (a metric label and the reason header).
pub mod reasons {
    pub const HANDLER_FAILED: &str = "handler_failed";
    pub const UNDECODABLE: &str = "undecodable";
}

pub(crate) fn handled(elapsed: Duration) {
    metrics::histogram!(HANDLER_DURATION).record(elapsed.as_secs_f64());
    metrics::counter!(DELIVERIES_HANDLED).increment(1);
}

/// A failed handler call; `outcome` says what happens next.
pub(crate) fn handler_failed(
    elapsed: Duration,
    outcome: &'static str,
    attempt: u32,
    error: &dyn std::fmt::Display,
) {
    metrics::histogram!(HANDLER_DURATION).record(elapsed.as_secs_f64());
    metrics::counter!(HANDLER_FAILURES, "outcome" => outcome).increment(1);
    // The handler's error text is the application's; it is logged as the application
    // wrote it, so applications keep identifiers out of their error messages.
    if outcome == "retry" {
        warn!(attempt, error = %error, "handler failed; retrying");
    } else {
        error!(attempt, outcome, error = %error, "handler failed for the last time");
    }
}

pub(crate) fn duplicate_dropped(partition: i32, offset: i64) {
    metrics::counter!(DUPLICATES_DROPPED).increment(1);
    debug!(partition, offset, "dropped a delivery handled before");
}

pub(crate) fn parked(reason: &'static str, partition: i32, offset: i64) {
    metrics::counter!(DELIVERIES_PARKED, "reason" => reason).increment(1);
    warn!(
        reason,
        partition, offset, "parked a delivery on the dlq topic"
    );
}

/// The consumer's client context: librdkafka's statistics as the lag and broker
/// round-trip gauges, labelled with the subscriber's group; and on each assignment, the
/// deliveries retention deleted before this group read them (see
/// [`dho_kafka::retention`]), counted and logged, never skipped silently.
pub(crate) struct SubscriberContext {
    stats: StatsContext,
}

impl SubscriberContext {
    pub(crate) fn new(group: &str) -> Self {
        Self {
            stats: StatsContext::new(KafkaStats::new(
                dho_telemetry::names::consumer::STATS,
                group,
            )),
        }
    }
}

impl ClientContext for SubscriberContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.stats.observe(&statistics);
    }
}

impl ConsumerContext for SubscriberContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(assigned) = rebalance else {
            return;
        };
        match dho_kafka::retention::gaps(consumer, assigned, Duration::from_secs(10)) {
            Ok(gaps) => gaps.iter().for_each(retention_gap),
            Err(e) => warn!(error = %e, "could not look for retention gaps on assignment"),
        }
    }
}

fn retention_gap(gap: &dho_kafka::retention::Gap) {
    metrics::counter!(RETENTION_GAPS).increment(1);
    metrics::counter!(RETENTION_LOST).increment(gap.records().max(0) as u64);
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

/// A delivery handed to the application: records [`end_to_end`] if it has one.
pub(crate) fn handed_over(delivery: &Delivery, now: Millis) {
    if let Some((category, seconds)) = end_to_end(delivery, now) {
        metrics::histogram!(END_TO_END_LATENCY, "category" => category).record(seconds);
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
        Payload::Reference(_) => return None,
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
}
