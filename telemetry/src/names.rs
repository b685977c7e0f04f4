//! Every metric name of every hub service, in one place.
//!
//! The scheme is `dho_<component>_<what>_<unit>`: components `router`, `ingest` (the
//! gateway) and `consumer` (the SDK); base units (`_seconds`); counters end in `_total`.
//! Each name's doc line says its kind, its labels and the values each label can take.
//! Labels are bounded: reasons, outcomes, categories, topic names and configured group
//! ids, never a patient identifier, delivery id, organisation number or token. A
//! subscriber appears only inside a topic name, and only on the SDK's own metrics, where a
//! process serves one subscriber (one value).
//!
//! A test checks every name against the scheme; [`describe`] turns the doc lines into the
//! `# HELP` text Prometheus shows.

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: its name, kind and description (the constant's doc comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

/// The gauges a component fills from librdkafka's statistics (see [`crate::KafkaStats`]);
/// `None` where the component has no such client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsNames {
    /// Per consumer group and topic: records between the consumer's position and the end.
    pub consumer_lag: Option<&'static str>,
    /// Per client kind: the slowest broker's average round-trip time.
    pub broker_rtt: Option<&'static str>,
    /// Records handed to the producer and not yet acknowledged.
    pub producer_queue_depth: Option<&'static str>,
}

/// Declares a component's names as constants (with their doc comments) and the `ALL` table.
macro_rules! metric_names {
    ($( $(#[doc = $doc:literal])+ $kind:ident $name:ident = $value:literal; )+) => {
        $(
            $(#[doc = $doc])+
            pub const $name: &str = $value;
        )+
        /// Every metric of this component.
        pub const ALL: &[super::Metric] = &[$(
            super::Metric {
                name: $value,
                kind: super::Kind::$kind,
                help: concat!($($doc),+),
            }
        ),+];
    };
}

/// `dho-router`. The group label is the configured `group_id`.
pub mod router {
    metric_names! {
        /// Counter. Event records read, by `topic` kind (`measurements`, `selfreports`).
        Counter EVENTS_IN = "dho_router_events_in_total";
        /// Counter. Deliveries produced, by `category` (`measurement`, `self_report`, `alert`).
        Counter DELIVERIES = "dho_router_deliveries_total";
        /// Counter. Events not delivered to a subscriber, by `reason` (`no_subscription`,
        /// `not_requested`, `no_consent`, `consent_denied`, `state_invalid`; for a named
        /// reading that is not new, `resent` or `nothing_to_retract`).
        Counter WITHHELD = "dho_router_withheld_total";
        /// Counter. Records parked on the dead-letter topic, by `reason` (`undecodable`,
        /// `empty`, `key_mismatch`, `wrong_partition`, or a bounded validation reason; the
        /// reason header).
        Counter DEADLETTERS = "dho_router_deadletters_total";
        /// Counter. State records applied, by `topic` kind (`consents`, `subscriptions`,
        /// `careplans`, `alertstate`).
        Counter STATE_RECORDS = "dho_router_state_records_total";
        /// Counter. Batches routed and committed. No labels.
        Counter BATCHES = "dho_router_batches_total";
        /// Histogram. Time from reading a batch to committing it. No labels.
        Histogram ROUTING_LATENCY = "dho_router_routing_latency_seconds";
        /// Gauge. Patients with state in this instance's partitions. No labels.
        Gauge STATE_PATIENTS = "dho_router_state_patients";
        /// Gauge. Input partitions this instance holds state for. No labels.
        Gauge OWNED_PARTITIONS = "dho_router_owned_partitions";
        /// Counter. Input partitions whose state this instance loaded from the start of the
        /// state topics: on assignment, or again after a rewind. A partition it keeps
        /// through a rebalance is not loaded again (cooperative assignment). No labels.
        Counter STATE_PARTITION_LOADS = "dho_router_state_partition_loads_total";
        /// Counter. Exactly-once mode: batches whose offsets the group refused because it
        /// moved on during the batch (a rebalance), so their transaction was aborted and
        /// their records are routed again; and batches fetched after this instance's group
        /// session ran out, left to the partitions' next owner. No labels.
        Counter BATCHES_REWOUND = "dho_router_batches_rewound_total";
        /// Gauge (librdkafka statistics). Records behind the end of the input topics, by
        /// `group` (the configured group id) and `topic` (the two event topic names).
        Gauge CONSUMER_LAG = "dho_router_consumer_lag_records";
        /// Gauge (librdkafka statistics). The slowest broker's average round-trip time, by
        /// `client` (`consumer`, `producer`).
        Gauge BROKER_RTT = "dho_router_broker_rtt_seconds";
        /// Gauge (librdkafka statistics). Outputs handed to the producer and not yet
        /// acknowledged. No labels.
        Gauge PRODUCER_QUEUE_DEPTH = "dho_router_producer_queue_depth";
        /// Counter. Alerts raised, by `zone` (`green`, `yellow`, `red`) and `kind`
        /// (`zone_entered`, `escalated`, `resolved`, `no_data`).
        Counter ALERTS_RAISED = "dho_router_alerts_raised_total";
        /// Counter. Alerts that closed an episode (kind resolved), by `zone` the patient is
        /// back in.
        Counter ALERTS_RESOLVED = "dho_router_alerts_resolved_total";
        /// Gauge. Patients (of this instance's partitions) whose open alert episode is red.
        /// No labels.
        Gauge PATIENTS_IN_RED = "dho_router_patients_in_red";
        /// Gauge. Patients (of this instance's partitions) whose deliveries are held: a
        /// consent, subscription or care-plan record of theirs could not be applied. No
        /// labels.
        Gauge PATIENTS_ON_HOLD = "dho_router_patients_on_hold";
        /// Counter. Attempts to decode a record that found the schema registry unreachable;
        /// the record waited (nothing is dead-lettered or committed meanwhile). No labels.
        Counter REGISTRY_WAITS = "dho_router_registry_waits_total";
        /// Counter. Retention gaps: input partitions whose committed offset was below the
        /// log start when this instance was assigned them, by `topic` kind
        /// (`measurements`, `selfreports`). Each is also a WARN line with the partition
        /// and the offsets lost.
        Counter RETENTION_GAPS = "dho_router_retention_gaps_total";
        /// Counter. Input records deleted by retention before the router read them, by
        /// `topic` kind (the gaps' sizes; transaction markers included).
        Counter RETENTION_LOST = "dho_router_retention_lost_records_total";
    }

    /// The router's statistics gauges.
    pub const STATS: super::StatsNames = super::StatsNames {
        consumer_lag: Some(CONSUMER_LAG),
        broker_rtt: Some(BROKER_RTT),
        producer_queue_depth: Some(PRODUCER_QUEUE_DEPTH),
    };
}

/// `dho-ingest`, the gateway.
pub mod ingest {
    metric_names! {
        /// Counter. Requests, by `endpoint` (`fhir_bundle`, `fhir_consent`, `measurements`,
        /// `selfreports`, `subscriptions`, `careplans`) and `outcome` (`accepted`, `partial`,
        /// `rejected`, `unauthorized`, `forbidden`, `too_large`, `unavailable`, `error`).
        Counter REQUESTS = "dho_ingest_requests_total";
        /// Counter. Entries (bundle entries, JSON records, consents, subscriptions), by
        /// `outcome` (`accepted`, `rejected`, `forbidden`, `unavailable`, `failed`) and
        /// `reason` (a bounded validation or refusal code, `none` when accepted).
        Counter ENTRIES = "dho_ingest_entries_total";
        /// Counter. Authentication and authorisation refusals, by `endpoint` (as above) and
        /// `reason` (`missing_token`, `unknown_token`, `wrong_role`, ...).
        Counter AUTH_FAILURES = "dho_ingest_auth_failures_total";
        /// Counter. Consent changes asked for, by `credential` (the credential's configured
        /// name: bounded by the config, never a token) and `outcome` (`recorded`,
        /// `widens_sharing`, `narrows_others`, `not_owner`, `rate_limited`, `unavailable`,
        /// `rejected`). A credential refused often, or changing many patients, is a stolen
        /// one until shown otherwise.
        Counter CONSENT_CHANGES = "dho_ingest_consent_changes_total";
        /// Counter. Audit records of refused requests the broker did not take (the refusal
        /// itself stood). No labels.
        Counter REFUSALS_NOT_AUDITED = "dho_ingest_refusals_not_audited_total";
        /// Histogram. Time from handing a record to the producer until the broker
        /// acknowledged it. No labels.
        Histogram PUBLISH_LATENCY = "dho_ingest_publish_latency_seconds";
        /// Gauge. Records handed to the producer and not yet acknowledged (librdkafka's
        /// queue). No labels.
        Gauge PRODUCER_QUEUE_DEPTH = "dho_ingest_producer_queue_depth";
        /// Gauge. Entries being published right now (bounded by `max_in_flight`). No labels.
        Gauge IN_FLIGHT = "dho_ingest_in_flight_entries";
    }
}

/// `dho-consumer`, the SDK inside a care system. One process serves one subscriber, so
/// `topic` has one value there (`<prefix>.deliver.<subscriber_id>`).
pub mod consumer {
    metric_names! {
        /// Counter. Deliveries the handler finished successfully. No labels.
        Counter DELIVERIES_HANDLED = "dho_consumer_deliveries_handled_total";
        /// Histogram. Time one handler call took, failed calls included. No labels.
        Histogram HANDLER_DURATION = "dho_consumer_handler_duration_seconds";
        /// Counter. Failed handler calls, by `outcome` (`retry`, `stop`, `park`).
        Counter HANDLER_FAILURES = "dho_consumer_handler_failures_total";
        /// Counter. Deliveries dropped because their id was handled before. No labels.
        Counter DUPLICATES_DROPPED = "dho_consumer_duplicates_dropped_total";
        /// Counter. Deliveries parked on the `.dlq` topic, by `reason` (`handler_failed`,
        /// `undecodable`).
        Counter DELIVERIES_PARKED = "dho_consumer_deliveries_parked_total";
        /// Gauge (librdkafka statistics). Records between the position and the end of the
        /// subscriber topic, by `group` (the subscriber's group id) and `topic` (its one
        /// topic).
        Gauge LAG = "dho_consumer_lag_records";
        /// Gauge (librdkafka statistics). The slowest broker's average round-trip time, by
        /// `client` (`consumer`).
        Gauge BROKER_RTT = "dho_consumer_broker_rtt_seconds";
        /// Histogram. End to end: from the gateway's acknowledgement (the event's
        /// `received_time`) to the SDK handing the delivery to the application, by
        /// `category` (`measurement`, `self_report`, `alert`). Only deliveries that carry
        /// the event are measured (a MINIMAL reference carries no ingest time).
        Histogram END_TO_END_LATENCY = "dho_consumer_end_to_end_latency_seconds";
        /// Counter. Retention gaps: delivery-topic partitions whose committed offset was
        /// below the log start when this subscriber was assigned them. No labels (one
        /// topic per process). Each is also a WARN line with the partition and offsets.
        Counter RETENTION_GAPS = "dho_consumer_retention_gaps_total";
        /// Counter. Deliveries deleted by retention before the subscriber read them (the
        /// gaps' sizes; transaction markers included). No labels.
        Counter RETENTION_LOST = "dho_consumer_retention_lost_records_total";
    }

    /// The SDK's statistics gauges.
    pub const STATS: super::StatsNames = super::StatsNames {
        consumer_lag: Some(LAG),
        broker_rtt: Some(BROKER_RTT),
        producer_queue_depth: None,
    };
}

/// Every metric of every component.
pub fn all() -> impl Iterator<Item = &'static Metric> {
    router::ALL.iter().chain(ingest::ALL).chain(consumer::ALL)
}

/// Registers every metric's description with the installed recorder (Prometheus `# HELP`).
pub fn describe() {
    for m in all() {
        let help = m.help.trim();
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, help),
            Kind::Gauge => metrics::describe_gauge!(m.name, help),
            Kind::Histogram => metrics::describe_histogram!(m.name, help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_name_follows_the_scheme() {
        let mut seen = BTreeSet::new();
        for (component, table) in [
            ("router", router::ALL),
            ("ingest", ingest::ALL),
            ("consumer", consumer::ALL),
        ] {
            for m in table {
                assert!(seen.insert(m.name), "{} twice", m.name);
                assert!(
                    m.name.starts_with(&format!("dho_{component}_")),
                    "{} is not dho_{component}_*",
                    m.name
                );
                assert!(
                    m.name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{}",
                    m.name
                );
                assert_eq!(
                    m.kind == Kind::Counter,
                    m.name.ends_with("_total"),
                    "{}: counters, and only counters, end in _total",
                    m.name
                );
                if m.kind == Kind::Histogram {
                    assert!(m.name.ends_with("_seconds"), "{}: in seconds", m.name);
                }
                for not_base in ["_milliseconds", "_ms", "_micros", "_minutes", "_kb", "_mb"] {
                    assert!(!m.name.contains(not_base), "{}: base units", m.name);
                }
                let kind = format!("{:?}.", m.kind);
                assert!(
                    m.help.trim().starts_with(&kind[..kind.len() - 1]),
                    "{}: the doc line starts with its kind",
                    m.name
                );
                assert!(
                    m.help.contains("label") || m.help.contains(" by `"),
                    "{}: the doc line names its labels (or says there are none)",
                    m.name
                );
            }
        }
        assert!(seen.contains("dho_router_alerts_raised_total"));
        assert!(seen.contains("dho_consumer_end_to_end_latency_seconds"));
    }

    #[test]
    fn statistics_gauges_are_declared_gauges() {
        for (stats, table) in [
            (router::STATS, router::ALL),
            (consumer::STATS, consumer::ALL),
        ] {
            for name in [
                stats.consumer_lag,
                stats.broker_rtt,
                stats.producer_queue_depth,
            ]
            .into_iter()
            .flatten()
            {
                let m = table.iter().find(|m| m.name == name).unwrap();
                assert_eq!(m.kind, Kind::Gauge, "{name}");
            }
        }
    }
}
