//! FHIR `Consent` shaped like HL7 Norway's Consent profiles → the hub's [`Consent`].
//!
//! Accepted shape (unknown elements are ignored):
//! ```json
//! {"resourceType": "Consent", "id": "c-1", "status": "active",
//!  "patient": {"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "…"}},
//!  "policyRule": {"coding": [{"code": "pbrl-5-3"}]},
//!  "provision": {"type": "permit", "period": {"start": "2026-01-01"},
//!    "actor": [{"reference": {"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": "…"}}}],
//!    "class": [{"system": "https://dho.example/fhir/CodeSystem/data-category", "code": "measurement"}],
//!    "provision": [{"type": "deny", "actor": […]}]}}
//! ```
//! Each (provision, actor) pair becomes one rule; nested provisions are rules of their own.
//! A provision without `class` covers every data category. A withdrawal is `status`
//! `inactive` (or `rejected`), or a deny provision.

use serde::Deserialize;

use super::types::{Coding, Period, Reference};
use super::{FhirError, IssueCode, ORGNR_OID, RESH_OID, VkpCode};
use crate::model::*;
use crate::{Policy, validate};

/// Code system of the hub's data categories in `Consent.provision.class`.
pub const CATEGORY_SYSTEM: &str = "https://dho.example/fhir/CodeSystem/data-category";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FhirConsent {
    id: Option<String>,
    status: Option<String>,
    patient: Option<Reference>,
    policy_rule: Option<CodeableConcept>,
    provision: Option<Provision>,
}

#[derive(Debug, Deserialize)]
struct CodeableConcept {
    #[serde(default)]
    coding: Vec<Coding>,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Provision {
    #[serde(rename = "type")]
    type_: Option<String>,
    period: Option<Period>,
    #[serde(default)]
    actor: Vec<Actor>,
    #[serde(default)]
    class: Vec<Coding>,
    #[serde(default)]
    provision: Vec<Provision>,
}

#[derive(Debug, Deserialize)]
struct Actor {
    reference: Option<Reference>,
}

fn invalid(location: impl Into<String>, code: IssueCode, message: &str) -> FhirError {
    FhirError::new(location, code, VkpCode::Format, message)
}

/// Maps a FHIR Consent recorded by `recorder` at `now`. The stored consent id is
/// `<recorder orgnr>.<Consent.id>` (a new id if none is given): one organisation can never
/// overwrite a directive another recorded, and re-sending the same `id` (for example with
/// `status: inactive`) replaces the organisation's own directive.
pub fn consent_from_fhir(
    json: &serde_json::Value,
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
    let fhir: FhirConsent = serde_path_to_error::deserialize(json).map_err(|e| {
        invalid(
            format!("Consent.{}", e.path()),
            IssueCode::Structure,
            "wrong JSON type or shape",
        )
    })?;
    let id = match fhir.id {
        Some(id) => {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return Err(invalid(
                    "Consent.id",
                    IssueCode::Value,
                    "1 to 64 characters of A-Z, a-z, 0-9, '-' and '.'",
                ));
            }
            id
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
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
    let patient = patient(fhir.patient.as_ref(), policy)?;
    let legal_basis = fhir
        .policy_rule
        .as_ref()
        .and_then(|r| {
            r.coding
                .iter()
                .find_map(|c| c.code.clone())
                .or_else(|| r.text.clone())
        })
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            invalid(
                "Consent.policyRule",
                IssueCode::Required,
                "the legal rule (policyRule code or text, e.g. pbrl-5-3) is required",
            )
        })?;
    let root = fhir.provision.as_ref().ok_or_else(|| {
        invalid(
            "Consent.provision",
            IssueCode::Required,
            "a provision naming the recipient organisation is required",
        )
    })?;
    let mut provisions = vec![];
    flatten(root, "Consent.provision", None, &mut provisions)?;
    if provisions.is_empty() {
        return Err(invalid(
            "Consent.provision.actor",
            IssueCode::Required,
            "at least one provision needs an organisation actor",
        ));
    }
    let consent = Consent {
        consent_id: format!("{}.{id}", recorder.value),
        patient,
        status,
        provisions,
        legal_basis,
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

/// One rule per (provision, actor); a nested provision inherits its parent's type and period.
fn flatten(
    p: &Provision,
    at: &str,
    parent: Option<(ProvisionKind, Option<Millis>, Option<Millis>)>,
    out: &mut Vec<ConsentProvision>,
) -> Result<(), FhirError> {
    let kind = match p.type_.as_deref() {
        Some("permit") => ProvisionKind::Permit,
        Some("deny") => ProvisionKind::Deny,
        Some(_) => {
            return Err(invalid(
                format!("{at}.type"),
                IssueCode::Value,
                "must be permit or deny",
            ));
        }
        None => match parent {
            Some((kind, _, _)) => kind,
            None => {
                return Err(invalid(
                    format!("{at}.type"),
                    IssueCode::Required,
                    "permit or deny is required",
                ));
            }
        },
    };
    // Inclusive FHIR ends, and dates as whole days in Oslo (see `period_bound`).
    let time = |field: &str, text: Option<&String>| {
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
    let (mut start, mut end) = (
        time("start", p.period.as_ref().and_then(|p| p.start.as_ref()))?,
        time("end", p.period.as_ref().and_then(|p| p.end.as_ref()))?,
    );
    if let Some((_, parent_start, parent_end)) = parent {
        start = start.or(parent_start);
        end = end.or(parent_end);
    }
    let mut categories = vec![];
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
        if !categories.contains(&category) {
            categories.push(category);
        }
    }
    if categories.is_empty() {
        categories = vec![
            DataCategory::Measurement,
            DataCategory::SelfReport,
            DataCategory::Alert,
        ];
    }
    for (i, actor) in p.actor.iter().enumerate() {
        let location = format!("{at}.actor[{i}].reference.identifier");
        let identifier = actor
            .reference
            .as_ref()
            .and_then(|r| r.identifier.as_ref())
            .ok_or_else(|| {
                FhirError::new(
                    location.clone(),
                    IssueCode::Required,
                    VkpCode::SystemId,
                    "the actor is the recipient organisation, as an identifier",
                )
            })?;
        let system = match identifier.system.as_deref() {
            Some(ORGNR_OID) => OrgIdSystem::Orgnr,
            Some(RESH_OID) => OrgIdSystem::Resh,
            _ => {
                return Err(FhirError::new(
                    format!("{location}.system"),
                    IssueCode::CodeInvalid,
                    VkpCode::SystemId,
                    "must be organisation number (urn:oid:2.16.578.1.12.4.1.4.101) or RESH (.102)",
                ));
            }
        };
        let org = OrganisationIdentifier {
            system,
            value: identifier.value.clone().unwrap_or_default(),
            name: actor.reference.as_ref().and_then(|r| r.display.clone()),
        };
        validate::organisation("actor", &org).map_err(|e| {
            FhirError::new(
                format!("{location}.value"),
                IssueCode::CodeInvalid,
                VkpCode::SystemId,
                e.detail,
            )
        })?;
        out.push(ConsentProvision {
            kind,
            actor: org,
            categories: categories.clone(),
            period_start: start,
            period_end: end,
        });
    }
    for (i, nested) in p.provision.iter().enumerate() {
        flatten(
            nested,
            &format!("{at}.provision[{i}]"),
            Some((kind, start, end)),
            out,
        )?;
    }
    Ok(())
}

/// A FHIR Consent for `consent` (tests, the simulator and the demo build the gateway's
/// requests with it).
pub fn fhir_consent(
    id: &str,
    patient: &PatientIdentifier,
    kind: ProvisionKind,
    active: bool,
    actors: &[OrganisationIdentifier],
) -> serde_json::Value {
    serde_json::json!({
        "resourceType": "Consent",
        "id": id,
        "status": if active { "active" } else { "inactive" },
        "patient": {"identifier": {"system": patient.system.oid(), "value": patient.value}},
        "policyRule": {"coding": [{"code": "pbrl-5-3"}]},
        "provision": {
            "type": match kind { ProvisionKind::Permit => "permit", ProvisionKind::Deny => "deny" },
            "actor": actors.iter().map(|a| serde_json::json!({
                "reference": {"identifier": {"system": ORGNR_OID, "value": a.value}, "display": a.name}
            })).collect::<Vec<_>>(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn a_permit_with_a_nested_deny_maps_to_two_rules_namespaced_by_recorder() {
        let patient = fixtures::patient(1);
        let mut json = fhir_consent(
            "c-1",
            &patient,
            ProvisionKind::Permit,
            true,
            &[fixtures::gp()],
        );
        json["provision"]["class"] =
            serde_json::json!([{"system": CATEGORY_SYSTEM, "code": "measurement"}]);
        json["provision"]["period"] = serde_json::json!({"start": "2026-01-01"});
        json["provision"]["provision"] = serde_json::json!([{"type": "deny", "actor": [
            {"reference": {"identifier": {"system": ORGNR_OID, "value": fixtures::lung_clinic().value}}}
        ]}]);
        let c =
            consent_from_fhir(&json, &fixtures::home_care(), 5, Policy::SYNTHETIC_ALLOWED).unwrap();
        assert_eq!(c.consent_id, format!("{}.c-1", fixtures::home_care().value));
        assert_eq!(c.patient, patient);
        assert_eq!(c.provisions.len(), 2);
        assert_eq!(c.provisions[0].kind, ProvisionKind::Permit);
        assert_eq!(c.provisions[0].categories, vec![DataCategory::Measurement]);
        assert!(c.provisions[0].period_start.is_some());
        assert_eq!(c.provisions[1].kind, ProvisionKind::Deny);
        assert!(c.provisions[1].actor.same_entity(&fixtures::lung_clinic()));
        assert_eq!(c.provisions[1].period_start, c.provisions[0].period_start);
        assert_eq!(c.recorded_at, 5);
    }

    /// HL7 Norway's withdrawal example ends a deny on 2022-03-31: a FHIR end is
    /// inclusive, and a date is the whole day in Oslo, so the deny holds until midnight
    /// there (22:00 UTC in summer time), not from 00:00 UTC that day.
    #[test]
    fn a_deny_ending_on_a_date_holds_through_that_whole_day_in_oslo() {
        let patient = fixtures::patient(1);
        let mut json = fhir_consent(
            "c-deny",
            &patient,
            ProvisionKind::Deny,
            true,
            &[fixtures::gp()],
        );
        json["provision"]["period"] =
            serde_json::json!({"start": "2022-03-01", "end": "2022-03-31"});
        let c =
            consent_from_fhir(&json, &fixtures::home_care(), 5, Policy::SYNTHETIC_ALLOWED).unwrap();
        let deny = &c.provisions[0];
        let at = |text: &str| crate::fhir::time::parse(text).unwrap();
        let covers = |when: &str| deny.covers(&fixtures::gp(), DataCategory::Measurement, at(when));
        assert!(covers("2022-03-31T12:00:00Z"), "midday on the last day");
        assert!(covers("2022-03-31T21:59:59.999Z"), "23:59:59.999 in Oslo");
        assert!(!covers("2022-03-31T22:00:00Z"), "00:00 on 1 April in Oslo");
        assert!(
            covers("2022-02-28T23:00:00Z"),
            "00:00 on 1 March in Oslo (winter)"
        );
        assert!(
            !covers("2022-02-28T22:59:59.999Z"),
            "the day before, in Oslo"
        );
    }

    #[test]
    fn withdrawal_and_errors_name_the_field() {
        let patient = fixtures::patient(2);
        let json = fhir_consent(
            "c",
            &patient,
            ProvisionKind::Permit,
            false,
            &[fixtures::gp()],
        );
        let c =
            consent_from_fhir(&json, &fixtures::home_care(), 0, Policy::SYNTHETIC_ALLOWED).unwrap();
        assert_eq!(c.status, ConsentStatus::Inactive);

        type Break = fn(&mut serde_json::Value);
        let cases: Vec<(Break, &str)> = vec![
            (|j| j["resourceType"] = "Observation".into(), "resourceType"),
            (|j| j["status"] = "maybe".into(), "Consent.status"),
            (
                |j| {
                    j.as_object_mut().unwrap().remove("policyRule");
                },
                "Consent.policyRule",
            ),
            (
                |j| j["patient"]["identifier"]["value"] = "12345678901".into(),
                "Consent.patient.identifier.value",
            ),
            (
                |j| j["provision"]["type"] = "maybe".into(),
                "Consent.provision.type",
            ),
            (
                |j| {
                    j["provision"]["actor"][0]["reference"]["identifier"]["value"] =
                        "123456789".into()
                },
                "Consent.provision.actor[0].reference.identifier.value",
            ),
            (
                |j| j["provision"]["class"] = serde_json::json!([{"code": "genome"}]),
                "Consent.provision.class[0]",
            ),
            (|j| j["id"] = "no spaces".into(), "Consent.id"),
            (
                |j| j["provision"] = serde_json::json!(7),
                "Consent.provision",
            ),
        ];
        for (break_it, location) in cases {
            let mut j = json.clone();
            break_it(&mut j);
            let e = consent_from_fhir(&j, &fixtures::home_care(), 0, Policy::SYNTHETIC_ALLOWED)
                .unwrap_err();
            assert_eq!(e.location, location, "{e}");
            assert!(!e.to_string().contains(&patient.value));
        }
    }
}
