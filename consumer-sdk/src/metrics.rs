//! The SDK's metric names (kept with every component's in [`dho_telemetry::names`], with
//! their labels) and the bounded reasons a delivery is parked. Labels are bounded (an
//! outcome, a reason, a category, the subscriber's own group and topic); never patient ids,
//! delivery ids or error text. What updates them is in the crate's observable events.
//!
//! The SDK records through the `metrics` facade; install any recorder (for example
//! `metrics-exporter-prometheus`) in the application to export them.

pub use dho_telemetry::names::consumer::{
    DELIVERIES_HANDLED, DELIVERIES_PARKED, DUPLICATES_DROPPED, END_TO_END_LATENCY,
    HANDLER_DURATION, HANDLER_FAILURES, LAG, RETENTION_GAPS, RETENTION_LOST,
};

/// Bounded reasons a delivery is parked (a metric label and the reason header).
pub mod reasons {
    pub const HANDLER_FAILED: &str = "handler_failed";
    pub const UNDECODABLE: &str = "undecodable";
}
