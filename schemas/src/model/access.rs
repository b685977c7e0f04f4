//! Who may change what: the organisations responsible for a patient's follow-up
//! (`Enrolment.avsc`, `EnrolmentChange.avsc`) and the audit of refused requests
//! (`AccessRefusal.avsc`).

use serde::{Deserialize, Serialize};

use super::*;

/// An organisation responsible for a patient's follow-up, as an operator recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrolment {
    pub patient: PatientIdentifier,
    pub organisation: OrganisationIdentifier,
    /// Why it is responsible, in words an auditor reads.
    pub basis: String,
    /// The operator who recorded it.
    pub enrolled_by: String,
    pub enrolled_at: Millis,
}

impl Enrolment {
    /// The record id under the patient on `<prefix>.enrolments`: one per organisation.
    pub fn record_id(organisation: &OrganisationIdentifier) -> String {
        let system = match organisation.system {
            OrgIdSystem::Orgnr => "orgnr",
            OrgIdSystem::Resh => "resh",
        };
        format!("{system}:{}", organisation.value)
    }
}

/// What an enrolment change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EnrolmentAction {
    Enrolled,
    Ended,
}

/// The audit record of one enrolment change (`<prefix>.audit.enrolments`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrolmentChange {
    pub change_id: String,
    pub patient: PatientIdentifier,
    pub organisation: OrganisationIdentifier,
    pub action: EnrolmentAction,
    /// The enrolment as recorded; `None` when ended.
    pub enrolment: Option<Enrolment>,
    pub principal: String,
    pub channel: String,
    pub changed_at: Millis,
}

/// The audit record of a request the gateway refused (`<prefix>.audit.refusals`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessRefusal {
    pub refusal_id: String,
    /// The route (a bounded label).
    pub endpoint: String,
    /// The credential's name.
    pub principal: String,
    pub organisation: OrganisationIdentifier,
    /// Known when the refusal came after the body was read.
    pub patient: Option<PatientIdentifier>,
    /// A bounded code: `wrong_role`, `not_owner`, `widens_sharing`, ...
    pub reason: String,
    /// What the caller was told.
    pub detail: String,
    pub refused_at: Millis,
}
