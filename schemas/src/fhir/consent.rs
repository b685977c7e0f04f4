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

use super::types::{CodeableConcept, Coding, Period, Reference};
use super::{FhirError, HPR_OID, IssueCode, LOINC, ORGNR_OID, RESH_OID, VkpCode};
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
/// The roles an actor may have: the data's recipient. A role given as text only describes
/// the actor and is accepted as that.
const RECIPIENT_ROLES: [&str; 2] = ["IRCP", "PRCP"];
/// Nested provisions are split per actor: a bound on the rules one Consent becomes.
const MAX_RULES: usize = 256;

/// The elements of a Consent and of its parts the hub evaluates or may safely ignore
/// (narrative, metadata, who recorded it). Anything else is refused, naming it.
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
const PROVISION_ELEMENTS: &[&str] = &[
    "id",
    "extension",
    "type",
    "period",
    "actor",
    "class",
    "provision",
];
const ACTOR_ELEMENTS: &[&str] = &["id", "extension", "role", "reference"];

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

#[derive(Debug, Deserialize)]
struct Provision {
    #[serde(rename = "type")]
    type_: Option<String>,
    period: Option<Period>,
    /// Read one by one in `party`, to name an unknown element in one.
    #[serde(default)]
    actor: Vec<Value>,
    #[serde(default)]
    class: Vec<Coding>,
}

#[derive(Debug, Deserialize)]
struct Actor {
    role: Option<CodeableConcept>,
    reference: Option<Reference>,
}

fn invalid(location: impl Into<String>, code: IssueCode, message: &str) -> FhirError {
    FhirError::new(location, code, VkpCode::Format, message)
}

fn shape(at: &str, e: serde_path_to_error::Error<serde_json::Error>) -> FhirError {
    let path = e.path().to_string();
    let location = if path == "." {
        at.to_string()
    } else {
        format!("{at}.{path}")
    };
    invalid(location, IssueCode::Structure, "wrong JSON type or shape")
}

/// Refuses any element of `json` (an object) not in `known`, naming it.
fn only_known(json: &Value, known: &[&str], at: &str) -> Result<(), FhirError> {
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

/// Who a rule is about.
#[derive(Debug, Clone, PartialEq)]
enum Party {
    Everyone,
    Organisation(OrganisationIdentifier),
    Professional(HealthProfessional),
}

impl Party {
    fn of(p: &ConsentProvision) -> Self {
        match (&p.actor, &p.professional) {
            (Some(org), _) => Party::Organisation(org.clone()),
            (None, Some(hpr)) => Party::Professional(hpr.clone()),
            (None, None) => Party::Everyone,
        }
    }

    /// Whether a rule about `self` can sit inside one about `outer`: the same party, one
    /// professional inside an organisation, or anything inside a rule about everyone.
    fn within(&self, outer: &Party) -> bool {
        match (outer, self) {
            (Party::Everyone, _) => true,
            (Party::Organisation(o), Party::Organisation(me)) => me.same_entity(o),
            (Party::Organisation(_), Party::Professional(_)) => true,
            (Party::Professional(o), Party::Professional(me)) => me == o,
            _ => false,
        }
    }
}

/// A provision holding nothing but nested provisions.
fn is_container(json: &Value) -> bool {
    json.as_object().is_some_and(|o| {
        o.contains_key("provision")
            && o.keys()
                .all(|k| matches!(k.as_str(), "provision" | "id" | "extension"))
    })
}

fn nested_provisions<'a>(json: &'a Value, at: &str) -> Result<&'a [Value], FhirError> {
    match json.get("provision") {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(invalid(
            format!("{at}.provision"),
            IssueCode::Structure,
            "expected an array",
        )),
    }
}

/// Adds the rules of provision `json` (at `at`, nested in the rule at `parent`) to `out`:
/// one per actor, each followed by the rules of the nested provisions. A nested rule keeps
/// only what lies within its parent (categories, period, party), so each rule states every
/// condition it has.
fn flatten(
    json: &Value,
    at: &str,
    parent: Option<usize>,
    out: &mut Vec<ConsentProvision>,
) -> Result<(), FhirError> {
    only_known(json, PROVISION_ELEMENTS, at)?;
    let p: Provision = serde_path_to_error::deserialize(json).map_err(|e| shape(at, e))?;
    let outer = parent.map(|i| out[i].clone());
    let kind = match (p.type_.as_deref(), &outer) {
        (Some("permit"), _) => ProvisionKind::Permit,
        (Some("deny"), _) => ProvisionKind::Deny,
        (Some(_), _) => {
            return Err(invalid(
                format!("{at}.type"),
                IssueCode::Value,
                "must be permit or deny",
            ));
        }
        (None, Some(outer)) => outer.kind,
        (None, None) => {
            return Err(invalid(
                format!("{at}.type"),
                IssueCode::Required,
                "permit or deny is required",
            ));
        }
    };
    let (period_start, period_end) = period(&p, at, outer.as_ref())?;
    let categories = categories(&p, at, outer.as_ref())?;
    let outer_party = outer.as_ref().map_or(Party::Everyone, Party::of);
    let mut parties = vec![];
    for (i, actor) in p.actor.iter().enumerate() {
        let location = format!("{at}.actor[{i}]");
        let party = party(actor, &location)?;
        if !party.within(&outer_party) {
            return Err(invalid(
                location,
                IssueCode::Value,
                "a nested provision is about its parent's organisation (or one professional there) or its parent's professional; about anyone else it would never apply",
            ));
        }
        if kind == ProvisionKind::Permit && matches!(party, Party::Professional(_)) {
            return Err(FhirError::new(
                format!("{location}.reference.identifier.system"),
                IssueCode::NotSupported,
                VkpCode::SystemId,
                "the hub shares with organisations: it cannot permit one health professional (deny one instead, or permit the organisation)",
            ));
        }
        parties.push(party);
    }
    if parties.is_empty() {
        parties.push(outer_party);
    }
    if kind == ProvisionKind::Permit && parties == [Party::Everyone] {
        return Err(invalid(
            format!("{at}.actor"),
            IssueCode::Required,
            "a permit names the organisation it shares with (actor, here or in an enclosing provision)",
        ));
    }
    let nested = nested_provisions(json, at)?;
    for party in parties {
        if out.len() >= MAX_RULES {
            return Err(invalid(
                "Consent.provision",
                IssueCode::NotSupported,
                "too many rules (nested provisions times actors)",
            ));
        }
        let (actor, professional) = match party {
            Party::Everyone => (None, None),
            Party::Organisation(org) => (Some(org), None),
            Party::Professional(hpr) => (None, Some(hpr)),
        };
        let index = out.len();
        out.push(ConsentProvision {
            kind,
            actor,
            categories: categories.clone(),
            period_start,
            period_end,
            professional,
            parent: parent.map(|i| i as i32),
        });
        for (i, child) in nested.iter().enumerate() {
            flatten(child, &format!("{at}.provision[{i}]"), Some(index), out)?;
        }
    }
    Ok(())
}

/// The provision's period as the hub's instants (see `period_bound`), within its parent's.
fn period(
    p: &Provision,
    at: &str,
    outer: Option<&ConsentProvision>,
) -> Result<(Option<Millis>, Option<Millis>), FhirError> {
    let bound = |field: &str, text: Option<&String>| {
        text.map(|t| {
            super::time::period_bound(t, field == "end").map_err(|_| {
                invalid(
                    format!("{at}.period.{field}"),
                    IssueCode::Value,
                    "not a FHIR date or dateTime",
                )
            })
        })
        .transpose()
    };
    let mut start = bound("start", p.period.as_ref().and_then(|p| p.start.as_ref()))?;
    let mut end = bound("end", p.period.as_ref().and_then(|p| p.end.as_ref()))?;
    if let Some(outer) = outer {
        start = start.max(outer.period_start);
        end = match (end, outer.period_end) {
            (Some(own), Some(theirs)) => Some(own.min(theirs)),
            (own, theirs) => own.or(theirs),
        };
    }
    if let (Some(start), Some(end)) = (start, end)
        && start >= end
    {
        let what = if outer.is_some() {
            "the period ends before it starts, or lies outside its parent's"
        } else {
            "the period ends before it starts"
        };
        return Err(invalid(format!("{at}.period"), IssueCode::Value, what));
    }
    Ok((start, end))
}

/// The provision's data categories (all, without `class`), within its parent's.
fn categories(
    p: &Provision,
    at: &str,
    outer: Option<&ConsentProvision>,
) -> Result<Vec<DataCategory>, FhirError> {
    let all = [
        DataCategory::Measurement,
        DataCategory::SelfReport,
        DataCategory::Alert,
    ];
    let mut own = vec![];
    for (i, c) in p.class.iter().enumerate() {
        let category = match (c.system.as_deref(), c.code.as_deref()) {
            (Some(CATEGORY_SYSTEM) | None, Some("measurement")) => DataCategory::Measurement,
            (Some(CATEGORY_SYSTEM) | None, Some("self-report")) => DataCategory::SelfReport,
            (Some(CATEGORY_SYSTEM) | None, Some("alert")) => DataCategory::Alert,
            _ => {
                return Err(invalid(
                    format!("{at}.class[{i}]"),
                    IssueCode::CodeInvalid,
                    "a data category is measurement, self-report or alert",
                ));
            }
        };
        if !own.contains(&category) {
            own.push(category);
        }
    }
    if own.is_empty() {
        own = all.to_vec();
    }
    if let Some(outer) = outer {
        own.retain(|c| outer.categories.contains(c));
        if own.is_empty() {
            return Err(invalid(
                format!("{at}.class"),
                IssueCode::Value,
                "none of these categories is in the parent provision's: it would never apply",
            ));
        }
    }
    Ok(own)
}

/// An actor: an organisation (orgnr, RESH) or one health professional (HPR), with a
/// recipient role if any.
fn party(actor: &Value, at: &str) -> Result<Party, FhirError> {
    only_known(actor, ACTOR_ELEMENTS, at)?;
    let parsed: Actor = serde_path_to_error::deserialize(actor).map_err(|e| shape(at, e))?;
    if let Some(role) = &parsed.role
        && role.coding.iter().any(|c| {
            c.system.as_deref() != Some(ROLE_SYSTEM)
                || !c
                    .code
                    .as_deref()
                    .is_some_and(|code| RECIPIENT_ROLES.contains(&code))
        })
    {
        return Err(invalid(
            format!("{at}.role"),
            IssueCode::NotSupported,
            "the hub evaluates an actor as the data's recipient: a coded role must be v3-ParticipationType IRCP or PRCP (or give the role as text only)",
        ));
    }
    let location = format!("{at}.reference.identifier");
    let identifier = parsed
        .reference
        .as_ref()
        .and_then(|r| r.identifier.as_ref())
        .ok_or_else(|| {
            FhirError::new(
                location.clone(),
                IssueCode::Required,
                VkpCode::SystemId,
                "the actor is an organisation or a health professional, as an identifier",
            )
        })?;
    let value = identifier.value.clone().unwrap_or_default();
    let id_error = |detail: String| {
        FhirError::new(
            format!("{location}.value"),
            IssueCode::CodeInvalid,
            VkpCode::SystemId,
            detail,
        )
    };
    let system = match identifier.system.as_deref() {
        Some(ORGNR_OID) => OrgIdSystem::Orgnr,
        Some(RESH_OID) => OrgIdSystem::Resh,
        Some(HPR_OID) => {
            validate::hpr_number("actor", &value).map_err(|e| id_error(e.detail))?;
            return Ok(Party::Professional(HealthProfessional {
                hpr_number: value,
            }));
        }
        _ => {
            return Err(FhirError::new(
                format!("{location}.system"),
                IssueCode::CodeInvalid,
                VkpCode::SystemId,
                "must be organisation number (urn:oid:2.16.578.1.12.4.1.4.101), RESH (.102) or HPR number (urn:oid:2.16.578.1.12.4.1.4.4)",
            ));
        }
    };
    let org = OrganisationIdentifier {
        system,
        value,
        name: parsed.reference.as_ref().and_then(|r| r.display.clone()),
    };
    validate::organisation("actor", &org).map_err(|e| id_error(e.detail))?;
    Ok(Party::Organisation(org))
}

#[cfg(test)]
#[path = "consent_tests.rs"]
mod tests;
