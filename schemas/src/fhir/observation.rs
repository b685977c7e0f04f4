//! VKP Observation ↔ [`Measurement`] (VKP_FHIR.md §1-3, rules 4-10 of §7).

use super::types::{self, CodeableConcept, Extension, Observation};
use super::{FhirError, IngestContext, IssueCode, VkpCode};
use crate::codes;
use crate::model::*;

/// Where VKP's Observation profiles live.
pub const VKP_PROFILE_BASE: &str = "http://hl7.no/fhir/vkpobservation/StructureDefinition/";

/// VKP's Observation profiles (the `Id:` lines of VkpObservation's `input/fsh/profiles`)
/// and the code each fixes: the R4 vital-sign parent's LOINC, or the profile's own SNOMED
/// CT code; `None` for the general profile.
const PROFILES: &[(&str, Option<&str>)] = &[
    ("vkp-Observation", None),
    ("vkp-Observation-Bloodpressure", Some(codes::BLOOD_PRESSURE)),
    ("vkp-Observation-Bodytemp", Some(codes::BODY_TEMPERATURE)),
    ("vkp-Observation-Bodyweight", Some(codes::BODY_WEIGHT)),
    ("vkp-Observation-Heartrate", Some(codes::HEART_RATE)),
    ("vkp-Observation-Oxygensat", Some(codes::SPO2)),
    ("vkp-Observation-Resprate", Some(codes::RESPIRATORY_RATE)),
    ("vkp-Observation-Consciousness", Some(codes::ACVPU)),
    ("vkp-Observation-CFSscore", Some(codes::CFS_SCORE)),
    ("vkp-Observation-NEWS2score", Some(codes::NEWS2_SCORE)),
];
/// The profiles whose parent is an R4 vital-sign profile: category `vital-signs` required,
/// performer only a Practitioner identified by fødselsnummer.
const VITAL_SIGN_PROFILES: [&str; 6] = [
    "vkp-Observation-Bloodpressure",
    "vkp-Observation-Bodytemp",
    "vkp-Observation-Bodyweight",
    "vkp-Observation-Heartrate",
    "vkp-Observation-Oxygensat",
    "vkp-Observation-Resprate",
];

/// Severity extension (Velferdsteknologi's vkp-severity-level-v090, defined on Flag, with
/// a CodeableConcept value). Read by the URL's last segment, since older senders used
/// other bases.
pub const SEVERITY_EXTENSION: &str =
    "http://ehelse.no/fhir/StructureDefinition/vkp-severity-level-v090";
/// Velferdsteknologi's severity CodeSystem.
pub const SEVERITY_SYSTEM: &str = "http://ehelse.no/fhir/CodeSystem/vkp-severity-level-v090";
/// Velferdsteknologi's triage CodeSystem. It defines no triage extension: the hub writes
/// the colour as an `Observation.interpretation` coding in this system, and reads it from
/// there or from a `…/vkp-triage-v090` extension (older senders).
pub const TRIAGE_SYSTEM: &str = "http://ehelse.no/fhir/CodeSystem/vkp-triage-v090";

/// The other R4 statuses: valid FHIR, but not a reading the hub can carry.
const OTHER_STATUSES: &[&str] = &["registered", "cancelled", "unknown"];

/// Two LOINC codes are the same measurement if VKP pairs them with the same SNOMED CT code
/// (2708-6 and 59408-5; the three glucose codes).
fn same_family(a: &str, b: &str) -> bool {
    a == b
        || matches!((codes::lookup(a), codes::lookup(b)),
            (Some(x), Some(y)) if x.snomed.is_some() && x.snomed == y.snomed)
}

/// The profile VKP defines for a code (the general one if none is specific).
fn profile_for(code: &str) -> &'static str {
    PROFILES
        .iter()
        .find(|(_, fixed)| fixed.is_some_and(|f| same_family(f, code)))
        .map_or("vkp-Observation", |(name, _)| name)
}

pub(super) fn is_vital_sign(code: &str) -> bool {
    VITAL_SIGN_PROFILES.contains(&profile_for(code))
}

/// The profile an output Observation claims: only one its content satisfies. The hub
/// writes the data controller as an organisation performer, which the vital-sign and
/// Consciousness profiles do not allow (performer only a Practitioner by fødselsnummer),
/// so those readings claim the general profile, whose `organization` performer slice is
/// the data controller. CFS and NEWS2 derive from the general profile and claim their own.
pub(super) fn claimed_profile(code: &str) -> &'static str {
    match profile_for(code) {
        p @ ("vkp-Observation-CFSscore" | "vkp-Observation-NEWS2score") => p,
        _ => "vkp-Observation",
    }
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
    } else if let Some(s) = snomed.as_deref().filter(|s| codes::lookup(s).is_some()) {
        // A kind VKP codes only in SNOMED CT (CFS, NEWS2, ACVPU).
        s.to_string()
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

/// A UCUM quantity (rule 10): a value, the UCUM system and a unit code, the unit in the
/// hub's spelling ([`codes::ucum_canonical`]). A score (`code` unitless) may come as a
/// bare value, as VKP's CFS and NEWS2 examples send it. Whether the unit suits the code
/// and the value is plausible is the model validator's call.
fn quantity(
    location: &str,
    q: Option<&types::Quantity>,
    code: &str,
) -> Result<Quantity, FhirError> {
    let value_error = |at: &str, message: &str| {
        FhirError::format(format!("{location}{at}"), IssueCode::Value, message)
    };
    let q = q.ok_or_else(|| value_error("", "a valueQuantity is required"))?;
    let value = q
        .value
        .ok_or_else(|| value_error(".value", "the quantity has no value"))?;
    if codes::is_unitless(code) && q.system.is_none() && q.code.is_none() {
        return Ok(Quantity {
            value,
            unit: "1".into(),
        });
    }
    if q.system.as_deref() != Some(super::UCUM) {
        return Err(value_error(
            ".system",
            "units must be UCUM (http://unitsofmeasure.org)",
        ));
    }
    let unit = q
        .code
        .as_deref()
        .map(codes::ucum_canonical)
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

fn triage_colour(code: &str) -> Option<TriageColour> {
    // The model's serde names are VKP's codes: one table, not two.
    serde_json::from_value(serde_json::Value::String(code.into())).ok()
}

fn extensions(
    exts: &[Extension],
    interpretation: &[CodeableConcept],
) -> Result<(Option<VkpSeverity>, Option<TriageColour>), FhirError> {
    let (mut severity, mut triage) = (None, None);
    for (i, concept) in interpretation.iter().enumerate() {
        for coding in concept.coding.iter().filter(|c| {
            c.system
                .as_deref()
                .is_some_and(|s| s.ends_with("/vkp-triage-v090"))
        }) {
            triage = Some(
                coding
                    .code
                    .as_deref()
                    .and_then(triage_colour)
                    .ok_or_else(|| {
                        FhirError::format(
                            format!("Observation.interpretation[{i}]"),
                            IssueCode::Value,
                            "triage must be one of R, O, Y, G, B, BL, NR",
                        )
                    })?,
            );
        }
    }
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
            triage = Some(
                triage_colour(code)
                    .ok_or_else(|| bad("triage must be one of R, O, Y, G, B, BL, NR"))?,
            );
        }
    }
    Ok((severity, triage))
}

/// The status of a reading, kept as sent (rule 7): final, preliminary, amended,
/// corrected or entered-in-error.
pub(super) fn status(status: Option<&str>) -> Result<String, FhirError> {
    match status {
        Some(s) if OBSERVATION_STATUSES.contains(&s) => Ok(s.to_string()),
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

/// `effective[x]` as the hub keeps it: the start (or the time), the end of a period, and
/// whether it was a date without a time.
pub(super) struct Effective {
    pub start: Millis,
    pub end: Option<Millis>,
    pub date_only: bool,
    pub location: String,
}

fn is_date(text: Option<&str>) -> bool {
    text.is_some_and(|t| t.len() == 10)
}

/// `effective[x]`: dateTime, instant (R5, as PMD sends it) or a period, kept whole.
pub(super) fn effective_whole(obs: &Observation) -> Result<Effective, FhirError> {
    let (location, text) = if let Some(t) = &obs.effective_date_time {
        ("Observation.effectiveDateTime", Some(t.as_str()))
    } else if let Some(t) = &obs.effective_instant {
        ("Observation.effectiveInstant", Some(t.as_str()))
    } else if let Some(p) = &obs.effective_period {
        ("Observation.effectivePeriod.start", p.start.as_deref())
    } else {
        ("Observation.effective[x]", None)
    };
    let start = super::time(location, text)?;
    let end_text = obs.effective_period.as_ref().and_then(|p| p.end.as_deref());
    let end = end_text
        .map(|t| super::time("Observation.effectivePeriod.end", Some(t)))
        .transpose()?;
    // A date stands for the whole day: a period "to 7 May" holds to the end of that day.
    if let Some(end) = end
        && end < start
    {
        return Err(FhirError::format(
            "Observation.effectivePeriod.end",
            IssueCode::Value,
            "the period ends before it starts",
        ));
    }
    let date_only = is_date(text) && (end_text.is_none() || is_date(end_text));
    Ok(Effective {
        start,
        end,
        date_only,
        location: location.to_string(),
    })
}

/// `effective[x]`'s start (or time), and where it came from.
pub(super) fn effective(obs: &Observation) -> Result<(Millis, String), FhirError> {
    effective_whole(obs).map(|e| (e.start, e.location))
}

/// The components the hub carries, in order: the code's required and optional ones.
/// Others are ignored, never refused: R4's component slicing is open (a blood pressure
/// may come with its pulse pressure).
fn components(obs: &Observation, code: &str) -> Result<Vec<(usize, Component)>, FhirError> {
    let spec = codes::lookup(code);
    let mut out = Vec::with_capacity(obs.component.len());
    for (i, c) in obs.component.iter().enumerate() {
        let location = format!("Observation.component[{i}]");
        let concept = c.code.as_ref().ok_or_else(|| {
            FhirError::format(
                format!("{location}.code"),
                IssueCode::Required,
                "code is required",
            )
        })?;
        let Ok((loinc, snomed)) = resolve_code(&format!("{location}.code"), concept) else {
            continue;
        };
        let Some(component_spec) = spec.and_then(|s| {
            s.components
                .iter()
                .chain(s.optional_components)
                .find(|c| c.loinc == loinc)
        }) else {
            continue;
        };
        // A SNOMED CT code must name the same component; the Norwegian extension codes are
        // normalised to the international ones VKP pairs.
        let snomed_code = match (&snomed, component_spec.snomed) {
            (None, _) => None,
            (Some(s), Some(paired)) if codes::loinc_for_snomed(s) == Some(component_spec.loinc) => {
                Some(paired.to_string())
            }
            (Some(s), _) => {
                return Err(FhirError::format(
                    format!("{location}.code.coding"),
                    IssueCode::CodeInvalid,
                    format!("SNOMED CT {s} does not pair with {loinc}"),
                ));
            }
        };
        out.push((
            i,
            Component {
                value: quantity(
                    &format!("{location}.valueQuantity"),
                    c.value_quantity.as_ref(),
                    &loinc,
                )?,
                code: loinc,
                snomed_code,
            },
        ));
    }
    Ok(out)
}

/// `valueCodeableConcept` for a coded kind (ACVPU): its first coding with system and code.
fn coded_value(obs: &Observation) -> Result<Coding, FhirError> {
    let location = "Observation.valueCodeableConcept";
    let concept = obs.value_codeable_concept.as_ref().ok_or_else(|| {
        FhirError::format(location, IssueCode::Value, "a coded value is required")
    })?;
    concept
        .coding
        .iter()
        .find_map(|c| match (&c.system, &c.code) {
            (Some(system), Some(code)) => Some(Coding {
                system: system.clone(),
                code: code.clone(),
                display: c.display.clone(),
            }),
            _ => None,
        })
        .ok_or_else(|| {
            FhirError::format(
                format!("{location}.coding"),
                IssueCode::Value,
                "needs a coding with a system and a code",
            )
        })
}

/// Maps a parsed Observation; the caller has checked it is not a score.
pub(super) fn to_measurement(
    obs: &Observation,
    ctx: &IngestContext,
) -> Result<Measurement, FhirError> {
    let status = status(obs.status.as_deref())?;
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
    let data_controller =
        super::data_controller("Observation", &obs.performer, &ctx.platform, ctx.policy)?;
    let effective = effective_whole(obs)?;
    let coded = codes::lookup(&code).is_some_and(|s| s.coded_value);
    let value_coding = coded.then(|| coded_value(obs)).transpose()?;
    let value = obs
        .value_quantity
        .as_ref()
        .filter(|_| !coded)
        .map(|q| quantity("Observation.valueQuantity", Some(q), &code))
        .transpose()?;
    let components = components(obs, &code)?;
    let (severity, triage) = extensions(&obs.extension, &obs.interpretation)?;
    let device = obs.device.as_ref();
    let mut fields = vec![
        ("patient", "Observation.subject.identifier".to_string()),
        ("code", "Observation.code".to_string()),
        ("snomed_code", "Observation.code.coding".to_string()),
        ("value", "Observation.valueQuantity".to_string()),
        ("value.unit", "Observation.valueQuantity.code".to_string()),
        ("value.value", "Observation.valueQuantity.value".to_string()),
        (
            "value_coding",
            "Observation.valueCodeableConcept".to_string(),
        ),
        ("components", "Observation.component".to_string()),
        ("effective_time", effective.location.clone()),
        (
            "effective_end",
            "Observation.effectivePeriod.end".to_string(),
        ),
        ("status", "Observation.status".to_string()),
    ]
    .into_iter()
    .map(|(field, location)| (field.to_string(), location))
    .collect::<Vec<_>>();
    fields.extend(components.iter().enumerate().map(|(k, (i, _))| {
        (
            format!("components[{k}]"),
            format!("Observation.component[{i}]"),
        )
    }));
    let controller = obs
        .performer
        .iter()
        .position(super::is_organisation)
        .map_or("Observation.performer".to_string(), |i| {
            format!("Observation.performer[{i}].identifier")
        });
    fields.push(("data_controller".to_string(), controller));
    let measurement = Measurement {
        event_id: ctx.event_id.clone(),
        source_id: super::source_id(&obs.identifier),
        patient,
        source: super::source(&ctx.platform, device),
        data_controller,
        code,
        snomed_code,
        value,
        components: components.into_iter().map(|(_, c)| c).collect(),
        effective_time: effective.start,
        received_time: ctx.received_time,
        severity,
        triage,
        status: (status != "final").then_some(status),
        effective_end: effective.end,
        effective_precision: effective.date_only.then(|| PRECISION_DAY.to_string()),
        value_coding,
    };
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
