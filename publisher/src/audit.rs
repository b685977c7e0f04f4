//! Audit records of care-plan changes, kept like consent changes: who recorded or deleted
//! which plan of which patient, when, and through what; written on
//! `<prefix>.audit.careplans` ([`TopicNames::careplan_audit`]) before the change itself,
//! by [`Publisher::record_care_plan`] and [`Publisher::remove_care_plan`].
//!
//! The record is the contract's `CarePlanChange` (`schemas/avro/CarePlanChange.avsc`),
//! registered and encoded like every other contract record; re-exported here for callers
//! that read the audit topic.
//!
//! [`TopicNames::careplan_audit`]: dho_schemas::TopicNames::careplan_audit
//! [`Publisher::record_care_plan`]: crate::Publisher::record_care_plan
//! [`Publisher::remove_care_plan`]: crate::Publisher::remove_care_plan

pub use dho_schemas::model::{CarePlanAction, CarePlanChange};
