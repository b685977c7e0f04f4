//! Publishing into the hub: the typed [`Publisher`] that device platforms written in Rust
//! embed (and that the gateway, the admin tools and the simulator use), the ingest
//! [`gateway`] (HTTP: FHIR Bundles, native JSON, consent, subscription and care plan
//! intake), the current-[`state`] reader behind `dho-admin`, the care-plan change
//! [`audit`] records, and the simulator.

pub mod audit;
pub mod gateway;
mod publisher;
pub mod simulator;
pub mod state;

pub use publisher::{
    CarePlanAudit, ConsentAudit, Error, Publisher, Receipt, Result, consent_audit_topic,
};
