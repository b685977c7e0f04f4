use serde_json::json;

use super::*;
use crate::fhir::{HPR_OID, ORGNR_OID};
use crate::fixtures;

const ALL: [DataCategory; 3] = [
    DataCategory::Measurement,
    DataCategory::SelfReport,
    DataCategory::Alert,
];

fn parse(json: &Value) -> Result<Consent, FhirError> {
    consent_from_fhir(json, &fixtures::home_care(), 5, Policy::SYNTHETIC_ALLOWED)
}

fn permit_gp() -> Value {
    fhir_consent(
        "c-1",
        &fixtures::patient(1),
        ProvisionKind::Permit,
        true,
        &[fixtures::gp()],
    )
}

fn org_actor(org: &OrganisationIdentifier) -> Value {
    json!({"reference": {"identifier": {"system": ORGNR_OID, "value": org.value}}})
}

fn hpr_actor(number: &str) -> Value {
    json!({"role": {"text": "lege"}, "reference": {"identifier": {"system": HPR_OID, "value": number}}})
}

fn at(text: &str) -> Millis {
    crate::fhir::time::parse(text).unwrap()
}

#[test]
fn a_permit_maps_to_a_rule_namespaced_by_recorder() {
    let mut json = permit_gp();
    json["provision"]["class"] = json!([{"system": CATEGORY_SYSTEM, "code": "measurement"}]);
    json["provision"]["period"] = json!({"start": "2026-01-01"});
    let c = parse(&json).unwrap();
    assert_eq!(c.consent_id, format!("{}.c-1", fixtures::home_care().value));
    assert_eq!(c.patient, fixtures::patient(1));
    assert_eq!(c.provisions.len(), 1);
    let p = &c.provisions[0];
    assert_eq!(p.kind, ProvisionKind::Permit);
    assert!(p.actor.as_ref().unwrap().same_entity(&fixtures::gp()));
    assert_eq!(p.categories, vec![DataCategory::Measurement]);
    assert!(p.period_start.is_some());
    assert_eq!(
        c.legal_basis,
        "http://hl7.no/fhir/CodeSystem/no-basis-legal-formality-or-basis#PBRL5-3"
    );
    assert_eq!(c.recorded_at, 5);
}

/// HL7 Norway's "deny access for all": a deny without actor is about everyone.
#[test]
fn a_deny_without_actor_is_a_blanket_deny() {
    let json = fhir_consent("all", &fixtures::patient(1), ProvisionKind::Deny, true, &[]);
    let c = parse(&json).unwrap();
    assert_eq!(c.provisions.len(), 1);
    let deny = &c.provisions[0];
    assert!(deny.is_blanket());
    assert_eq!(deny.categories, ALL.to_vec());
    for org in [fixtures::gp(), fixtures::lung_clinic()] {
        assert!(deny.covers(&org, DataCategory::Alert, at("2030-01-01T00:00:00Z")));
    }
}

/// A nested provision without actor is about its parent's actor, within the parent's
/// categories and period: kept, never dropped.
#[test]
fn a_nested_deny_without_actor_narrows_its_parent() {
    let mut json = permit_gp();
    json["provision"]["period"] = json!({"start": "2026-01-01", "end": "2026-12-31"});
    json["provision"]["provision"] = json!([{"type": "deny",
        "period": {"start": "2026-06-01", "end": "2027-06-30"},
        "class": [{"system": CATEGORY_SYSTEM, "code": "self-report"}]}]);
    let c = parse(&json).unwrap();
    assert_eq!(c.provisions.len(), 2, "{:?}", c.provisions);
    let (permit, deny) = (&c.provisions[0], &c.provisions[1]);
    assert_eq!(deny.kind, ProvisionKind::Deny);
    assert_eq!(deny.parent, Some(0));
    assert_eq!(deny.actor, permit.actor, "the parent's organisation");
    assert_eq!(deny.categories, vec![DataCategory::SelfReport]);
    assert_eq!(deny.period_start, Some(at("2026-05-31T22:00:00Z")));
    assert_eq!(
        deny.period_end, permit.period_end,
        "within the parent's period"
    );
}

#[test]
fn a_nested_permit_under_a_blanket_deny_is_an_exception_for_its_actor() {
    let mut json = fhir_consent("c", &fixtures::patient(1), ProvisionKind::Deny, true, &[]);
    json["provision"]["provision"] =
        json!([{"type": "permit", "actor": [org_actor(&fixtures::gp())]}]);
    let c = parse(&json).unwrap();
    assert!(c.provisions[0].is_blanket());
    assert_eq!(c.provisions[1].kind, ProvisionKind::Permit);
    assert_eq!(c.provisions[1].parent, Some(0));
}

#[test]
fn a_deny_for_one_health_professional_is_kept_by_hpr_number() {
    let mut json = permit_gp();
    json["provision"]["provision"] = json!([{"type": "deny", "actor": [hpr_actor("9144897")]}]);
    let c = parse(&json).unwrap();
    let deny = &c.provisions[1];
    assert_eq!(deny.actor, None);
    assert_eq!(deny.professional.as_ref().unwrap().hpr_number, "9144897");
    assert!(!deny.covers(&fixtures::gp(), DataCategory::Measurement, 0));

    let mut permit = permit_gp();
    permit["provision"]["actor"] = json!([hpr_actor("9144897")]);
    let e = parse(&permit).unwrap_err();
    assert_eq!(
        e.location,
        "Consent.provision.actor[0].reference.identifier.system"
    );
}

/// HL7 Norway's withdrawal example ends a deny on 2022-03-31: a FHIR end is
/// inclusive, and a date is the whole day in Oslo, so the deny holds until midnight
/// there (22:00 UTC in summer time), not from 00:00 UTC that day.
#[test]
fn a_deny_ending_on_a_date_holds_through_that_whole_day_in_oslo() {
    let mut json = fhir_consent(
        "c-deny",
        &fixtures::patient(1),
        ProvisionKind::Deny,
        true,
        &[fixtures::gp()],
    );
    json["provision"]["period"] = json!({"start": "2022-03-01", "end": "2022-03-31"});
    let c = parse(&json).unwrap();
    let deny = &c.provisions[0];
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
fn a_research_scope_is_no_permission_to_share() {
    let mut json = permit_gp();
    json["scope"] = json!({"coding": [{"system": SCOPE_SYSTEM, "code": "research"}]});
    let e = parse(&json).unwrap_err();
    assert_eq!(e.location, "Consent.scope");
    assert_eq!(e.code, IssueCode::CodeInvalid);
}

type Break = fn(&mut Value);

/// Every element the hub cannot evaluate is refused, naming it: none is ignored.
#[test]
fn elements_the_hub_cannot_evaluate_are_refused_by_name() {
    let cases: Vec<(Break, &str)> = vec![
        (
            |j| j["provision"]["purpose"] = json!([{"code": "HRESCH"}]),
            "Consent.provision.purpose",
        ),
        (
            |j| j["provision"]["dataPeriod"] = json!({"start": "2020-01-01"}),
            "Consent.provision.dataPeriod",
        ),
        (
            |j| j["provision"]["data"] = json!([{"meaning": "instance"}]),
            "Consent.provision.data",
        ),
        (
            |j| j["provision"]["action"] = json!([{"text": "access"}]),
            "Consent.provision.action",
        ),
        (
            |j| j["provision"]["securityLabel"] = json!([{"code": "R"}]),
            "Consent.provision.securityLabel",
        ),
        (
            |j| j["provision"]["code"] = json!([{"text": "x"}]),
            "Consent.provision.code",
        ),
        (
            |j| j["provision"]["modifierExtension"] = json!([{"url": "x"}]),
            "Consent.provision.modifierExtension",
        ),
        (
            |j| j["provision"]["provision"] = json!([{"type": "deny", "purpose": []}]),
            "Consent.provision.provision[0].purpose",
        ),
        (
            |j| {
                j["provision"]["actor"][0]["role"] =
                    json!({"coding": [{"system": ROLE_SYSTEM, "code": "AUT"}]})
            },
            "Consent.provision.actor[0].role",
        ),
        (
            |j| j["provision"]["actor"][0]["modifierExtension"] = json!([]),
            "Consent.provision.actor[0].modifierExtension",
        ),
        (|j| j["policy"] = json!([{"uri": "x"}]), "Consent.policy"),
        (|j| j["implicitRules"] = json!("x"), "Consent.implicitRules"),
    ];
    for (break_it, location) in cases {
        let mut j = permit_gp();
        break_it(&mut j);
        let e = parse(&j).unwrap_err();
        assert_eq!(e.location, location, "{e}");
        assert_eq!(e.code, IssueCode::NotSupported, "{e}");
    }
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
    let c = parse(&json).unwrap();
    assert_eq!(c.status, ConsentStatus::Inactive);

    let cases: Vec<(Break, &str)> = vec![
        (|j| j["resourceType"] = "Observation".into(), "resourceType"),
        (|j| j["status"] = "maybe".into(), "Consent.status"),
        (
            |j| {
                j.as_object_mut().unwrap().remove("scope");
            },
            "Consent.scope",
        ),
        (
            |j| j["category"] = json!([{"coding": [{"system": LOINC, "code": "64292-6"}]}]),
            "Consent.category",
        ),
        (
            |j| {
                j.as_object_mut().unwrap().remove("policyRule");
            },
            "Consent.policyRule",
        ),
        (
            |j| j["policyRule"] = json!({"coding": [{"code": "pbrl-5-3"}]}),
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
            |j| j["provision"]["actor"][0]["reference"]["identifier"]["value"] = "123456789".into(),
            "Consent.provision.actor[0].reference.identifier.value",
        ),
        (
            |j| j["provision"]["actor"] = json!([hpr_actor("12ab")]),
            "Consent.provision.actor[0].reference.identifier.value",
        ),
        (
            |j| j["provision"]["actor"] = json!([]),
            "Consent.provision.actor",
        ),
        (
            |j| j["provision"]["class"] = json!([{"code": "genome"}]),
            "Consent.provision.class[0]",
        ),
        (
            |j| {
                j["provision"]["provision"] =
                    json!([{"type": "deny", "actor": [org_actor(&fixtures::lung_clinic())]}])
            },
            "Consent.provision.provision[0].actor[0]",
        ),
        (
            |j| {
                j["provision"]["period"] = json!({"end": "2026-01-31"});
                j["provision"]["provision"] =
                    json!([{"type": "deny", "period": {"start": "2026-02-01"}}]);
            },
            "Consent.provision.provision[0].period",
        ),
        (|j| j["id"] = "no spaces".into(), "Consent.id"),
        (|j| j["provision"] = json!(7), "Consent.provision"),
    ];
    for (break_it, location) in cases {
        let mut j = json.clone();
        break_it(&mut j);
        let e = parse(&j).unwrap_err();
        assert_eq!(e.location, location, "{e}");
        assert!(!e.to_string().contains(&patient.value));
    }
}

fn no_nulls(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(items) => items.iter().all(no_nulls),
        Value::Object(map) => map.values().all(no_nulls),
        _ => true,
    }
}

/// The output carries what R4 and HL7 Norway's profile require, no `null`, and reads back
/// as the same rules.
#[test]
fn the_output_is_complete_and_reads_back_as_the_same_rules() {
    let mut json = permit_gp();
    json["provision"]["actor"]
        .as_array_mut()
        .unwrap()
        .push(org_actor(&fixtures::lung_clinic()));
    json["provision"]["period"] =
        json!({"start": "2026-01-01", "end": "2026-06-30T12:00:00+02:00"});
    json["provision"]["provision"] = json!([
        {"type": "deny", "class": [{"system": CATEGORY_SYSTEM, "code": "alert"}], "period": {"end": "2026-03-31"}},
        {"type": "deny", "actor": [hpr_actor("9144897")]}
    ]);
    let c = parse(&json).unwrap();
    assert_eq!(
        c.provisions.len(),
        6,
        "two actors, each with two nested rules"
    );
    let out = consent_to_fhir(&c);
    assert!(no_nulls(&out), "{out:#}");
    assert_eq!(out["scope"]["coding"][0]["code"], "patient-privacy");
    assert_eq!(out["category"][0]["coding"][0]["code"], "59284-0");
    assert_eq!(out["policyRule"]["coding"][0]["code"], "PBRL5-3");
    let root = &out["provision"];
    assert_eq!(root["actor"].as_array().unwrap().len(), 2, "{out:#}");
    assert_eq!(root["actor"][0]["role"]["coding"][0]["code"], "IRCP");
    assert_eq!(root["period"]["start"], "2026-01-01");
    assert_eq!(root["period"]["end"], "2026-06-30T10:00:00.999Z");
    assert_eq!(root["provision"][0]["period"]["end"], "2026-03-31");
    assert_eq!(
        root["provision"][1]["actor"][0]["reference"]["identifier"]["system"],
        HPR_OID
    );
    let mut again = parse(&out).unwrap();
    again.consent_id = c.consent_id.clone();
    assert_eq!(again.provisions, c.provisions);

    // Rules no single top-level provision holds: in a provision holding only them.
    let mut two = fixtures::consent(&fixtures::patient(1), "two", &[fixtures::gp()]);
    two.provisions.push(ConsentProvision::organisation(
        ProvisionKind::Deny,
        fixtures::lung_clinic(),
        vec![DataCategory::Alert],
    ));
    let out = consent_to_fhir(&two);
    assert!(out["provision"].get("type").is_none());
    assert_eq!(out["provision"]["provision"].as_array().unwrap().len(), 2);
    assert_eq!(out["policyRule"]["coding"][0]["code"], "PBRL5-3");
    assert_eq!(parse(&out).unwrap().provisions, two.provisions);
}
