//! The router's metric names, in one place. Labels are bounded: reasons, categories and
//! topic kinds only, never patient or subscriber identifiers.

pub const EVENTS_IN: &str = "dho_router_events_in_total";
pub const DELIVERIES: &str = "dho_router_deliveries_total";
pub const WITHHELD: &str = "dho_router_withheld_total";
pub const DEADLETTERS: &str = "dho_router_deadletters_total";
pub const STATE_RECORDS: &str = "dho_router_state_records_total";
pub const BATCHES: &str = "dho_router_batches_total";
pub const ROUTING_LATENCY: &str = "dho_router_routing_latency_seconds";
pub const STATE_PATIENTS: &str = "dho_router_state_patients";
pub const OWNED_PARTITIONS: &str = "dho_router_owned_partitions";
/// Records behind the end of the input topics, per topic kind (librdkafka statistics).
pub const CONSUMER_LAG: &str = "dho_router_consumer_lag_records";
/// Average broker round-trip time seen by the router's consumer.
pub const BROKER_RTT: &str = "dho_router_broker_rtt_seconds";
/// Alerts raised, by `zone` (green/yellow/red) and `kind` (zone_entered, escalated,
/// resolved, no_data).
pub const ALERTS_RAISED: &str = "dho_router_alerts_raised_total";
/// Alerts that closed an episode (kind resolved), by the zone the patient is back in.
pub const ALERTS_RESOLVED: &str = "dho_router_alerts_resolved_total";
/// Patients (of this instance's partitions) whose open alert episode is red.
pub const PATIENTS_IN_RED: &str = "dho_router_patients_in_red";
