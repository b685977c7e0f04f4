//! A Confluent-compatible schema registry that stores schemas in a compacted Kafka topic.

mod canonical;
mod compat;
mod error;
pub mod log;
pub mod state;
pub mod types;

pub use error::{Error, Result};
