//! The SDK's metric names, in one place, and the observable events that log and count
//! together so the two never drift apart. Labels are bounded (an outcome, a reason, a
//! partition number); never patient ids, delivery ids or error text.
//!
//! The SDK records through the `metrics` facade; install any recorder (for example
//! `metrics-exporter-prometheus`) in the application to export them.

use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::statistics::Statistics;
use tracing::{debug, error, warn};

/// Deliveries the handler finished successfully (counter).
pub const DELIVERIES_HANDLED: &str = "dho_consumer_deliveries_handled_total";
/// Time one handler call took, failed calls included (histogram, seconds).
pub const HANDLER_DURATION: &str = "dho_consumer_handler_duration_seconds";
/// Failed handler calls, label `outcome` = `retry` | `stop` | `park` (counter).
pub const HANDLER_FAILURES: &str = "dho_consumer_handler_failures_total";
/// Deliveries dropped because their id was handled before (counter).
pub const DUPLICATES_DROPPED: &str = "dho_consumer_duplicates_dropped_total";
/// Deliveries parked on the `.dlq` topic, label `reason` (counter).
pub const DELIVERIES_PARKED: &str = "dho_consumer_deliveries_parked_total";
/// Records between the committed offset and the high watermark, label `partition`
/// (gauge, from librdkafka statistics).
pub const LAG: &str = "dho_consumer_lag_records";

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

/// Feeds librdkafka's statistics into the lag gauge (as vector's `KafkaStatisticsContext`).
#[derive(Debug, Default)]
pub(crate) struct StatsContext;

impl ClientContext for StatsContext {
    fn stats(&self, statistics: Statistics) {
        for topic in statistics.topics.values() {
            for (partition, stats) in &topic.partitions {
                // Partition -1 is librdkafka's internal unassigned queue; lag -1 is unknown.
                if *partition >= 0 && stats.consumer_lag >= 0 {
                    metrics::gauge!(LAG, "partition" => partition.to_string())
                        .set(stats.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for StatsContext {}
