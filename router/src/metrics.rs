//! The router's metric names. They live with every other component's in
//! [`dho_telemetry::names::router`] (one place, one scheme); this re-exports them. Labels
//! are bounded: reasons, categories, zones, topic kinds and the group id, never patient or
//! subscriber identifiers.

pub use dho_telemetry::names::router::*;
