//! What every hub service shares for operations, so the three never drift apart:
//!
//! - [`events`]: the observable-event traits (each event logs and counts together) and
//!   [`Pseudonym`], the only form in which an event carries a patient;
//! - [`names`]: every metric name of every component (`dho_<component>_<what>_<unit>`), with
//!   its labels and their bounded values;
//! - [`KafkaStats`] / [`StatsContext`]: librdkafka's statistics as gauges (consumer lag per
//!   group and topic, broker round-trip time, producer queue depth);
//! - `server` (feature `server`, on by default): `/metrics`, `/healthz` and `/readyz`, and
//!   the process-wide Prometheus recorder. Libraries (the consumer SDK) turn it off and only
//!   record through the `metrics` facade.

pub mod events;
pub mod names;
mod pseudonym;
#[cfg(feature = "server")]
pub mod server;
mod stats;

pub use events::{InternalEvent, RegisteredEvent};
pub use pseudonym::Pseudonym;
#[cfg(feature = "server")]
pub use server::{InstallError, Readiness, install_recorder};
pub use stats::{KafkaStats, StatsContext};
