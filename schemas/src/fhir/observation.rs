//! VKP Observation ↔ [`Measurement`] (VKP_FHIR.md §1-3, rules 4-10 of §7).

use super::types::{self, CodeableConcept, Extension, Observation};
use super::{FhirError, IngestContext, IssueCode, VkpCode};
use crate::codes;
use crate::model::*;

/// Where VKP's Observation profiles live.
pub const VKP_PROFILE_BASE: &str = "http://hl7.no/fhir/vkpobservation/StructureDefinition/";

/// VKP's profiles and the code each fixes (the R4 vital-sign parent's LOINC); `None` for
/// the general profile. Every profile with a fixed code is a vital-sign profile.
const PROFILES: &[(&str, Option<&str>)] = &[
    ("vkp-Observation", None),
    ("vkp-Bloodpressure", Some(codes::BLOOD_PRESSURE)),
    ("vkp-Bodytemp", Some(codes::BODY_TEMPERATURE)),
    ("vkp-Bodyweight", Some(codes::BODY_WEIGHT)),
    ("vkp-Heartrate", Some(codes::HEART_RATE)),
    ("vkp-Oxygensat", Some(codes::SPO2)),
    ("vkp-Resprate", Some(codes::RESPIRATORY_RATE)),
];

/// Severity extension (vkp-severity-level-v090). VKP defines it on Flag; on an Observation
/// the hub reads it by the URL's last segment, since the canonical base is still draft.
pub const SEVERITY_EXTENSION: &str =
    "http://hl7.no/fhir/vkp/StructureDefinition/vkp-severity-level-v090";
/// Triage colour extension (vkp-triage-v090).
pub const TRIAGE_EXTENSION: &str = "http://hl7.no/fhir/vkp/StructureDefinition/vkp-triage-v090";
const SEVERITY_SYSTEM: &str = "http://hl7.no/fhir/vkp/CodeSystem/vkp-severity-level-v090";
const TRIAGE_SYSTEM: &str = "http://hl7.no/fhir/vkp/CodeSystem/vkp-triage-v090";

/// Observation statuses that are a reading to forward.
const READING_STATUSES: &[&str] = &["final", "amended", "corrected", "preliminary"];
/// The other R4 statuses: valid FHIR, but not a reading the hub can carry.
const OTHER_STATUSES: &[&str] = &["registered", "cancelled", "entered-in-error", "unknown"];

/// Two LOINC codes are the same measurement if VKP pairs them with the same SNOMED CT code
/// (2708-6 and 59408-5; the three glucose codes).
fn same_family(a: &str, b: &str) -> bool {
    a == b
        || matches!((codes::lookup(a), codes::lookup(b)),
            (Some(x), Some(y)) if x.snomed.is_some() && x.snomed == y.snomed)
}

fn profile_for(loinc: &str) -> &'static str {
    PROFILES
        .iter()
        .find(|(_, fixed)| fixed.is_some_and(|f| same_family(f, loinc)))
        .map_or("vkp-Observation", |(name, _)| name)
}

fn is_vital_sign(loinc: &str) -> bool {
    profile_for(loinc) != "vkp-Observation"
}

fn codes_of<'a>(concept: &'a CodeableConcept, system: &str) -> Vec<&'a str> {
    concept
        .coding
        .iter()
        .filter(|c| c.system.as_deref() == Some(system))
        .filter_map(|c| c.code.as_deref())
        .collect()
}

/// Whether an Observation carries a questionnaire score rather than a measurement.
pub(super) fn is_score(obs: &Observation) -> bool {
    obs.code
        .as_ref()
        .is_some_and(|c| codes_of(c, super::LOINC).contains(&codes::QUESTIONNAIRE_SCORE))
}

/// The LOINC code of a concept (rule 8), falling back to SNOMED CT and NPU for senders that
/// code only those; and the first SNOMED CT code, if any.
fn resolve_code(
    location: &str,
    concept: &CodeableConcept,
) -> Result<(String, Option<String>), FhirError> {
    let invalid = |message: String| {
        FhirError::format(
            format!("{location}.coding"),
            IssueCode::CodeInvalid,
            message,
        )
    };
    let loinc = codes_of(concept, super::LOINC);
    let snomed = codes_of(concept, super::SNOMED)
        .first()
        .map(|s| s.to_string());
    let known: Vec<&str> = loinc
        .iter()
        .copied()
        .filter(|c| codes::lookup(c).is_some())
        .collect();
    if let Some(other) = known.iter().find(|c| !same_family(c, known[0])) {
        return Err(invalid(format!(
            "LOINC codes {} and {other} name different measurements",
            known[0]
        )));
    }
    let code = if let Some(first) = known.first().or(loinc.first()) {
        first.to_string()
    } else if let Some(s) = &snomed {
        codes::loinc_for_snomed(s)
            .ok_or_else(|| invalid(format!("SNOMED CT {s} is not a code the hub accepts")))?
            .to_string()
    } else if let Some(npu) = codes_of(concept, super::NPU).first() {
        codes::loinc_for_npu(npu)
            .ok_or_else(|| invalid(format!("NPU {npu} is not a code the hub accepts")))?
            .to_string()
    } else {
        return Err(invalid(
            "needs a LOINC, SNOMED CT or NPU coding with a code".to_string(),
        ));
    };
    Ok((code, snomed))
}

/// A UCUM quantity (rule 10): a value, the UCUM system and a unit code. Whether the unit
/// suits the code and the value is plausible is the model validator's call.
fn quantity(location: &str, q: Option<&types::Quantity>) -> Result<Quantity, FhirError> {
    let value_error = |at: &str, message: &str| {
        FhirError::format(format!("{location}{at}"), IssueCode::Value, message)
    };
    let q = q.ok_or_else(|| value_error("", "a valueQuantity is required"))?;
    let value = q
        .value
        .ok_or_else(|| value_error(".value", "the quantity has no value"))?;
    if q.system.as_deref() != Some(super::UCUM) {
        return Err(value_error(
            ".system",
            "units must be UCUM (http://unitsofmeasure.org)",
        ));
    }
    let unit = q
        .code
        .clone()
        .ok_or_else(|| value_error(".code", "a UCUM unit code is required"))?;
    Ok(Quantity { value, unit })
}

/// The code of a severity or triage extension: valueCoding or valueCodeableConcept. The
/// system may be the CodeSystem or (as the VKP extension fixes it) the ValueSet URL.
fn extension_code(ext: &Extension) -> Option<&str> {
    ext.value_coding
        .as_ref()
        .or_else(|| ext.value_codeable_concept.as_ref()?.coding.first())?
        .code
        .as_deref()
}

fn extensions(
    exts: &[Extension],
) -> Result<(Option<VkpSeverity>, Option<TriageColour>), FhirError> {
    let (mut severity, mut triage) = (None, None);
    for (i, ext) in exts.iter().enumerate() {
        let location = format!("Observation.extension[{i}]");
        let bad = |what: &str| FhirError::format(location.clone(), IssueCode::Value, what);
        if ext.url.ends_with("/vkp-severity-level-v090") {
            let code = extension_code(ext).and_then(|c| c.parse::<u8>().ok());
            severity = Some(
                code.and_then(VkpSeverity::from_code)
                    .ok_or_else(|| bad("severity must be one of 0, 10, 20, 30, 40"))?,
            );
        } else if ext.url.ends_with("/vkp-triage-v090") {
            let code = extension_code(ext).unwrap_or_default();
            // The model's serde names are VKP's codes: one table, not two.
            triage = Some(
                serde_json::from_value(serde_json::Value::String(code.into()))
                    .map_err(|_| bad("triage must be one of R, O, Y, G, B, BL, NR"))?,
            );
        }
    }
    Ok((severity, triage))
}

pub(super) fn status(status: Option<&str>) -> Result<(), FhirError> {
    match status {
        Some(s) if READING_STATUSES.contains(&s) => Ok(()),
        Some(s) if OTHER_STATUSES.contains(&s) => Err(FhirError::format(
            "Observation.status",
            IssueCode::NotSupported,
            format!("status {s} is not a reading the hub forwards"),
        )),
        Some(_) => Err(FhirError::format(
            "Observation.status",
            IssueCode::CodeInvalid,
            "not an Observation status",
        )),
        None => Err(FhirError::format(
            "Observation.status",
            IssueCode::Required,
            "status is required",
        )),
    }
}

/// Checks `meta.profile` against the code: a VKP profile fixes the code (rule 8).
fn profiles(obs: &Observation, loinc: &str) -> Result<(), FhirError> {
    let listed = obs.meta.iter().flat_map(|m| m.profile.iter()).enumerate();
    for (i, url) in listed {
        let Some(name) = url.strip_prefix(VKP_PROFILE_BASE) else {
            continue;
        };
        let name = name.split('|').next().unwrap_or_default();
        match PROFILES.iter().find(|(p, _)| *p == name) {
            Some((_, Some(fixed))) if !same_family(fixed, loinc) => {
                return Err(FhirError::format(
                    "Observation.code",
                    IssueCode::CodeInvalid,
                    format!("profile {name} fixes code LOINC {fixed}, found {loinc}"),
                ));
            }
            Some(_) => {}
            None => {
                return Err(FhirError::format(
                    format!("Observation.meta.profile[{i}]"),
                    IssueCode::NotSupported,
                    format!("profile {name} is not one the hub maps"),
                ));
            }
        }
    }
    Ok(())
}

/// `effective[x]`: dateTime, instant (R5, as PMD sends it) or a period's start.
pub(super) fn effective(obs: &Observation) -> Result<(Millis, String), FhirError> {
    let (location, text) = if let Some(t) = &obs.effective_date_time {
        ("Observation.effectiveDateTime", Some(t.as_str()))
    } else if let Some(t) = &obs.effective_instant {
        ("Observation.effectiveInstant", Some(t.as_str()))
    } else if let Some(p) = &obs.effective_period {
        ("Observation.effectivePeriod.start", p.start.as_deref())
    } else {
        ("Observation.effective[x]", None)
    };
    Ok((super::time(location, text)?, location.to_string()))
}

/// Maps a parsed Observation; the caller has checked it is not a score.
pub(super) fn to_measurement(
    obs: &Observation,
    ctx: &IngestContext,
) -> Result<Measurement, FhirError> {
    status(obs.status.as_deref())?;
    let concept = obs.code.as_ref().ok_or_else(|| {
        FhirError::format("Observation.code", IssueCode::Required, "code is required")
    })?;
    let (code, snomed_code) = resolve_code("Observation.code", concept)?;
    profiles(obs, &code)?;
    if is_vital_sign(&code) {
        let vital = obs
            .category
            .iter()
            .any(|c| codes_of(c, super::OBSERVATION_CATEGORY).contains(&"vital-signs"));
        if !vital {
            return Err(FhirError::format(
                "Observation.category",
                IssueCode::Required,
                "a vital sign needs category vital-signs",
            ));
        }
    }
    let patient = super::patient("Observation.subject", obs.subject.as_ref(), ctx.policy)?;
    let data_controller = super::data_controller("Observation", &obs.performer, ctx.policy)?;
    let (effective_time, effective_location) = effective(obs)?;
    let value = obs
        .value_quantity
        .as_ref()
        .map(|q| quantity("Observation.valueQuantity", Some(q)))
        .transpose()?;
    let spec = codes::lookup(&code);
    let mut components = Vec::with_capacity(obs.component.len());
    for (i, c) in obs.component.iter().enumerate() {
        let location = format!("Observation.component[{i}]");
        let concept = c.code.as_ref().ok_or_else(|| {
            FhirError::format(
                format!("{location}.code"),
                IssueCode::Required,
                "code is required",
            )
        })?;
        let (loinc, snomed) = resolve_code(&format!("{location}.code"), concept)?;
        let component_spec = spec.and_then(|s| s.components.iter().find(|c| c.loinc == loinc));
        // A SNOMED CT code must name the same component; the Norwegian extension codes are
        // normalised to the international ones VKP pairs.
        let snomed_code = match (&snomed, component_spec) {
            (None, _) => None,
            (Some(s), Some(cs)) if codes::loinc_for_snomed(s) == Some(cs.loinc) => {
                Some(cs.snomed.to_string())
            }
            (Some(s), _) => {
                return Err(FhirError::format(
                    format!("{location}.code.coding"),
                    IssueCode::CodeInvalid,
                    format!("SNOMED CT {s} does not pair with LOINC {loinc}"),
                ));
            }
        };
        components.push(Component {
            code: loinc,
            snomed_code,
            value: quantity(
                &format!("{location}.valueQuantity"),
                c.value_quantity.as_ref(),
            )?,
        });
    }
    let (severity, triage) = extensions(&obs.extension)?;
    let device = obs.device.as_ref();
    let measurement = Measurement {
        event_id: ctx.event_id.clone(),
        source_id: super::source_id(&obs.identifier),
        patient,
        source: Source {
            platform: ctx.platform.clone(),
            device_id: device.and_then(|d| d.identifier.as_ref()?.value.clone()),
            device_type: device.and_then(|d| d.display.clone()),
        },
        data_controller,
        code,
        snomed_code,
        value,
        components,
        effective_time,
        received_time: ctx.received_time,
        severity,
        triage,
    };
    let controller = obs
        .performer
        .iter()
        .position(super::is_organisation)
        .map_or("Observation.performer".to_string(), |i| {
            format!("Observation.performer[{i}].identifier")
        });
    let fields = [
        ("patient", "Observation.subject.identifier".to_string()),
        ("data_controller", controller),
        ("code", "Observation.code".to_string()),
        ("snomed_code", "Observation.code.coding".to_string()),
        ("value", "Observation.valueQuantity".to_string()),
        ("value.unit", "Observation.valueQuantity.code".to_string()),
        ("value.value", "Observation.valueQuantity.value".to_string()),
        ("components", "Observation.component".to_string()),
        ("effective_time", effective_location),
    ]
    .map(|(field, location)| (field.to_string(), location));
    measurement
        .validate(ctx.policy, ctx.received_time)
        .map_err(|e| super::from_validation("Observation", &fields, e))?;
    Ok(measurement)
}

/// Maps a VKP-shaped Observation (FHIR JSON) to a [`Measurement`], validated.
pub fn measurement_from_observation(
    json: &serde_json::Value,
    ctx: &IngestContext,
) -> Result<Measurement, FhirError> {
    match super::ingest_resource(json, ctx)? {
        super::Ingested::Measurement(m) => Ok(m),
        super::Ingested::SelfReport(_) => Err(FhirError::new(
            "Observation.code",
            IssueCode::NotSupported,
            VkpCode::Format,
            "a questionnaire score maps to a SelfReport, not a Measurement",
        )),
    }
}

fn fhir_quantity(q: &Quantity) -> types::Quantity {
    types::Quantity {
        value: Some(q.value),
        unit: Some(q.unit.clone()),
        system: Some(super::UCUM.into()),
        code: Some(q.unit.clone()),
    }
}

fn concept(loinc: &str, snomed: Option<&str>) -> CodeableConcept {
    let display = codes::lookup(loinc).map(|s| s.display).or_else(|| {
        codes::CODES
            .iter()
            .flat_map(|s| s.components)
            .find(|c| c.loinc == loinc)
            .map(|c| c.display)
    });
    let mut coding = vec![super::coding(super::LOINC, loinc, display)];
    coding.extend(snomed.map(|s| super::coding(super::SNOMED, s, None)));
    CodeableConcept { coding, text: None }
}

/// The VKP-shaped Observation of a measurement: the profile for its code, the patient as a
/// logical reference, the data controller as organisation performer, the device, severity
/// and triage as extensions. `id` is the hub's event id.
pub fn observation_from_measurement(m: &Measurement) -> serde_json::Value {
    let mut extension = vec![];
    if let Some(severity) = m.severity {
        extension.push(Extension {
            url: SEVERITY_EXTENSION.into(),
            value_coding: Some(super::coding(
                SEVERITY_SYSTEM,
                &severity.code().to_string(),
                None,
            )),
            value_codeable_concept: None,
        });
    }
    if let Some(triage) = m.triage {
        let code = super::to_json(&triage);
        extension.push(Extension {
            url: TRIAGE_EXTENSION.into(),
            value_coding: Some(super::coding(
                TRIAGE_SYSTEM,
                code.as_str().unwrap_or_default(),
                None,
            )),
            value_codeable_concept: None,
        });
    }
    let category = is_vital_sign(&m.code).then(|| CodeableConcept {
        coding: vec![super::coding(
            super::OBSERVATION_CATEGORY,
            "vital-signs",
            Some("Vital Signs"),
        )],
        text: None,
    });
    let device = (m.source.device_id.is_some() || m.source.device_type.is_some()).then(|| {
        types::Reference {
            identifier: m.source.device_id.as_ref().map(|id| types::Identifier {
                system: None,
                value: Some(id.clone()),
            }),
            display: m.source.device_type.clone(),
            ..Default::default()
        }
    });
    let obs = Observation {
        resource_type: "Observation".into(),
        id: Some(m.event_id.clone()),
        meta: Some(types::Meta {
            profile: vec![format!("{VKP_PROFILE_BASE}{}", profile_for(&m.code))],
        }),
        extension,
        identifier: m
            .source_id
            .iter()
            .map(|id| types::Identifier {
                system: None,
                value: Some(id.clone()),
            })
            .collect(),
        status: Some("final".into()),
        category: category.into_iter().collect(),
        code: Some(concept(&m.code, m.snomed_code.as_deref())),
        subject: Some(super::patient_reference(&m.patient)),
        effective_date_time: Some(super::time::format(m.effective_time)),
        performer: vec![super::organisation_reference(&m.data_controller)],
        value_quantity: m.value.as_ref().map(fhir_quantity),
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
