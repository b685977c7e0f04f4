//! A fleet of synthetic patients producing realistic home readings per diagnosis: COPD
//! (SpO2, pulse, symptom score), heart failure (weight, blood pressure, pulse) and diabetes
//! (glucose), with a daily rhythm and occasional exacerbations that cross care-plan limits.
//! Optionally some readings sync late (effective time hours back) and some submissions are
//! malformed. [`run`] offers a fixed rate for a fixed duration, through the library
//! ([`Sink::Library`]) or the gateway over HTTP ([`Sink::Gateway`]); [`enrol_fleet`] first
//! records, as a care organisation, what lets the fleet's readings be delivered. The
//! `dho-simulator` program (`src/main.rs`) runs it from the command line.

mod client;
mod enrol;
mod fleet;
mod run;

pub use client::GatewayClient;
pub use enrol::{EnrolError, Enrolment, SIM_PLAN_NAME, enrol_fleet};
pub use fleet::{Diagnosis, Fleet, Outcome, SimEvent, SimOptions, SimPatient, Submission};
pub use run::{RunStats, Sink, run};
