//! FHIR `Consent` as HL7 Norway's HNWithdrawConsentProfile defines it → the hub's [`Consent`].
//!
//! Accepted shape:
//! ```json
//! {"resourceType": "Consent", "id": "c-1", "status": "active",
//!  "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
//!  "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
//!  "patient": {"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "…"}},
//!  "policyRule": {"coding": [{"system": "http://hl7.no/fhir/CodeSystem/no-basis-legal-formality-or-basis", "code": "PBRL5-3"}]},
//!  "provision": {"type": "permit", "period": {"start": "2026-01-01"},
//!    "actor": [{"role": {…}, "reference": {"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": "…"}}}],
//!    "class": [{"system": "https://dho.example/fhir/CodeSystem/data-category", "code": "measurement"}],
//!    "provision": [{"type": "deny", "actor": [{"reference": {"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.4", "value": "…"}}}]}]}}
//! ```
//! A provision without actor is about everyone (at the top, a blanket rule) or, nested, about
//! its parent's actor; an actor is an organisation (orgnr, RESH) or one health professional
//! (HPR). A nested provision applies only where its parent does and there overrides it.
//! Every element that could change who may see what is either evaluated or refused with the
//! element named: never ignored. A withdrawal is `status` `inactive` (or `rejected`), or a
//! deny provision.

use serde::Deserialize;
use serde_json::Value;

use super::consent_provision::{flatten, is_container, nested_provisions};
use super::types::{CodeableConcept, Reference};
use super::{FhirError, IssueCode, LOINC, VkpCode};
use crate::model::*;
use crate::{Policy, validate};

pub use super::consent_out::{consent_to_fhir, fhir_consent};

/// Code system of the hub's data categories in `Consent.provision.class`.
pub const CATEGORY_SYSTEM: &str = "https://dho.example/fhir/CodeSystem/data-category";
/// `Consent.scope`: the only scope the hub shares under.
pub const SCOPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
pub const SCOPE_PRIVACY: &str = "patient-privacy";
/// `Consent.category`: LOINC "Patient Consent".
pub const CATEGORY_PATIENT_CONSENT: &str = "59284-0";
/// `Consent.policyRule`: pasient- og brukerrettighetsloven § 5-3, in HL7 Norway's code system.
pub const LEGAL_BASIS_SYSTEM: &str =
    "http://hl7.no/fhir/CodeSystem/no-basis-legal-formality-or-basis";
pub const LEGAL_BASIS_PBRL_5_3: &str = "PBRL5-3";
/// `Consent.provision.actor.role`: who the actor is to the data (R4's example value set).
pub const ROLE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
/// The elements of a Consent the hub evaluates or may safely ignore (narrative, metadata,
/// who recorded it). Anything else is refused, naming it (its parts: `consent_provision`).
const CONSENT_ELEMENTS: &[&str] = &[
    "resourceType",
    "id",
    "meta",
    "text",
    "language",
    "extension",
    "identifier",
    "status",
    "scope",
    "category",
    "patient",
    "dateTime",
    "performer",
    "organization",
    "sourceAttachment",
    "sourceReference",
    "verification",
    "policyRule",
    "provision",
];
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FhirConsent {
    id: Option<String>,
    status: Option<String>,
    scope: Option<CodeableConcept>,
    #[serde(default)]
    category: Vec<CodeableConcept>,
    patient: Option<Reference>,
    policy_rule: Option<CodeableConcept>,
}

pub(super) fn invalid(location: impl Into<String>, code: IssueCode, message: &str) -> FhirError {
    FhirError::new(location, code, VkpCode::Format, message)
}

pub(super) fn shape(at: &str, e: serde_path_to_error::Error<serde_json::Error>) -> FhirError {
    let path = e.path().to_string();
    let location = if path == "." {
        at.to_string()
    } else {
        format!("{at}.{path}")
    };
    invalid(location, IssueCode::Structure, "wrong JSON type or shape")
}

/// Refuses any element of `json` (an object) not in `known`, naming it.
pub(super) fn only_known(json: &Value, known: &[&str], at: &str) -> Result<(), FhirError> {
    let Some(object) = json.as_object() else {
        return Err(invalid(at, IssueCode::Structure, "expected a JSON object"));
    };
    for key in object.keys() {
        // `_x` carries the extensions of primitive `x`.
        let element = key.strip_prefix('_').unwrap_or(key);
        if !known.contains(&element) {
            return Err(invalid(
                format!("{at}.{element}"),
                IssueCode::NotSupported,
                "the hub cannot evaluate this element; it refuses the Consent rather than ignore it",
            ));
        }
    }
    Ok(())
}

fn has_coding(concept: &CodeableConcept, system: &str, code: &str) -> bool {
    concept
        .coding
        .iter()
        .any(|c| c.system.as_deref() == Some(system) && c.code.as_deref() == Some(code))
}

/// Maps a FHIR Consent recorded by `recorder` at `now`. The stored consent id is
/// `<recorder orgnr>.<Consent.id>` (a new id if none is given): one organisation can never
/// overwrite a directive another recorded, and re-sending the same `id` (for example with
/// `status: inactive`) replaces the organisation's own directive.
pub fn consent_from_fhir(
    json: &Value,
    recorder: &OrganisationIdentifier,
    now: Millis,
    policy: Policy,
) -> Result<Consent, FhirError> {
    if json.get("resourceType").and_then(|t| t.as_str()) != Some("Consent") {
        return Err(invalid(
            "resourceType",
            IssueCode::NotSupported,
            "expected a Consent",
        ));
    }
    only_known(json, CONSENT_ELEMENTS, "Consent")?;
    let fhir: FhirConsent =
        serde_path_to_error::deserialize(json).map_err(|e| shape("Consent", e))?;
    let id = consent_id(fhir.id.clone())?;
    let status = match fhir.status.as_deref() {
        Some("active") => ConsentStatus::Active,
        Some("inactive" | "rejected" | "entered-in-error") => ConsentStatus::Inactive,
        Some(_) => {
            return Err(invalid(
                "Consent.status",
                IssueCode::Value,
                "must be active, inactive, rejected or entered-in-error",
            ));
        }
        None => {
            return Err(invalid(
                "Consent.status",
                IssueCode::Required,
                "status is required",
            ));
        }
    };
    check_scope_category_rule(&fhir)?;
    let patient = patient(fhir.patient.as_ref(), policy)?;
    let root = json.get("provision").ok_or_else(|| {
        invalid(
            "Consent.provision",
            IssueCode::Required,
            "a provision (permit or deny) is required",
        )
    })?;
    let mut provisions = vec![];
    if is_container(root) {
        // A provision with nothing but nested ones: each is a top-level rule (the hub's own
        // output, for rules no single top-level provision can hold).
        for (i, nested) in nested_provisions(root, "Consent.provision")?
            .iter()
            .enumerate()
        {
            flatten(
                nested,
                &format!("Consent.provision.provision[{i}]"),
                None,
                &mut provisions,
            )?;
        }
    } else {
        flatten(root, "Consent.provision", None, &mut provisions)?;
    }
    let consent = Consent {
        consent_id: format!("{}.{id}", recorder.value),
        patient,
        status,
        provisions,
        legal_basis: format!("{LEGAL_BASIS_SYSTEM}#{LEGAL_BASIS_PBRL_5_3}"),
        recorded_by: recorder.clone(),
        recorded_at: now,
    };
    consent.validate(policy).map_err(|e| {
        invalid(
            format!("Consent ({})", e.field),
            IssueCode::Value,
            &e.detail,
        )
    })?;
    Ok(consent)
}

fn consent_id(id: Option<String>) -> Result<String, FhirError> {
    let Some(id) = id else {
        return Ok(uuid::Uuid::new_v4().to_string());
    };
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(id)
    } else {
        Err(invalid(
            "Consent.id",
            IssueCode::Value,
            "1 to 64 characters of A-Z, a-z, 0-9, '-' and '.'",
        ))
    }
}

/// HL7 Norway fixes all three: a privacy consent (a research or treatment consent is no
/// permission to share), the LOINC category, and § 5-3 as the legal rule.
fn check_scope_category_rule(fhir: &FhirConsent) -> Result<(), FhirError> {
    let scope = fhir.scope.as_ref().ok_or_else(|| {
        invalid(
            "Consent.scope",
            IssueCode::Required,
            "scope is required: consentscope#patient-privacy",
        )
    })?;
    if !has_coding(scope, SCOPE_SYSTEM, SCOPE_PRIVACY) {
        return Err(invalid(
            "Consent.scope",
            IssueCode::CodeInvalid,
            "the hub shares under a privacy consent (consentscope#patient-privacy) only; a research, treatment or advance-directive consent is not one",
        ));
    }
    if !fhir
        .category
        .iter()
        .any(|c| has_coding(c, LOINC, CATEGORY_PATIENT_CONSENT))
    {
        return Err(invalid(
            "Consent.category",
            IssueCode::Required,
            "a category LOINC 59284-0 (Patient Consent) is required",
        ));
    }
    let rule = fhir.policy_rule.as_ref().ok_or_else(|| {
        invalid(
            "Consent.policyRule",
            IssueCode::Required,
            "policyRule is required: no-basis-legal-formality-or-basis#PBRL5-3",
        )
    })?;
    if !has_coding(rule, LEGAL_BASIS_SYSTEM, LEGAL_BASIS_PBRL_5_3) {
        return Err(invalid(
            "Consent.policyRule",
            IssueCode::CodeInvalid,
            "the legal rule must be http://hl7.no/fhir/CodeSystem/no-basis-legal-formality-or-basis#PBRL5-3",
        ));
    }
    Ok(())
}

fn patient(subject: Option<&Reference>, policy: Policy) -> Result<PatientIdentifier, FhirError> {
    let person = |at: &str, code, message: &str| {
        FhirError::new(at, code, VkpCode::PersonId, message.to_string())
    };
    let identifier = subject.and_then(|s| s.identifier.as_ref()).ok_or_else(|| {
        person(
            "Consent.patient.identifier",
            IssueCode::Required,
            "the patient must be a logical reference with an identifier",
        )
    })?;
    let system = [
        PatientIdSystem::Fnr,
        PatientIdSystem::Dnr,
        PatientIdSystem::Fhn,
    ]
    .into_iter()
    .find(|s| Some(s.oid()) == identifier.system.as_deref())
    .ok_or_else(|| {
        person(
            "Consent.patient.identifier.system",
            IssueCode::CodeInvalid,
            "must be fødselsnummer, D-nummer or felles hjelpenummer",
        )
    })?;
    let id = PatientIdentifier {
        system,
        value: identifier.value.clone().unwrap_or_default(),
    };
    validate::patient("patient", &id, policy).map_err(|e| {
        person(
            "Consent.patient.identifier.value",
            IssueCode::CodeInvalid,
            &e.detail,
        )
    })?;
    Ok(id)
}

#[cfg(test)]
#[path = "consent_tests.rs"]
mod tests;
