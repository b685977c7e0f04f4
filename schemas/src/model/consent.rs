//! A patient's consent directives and their audit records (`Consent.avsc`,
//! `ConsentChange.avsc`).

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConsentStatus {
    Active,
    Inactive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProvisionKind {
    Permit,
    Deny,
}

/// A health professional by HPR number (helsepersonellnummer).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HealthProfessional {
    pub hpr_number: String,
}

/// One consent rule. FHIR's nesting is kept as `parent`, the position of the enclosing
/// rule in [`Consent::provisions`] (see `Consent.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentProvision {
    pub kind: ProvisionKind,
    /// The recipient organisation; `None` for everyone, or for `professional`.
    pub actor: Option<OrganisationIdentifier>,
    pub categories: Vec<DataCategory>,
    pub period_start: Option<Millis>,
    /// Exclusive.
    pub period_end: Option<Millis>,
    /// The one health professional the rule is about (then `actor` is `None`).
    pub professional: Option<HealthProfessional>,
    pub parent: Option<i32>,
}

impl ConsentProvision {
    /// A top-level rule about one organisation.
    pub fn organisation(
        kind: ProvisionKind,
        actor: OrganisationIdentifier,
        categories: Vec<DataCategory>,
    ) -> Self {
        Self {
            kind,
            actor: Some(actor),
            categories,
            period_start: None,
            period_end: None,
            professional: None,
            parent: None,
        }
    }

    /// A rule about everyone: no organisation, no professional.
    pub fn is_blanket(&self) -> bool {
        self.actor.is_none() && self.professional.is_none()
    }

    /// Whether the rule's categories and period include `category` at `at`.
    pub fn in_force(&self, category: DataCategory, at: Millis) -> bool {
        self.categories.contains(&category)
            && self.period_start.is_none_or(|start| start <= at)
            && self.period_end.is_none_or(|end| at < end)
    }

    /// Whether this rule, on its own (its parents aside), speaks about the organisation
    /// `actor` receiving `category` at time `at`: its own organisation, or everyone. A rule
    /// about one professional never speaks about an organisation.
    pub fn covers(
        &self,
        actor: &OrganisationIdentifier,
        category: DataCategory,
        at: Millis,
    ) -> bool {
        let about = match &self.actor {
            Some(own) => own.same_entity(actor),
            None => self.professional.is_none(),
        };
        about && self.in_force(category, at)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consent {
    pub consent_id: String,
    pub patient: PatientIdentifier,
    pub status: ConsentStatus,
    pub provisions: Vec<ConsentProvision>,
    pub legal_basis: String,
    pub recorded_by: OrganisationIdentifier,
    pub recorded_at: Millis,
}

/// What a consent change did (see `ConsentChange.avsc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConsentAction {
    Recorded,
    Withdrawn,
    Deleted,
}

/// The audit record of one consent change: who recorded what, when, through what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentChange {
    pub change_id: String,
    pub consent_id: String,
    pub patient: PatientIdentifier,
    pub action: ConsentAction,
    pub consent: Option<Consent>,
    pub changed_by: OrganisationIdentifier,
    pub principal: String,
    pub channel: String,
    pub changed_at: Millis,
}
