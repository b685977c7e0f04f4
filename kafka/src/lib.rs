//! How the hub's services talk to Kafka and the schema registry: typed client settings
//! with a checked librdkafka pass-through, the topic layout and its creation, and Avro
//! serde over the Confluent wire format with schemas registered at start-up.
//!
//! The same code talks to the embedded development stack and to a production cluster
//! with Confluent Schema Registry: only the addresses differ.

mod admin;
mod error;
#[cfg(feature = "service")]
pub mod layers;
pub mod outage;
pub mod retention;
mod serde;
#[cfg(feature = "service")]
pub mod service;
mod settings;

pub use admin::{
    TopicSpec, check_topics, ensure_topics, hub_topics, partition_count, partition_ids,
    topic_retention,
};
pub use error::{Error, Result};
pub use serde::{AvroSerde, Encoder};
pub use settings::{FETCH_PROMPTLY, KafkaSettings};
