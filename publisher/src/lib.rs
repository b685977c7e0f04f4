//! Publishing into the hub: the typed [`Publisher`] that device platforms written in Rust
//! embed (and that the ingest gateway, `dho-admin` and the simulator use), and the
//! care-plan change [`audit`] records, and reading the hub's state and audit topics back
//! ([`state`]: `dho-admin` and the gateway's consent checks). No HTTP server and no command-line parser: a
//! platform embedding it compiles Kafka, the schema registry client and the contract, and
//! nothing else of the hub.

pub mod audit;
mod publisher;
pub mod state;

pub use publisher::{
    CarePlanAudit, ConsentAudit, Error, Publisher, Receipt, Result, SubscriptionAudit,
    consent_audit_topic,
};
