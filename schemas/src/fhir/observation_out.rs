//! Measurement → VKP Observation: the output half of [`super::observation`].

use super::observation::{
    SEVERITY_EXTENSION, SEVERITY_SYSTEM, TRIAGE_SYSTEM, VKP_PROFILE_BASE, claimed_profile,
    is_vital_sign,
};
use super::types::{self, CodeableConcept, Extension, Observation};
use crate::codes;
use crate::model::*;

fn fhir_quantity(q: &Quantity) -> types::Quantity {
    if q.unit == "1" {
        // A score: a bare value, as VKP's CFS and NEWS2 profiles show it.
        return types::Quantity {
            value: Some(q.value),
            ..Default::default()
        };
    }
    types::Quantity {
        value: Some(q.value),
        unit: Some(q.unit.clone()),
        system: Some(super::UCUM.into()),
        code: Some(q.unit.clone()),
    }
}

/// The codings of a code: LOINC with LOINC's own name (or no display), and the SNOMED CT
/// pair; a kind coded only in SNOMED CT gets its SNOMED CT coding alone.
fn concept(code: &str, snomed: Option<&str>) -> CodeableConcept {
    let mut coding = vec![];
    if code.contains('-') {
        let name = codes::lookup(code)
            .map(|s| s.loinc_name)
            .unwrap_or_else(|| {
                codes::all_components()
                    .find(|c| c.loinc == code)
                    .and_then(|c| c.loinc_name)
            });
        coding.push(super::coding(super::LOINC, code, name));
        coding.extend(snomed.map(|s| super::coding(super::SNOMED, s, None)));
    } else {
        coding.push(super::coding(super::SNOMED, snomed.unwrap_or(code), None));
    }
    CodeableConcept { coding, text: None }
}

/// A time as FHIR text: the date alone when the reading was dated without a time.
fn fhir_time(at: Millis, date_only: bool) -> String {
    let text = super::time::format(at);
    if date_only {
        text[..10].to_string()
    } else {
        text
    }
}

/// The VKP-shaped Observation of a measurement: the profile its content satisfies, the
/// status as sent, the patient as a logical reference, the data controller as organisation
/// performer, the time as precise as it came (a period whole), the device, severity as
/// Velferdsteknologi's extension and triage as an interpretation. `id` is the hub's event id.
pub fn observation_from_measurement(m: &Measurement) -> serde_json::Value {
    let mut extension = vec![];
    if let Some(severity) = m.severity {
        extension.push(Extension {
            url: SEVERITY_EXTENSION.into(),
            value_coding: None,
            value_codeable_concept: Some(CodeableConcept {
                coding: vec![super::coding(
                    SEVERITY_SYSTEM,
                    &severity.code().to_string(),
                    None,
                )],
                text: None,
            }),
        });
    }
    let interpretation = m.triage.map(|triage| {
        let code = super::to_json(&triage);
        CodeableConcept {
            coding: vec![super::coding(
                TRIAGE_SYSTEM,
                code.as_str().unwrap_or_default(),
                None,
            )],
            text: None,
        }
    });
    let category = if is_vital_sign(&m.code) {
        Some(("vital-signs", "Vital Signs"))
    } else if !m.code.contains('-') {
        // CFS, NEWS2, ACVPU: assessments, as VKP's examples categorise them.
        Some(("survey", "Survey"))
    } else {
        None
    }
    .map(|(code, display)| CodeableConcept {
        coding: vec![super::coding(
            super::OBSERVATION_CATEGORY,
            code,
            Some(display),
        )],
        text: None,
    });
    let device = super::device_reference(&m.source);
    let date_only = m.date_only();
    let (effective_date_time, effective_period) = match m.effective_end {
        None => (Some(fhir_time(m.effective_time, date_only)), None),
        Some(end) => (
            None,
            Some(types::Period {
                start: Some(fhir_time(m.effective_time, date_only)),
                end: Some(fhir_time(end, date_only)),
            }),
        ),
    };
    let obs = Observation {
        resource_type: "Observation".into(),
        id: Some(m.event_id.clone()),
        meta: Some(types::Meta {
            profile: vec![format!("{VKP_PROFILE_BASE}{}", claimed_profile(&m.code))],
        }),
        extension,
        identifier: super::identifiers(&m.source_id),
        status: Some(m.status().into()),
        category: category.into_iter().collect(),
        code: Some(concept(&m.code, m.snomed_code.as_deref())),
        subject: Some(super::patient_reference(&m.patient)),
        effective_date_time,
        effective_period,
        performer: vec![super::organisation_reference(&m.data_controller)],
        value_quantity: m.value.as_ref().map(fhir_quantity),
        value_codeable_concept: m.value_coding.as_ref().map(|c| CodeableConcept {
            coding: vec![super::coding(&c.system, &c.code, c.display.as_deref())],
            text: None,
        }),
        interpretation: interpretation.into_iter().collect(),
        device,
        component: m
            .components
            .iter()
            .map(|c| types::ObservationComponent {
                code: Some(concept(&c.code, c.snomed_code.as_deref())),
                value_quantity: Some(fhir_quantity(&c.value)),
            })
            .collect(),
        ..Default::default()
    };
    super::to_json(&obs)
}
