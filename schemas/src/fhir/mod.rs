//! FHIR R4 shaped like HL7 Norway's VKP profiles (see `shared/VKP_FHIR.md`) to and from the
//! hub's events: Observation ↔ [`Measurement`], QuestionnaireResponse ↔ [`SelfReport`], and a
//! questionnaire score Observation (LOINC 74465-6) → [`SelfReport`]. [`bundle`] splits a
//! batch (or PMD collection) Bundle into per-entry results for the ingest gateway, and
//! [`consent`] maps a Consent (HL7 Norway's profiles) → [`Consent`].
//!
//! Every refusal is a [`FhirError`]: the FHIRPath-like location, the OperationOutcome issue
//! code and the VKP error code, with a message that never contains a patient identifier.
//! Identifiers, codes, units and plausibility are checked by [`crate::validate`],
//! [`crate::ids`] and [`crate::codes`]; this module only translates locations.

pub mod bundle;
pub mod consent;
mod consent_out;
mod consent_provision;
pub mod observation;
mod observation_out;
mod questionnaire;
pub mod time;
pub mod types;

#[cfg(test)]
mod tests;

use serde::de::DeserializeOwned;

use crate::model::*;
use crate::validate::{self, Policy, Reason, ValidationError};

pub use observation::measurement_from_observation;
pub use observation_out::observation_from_measurement;
pub use questionnaire::{
    questionnaire_response_from_self_report, score_observation_from_self_report,
    self_report_from_questionnaire_response, self_report_from_score_observation,
};

/// LOINC's code system URI.
pub const LOINC: &str = "http://loinc.org";
/// SNOMED CT's code system URI.
pub const SNOMED: &str = "http://snomed.info/sct";
/// NPU / NLK (Norwegian laboratory codes).
pub const NPU: &str = "urn:oid:2.16.578.1.12.4.1.1.7280";
/// UCUM's code system URI.
pub const UCUM: &str = "http://unitsofmeasure.org";
/// FHIR's Observation category code system.
pub const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
/// Organisation number (Enhetsregisteret).
pub const ORGNR_OID: &str = "urn:oid:2.16.578.1.12.4.1.4.101";
/// RESH id.
pub const RESH_OID: &str = "urn:oid:2.16.578.1.12.4.1.4.102";
/// HPR number: a health professional, not allowed as a VKP performer.
pub const HPR_OID: &str = "urn:oid:2.16.578.1.12.4.1.4.4";
/// The wrong OIDs older VKP material used for organisation number and RESH.
const OLD_ORG_OIDS: [&str; 2] = [
    "urn:oid:2.16.578.1.12.4.1.2.101",
    "urn:oid:2.16.578.1.12.4.1.2.102",
];
/// VKP's OperationOutcome code system (vkp-operation-outcome-v090), as Velferdsteknologi
/// publishes it.
pub const VKP_OUTCOME_SYSTEM: &str = "http://ehelse.no/fhir/CodeSystem/vkp-operation-outcome-v090";

/// OperationOutcome `issue.code` (the subset the gateway uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssueCode {
    /// The JSON does not have the shape of the resource.
    Structure,
    /// A required element is missing.
    Required,
    /// An element's value is not acceptable.
    Value,
    /// A code or identifier system/value is not valid.
    CodeInvalid,
    /// Valid FHIR the hub does not take.
    NotSupported,
    /// A repeated entry.
    Duplicate,
}

impl IssueCode {
    /// The FHIR code (`issue-type` value set).
    pub fn as_str(self) -> &'static str {
        match self {
            IssueCode::Structure => "structure",
            IssueCode::Required => "required",
            IssueCode::Value => "value",
            IssueCode::CodeInvalid => "code-invalid",
            IssueCode::NotSupported => "not-supported",
            IssueCode::Duplicate => "duplicate",
        }
    }
}

/// VKP error codes (vkp-operation-outcome-v090), the "invalid" family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VkpCode {
    /// 2.1 invalid person identifier.
    PersonId,
    /// 2.2 invalid system (organisation) identifier.
    SystemId,
    /// 2.3 wrong number of parameters.
    ParameterCount,
    /// 2.4 invalid format.
    Format,
}

impl VkpCode {
    /// The VKP code, e.g. `"2.1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            VkpCode::PersonId => "2.1",
            VkpCode::SystemId => "2.2",
            VkpCode::ParameterCount => "2.3",
            VkpCode::Format => "2.4",
        }
    }
}

/// A refused resource or entry, ready for an OperationOutcome issue. `message` never
/// contains a patient identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message} ({}, VKP {})", code.as_str(), vkp.as_str())]
pub struct FhirError {
    /// FHIRPath-like location, e.g. `Observation.subject.identifier.value`.
    pub location: String,
    /// OperationOutcome `issue.code`.
    pub code: IssueCode,
    /// VKP error code.
    pub vkp: VkpCode,
    /// What is wrong, for the sender's developers.
    pub message: String,
}

impl FhirError {
    /// A new error.
    pub fn new(
        location: impl Into<String>,
        code: IssueCode,
        vkp: VkpCode,
        message: impl Into<String>,
    ) -> Self {
        Self {
            location: location.into(),
            code,
            vkp,
            message: scrub(&message.into()),
        }
    }

    fn format(location: impl Into<String>, code: IssueCode, message: impl Into<String>) -> Self {
        Self::new(location, code, VkpCode::Format, message)
    }

    /// This error as an OperationOutcome resource.
    pub fn to_operation_outcome(&self) -> serde_json::Value {
        serde_json::json!({
            "resourceType": "OperationOutcome",
            "issue": [{
                "severity": "error",
                "code": self.code.as_str(),
                "details": {"coding": [{"system": VKP_OUTCOME_SYSTEM, "code": self.vkp.as_str()}]},
                "diagnostics": self.message,
                "expression": [self.location],
            }]
        })
    }
}

/// Messages echo sender text (codes, units) to help developers; a sender who puts a
/// national number where a code belongs must not get it logged, so any run of exactly
/// eleven digits is masked.
fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        out.push_str(if run.len() == 11 {
            "<11 digits>"
        } else {
            run.as_str()
        });
        run.clear();
    };
    for c in message.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// What the gateway knows about a resource besides its content.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestContext {
    /// The event id the hub assigns (a UUID).
    pub event_id: String,
    /// When the hub received the resource; also "now" for the not-in-the-future rule.
    pub received_time: Millis,
    /// The authenticated device platform that sent it.
    pub platform: OrganisationIdentifier,
    /// Whether synthetic test identities are accepted.
    pub policy: Policy,
}

/// A resource the hub took in.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// From an Observation.
    Measurement(Measurement),
    /// From a QuestionnaireResponse or a questionnaire score Observation.
    SelfReport(SelfReport),
}

impl Ingested {
    /// The hub's event id.
    pub fn event_id(&self) -> &str {
        match self {
            Ingested::Measurement(m) => &m.event_id,
            Ingested::SelfReport(r) => &r.event_id,
        }
    }

    /// The FHIR resource type it arrived as (for `Bundle.entry.response.location`).
    pub fn resource_type(&self) -> &'static str {
        match self {
            Ingested::Measurement(_) => "Observation",
            Ingested::SelfReport(r) if r.answers.is_empty() && r.score.is_some() => "Observation",
            Ingested::SelfReport(_) => "QuestionnaireResponse",
        }
    }
}

/// Maps any supported resource (rule 3): an Observation becomes a [`Measurement`], or a
/// [`SelfReport`] if coded as a questionnaire score; a QuestionnaireResponse a [`SelfReport`].
pub fn ingest_resource(
    resource: &serde_json::Value,
    ctx: &IngestContext,
) -> Result<Ingested, FhirError> {
    let resource_type = resource
        .get("resourceType")
        .and_then(serde_json::Value::as_str);
    match resource_type {
        Some("Observation") => {
            let obs: types::Observation = parse("Observation", resource)?;
            if observation::is_score(&obs) {
                questionnaire::score_from_observation(&obs, ctx).map(Ingested::SelfReport)
            } else {
                observation::to_measurement(&obs, ctx).map(Ingested::Measurement)
            }
        }
        Some("QuestionnaireResponse") => {
            questionnaire::self_report_from_questionnaire_response(resource, ctx)
                .map(Ingested::SelfReport)
        }
        Some(other) => Err(FhirError::format(
            resource_type_name(other),
            IssueCode::NotSupported,
            "only Observation and QuestionnaireResponse are accepted",
        )),
        None => Err(FhirError::format(
            "resourceType",
            IssueCode::Structure,
            "not a FHIR resource: resourceType is missing",
        )),
    }
}

/// A resource type as a location: a FHIR type name, or a neutral word for anything else
/// (the value is sender-supplied text and is echoed only if it looks like a type name).
fn resource_type_name(name: &str) -> String {
    let plausible = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphabetic());
    if plausible {
        name.to_string()
    } else {
        "resourceType".to_string()
    }
}

/// Deserialises a resource into its typed form; a JSON type or shape error names the path.
fn parse<T: DeserializeOwned>(root: &str, json: &serde_json::Value) -> Result<T, FhirError> {
    serde_path_to_error::deserialize(json).map_err(|e| {
        let path = e.path().to_string();
        let location = if path == "." {
            root.to_string()
        } else {
            format!("{root}.{path}")
        };
        // serde's message quotes the offending value, which may be an identifier: keep
        // only what was expected.
        let inner = e.into_inner().to_string();
        let expected = inner
            .find("expected")
            .map(|at| inner[at..].to_string())
            .unwrap_or_else(|| "wrong JSON type".to_string());
        FhirError::format(location, IssueCode::Structure, expected)
    })
}

/// `Observation.subject` / `QuestionnaireResponse.subject` (rule 4).
fn patient(
    location: &str,
    subject: Option<&types::Reference>,
    policy: Policy,
) -> Result<PatientIdentifier, FhirError> {
    let person = |at: String, code, message: &str| {
        FhirError::new(at, code, VkpCode::PersonId, message.to_string())
    };
    let subject = subject.ok_or_else(|| {
        person(
            location.into(),
            IssueCode::Required,
            "a subject is required",
        )
    })?;
    let identifier = subject.identifier.as_ref().ok_or_else(|| {
        person(
            format!("{location}.identifier"),
            IssueCode::Required,
            "the subject must be a logical reference with an identifier",
        )
    })?;
    let system = identifier.system.as_deref().unwrap_or_default();
    let system = [PatientIdSystem::Fnr, PatientIdSystem::Dnr, PatientIdSystem::Fhn]
        .into_iter()
        .find(|s| s.oid() == system)
        .ok_or_else(|| {
            person(
                format!("{location}.identifier.system"),
                IssueCode::CodeInvalid,
                "must be fødselsnummer, D-nummer or felles hjelpenummer (urn:oid:2.16.578.1.12.4.1.4.1, .2 or .3)",
            )
        })?;
    let id = PatientIdentifier {
        system,
        value: identifier.value.clone().unwrap_or_default(),
    };
    validate::patient(&format!("{location}.identifier"), &id, policy)
        .map_err(|e| person(e.field, IssueCode::CodeInvalid, &e.detail))?;
    Ok(id)
}

/// Whether a performer reference is the organisation slice (the data controller).
fn is_organisation(performer: &types::Reference) -> bool {
    let system = performer
        .identifier
        .as_ref()
        .and_then(|i| i.system.as_deref())
        .unwrap_or_default();
    performer.type_.as_deref() == Some("Organization")
        || [ORGNR_OID, RESH_OID].contains(&system)
        || OLD_ORG_OIDS.contains(&system)
}

/// The organisation performer: the original data controller (rule 5).
fn organisation(
    location: &str,
    performer: &types::Reference,
) -> Result<OrganisationIdentifier, FhirError> {
    let system_error = |at: String, code, message: &str| {
        FhirError::new(at, code, VkpCode::SystemId, message.to_string())
    };
    let identifier = performer.identifier.as_ref().ok_or_else(|| {
        system_error(
            format!("{location}.identifier"),
            IssueCode::Required,
            "the organisation performer needs an identifier",
        )
    })?;
    let system = match identifier.system.as_deref() {
        Some(ORGNR_OID) => OrgIdSystem::Orgnr,
        Some(RESH_OID) => OrgIdSystem::Resh,
        Some(old) if OLD_ORG_OIDS.contains(&old) => {
            return Err(system_error(
                format!("{location}.identifier.system"),
                IssueCode::CodeInvalid,
                "an outdated OID (…4.1.2.101/102); use urn:oid:2.16.578.1.12.4.1.4.101 or .102",
            ));
        }
        _ => {
            return Err(system_error(
                format!("{location}.identifier.system"),
                IssueCode::CodeInvalid,
                "must be organisation number (urn:oid:2.16.578.1.12.4.1.4.101) or RESH (.102)",
            ));
        }
    };
    let org = OrganisationIdentifier {
        system,
        value: identifier.value.clone().unwrap_or_default(),
        name: performer.display.clone(),
    };
    validate::organisation(&format!("{location}.identifier"), &org)
        .map_err(|e| system_error(e.field, IssueCode::CodeInvalid, &e.detail))?;
    Ok(org)
}

/// An author performer may only be a person identified by fødselsnummer (rule 6).
fn author(location: &str, performer: &types::Reference, policy: Policy) -> Result<(), FhirError> {
    let Some(identifier) = performer.identifier.as_ref() else {
        return Err(FhirError::new(
            format!("{location}.identifier"),
            IssueCode::Required,
            VkpCode::PersonId,
            "an author performer needs a fødselsnummer identifier",
        ));
    };
    if identifier.system.as_deref() != Some(PatientIdSystem::Fnr.oid()) {
        let hint = if identifier.system.as_deref() == Some(HPR_OID) {
            " (HPR numbers are not allowed for VKP performers)"
        } else {
            ""
        };
        return Err(FhirError::new(
            format!("{location}.identifier.system"),
            IssueCode::CodeInvalid,
            VkpCode::PersonId,
            format!("an author performer is identified by fødselsnummer{hint}"),
        ));
    }
    let id = PatientIdentifier::fnr(identifier.value.clone().unwrap_or_default());
    validate::patient(&format!("{location}.identifier"), &id, policy)
        .map_err(|e| FhirError::new(e.field, IssueCode::CodeInvalid, VkpCode::PersonId, e.detail))
}

/// The data controller: the organisation performer (at most one), else the platform that
/// sent the reading, as its credential names it (the vital-sign profiles allow only a
/// Practitioner performer, and NEWS2's example has none). Authors are checked.
fn data_controller(
    root: &str,
    performers: &[types::Reference],
    platform: &OrganisationIdentifier,
    policy: Policy,
) -> Result<OrganisationIdentifier, FhirError> {
    let mut controller = None;
    for (i, performer) in performers.iter().enumerate() {
        let location = format!("{root}.performer[{i}]");
        if is_organisation(performer) {
            let org = organisation(&location, performer)?;
            if controller.is_some() {
                return Err(FhirError::new(
                    location,
                    IssueCode::Value,
                    VkpCode::SystemId,
                    "only one organisation performer (the data controller) is allowed",
                ));
            }
            controller = Some(org);
        } else {
            author(&location, performer, policy)?;
        }
    }
    Ok(controller.unwrap_or_else(|| platform.clone()))
}

/// A FHIR time element (rule 9): present, at least a day, well-formed.
fn time(location: &str, text: Option<&str>) -> Result<Millis, FhirError> {
    let text =
        text.ok_or_else(|| FhirError::format(location, IssueCode::Required, "a time is required"))?;
    time::parse(text).map_err(|e| {
        let message = match e {
            time::TimeError::Imprecise => "needs at least day precision",
            time::TimeError::Malformed => {
                "is not a FHIR dateTime (a time needs seconds and a time zone)"
            }
        };
        FhirError::format(location, IssueCode::Value, message)
    })
}

/// Translates a model validation error into a FHIR one, given where each model field came
/// from (`fields`: model field prefix → FHIR location; the longest prefix wins).
fn from_validation(root: &str, fields: &[(String, String)], e: ValidationError) -> FhirError {
    let (model_prefix, location) = fields
        .iter()
        .filter(|(prefix, _)| {
            e.field == *prefix
                || e.field.starts_with(&format!("{prefix}."))
                || e.field.starts_with(&format!("{prefix}["))
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(prefix, location)| (prefix.as_str(), location.clone()))
        .unwrap_or(("", root.to_string()));
    let rest = &e.field[model_prefix.len()..];
    let location = if model_prefix.is_empty() {
        location
    } else {
        format!(
            "{location}{}",
            rest.replace(".value.unit", ".valueQuantity.code")
                .replace(".value.value", ".valueQuantity.value")
        )
    };
    let vkp = if e.field.starts_with("patient") {
        VkpCode::PersonId
    } else if e.field.starts_with("data_controller") || e.field.starts_with("source.platform") {
        VkpCode::SystemId
    } else {
        VkpCode::Format
    };
    let code = match e.reason {
        Reason::InvalidIdentifier
        | Reason::SyntheticIdentifier
        | Reason::UnknownCode
        | Reason::CodeMismatch => IssueCode::CodeInvalid,
        Reason::WrongUnit | Reason::Implausible | Reason::FutureTime => IssueCode::Value,
        // Rule 10: a missing value or component is a value error, not a missing element.
        Reason::Missing if e.field == "value" || e.field == "components" => IssueCode::Value,
        Reason::Missing => IssueCode::Required,
        Reason::Malformed => IssueCode::Structure,
    };
    FhirError::new(location, code, vkp, e.detail)
}

/// The `source_id` from `identifier`: the first with a value.
fn source_id(identifiers: &[types::Identifier]) -> Option<String> {
    identifiers.iter().find_map(|i| i.value.clone())
}

/// The platform's own id of a reading (`source_id`), back as the resource's identifier.
fn identifiers(source_id: &Option<String>) -> Vec<types::Identifier> {
    source_id
        .iter()
        .map(|id| types::Identifier {
            system: None,
            value: Some(id.clone()),
        })
        .collect()
}

/// Where a reading came from: the calling platform, and the device the resource names.
fn source(platform: &OrganisationIdentifier, device: Option<&types::Reference>) -> Source {
    Source {
        platform: platform.clone(),
        device_id: device.and_then(|d| d.identifier.as_ref()?.value.clone()),
        device_type: device.and_then(|d| d.display.clone()),
    }
}

fn coding(system: &str, code: &str, display: Option<&str>) -> types::Coding {
    types::Coding {
        system: Some(system.into()),
        code: Some(code.into()),
        display: display.map(Into::into),
    }
}

fn patient_reference(p: &PatientIdentifier) -> types::Reference {
    types::Reference {
        identifier: Some(types::Identifier {
            system: Some(p.system.oid().into()),
            value: Some(p.value.clone()),
        }),
        ..Default::default()
    }
}

/// The measuring device of `source`, by serial number and type, if it names one.
fn device_reference(source: &crate::model::Source) -> Option<types::Reference> {
    (source.device_id.is_some() || source.device_type.is_some()).then(|| types::Reference {
        identifier: source.device_id.as_ref().map(|id| types::Identifier {
            system: None,
            value: Some(id.clone()),
        }),
        display: source.device_type.clone(),
        ..Default::default()
    })
}

fn organisation_reference(o: &OrganisationIdentifier) -> types::Reference {
    let system = match o.system {
        OrgIdSystem::Orgnr => ORGNR_OID,
        OrgIdSystem::Resh => RESH_OID,
    };
    types::Reference {
        type_: Some("Organization".into()),
        identifier: Some(types::Identifier {
            system: Some(system.into()),
            value: Some(o.value.clone()),
        }),
        display: o.name.clone(),
        ..Default::default()
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    // The types are plain structs of strings and finite-or-not numbers; serde_json only
    // fails on non-string map keys, which they do not have.
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}
