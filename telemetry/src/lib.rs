//! What every hub service shares for operations, so the three never drift apart:
//!
//! - [`names`]: every metric name of every component (`dho_<component>_<what>_<unit>`), with
//!   its labels and their bounded values;
//! - [`KafkaStats`] / [`StatsContext`]: librdkafka's statistics as gauges (consumer lag per
//!   group and topic, broker round-trip time, producer queue depth);
//! - `server` (feature `server`, on by default): `/metrics`, `/healthz` and `/readyz`, and
//!   the process-wide Prometheus recorder. Libraries (the consumer SDK) turn it off and only
//!   record through the `metrics` facade.

pub mod names;
#[cfg(feature = "server")]
pub mod server;
mod stats;

#[cfg(feature = "server")]
pub use server::{InstallError, Readiness, install_recorder};
pub use stats::{KafkaStats, StatsContext};
