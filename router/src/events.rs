//! What the router reports: one type per thing, each logging and counting together (see
//! [`dho_telemetry::events`]). The metric names live with every component's in
//! [`dho_telemetry::names::router`]. Labels are bounded: reasons, categories, zones, topic
//! kinds and the group id, never patient or subscriber identifiers.

use std::sync::Mutex;
use std::time::Instant;

use dho_kafka::outage::Throttle;
use dho_routing_core::decision::Withheld;
use dho_schemas::model::{AlertKind, DataCategory, Zone};
use dho_telemetry::names::router as names;
use dho_telemetry::{InternalEvent, RegisteredEvent};
use metrics::Counter;
use tracing::{debug, info};

/// An event record read from an input topic, counted by topic kind.
#[derive(Debug)]
pub struct EventsRead {
    /// Indexed measurements, self-reports.
    counters: [Counter; 2],
}

impl EventsRead {
    /// Resolves the counters (so the recorder must be installed before the router connects).
    pub fn register() -> Self {
        let counter = |topic: &'static str| metrics::counter!(names::EVENTS_IN, "topic" => topic);
        Self {
            counters: [counter("measurements"), counter("selfreports")],
        }
    }
}

impl RegisteredEvent for EventsRead {
    /// Whether the record came from the measurements topic (else self-reports).
    type Data = bool;
    fn emit(&self, is_measurement: bool) {
        self.counters[usize::from(!is_measurement)].increment(1);
    }
}

/// An event not delivered to a subscriber, by why.
#[derive(Debug)]
pub struct EventsWithheld {
    /// Indexed by `Withheld as usize`.
    counters: [Counter; 5],
}

impl EventsWithheld {
    pub fn register() -> Self {
        let counter = |w: Withheld| metrics::counter!(names::WITHHELD, "reason" => w.as_str());
        Self {
            counters: [
                counter(Withheld::NoSubscription),
                counter(Withheld::NotRequested),
                counter(Withheld::NoConsent),
                counter(Withheld::ConsentDenied),
                counter(Withheld::StateInvalid),
            ],
        }
    }
}

impl RegisteredEvent for EventsWithheld {
    type Data = Withheld;
    fn emit(&self, reason: Withheld) {
        self.counters[reason as usize].increment(1);
    }
}

/// Why a named reading is withheld as not new (see `dho_routing_core::delivered`).
#[derive(Debug, Clone, Copy)]
pub enum NotNewReason {
    /// A re-send of a reading (or a retraction) routed before.
    Resent = 0,
    /// A retraction of a reading never delivered.
    NothingToRetract = 1,
}

/// A named reading withheld because it is not new, counted with the other withheld events.
#[derive(Debug)]
pub struct NotNew {
    /// Indexed by `NotNewReason as usize`.
    counters: [Counter; 2],
}

impl NotNew {
    pub fn register() -> Self {
        let counter = |reason: &'static str| metrics::counter!(names::WITHHELD, "reason" => reason);
        Self {
            counters: [counter("resent"), counter("nothing_to_retract")],
        }
    }
}

impl RegisteredEvent for NotNew {
    type Data = NotNewReason;
    fn emit(&self, reason: NotNewReason) {
        self.counters[reason as usize].increment(1);
    }
}

/// A delivery produced, by data category.
#[derive(Debug)]
pub struct Delivered {
    /// Indexed by `DataCategory as usize`.
    counters: [Counter; 3],
}

impl Delivered {
    pub fn register() -> Self {
        let counter =
            |c: DataCategory| metrics::counter!(names::DELIVERIES, "category" => c.as_str());
        Self {
            counters: [
                counter(DataCategory::Measurement),
                counter(DataCategory::SelfReport),
                counter(DataCategory::Alert),
            ],
        }
    }
}

impl RegisteredEvent for Delivered {
    type Data = DataCategory;
    fn emit(&self, category: DataCategory) {
        self.counters[category as usize].increment(1);
    }
}

/// A record decoded while the schema registry did not answer: it waits (counted here; the
/// waiting is logged by its `Outage`, throttled with the broker's outages).
#[derive(Debug)]
pub struct RegistryWaited;

impl InternalEvent for RegistryWaited {
    fn emit(self) {
        metrics::counter!(names::REGISTRY_WAITS).increment(1);
    }
}

/// Input records retention deleted before the router's group read them (see
/// [`dho_kafka::retention`]).
#[derive(Debug)]
pub struct RetentionGap<'a> {
    pub gap: &'a dho_kafka::retention::Gap,
    /// The topic kind label: `measurements` or `selfreports`.
    pub kind: &'static str,
}

impl InternalEvent for RetentionGap<'_> {
    fn emit(self) {
        let gap = self.gap;
        metrics::counter!(names::RETENTION_GAPS, "topic" => self.kind).increment(1);
        metrics::counter!(names::RETENTION_LOST, "topic" => self.kind)
            .increment(gap.records().max(0) as u64);
        tracing::warn!(
            topic = %gap.topic,
            partition = gap.partition,
            first_offset = gap.first,
            last_offset = gap.last,
            records = gap.records(),
            "retention deleted input records before the router read them: they were never \
             routed (a retention gap)"
        );
    }
}

/// A record parked on the dead-letter topic: counted each time, logged now and then (a
/// flood of malformed input writes a line every few seconds, not one per record).
#[derive(Debug)]
pub struct DeadLettered<'a> {
    /// Bounded: a metric label and the reason header.
    pub reason: &'static str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub warnings: &'a Mutex<Throttle>,
}

impl InternalEvent for DeadLettered<'_> {
    fn emit(self) {
        metrics::counter!(names::DEADLETTERS, "reason" => self.reason).increment(1);
        let allowed = self
            .warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow();
        if let Some(unmentioned) = allowed {
            tracing::warn!(
                reason = self.reason,
                topic = self.topic,
                partition = self.partition,
                offset = self.offset,
                unmentioned,
                "dead-lettered a record (and `unmentioned` others since the last warning; \
                 dho_router_deadletters_total counts each)"
            );
        }
    }
}

/// A state record read (applied, or dead-lettered), by topic kind.
#[derive(Debug)]
pub struct StateRecordRead {
    /// `consents`, `subscriptions`, `careplans` or `alertstate`.
    pub topic: &'static str,
}

impl InternalEvent for StateRecordRead {
    fn emit(self) {
        metrics::counter!(names::STATE_RECORDS, "topic" => self.topic).increment(1);
    }
}

/// The state of this instance's partitions, after a batch or a rebalance.
#[derive(Debug)]
pub struct StateMeasured {
    pub patients: usize,
    pub on_hold: usize,
    pub in_red: usize,
    pub owned_partitions: usize,
}

impl InternalEvent for StateMeasured {
    fn emit(self) {
        metrics::gauge!(names::PATIENTS_ON_HOLD).set(self.on_hold as f64);
        metrics::gauge!(names::STATE_PATIENTS).set(self.patients as f64);
        metrics::gauge!(names::OWNED_PARTITIONS).set(self.owned_partitions as f64);
        metrics::gauge!(names::PATIENTS_IN_RED).set(self.in_red as f64);
    }
}

/// Partitions whose state was loaded from the start of the state topics.
#[derive(Debug)]
pub struct StatePartitionsLoaded {
    pub partitions: usize,
}

impl InternalEvent for StatePartitionsLoaded {
    fn emit(self) {
        debug!(
            partitions = self.partitions,
            "loading the state of new partitions"
        );
        metrics::counter!(names::STATE_PARTITION_LOADS).increment(self.partitions as u64);
    }
}

/// Exactly-once mode: a batch whose offsets the group refused (it moved on during the
/// batch), aborted, to be routed again from its first records.
#[derive(Debug)]
pub struct BatchRewound {
    pub events: usize,
    pub partitions: usize,
    /// The coordinator's refusal (no identifiers: a Kafka error).
    pub cause: String,
}

impl InternalEvent for BatchRewound {
    fn emit(self) {
        info!(
            events = self.events,
            partitions = self.partitions,
            cause = %self.cause,
            "the group moved on during the batch: aborted, routing it again"
        );
        metrics::counter!(names::BATCHES_REWOUND).increment(1);
    }
}

/// Exactly-once mode: a batch fetched by an instance whose group session ran out, left
/// unrouted to the partitions' next owner.
#[derive(Debug)]
pub struct BatchAbandoned {
    pub events: usize,
}

impl InternalEvent for BatchAbandoned {
    fn emit(self) {
        info!(
            events = self.events,
            "the group session ran out: the batch is left to its partitions' next owner"
        );
        metrics::counter!(names::BATCHES_REWOUND).increment(1);
    }
}

/// A batch routed and committed, `started` when it was read.
#[derive(Debug)]
pub struct BatchCommitted {
    pub started: Instant,
}

impl InternalEvent for BatchCommitted {
    fn emit(self) {
        metrics::counter!(names::BATCHES).increment(1);
        metrics::histogram!(names::ROUTING_LATENCY).record(self.started.elapsed().as_secs_f64());
    }
}

/// An alert raised against a patient's care plan, by zone and kind; a resolved one also
/// closes an episode.
#[derive(Debug)]
pub struct AlertRaised {
    /// The zone the patient is in now.
    pub zone: Zone,
    pub kind: AlertKind,
}

impl InternalEvent for AlertRaised {
    fn emit(self) {
        let zone = match self.zone {
            Zone::Green => "green",
            Zone::Yellow => "yellow",
            Zone::Red => "red",
        };
        let kind = match self.kind {
            AlertKind::ZoneEntered => "zone_entered",
            AlertKind::Escalated => "escalated",
            AlertKind::Resolved => "resolved",
            AlertKind::NoData => "no_data",
        };
        metrics::counter!(names::ALERTS_RAISED, "zone" => zone, "kind" => kind).increment(1);
        if self.kind == AlertKind::Resolved {
            metrics::counter!(names::ALERTS_RESOLVED, "zone" => zone).increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_telemetry::events::capture;
    use std::time::Duration;

    #[test]
    fn a_dead_letter_flood_counts_each_record_and_logs_one_line() {
        let warnings = Mutex::new(Throttle::every(Duration::from_secs(3600)));
        let seen = capture(|| {
            for offset in 0..100 {
                DeadLettered {
                    reason: "undecodable",
                    topic: "dho.measurements",
                    partition: 0,
                    offset,
                    warnings: &warnings,
                }
                .emit();
            }
        });
        let count = seen.value(names::DEADLETTERS, &[("reason", "undecodable")]);
        assert_eq!(count, Some(100.0), "{}", seen.metrics);
        assert_eq!(
            seen.lines_with("dead-lettered a record"),
            1,
            "{}",
            seen.logs
        );
        assert!(seen.logs.contains("WARN"), "{}", seen.logs);
    }

    #[test]
    fn registered_events_count_under_the_label_of_their_data() {
        let seen = capture(|| {
            let (read, withheld, delivered) = (
                EventsRead::register(),
                EventsWithheld::register(),
                Delivered::register(),
            );
            read.emit(true);
            read.emit(false);
            read.emit(false);
            withheld.emit(Withheld::ConsentDenied);
            delivered.emit(DataCategory::Alert);
        });
        let value = |name, labels: &[(&str, &str)]| seen.value(name, labels);
        assert_eq!(
            value(names::EVENTS_IN, &[("topic", "measurements")]),
            Some(1.0)
        );
        assert_eq!(
            value(names::EVENTS_IN, &[("topic", "selfreports")]),
            Some(2.0)
        );
        let denied = [("reason", "consent_denied")];
        assert_eq!(value(names::WITHHELD, &denied), Some(1.0));
        assert_eq!(
            value(names::WITHHELD, &[("reason", "no_consent")]),
            Some(0.0)
        );
        assert_eq!(
            value(names::DELIVERIES, &[("category", "alert")]),
            Some(1.0)
        );
    }

    #[test]
    fn a_resolved_alert_also_closes_an_episode() {
        let seen = capture(|| {
            AlertRaised {
                zone: Zone::Green,
                kind: AlertKind::Resolved,
            }
            .emit();
            AlertRaised {
                zone: Zone::Red,
                kind: AlertKind::Escalated,
            }
            .emit();
        });
        let raised = [("zone", "green"), ("kind", "resolved")];
        assert_eq!(seen.value(names::ALERTS_RAISED, &raised), Some(1.0));
        let resolved = |zone| seen.value(names::ALERTS_RESOLVED, &[("zone", zone)]);
        assert_eq!(resolved("green"), Some(1.0));
        assert_eq!(resolved("red"), None);
    }
}
