//! The consent-first router: reads events and the patients' consent and subscription state,
//! decides (a pure function, [`dho_routing_core::decision`]) and delivers to one topic per
//! subscriber with an audit record per delivery. See `pipeline` for the guarantees and how
//! they are kept.

mod config;
pub mod events;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod outputs;
mod pipeline;

pub use config::RouterConfig;
pub use pipeline::{Error, Result, Router, RunStats, delivery_id};
