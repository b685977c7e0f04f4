//! The committed fixtures in `schemas/fixtures/fhir/` against the mapping: every valid one
//! maps to the expected event, every invalid one fails with the expected location and
//! codes, and Measurement → Observation → Measurement is the identity.

use std::collections::BTreeSet;
use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::{codes, fixtures};

/// 2024-06-01T00:00:00Z: "now" for the fixtures (all dated May 2024).
const NOW: Millis = 1_717_200_000_000;

fn dir(kind: &str) -> PathBuf {
    // At run time first: a binary built by another checkout sharing the target directory
    // carries that checkout's path.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("fixtures/fhir")
        .join(kind)
}

fn load(kind: &str, name: &str) -> Value {
    let path = dir(kind).join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn files(kind: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir(kind))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".json")
                .to_string()
        })
        .collect()
}

fn ctx() -> IngestContext {
    IngestContext {
        event_id: "7d0b6a4e-0000-4000-8000-000000000001".into(),
        received_time: NOW,
        platform: fixtures::platform(),
        policy: Policy::SYNTHETIC_ALLOWED,
    }
}

fn measurement(name: &str) -> Measurement {
    measurement_from_observation(&load("valid", name), &ctx())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn spo2_maps_every_element() {
    let m = measurement("spo2");
    assert_eq!(m.event_id, ctx().event_id);
    assert_eq!(m.received_time, NOW);
    assert_eq!(
        m.source_id.as_deref(),
        Some("urn:uuid:6c1d1e4a-4c1b-4f7e-9d54-0a6c2f3e1b01")
    );
    assert_eq!(m.patient, PatientIdentifier::fnr("15888510025"));
    assert_eq!(m.data_controller.system, OrgIdSystem::Orgnr);
    assert_eq!(m.data_controller.value, "964000018");
    assert_eq!(m.source.platform, fixtures::platform());
    assert_eq!(m.source.device_id.as_deref(), Some("SN-7731-22"));
    assert_eq!(m.source.device_type.as_deref(), Some("pulse oximeter"));
    assert_eq!(
        (m.code.as_str(), m.snomed_code.as_deref()),
        (codes::SPO2, Some("431314004"))
    );
    assert_eq!(
        m.value,
        Some(Quantity {
            value: 94.0,
            unit: "%".into()
        })
    );
    // 08:30 at +02:00.
    assert_eq!(
        m.effective_time,
        time::parse("2024-05-01T06:30:00Z").unwrap()
    );
    // The severity extension carries the ValueSet URL as system: accepted.
    assert_eq!(m.severity, Some(VkpSeverity::Normal));
    assert_eq!(m.triage, Some(TriageColour::Green));
}

#[test]
fn other_vital_signs_map() {
    let hr = measurement("heart-rate");
    assert_eq!(
        (hr.code.as_str(), hr.snomed_code.as_deref()),
        (codes::HEART_RATE, Some("364075005"))
    );
    assert_eq!(
        hr.effective_time % 1000,
        250,
        "effectiveInstant keeps milliseconds"
    );

    let bp = measurement("blood-pressure");
    assert_eq!(bp.patient.system, PatientIdSystem::Dnr);
    assert_eq!(bp.data_controller.system, OrgIdSystem::Resh);
    assert_eq!(bp.value, None);
    let parts: Vec<_> = bp
        .components
        .iter()
        .map(|c| (c.code.as_str(), c.snomed_code.as_deref(), c.value.value))
        .collect();
    // The diastolic came as the Norwegian SNOMED CT extension code only.
    assert_eq!(
        parts,
        [
            (codes::SYSTOLIC_BP, Some("271649006"), 142.0),
            (codes::DIASTOLIC_BP, Some("271650006"), 91.0)
        ]
    );
    assert_eq!(
        bp.effective_time,
        time::parse("2024-05-01T07:00:00Z").unwrap()
    );

    let weight = measurement("weight");
    assert_eq!(
        weight.value,
        Some(Quantity {
            value: 165.3,
            unit: "[lb_av]".into()
        })
    );
    assert_eq!(weight.effective_time, time::parse("2024-05-01").unwrap());

    let glucose = measurement("glucose");
    assert_eq!(
        (glucose.code.as_str(), glucose.snomed_code.as_deref()),
        (codes::BLOOD_GLUCOSE, None)
    );

    let temperature = measurement("temperature");
    assert_eq!(temperature.value.unwrap().unit, "[degF]");
}

/// The item tree of a QuestionnaireResponse: linkIds, with answers' nested items, `text`
/// left out (the hub keeps no item text).
fn item_tree(items: &Value) -> Value {
    let items = items.as_array().cloned().unwrap_or_default();
    Value::Array(
        items
            .iter()
            .map(|item| {
                let answers: Vec<Value> = item["answer"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|a| item_tree(&a["item"]))
                    .collect();
                serde_json::json!({
                    "linkId": item["linkId"],
                    "answers": answers,
                    "item": item_tree(&item["item"]),
                })
            })
            .collect(),
    )
}

#[test]
fn questionnaire_response_groups_are_kept_not_flattened() {
    let mut json = load("valid", "questionnaire-response");
    // Besides the fixture's group: a repeated group, and an item nested in an answer.
    json["item"].as_array_mut().unwrap().extend([
        serde_json::json!({"linkId": "dose", "item": [{"linkId": "mg", "answer": [{"valueInteger": 5}]}]}),
        serde_json::json!({"linkId": "dose", "item": [{"linkId": "mg", "answer": [{"valueInteger": 10}]}]}),
        serde_json::json!({"linkId": "pain", "answer": [
            {"valueBoolean": true, "item": [{"linkId": "where", "answer": [{"valueString": "chest"}]}]},
            {"valueBoolean": false}
        ]}),
    ]);
    let r = self_report_from_questionnaire_response(&json, &ctx()).unwrap();
    let nested: Vec<_> = r
        .answers
        .iter()
        .map(|a| (a.link_id.as_str(), a.nested_in.join("/")))
        .collect();
    assert_eq!(
        nested,
        [
            ("cough", "symptoms#0".into()),
            ("more-breathless-than-usual", "symptoms#0".into()),
            ("main-symptom", String::new()),
            ("temperature-felt", String::new()),
            ("comment", String::new()),
            ("mg", "dose#0".into()),
            ("mg", "dose#1".into()),
            ("pain", String::new()),
            ("where", "pain:0".into()),
            ("pain", String::new()),
        ]
    );
    let out = questionnaire_response_from_self_report(&r);
    assert_eq!(item_tree(&out["item"]), item_tree(&json["item"]));
    // And through Avro, as a subscriber gets it.
    let back: SelfReport = crate::codec::decode(&crate::codec::encode(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    let again = self_report_from_questionnaire_response(&out, &ctx()).unwrap();
    assert_eq!(again.answers, r.answers);
}

#[test]
fn questionnaire_response_and_score_map_to_self_reports() {
    let r =
        self_report_from_questionnaire_response(&load("valid", "questionnaire-response"), &ctx())
            .unwrap();
    assert_eq!(
        (
            r.questionnaire_id.as_str(),
            r.questionnaire_version.as_deref()
        ),
        ("cat", Some("1"))
    );
    assert_eq!(r.source_id.as_deref(), Some("qr-2024-05-01-0001"));
    assert_eq!(r.data_controller.value, "964000018");
    let links: Vec<_> = r.answers.iter().map(|a| a.link_id.as_str()).collect();
    assert_eq!(
        links,
        [
            "cough",
            "more-breathless-than-usual",
            "main-symptom",
            "temperature-felt",
            "comment"
        ]
    );
    assert_eq!(r.answers[0].value_integer, Some(3));
    assert_eq!(r.answers[1].value_boolean, Some(true));
    assert_eq!(
        r.answers[2].value_coding.as_ref().unwrap().code,
        "267036007"
    );
    assert_eq!(r.answers[3].value_decimal, Some(37.5));
    assert_eq!(r.score, None);

    let score =
        self_report_from_score_observation(&load("valid", "score-observation"), &ctx()).unwrap();
    assert_eq!(
        (
            score.questionnaire_id.as_str(),
            score.questionnaire_version.as_deref()
        ),
        ("cat", Some("1"))
    );
    assert_eq!(score.score, Some(17.0));
    assert!(score.answers.is_empty());
    assert_eq!(
        score.authored_time,
        time::parse("2024-05-01T07:00:00Z").unwrap()
    );
    // The dispatcher tells a score from a measurement by its code.
    assert!(matches!(
        ingest_resource(&load("valid", "score-observation"), &ctx()),
        Ok(Ingested::SelfReport(_))
    ));
    assert!(measurement_from_observation(&load("valid", "score-observation"), &ctx()).is_err());
}

/// (file, location, issue code, VKP code) for every invalid fixture.
const INVALID: &[(&str, &str, IssueCode, VkpCode)] = {
    use IssueCode::*;
    use VkpCode::*;
    &[
        ("bundle-type-transaction", "Bundle.type", Structure, Format),
        ("patient-resource", "Patient", NotSupported, Format),
        (
            "subject-bad-check-digit",
            "Observation.subject.identifier.value",
            CodeInvalid,
            PersonId,
        ),
        (
            "subject-hpr-system",
            "Observation.subject.identifier.system",
            CodeInvalid,
            PersonId,
        ),
        ("subject-missing", "Observation.subject", Required, PersonId),
        (
            "performer-orgnr-check-digit",
            "Observation.performer[0].identifier.value",
            CodeInvalid,
            SystemId,
        ),
        (
            "performer-old-oid",
            "Observation.performer[0].identifier.system",
            CodeInvalid,
            SystemId,
        ),
        (
            "performer-author-hpr",
            "Observation.performer[1].identifier.system",
            CodeInvalid,
            PersonId,
        ),
        ("status-missing", "Observation.status", Required, Format),
        (
            "status-not-a-string",
            "Observation.status",
            Structure,
            Format,
        ),
        ("category-missing", "Observation.category", Required, Format),
        (
            "code-profile-mismatch",
            "Observation.code",
            CodeInvalid,
            Format,
        ),
        (
            "code-snomed-mismatch",
            "Observation.code.coding",
            CodeInvalid,
            Format,
        ),
        ("code-unknown", "Observation.code", CodeInvalid, Format),
        (
            "effective-missing",
            "Observation.effective[x]",
            Required,
            Format,
        ),
        (
            "effective-month-only",
            "Observation.effectiveDateTime",
            Value,
            Format,
        ),
        (
            "effective-future",
            "Observation.effectiveDateTime",
            Value,
            Format,
        ),
        (
            "quantity-no-value",
            "Observation.valueQuantity.value",
            Value,
            Format,
        ),
        (
            "quantity-not-ucum",
            "Observation.valueQuantity.system",
            Value,
            Format,
        ),
        (
            "weight-in-mmhg",
            "Observation.valueQuantity.code",
            Value,
            Format,
        ),
        (
            "spo2-fraction",
            "Observation.valueQuantity.value",
            Value,
            Format,
        ),
        (
            "bp-missing-diastolic",
            "Observation.component",
            Value,
            Format,
        ),
        (
            "severity-unknown",
            "Observation.extension[0]",
            Value,
            Format,
        ),
        ("triage-unknown", "Observation.extension[1]", Value, Format),
        (
            "qr-attachment-answer",
            "QuestionnaireResponse.item[1].answer[0].valueAttachment",
            NotSupported,
            Format,
        ),
        (
            "qr-authored-missing",
            "QuestionnaireResponse.authored",
            Required,
            Format,
        ),
        (
            "qr-author-patient",
            "QuestionnaireResponse.author",
            Required,
            SystemId,
        ),
        (
            "score-no-questionnaire",
            "Observation.derivedFrom",
            Required,
            Format,
        ),
    ]
};

/// Every run of 6+ digits in the fixture (patient numbers and the like).
fn digit_runs(json: &Value) -> Vec<String> {
    let text = json.to_string();
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|run| run.len() >= 6)
        .map(str::to_string)
        .collect()
}

fn ingest_any(json: &Value) -> Result<(), FhirError> {
    if json["resourceType"] == "Bundle" {
        bundle::split(json, |_| ctx()).map(|_| ())
    } else {
        ingest_resource(json, &ctx()).map(|_| ())
    }
}

#[test]
fn every_invalid_fixture_fails_where_and_how_expected() {
    for (name, location, code, vkp) in INVALID {
        let json = load("invalid", name);
        let error = ingest_any(&json).expect_err(name);
        assert_eq!(
            (error.location.as_str(), error.code, error.vkp),
            (*location, *code, *vkp),
            "{name}: {error}"
        );
        for run in digit_runs(&json) {
            // Identifiers never reach the message (codes such as 8867-4 are shorter).
            if run.len() == 11 {
                assert!(
                    !error.message.contains(&run),
                    "{name}: message leaks an identifier"
                );
            }
        }
    }
}

#[test]
fn every_fixture_file_is_tested() {
    let listed: BTreeSet<String> = INVALID.iter().map(|(name, ..)| name.to_string()).collect();
    assert_eq!(files("invalid"), listed);
    let valid: BTreeSet<String> = [
        "blood-pressure",
        "bundle-batch-mixed",
        "bundle-collection",
        "glucose",
        "heart-rate",
        "performer-practitioner-only",
        "questionnaire-response",
        "score-observation",
        "spo2",
        "temperature",
        "weight",
    ]
    .map(String::from)
    .into();
    assert_eq!(files("valid"), valid);
    for name in &valid {
        ingest_any(&load("valid", name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn a_batch_gives_one_result_per_entry_in_order() {
    let mut ids = 0;
    let outcomes = bundle::split(&load("valid", "bundle-batch-mixed"), |i| {
        ids += 1;
        IngestContext {
            event_id: format!("event-{i}"),
            ..ctx()
        }
    })
    .unwrap();
    let summary: Vec<_> = outcomes
        .iter()
        .map(|o| match &o.result {
            Ok(event) => Ok(event.event_id().to_string()),
            Err(e) => Err((e.location.as_str(), e.code, e.vkp)),
        })
        .collect();
    assert_eq!(
        summary,
        [
            Ok("event-0".to_string()),
            Err((
                "Observation.subject.identifier.value",
                IssueCode::CodeInvalid,
                VkpCode::PersonId
            )),
            Ok("event-2".to_string()),
            Err(("Patient", IssueCode::NotSupported, VkpCode::Format)),
            Err((
                "Bundle.entry[4].fullUrl",
                IssueCode::Duplicate,
                VkpCode::Format
            )),
            Err((
                "Bundle.entry[5].request.method",
                IssueCode::Required,
                VkpCode::Format
            )),
            Err((
                "Bundle.entry[6].fullUrl",
                IssueCode::Required,
                VkpCode::Format
            )),
            Ok("event-7".to_string()),
        ]
    );
    // Entries refused for their envelope (4, 5, 6) never reach the mapping.
    assert_eq!(
        ids, 5,
        "an event id is taken only for entries whose resource is mapped"
    );
    assert!(matches!(&outcomes[7].result, Ok(Ingested::SelfReport(r)) if r.score == Some(17.0)));

    let response = bundle::response_bundle(&outcomes);
    assert_eq!(response["type"], "batch-response");
    let entries = response["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 8);
    assert_eq!(
        entries[0]["fullUrl"],
        "urn:uuid:00000000-0000-4000-8000-000000000000"
    );
    assert_eq!(entries[0]["response"]["status"], "201 Created");
    assert_eq!(entries[0]["response"]["location"], "Observation/event-0");
    assert_eq!(
        entries[2]["response"]["location"],
        "QuestionnaireResponse/event-2"
    );
    assert_eq!(entries[1]["response"]["status"], "422 Unprocessable Entity");
    let issue = &entries[1]["response"]["outcome"]["issue"][0];
    assert_eq!(issue["code"], "code-invalid");
    assert_eq!(issue["details"]["coding"][0]["code"], "2.1");
    assert_eq!(
        issue["expression"][0],
        "Observation.subject.identifier.value"
    );
    assert_eq!(entries[4]["response"]["status"], "400 Bad Request");
    assert!(entries[6].get("fullUrl").is_none());
}

#[test]
fn a_pmd_collection_is_accepted_without_requests() {
    let outcomes = bundle::split(&load("valid", "bundle-collection"), |_| ctx()).unwrap();
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o.result.is_ok()));
    let not_a_bundle = bundle::split(&load("valid", "spo2"), |_| ctx()).unwrap_err();
    assert_eq!(
        (not_a_bundle.location.as_str(), not_a_bundle.code),
        ("resourceType", IssueCode::Structure)
    );
}

#[test]
fn synthetic_identities_are_refused_when_the_policy_says_so() {
    let strict = IngestContext {
        policy: Policy {
            allow_synthetic: false,
        },
        ..ctx()
    };
    let e = measurement_from_observation(&load("valid", "spo2"), &strict).unwrap_err();
    assert_eq!(
        (e.location.as_str(), e.code, e.vkp),
        (
            "Observation.subject.identifier.value",
            IssueCode::CodeInvalid,
            VkpCode::PersonId
        )
    );
}

/// The context under which a measurement's own Observation maps back to it.
fn ctx_of(m: &Measurement) -> IngestContext {
    IngestContext {
        event_id: m.event_id.clone(),
        received_time: m.received_time,
        platform: m.source.platform.clone(),
        policy: Policy::SYNTHETIC_ALLOWED,
    }
}

/// Measurement → Observation → JSON text → Observation → Measurement.
fn round_trip(m: &Measurement) -> Result<Measurement, FhirError> {
    let text = observation_from_measurement(m).to_string();
    measurement_from_observation(&serde_json::from_str(&text).unwrap(), &ctx_of(m))
}

#[test]
fn fixtures_round_trip_through_observation() {
    for name in [
        "spo2",
        "heart-rate",
        "blood-pressure",
        "weight",
        "glucose",
        "temperature",
    ] {
        let m = measurement(name);
        assert_eq!(round_trip(&m).unwrap(), m, "{name}");
    }
    let m = fixtures::blood_pressure(&fixtures::patient(5), 150.0, 95.0, NOW - 60_000);
    assert_eq!(round_trip(&m).unwrap(), m);
}

#[test]
fn the_observation_is_vkp_shaped() {
    let obs = observation_from_measurement(&measurement("blood-pressure"));
    // The data controller is an organisation performer, which the vital-sign profile
    // (performer only a Practitioner) does not allow: the output claims the general
    // profile, whose organisation slice it fills (issue 20: claimed only when satisfied).
    assert_eq!(
        obs["meta"]["profile"][0],
        "http://hl7.no/fhir/vkpobservation/StructureDefinition/vkp-Observation"
    );
    assert_eq!(obs["category"][0]["coding"][0]["code"], "vital-signs");
    assert_eq!(
        obs["subject"]["identifier"]["system"],
        "urn:oid:2.16.578.1.12.4.1.4.2"
    );
    assert_eq!(obs["performer"][0]["identifier"]["system"], RESH_OID);
    assert_eq!(
        obs["component"][1]["code"]["coding"][0]["code"],
        codes::DIASTOLIC_BP
    );
    assert_eq!(obs["component"][1]["valueQuantity"]["system"], UCUM);
    assert!(obs.get("valueQuantity").is_none());
}

#[test]
fn questionnaire_responses_round_trip() {
    let mut r = fixtures::self_report(&fixtures::patient(6), NOW - 3_600_000);
    // A QuestionnaireResponse has no device and no score (VKP sends the score separately).
    r.source.device_id = None;
    r.source.device_type = None;
    r.score = None;
    r.answers.push(Answer {
        value_integer: Some(4),
        ..r.answers[0].clone()
    });
    let ctx = IngestContext {
        event_id: r.event_id.clone(),
        received_time: r.received_time,
        platform: r.source.platform.clone(),
        policy: Policy::SYNTHETIC_ALLOWED,
    };
    let json = questionnaire_response_from_self_report(&r);
    assert_eq!(
        self_report_from_questionnaire_response(&json, &ctx).unwrap(),
        r
    );
}

#[test]
fn a_national_number_in_sender_text_is_masked() {
    let mut json = load("valid", "glucose");
    json["code"]["coding"][0] = serde_json::json!({"system": LOINC, "code": "15888510025"});
    let e = ingest_resource(&json, &ctx()).unwrap_err();
    assert_eq!(e.location, "Observation.code");
    assert!(!e.message.contains("15888510025"), "{}", e.message);
    assert!(e.message.contains("<11 digits>"), "{}", e.message);
}

#[test]
fn operation_outcome_carries_location_and_both_codes() {
    let e = FhirError::new(
        "Observation.status",
        IssueCode::Required,
        VkpCode::Format,
        "status is required",
    );
    let oo = e.to_operation_outcome();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert_eq!(oo["issue"][0]["severity"], "error");
    assert_eq!(oo["issue"][0]["code"], "required");
    assert_eq!(oo["issue"][0]["details"]["coding"][0]["code"], "2.4");
    assert_eq!(oo["issue"][0]["expression"][0], "Observation.status");
}

/// Generated measurements of every kind the hub maps, with values as devices report them
/// (at most two decimals), so the JSON text round trip is exact.
fn any_measurement() -> impl Strategy<Value = Measurement> {
    // (code, unit, low, high): the range in hundredths of the unit.
    let kind = prop_oneof![
        Just((codes::SPO2, "%", 5000i64, 10000i64)),
        Just((codes::HEART_RATE, "/min", 2000, 25000)),
        Just((codes::BODY_TEMPERATURE, "[degF]", 8600, 11300)),
        Just((codes::BODY_TEMPERATURE, "Cel", 3000, 4500)),
        Just((codes::BODY_WEIGHT, "[lb_av]", 300, 88000)),
        Just((codes::BODY_WEIGHT, "kg", 100, 40000)),
        Just((codes::CAPILLARY_GLUCOSE, "mmol/L", 50, 5000)),
        Just((codes::BLOOD_PRESSURE, "mm[Hg]", 0, 0)),
    ];
    (
        kind,
        0.0f64..1.0,
        (40i64..300, 20i64..200),
        (0i64..NOW),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        (0usize..6, 0usize..8, any::<u64>()),
    )
        .prop_map(
            |((code, unit, lo, hi), fraction, (sys, dia), at, flags, (sev, tri, seed))| {
                let (with_snomed, with_source_id, with_device, resh) = flags;
                let patient = fixtures::patient(seed);
                let mut m = if code == codes::BLOOD_PRESSURE {
                    fixtures::blood_pressure(&patient, sys as f64, dia as f64, at)
                } else {
                    let cents = lo + ((hi - lo) as f64 * fraction) as i64;
                    let mut m = fixtures::spo2(&patient, cents as f64 / 100.0, at);
                    m.code = code.into();
                    m.snomed_code = codes::lookup(code).unwrap().snomed.map(String::from);
                    m.value.as_mut().unwrap().unit = unit.into();
                    m
                };
                if !with_snomed {
                    m.snomed_code = None;
                    m.components.iter_mut().for_each(|c| c.snomed_code = None);
                }
                m.source_id = with_source_id.then(|| format!("obs-{seed}"));
                if !with_device {
                    m.source.device_id = None;
                    m.source.device_type = None;
                }
                if resh {
                    m.data_controller = OrganisationIdentifier {
                        system: OrgIdSystem::Resh,
                        value: (seed % 10_000_000).to_string(),
                        name: None,
                    };
                }
                m.severity = [0u8, 10, 20, 30, 40]
                    .get(sev)
                    .and_then(|c| VkpSeverity::from_code(*c));
                m.triage = [
                    TriageColour::Red,
                    TriageColour::Orange,
                    TriageColour::Yellow,
                    TriageColour::Green,
                    TriageColour::Blue,
                    TriageColour::Black,
                    TriageColour::NotReported,
                ]
                .get(tri)
                .copied();
                m
            },
        )
}

/// Arbitrary JSON, with FHIR element names as keys often enough to get deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            Just("Observation".to_string()),
            Just("QuestionnaireResponse".to_string()),
            Just("Bundle".to_string()),
            Just("batch".to_string()),
            Just("final".to_string()),
            Just(PatientIdSystem::Fnr.oid().to_string()),
            Just("2024-05-01T10:00:00Z".to_string()),
            "\\PC{0,12}",
        ]
        .prop_map(Value::from),
    ];
    let key = prop_oneof![
        Just("resourceType"),
        Just("type"),
        Just("entry"),
        Just("resource"),
        Just("status"),
        Just("code"),
        Just("coding"),
        Just("system"),
        Just("subject"),
        Just("identifier"),
        Just("value"),
        Just("valueQuantity"),
        Just("component"),
        Just("performer"),
        Just("effectiveDateTime"),
        Just("item"),
        Just("answer"),
        Just("linkId"),
        Just("extension"),
        Just("url"),
        Just("fullUrl"),
        Just("request"),
        Just("method"),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..6).prop_map(|map| {
                Value::Object(map.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

/// Replaces the node `path` leads to (each step picks a key or index modulo the length).
fn replace_at(node: &mut Value, path: &[usize], replacement: Value) {
    let child = match (node, path.split_first()) {
        (Value::Object(map), Some((step, _))) if !map.is_empty() => {
            let key = map.keys().nth(step % map.len()).unwrap().clone();
            map.get_mut(&key)
        }
        (Value::Array(items), Some((step, _))) if !items.is_empty() => {
            let len = items.len();
            items.get_mut(step % len)
        }
        (node, _) => {
            *node = replacement;
            return;
        }
    };
    if let Some(child) = child {
        replace_at(child, &path[1..], replacement);
    }
}

proptest! {
    #[test]
    fn measurement_to_observation_and_back_is_identity(m in any_measurement()) {
        let back = round_trip(&m);
        prop_assert!(back.is_ok(), "{:?}", back);
        prop_assert_eq!(back.unwrap(), m);
    }

    #[test]
    fn any_json_is_an_error_or_an_event_never_a_panic(json in any_json(), observation in any::<bool>()) {
        let mut json = json;
        if let (true, Value::Object(map)) = (observation, &mut json) {
            map.insert("resourceType".into(), "Observation".into());
        }
        let _ = ingest_resource(&json, &ctx());
        let _ = bundle::split(&json, |_| ctx());
        let _ = self_report_from_questionnaire_response(&json, &ctx());
    }

    #[test]
    fn mutated_fixtures_never_panic(name in prop::sample::select(vec!["spo2", "blood-pressure", "questionnaire-response", "bundle-batch-mixed"]), path in proptest::collection::vec(0usize..8, 1..4), replacement in any_json()) {
        // Replace one element somewhere inside a real resource: deep, realistic damage.
        let mut json = load("valid", name);
        replace_at(&mut json, &path, replacement);
        let _ = ingest_any(&json);
    }
}

/// Issue 20: a Practitioner performer alone is what the vital-sign profiles allow; the
/// data controller is then the platform that sent the reading.
#[test]
fn a_practitioner_performer_leaves_the_platform_as_data_controller() {
    let json = load("valid", "performer-practitioner-only");
    let Ingested::Measurement(m) = ingest_resource(&json, &ctx()).unwrap() else {
        panic!("not a measurement");
    };
    assert_eq!(m.data_controller, ctx().platform);
}
