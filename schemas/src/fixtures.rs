//! Synthetic, valid example records for tests, the demo and benchmarks. Patients are from the
//! synthetic Tenor population (month + 80), so no number can belong to a real person.

use rand::SeedableRng;

use crate::codes;
use crate::ids;
use crate::model::*;

/// A deterministic synthetic patient.
pub fn patient(seed: u64) -> PatientIdentifier {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    PatientIdentifier::fnr(ids::synthetic_fnr(&mut rng))
}

/// A valid organisation number derived from `seed`.
pub fn orgnr(seed: u32) -> String {
    (seed..)
        .find_map(ids::orgnr_from)
        .expect("some organisation number is valid")
}

pub fn home_care() -> OrganisationIdentifier {
    OrganisationIdentifier::orgnr(orgnr(96_400_001), "Bergen kommune, hjemmetjenesten")
}

pub fn gp() -> OrganisationIdentifier {
    OrganisationIdentifier::orgnr(orgnr(91_200_001), "Sentrum legekontor")
}

pub fn lung_clinic() -> OrganisationIdentifier {
    OrganisationIdentifier::orgnr(orgnr(98_300_001), "Helse Bergen, lungeklinikken")
}

pub fn platform() -> OrganisationIdentifier {
    OrganisationIdentifier::orgnr(orgnr(92_700_001), "Example device platform AS")
}

fn source() -> Source {
    Source {
        platform: platform(),
        device_id: Some("SN-0001".into()),
        device_type: Some("pulse oximeter".into()),
    }
}

fn event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn spo2(patient: &PatientIdentifier, value: f64, at: Millis) -> Measurement {
    Measurement {
        event_id: event_id(),
        source_id: Some(format!("obs-{}", uuid::Uuid::new_v4())),
        patient: patient.clone(),
        source: source(),
        data_controller: platform(),
        code: codes::SPO2.into(),
        snomed_code: Some("431314004".into()),
        value: Some(Quantity {
            value,
            unit: "%".into(),
        }),
        components: vec![],
        effective_time: at,
        received_time: at + 1_000,
        severity: None,
        triage: None,
        status: None,
        effective_end: None,
        effective_precision: None,
        value_coding: None,
    }
}

pub fn blood_pressure(
    patient: &PatientIdentifier,
    systolic: f64,
    diastolic: f64,
    at: Millis,
) -> Measurement {
    let component = |code: &str, snomed: &str, value: f64| Component {
        code: code.into(),
        snomed_code: Some(snomed.into()),
        value: Quantity {
            value,
            unit: "mm[Hg]".into(),
        },
    };
    Measurement {
        code: codes::BLOOD_PRESSURE.into(),
        snomed_code: Some("75367002".into()),
        value: None,
        components: vec![
            component(codes::SYSTOLIC_BP, "271649006", systolic),
            component(codes::DIASTOLIC_BP, "271650006", diastolic),
        ],
        severity: Some(VkpSeverity::Moderate),
        triage: Some(TriageColour::Yellow),
        status: None,
        effective_end: None,
        effective_precision: None,
        value_coding: None,
        ..spo2(patient, 0.0, at)
    }
}

pub fn self_report(patient: &PatientIdentifier, at: Millis) -> SelfReport {
    let answer = |link_id: &str| Answer {
        nested_in: vec![],
        link_id: link_id.into(),
        value_boolean: None,
        value_integer: None,
        value_decimal: None,
        value_string: None,
        value_coding: None,
    };
    SelfReport {
        event_id: event_id(),
        source_id: Some(format!("qr-{}", uuid::Uuid::new_v4())),
        patient: patient.clone(),
        source: source(),
        data_controller: platform(),
        questionnaire_id: "cat".into(),
        questionnaire_version: Some("1".into()),
        authored_time: at,
        received_time: at + 1_000,
        answers: vec![
            Answer {
                value_integer: Some(3),
                ..answer("cough")
            },
            Answer {
                value_boolean: Some(true),
                ..answer("more-breathless-than-usual")
            },
            Answer {
                value_coding: Some(Coding {
                    system: "http://snomed.info/sct".into(),
                    code: "267036007".into(),
                    display: Some("Dyspnea".into()),
                }),
                ..answer("main-symptom")
            },
        ],
        score: Some(17.0),
    }
}

/// A consent permitting each of `recipients` all categories, open-ended.
pub fn consent(
    patient: &PatientIdentifier,
    consent_id: &str,
    recipients: &[OrganisationIdentifier],
) -> Consent {
    Consent {
        consent_id: consent_id.into(),
        patient: patient.clone(),
        status: ConsentStatus::Active,
        provisions: recipients
            .iter()
            .map(|actor| {
                ConsentProvision::organisation(
                    ProvisionKind::Permit,
                    actor.clone(),
                    vec![
                        DataCategory::Measurement,
                        DataCategory::SelfReport,
                        DataCategory::Alert,
                    ],
                )
            })
            .collect(),
        legal_basis: "pbrl-5-3".into(),
        recorded_by: home_care(),
        recorded_at: 1_700_000_000_000,
    }
}

/// An active, full-content subscription to every category, from the epoch on.
pub fn subscription(
    patient: &PatientIdentifier,
    subscriber_id: &str,
    org: &OrganisationIdentifier,
) -> Subscription {
    Subscription {
        subscription_id: format!("{subscriber_id}-{}", patient.log_tag()),
        subscriber_id: subscriber_id.into(),
        subscriber_org: org.clone(),
        patient: patient.clone(),
        categories: vec![
            DataCategory::Measurement,
            DataCategory::SelfReport,
            DataCategory::Alert,
        ],
        code_filter: vec![],
        content_level: ContentLevel::Full,
        status: SubscriptionStatus::Active,
        active_from: 0,
        active_until: None,
        purpose_of_use: "TREAT".into(),
        updated_at: 1_700_000_000_000,
    }
}

pub fn care_plan(patient: &PatientIdentifier) -> CarePlan {
    let range = |low: f64, high: Option<f64>| ZoneRange {
        low: Some(low),
        high,
    };
    CarePlan {
        plan_id: "plan-1".into(),
        patient: patient.clone(),
        version: 1,
        targets: vec![PlanTarget {
            code: codes::SPO2.into(),
            unit: "%".into(),
            green: range(92.0, None),
            yellow: range(88.0, None),
            expected_interval_hours: Some(24),
        }],
        updated_by: lung_clinic(),
        updated_at: 1_700_000_000_000,
    }
}

pub fn delivery_of(m: &Measurement) -> Delivery {
    Delivery {
        delivery_id: "d-1".into(),
        subscriber_id: "gp-1".into(),
        subscription_id: "s-1".into(),
        consent_id: "c-1".into(),
        patient: m.patient.clone(),
        source: SourcePosition {
            topic: "dho.measurements".into(),
            partition: 0,
            offset: 42,
        },
        content_level: ContentLevel::Full,
        routed_at: m.received_time + 5,
        measurement: Some(m.clone()),
        self_report: None,
        alert: None,
        reference: None,
        replaces: None,
        professional_denies: vec![],
        sharing_ended: None,
    }
}

pub fn disclosure_of(d: &Delivery) -> DisclosureRecord {
    DisclosureRecord {
        delivery_id: d.delivery_id.clone(),
        recorded_at: d.routed_at,
        patient: d.patient.clone(),
        recipient: gp(),
        subscriber_id: d.subscriber_id.clone(),
        subscription_id: d.subscription_id.clone(),
        purpose_of_use: "TREAT".into(),
        decision_reference: d.consent_id.clone(),
        legal_basis: "pbrl-5-3".into(),
        data_controller: platform(),
        category: DataCategory::Measurement,
        event_id: "e-1".into(),
        content_level: ContentLevel::Full,
        source: d.source.clone(),
        replaces: d.replaces.as_ref().map(|r| r.delivery_id.clone()),
    }
}
