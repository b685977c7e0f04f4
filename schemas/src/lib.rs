//! The DHO data contract: the Avro schemas (source of truth, in `schemas/avro/`), the Rust
//! types that mirror them, the Confluent wire format, codecs, validation of identifiers,
//! codes and units, Java-compatible partitioning and the topic layout; at the edge, the
//! FHIR R4 / VKP mapping ([`fhir`]) and the Protobuf forms for Protobuf publishers ([`proto`]).
//!
//! No I/O lives here: everything is a pure function of its input, tested in place.

pub mod avro;
pub mod codec;
pub mod codes;
mod error;
pub mod fhir;
pub mod fixtures;
pub mod ids;
pub mod model;
pub mod partition;
pub mod proto;
pub mod topics;
pub mod validate;
pub mod wire;

pub use avro::SchemaKind;
pub use codec::AvroRecord;
pub use error::{Error, Result};
pub use model::*;
pub use topics::TopicNames;
pub use validate::{Policy, Reason, ValidationError};
