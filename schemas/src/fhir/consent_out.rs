//! The hub's [`Consent`] as a FHIR R4 Consent that meets HL7 Norway's HNWithdrawConsentProfile
//! (scope, category and policyRule fixed, every actor with a role, no `null`s): what the
//! gateway answers with, so the sender sees the directive as the hub understood it.

use serde_json::{Map, Value, json};

use super::consent::{
    CATEGORY_PATIENT_CONSENT, CATEGORY_SYSTEM, LEGAL_BASIS_PBRL_5_3, LEGAL_BASIS_SYSTEM,
    ROLE_SYSTEM, SCOPE_PRIVACY, SCOPE_SYSTEM,
};
use super::time::{format, oslo_offset};
use super::{HPR_OID, LOINC, ORGNR_OID, RESH_OID};
use crate::model::*;

const DAY: Millis = 86_400_000;
const ALL_CATEGORIES: usize = 3;

/// The FHIR Consent for `consent`. Rules split per actor on the way in come out merged
/// again; rules no single top-level provision can hold sit in one holding nothing else.
pub fn consent_to_fhir(consent: &Consent) -> Value {
    let mut roots = render_children(consent, None);
    let provision = if roots.len() == 1 {
        roots.remove(0)
    } else {
        json!({ "provision": roots })
    };
    let mut organisation = Map::new();
    organisation.insert("identifier".into(), org_identifier(&consent.recorded_by));
    if let Some(name) = &consent.recorded_by.name {
        organisation.insert("display".into(), name.clone().into());
    }
    json!({
        "resourceType": "Consent",
        "id": consent.consent_id,
        "status": match consent.status {
            ConsentStatus::Active => "active",
            ConsentStatus::Inactive => "inactive",
        },
        "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": SCOPE_PRIVACY, "display": "Privacy Consent"}]},
        "category": [{"coding": [{"system": LOINC, "code": CATEGORY_PATIENT_CONSENT, "display": "Patient Consent"}]}],
        "patient": {"identifier": {"system": consent.patient.system.oid(), "value": consent.patient.value}},
        "dateTime": format(consent.recorded_at),
        "organization": [organisation],
        "policyRule": policy_rule(&consent.legal_basis),
        "provision": provision,
    })
}

/// HL7 Norway's coding for § 5-3, however it was stored; any other rule as text.
fn policy_rule(legal_basis: &str) -> Value {
    let pbrl = format!("{LEGAL_BASIS_SYSTEM}#{LEGAL_BASIS_PBRL_5_3}");
    if legal_basis == pbrl || legal_basis.eq_ignore_ascii_case("pbrl-5-3") {
        json!({"coding": [{"system": LEGAL_BASIS_SYSTEM, "code": LEGAL_BASIS_PBRL_5_3}]})
    } else {
        json!({ "text": legal_basis })
    }
}

fn org_identifier(org: &OrganisationIdentifier) -> Value {
    let system = match org.system {
        OrgIdSystem::Orgnr => ORGNR_OID,
        OrgIdSystem::Resh => RESH_OID,
    };
    json!({"system": system, "value": org.value})
}

/// The provisions nested in the rule at `parent` (top-level ones for `None`), siblings that
/// differ only in their actors merged into one provision.
fn render_children(consent: &Consent, parent: Option<usize>) -> Vec<Value> {
    let mut out: Vec<Value> = vec![];
    for (i, p) in consent.provisions.iter().enumerate() {
        if p.parent.map(|at| at as usize) != parent {
            continue;
        }
        let outer = parent.map(|at| &consent.provisions[at]);
        let mut rendered = render(consent, i, p, outer);
        let actors = rendered.remove("actor");
        let same = out.iter_mut().find(|o| {
            let mut other = o.as_object().cloned().unwrap_or_default();
            let other_actors = other.remove("actor");
            other == rendered && other_actors.is_some() && actors.is_some()
        });
        match (same, actors) {
            (Some(same), Some(Value::Array(more))) => {
                if let Some(Value::Array(list)) = same.get_mut("actor") {
                    list.extend(more);
                }
            }
            (_, actors) => {
                if let Some(actors) = actors {
                    rendered.insert("actor".into(), actors);
                }
                out.push(Value::Object(rendered));
            }
        }
    }
    out
}

/// One rule; what it inherits from `outer` (actor, period, categories) is left out.
fn render(
    consent: &Consent,
    index: usize,
    p: &ConsentProvision,
    outer: Option<&ConsentProvision>,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert(
        "type".into(),
        match p.kind {
            ProvisionKind::Permit => "permit",
            ProvisionKind::Deny => "deny",
        }
        .into(),
    );
    let inherited_period =
        outer.is_some_and(|o| (o.period_start, o.period_end) == (p.period_start, p.period_end));
    if !inherited_period && (p.period_start.is_some() || p.period_end.is_some()) {
        let mut period = Map::new();
        if let Some(start) = p.period_start {
            period.insert("start".into(), start_text(start).into());
        }
        if let Some(end) = p.period_end {
            period.insert("end".into(), end_text(end).into());
        }
        out.insert("period".into(), Value::Object(period));
    }
    let inherited_party =
        outer.is_some_and(|o| (&o.actor, &o.professional) == (&p.actor, &p.professional));
    if !inherited_party && let Some(actor) = actor(p) {
        out.insert("actor".into(), json!([actor]));
    }
    let inherited_categories = match outer {
        Some(o) => o.categories == p.categories,
        None => p.categories.len() == ALL_CATEGORIES,
    };
    if !inherited_categories {
        let class: Vec<Value> = p
            .categories
            .iter()
            .map(|c| {
                let code = match c {
                    DataCategory::Measurement => "measurement",
                    DataCategory::SelfReport => "self-report",
                    DataCategory::Alert => "alert",
                };
                json!({"system": CATEGORY_SYSTEM, "code": code})
            })
            .collect();
        out.insert("class".into(), class.into());
    }
    let nested = render_children(consent, Some(index));
    if !nested.is_empty() {
        out.insert("provision".into(), nested.into());
    }
    out
}

/// The actor as R4 requires it (with a role): the recipient organisation or professional.
fn actor(p: &ConsentProvision) -> Option<Value> {
    let mut reference = Map::new();
    match (&p.actor, &p.professional) {
        (Some(org), _) => {
            reference.insert("identifier".into(), org_identifier(org));
            if let Some(name) = &org.name {
                reference.insert("display".into(), name.clone().into());
            }
        }
        (None, Some(hpr)) => {
            reference.insert(
                "identifier".into(),
                json!({"system": HPR_OID, "value": hpr.hpr_number}),
            );
        }
        (None, None) => return None,
    }
    Some(json!({
        "role": {"coding": [{"system": ROLE_SYSTEM, "code": "IRCP", "display": "information recipient"}]},
        "reference": reference,
    }))
}

/// The Oslo date whose day begins at `at`, if it does.
fn oslo_date_starting_at(at: Millis) -> Option<String> {
    let local = at + oslo_offset(at);
    (local.rem_euclid(DAY) == 0).then(|| format(local)[..10].to_string())
}

/// A start: the date if it is an Oslo midnight, else the instant.
fn start_text(start: Millis) -> String {
    oslo_date_starting_at(start).unwrap_or_else(|| format(start))
}

/// An exclusive end as FHIR's inclusive one: the day before an Oslo midnight, else the
/// last millisecond before it.
fn end_text(end: Millis) -> String {
    match oslo_date_starting_at(end) {
        Some(_) => format(end + oslo_offset(end) - DAY)[..10].to_string(),
        None => format(end - 1),
    }
}

/// A FHIR Consent as a sender would record one (tests, the simulator and the demo build
/// the gateway's requests with it): one provision of `kind` for `actors`.
pub fn fhir_consent(
    id: &str,
    patient: &PatientIdentifier,
    kind: ProvisionKind,
    active: bool,
    actors: &[OrganisationIdentifier],
) -> Value {
    let consent = Consent {
        consent_id: id.into(),
        patient: patient.clone(),
        status: if active {
            ConsentStatus::Active
        } else {
            ConsentStatus::Inactive
        },
        provisions: actors
            .iter()
            .map(|a| {
                ConsentProvision::organisation(
                    kind,
                    a.clone(),
                    vec![
                        DataCategory::Measurement,
                        DataCategory::SelfReport,
                        DataCategory::Alert,
                    ],
                )
            })
            .collect(),
        legal_basis: format!("{LEGAL_BASIS_SYSTEM}#{LEGAL_BASIS_PBRL_5_3}"),
        recorded_by: unset_recorder(),
        recorded_at: 0,
    };
    let mut json = consent_to_fhir(&consent);
    let object = json.as_object_mut().expect("an object");
    // What the recorder's request leaves to the hub.
    for hub_side in ["dateTime", "organization"] {
        object.remove(hub_side);
    }
    if actors.is_empty() {
        let kind = match kind {
            ProvisionKind::Permit => "permit",
            ProvisionKind::Deny => "deny",
        };
        object.insert("provision".into(), json!({ "type": kind }));
    }
    json
}

/// The recorder, left out of a request (the hub sets it from the caller).
fn unset_recorder() -> OrganisationIdentifier {
    OrganisationIdentifier {
        system: OrgIdSystem::Orgnr,
        value: String::new(),
        name: None,
    }
}
