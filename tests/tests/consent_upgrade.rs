//! Issue 21: the Consent schema evolved for blanket denies, professionals and nested rules,
//! during a rolling upgrade. A router still on version 1 of the schema (kept in
//! schemas/fixtures/avro/Consent.v1.avsc) reads a directive written with the new one:
//! - a blanket deny or a rule about a professional fails to decode (version 1's `actor` is
//!   required; a null is not one), so the old router holds the patient, as for any state
//!   record it cannot read: nothing is delivered, nothing is wrongly permitted;
//! - directives about organisations only decode, nested rules as plain ones (it ignores
//!   `parent`), and decide no more permissively than the new router does;
//!
//! and the new router reads everything version 1 wrote. The hub registers consents at
//! BACKWARD_TRANSITIVE (every new version reads all old data), which accepts the new schema
//! over version 1; FULL_TRANSITIVE, the rule of the hub's other subjects, refuses it, as it
//! must: an old reader failing on the new rules is the fail-closed part.

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use dho_kafka::AvroSerde;
use dho_routing_core::decision::{EventView, PatientState, decide};
use dho_schemas::avro::SchemaKind;
use dho_schemas::codec;
use dho_schemas::model::*;
use dho_schemas::{fixtures, topics};
use dho_tests::Stack;
use dho_tests::ingest::Http;
use serde_json::json;

fn v1() -> Schema {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/fixtures/avro/Consent.v1.avsc"
    );
    Schema::parse_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// What a version-1 reader makes of bytes written with the current schema.
fn read_as_v1(body: &[u8]) -> Result<apache_avro::types::Value, apache_avro::Error> {
    GenericDatumReader::builder(SchemaKind::Consent.schema())
        .reader_schema(&v1())
        .build()?
        .read_value(&mut &body[..])
}

fn with(consent: &Consent, rules: Vec<ConsentProvision>) -> Consent {
    Consent {
        provisions: rules,
        ..consent.clone()
    }
}

fn deny_all() -> ConsentProvision {
    let mut p = ConsentProvision::organisation(
        ProvisionKind::Deny,
        fixtures::gp(),
        vec![DataCategory::Measurement],
    );
    p.actor = None;
    p
}

#[test]
fn a_version_1_reader_cannot_read_a_blanket_or_professional_rule_and_so_holds_the_patient() {
    let base = fixtures::consent(&fixtures::patient(1), "c", &[fixtures::gp()]);
    let mut professional = deny_all();
    professional.professional = Some(HealthProfessional {
        hpr_number: "9144897".into(),
    });
    for (what, rule) in [("blanket", deny_all()), ("professional", professional)] {
        let mut rules = base.provisions.clone();
        rules.push(rule);
        let body = codec::encode(&with(&base, rules)).unwrap();
        let error = read_as_v1(&body).expect_err(what);
        assert!(
            error.to_string().to_lowercase().contains("union")
                || error.to_string().contains("null")
                || error.to_string().contains("Null"),
            "{what}: {error}"
        );
    }
}

#[test]
fn a_version_1_reader_reads_organisation_rules_and_is_never_more_permissive() {
    let patient = fixtures::patient(1);
    let base = fixtures::consent(&patient, "c", &[fixtures::gp(), fixtures::lung_clinic()]);
    // Nested in the GP's permit: no self-reports; a later deny nested in the lung clinic's.
    let mut rules = base.provisions.clone();
    let mut no_self_reports = rules[0].clone();
    no_self_reports.kind = ProvisionKind::Deny;
    no_self_reports.categories = vec![DataCategory::SelfReport];
    no_self_reports.parent = Some(0);
    rules.push(no_self_reports);
    let mut later = rules[1].clone();
    later.kind = ProvisionKind::Deny;
    later.period_start = Some(2_000_000_000_000);
    later.parent = Some(1);
    rules.push(later);
    let new = with(&base, rules);
    new.validate(dho_schemas::Policy::SYNTHETIC_ALLOWED)
        .unwrap();
    let body = codec::encode(&new).unwrap();

    // Version 1 reads it; rewritten with version 1 and read back by today's reader, it is
    // exactly what the old router saw: the same rules, none nested.
    let seen_by_v1 = read_as_v1(&body).unwrap();
    let v1_body = GenericDatumWriter::builder(&v1())
        .build()
        .unwrap()
        .write_value_to_vec(seen_by_v1)
        .unwrap();
    let old: Consent = codec::decode_with_writer(&v1(), &v1_body).unwrap();
    assert_eq!(old.provisions.len(), new.provisions.len());
    assert!(old.provisions.iter().all(|p| p.parent.is_none()));

    let state = |c: &Consent| {
        let mut s = PatientState::default();
        s.set_consent(c.consent_id.clone(), Some(c.clone()));
        for (id, org) in [
            ("gp", fixtures::gp()),
            ("clinic", fixtures::lung_clinic()),
            ("home", fixtures::home_care()),
        ] {
            s.set_subscription(id.into(), Some(fixtures::subscription(&patient, id, &org)));
        }
        s
    };
    let (new_state, old_state) = (state(&new), state(&old));
    let mut compared = 0;
    for category in [
        DataCategory::Measurement,
        DataCategory::SelfReport,
        DataCategory::Alert,
    ] {
        for now in [1_900_000_000_000, 2_000_000_000_000, 2_100_000_000_000] {
            let event = EventView {
                category,
                code: None,
            };
            let granted = |s: &PatientState| -> Vec<String> {
                decide(Some(s), event, now)
                    .grants
                    .iter()
                    .map(|g| g.subscription.subscriber_id.clone())
                    .collect()
            };
            let (by_new, by_old) = (granted(&new_state), granted(&old_state));
            assert!(
                by_old.iter().all(|s| by_new.contains(s)),
                "{category:?} at {now}: the old router grants {by_old:?}, the new {by_new:?}"
            );
            compared += by_new.len();
        }
    }
    assert!(compared > 0, "the new router granted something to compare");
}

#[test]
fn todays_reader_reads_what_version_1_wrote() {
    let old = fixtures::consent(&fixtures::patient(1), "c", &[fixtures::gp()]);
    // Written by a version-1 producer: the same record, in version 1's layout.
    let value = read_as_v1(&codec::encode(&old).unwrap()).unwrap();
    let v1_body = GenericDatumWriter::builder(&v1())
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap();
    let read: Consent = codec::decode_with_writer(&v1(), &v1_body).unwrap();
    assert_eq!(read, old);
    assert_eq!(read.provisions[0].actor, Some(fixtures::gp()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_upgrade_a_new_service_registers_the_new_schema_over_version_1() {
    let stack = Stack::start().await;
    let registry = Http::new(stack.settings.schema_registry_url.clone());
    let topic = stack.settings.topics().consents();
    let subject = topics::value_subject(&topic);
    // What a version-1 service left behind: version 1, at FULL_TRANSITIVE.
    let config = |level: &str| json!({ "compatibility": level });
    let set = registry
        .send(
            reqwest::Method::PUT,
            &format!("/config/{subject}"),
            None,
            Some(&config("FULL_TRANSITIVE")),
        )
        .await
        .unwrap();
    assert_eq!(set.status, 200, "{}", set.json);
    let v1_text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/fixtures/avro/Consent.v1.avsc"
    ))
    .unwrap();
    let registered = registry
        .post(
            &format!("/subjects/{subject}/versions"),
            None,
            &json!({ "schema": v1_text }),
        )
        .await;
    assert_eq!(registered.status, 200, "{}", registered.json);

    // FULL_TRANSITIVE refuses the new schema, rightly: version 1 cannot read a blanket deny.
    let new = json!({ "schema": SchemaKind::Consent.schema_text() });
    let check = format!("/compatibility/subjects/{subject}/versions/latest?verbose=true");
    let full = registry.post(&check, None, &new).await;
    assert_eq!(full.json["is_compatible"], false, "{}", full.json);

    // A new service registers it all the same: consents are BACKWARD_TRANSITIVE, where the
    // new schema reads every old record.
    let serde = AvroSerde::new(&stack.settings.schema_registry_url);
    serde
        .register::<Consent>(&topic)
        .await
        .expect("the new Consent schema registers over version 1");
    let level = registry
        .send(
            reqwest::Method::GET,
            &format!("/config/{subject}"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(level.json["compatibilityLevel"], "BACKWARD_TRANSITIVE");
    let versions = registry
        .send(
            reqwest::Method::GET,
            &format!("/subjects/{subject}/versions"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(versions.json, json!([1, 2]));
}
