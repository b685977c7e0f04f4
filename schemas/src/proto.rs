//! Protobuf (prost) forms of [`Measurement`](crate::model::Measurement) and
//! [`SelfReport`](crate::model::SelfReport), for device platforms that publish Protobuf in
//! the Confluent Protobuf wire format. `schemas/proto/dho/v1/events.proto` is the schema
//! they register; the structs below are written by hand (no protoc here) and a test parses
//! the `.proto` file and compares every message, field name, number and type, and every
//! enum value, so the two cannot drift.
//!
//! The router normalises Protobuf ingest to the model types (and so to Avro on subscriber
//! topics) with [`decode_measurement`], [`decode_self_report`] or [`decode_event`]. These
//! check structure only (required messages present, enum values known); run the usual
//! `validate(policy, now)` on the result, as for Avro input.

use crate::error::{Error, Result};
use crate::model as m;
use crate::validate::{Reason, ValidationError};

/// The `.proto` file, as registered with the schema registry (schemaType PROTOBUF).
pub const PROTO_FILE: &str = include_str!("../proto/dho/v1/events.proto");

/// Message index of [`Measurement`] in [`PROTO_FILE`] (Confluent framing).
pub const MEASUREMENT_INDEX: &[i32] = &[0];
/// Message index of [`SelfReport`] in [`PROTO_FILE`].
pub const SELF_REPORT_INDEX: &[i32] = &[1];

/// One field as declared: what the `.proto` comparison test reads.
#[cfg(test)]
#[derive(Debug)]
struct FieldInfo {
    name: &'static str,
    number: u32,
    /// The prost attribute without the tag, e.g. `string, optional`.
    kind: &'static str,
}

#[cfg(test)]
trait Described {
    const NAME: &'static str;
    const FIELDS: &'static [FieldInfo];
}

/// Declares prost messages and, from the same tokens, the field table the `.proto` test
/// compares against: the struct and the table cannot disagree.
macro_rules! messages {
    ($(
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $tag:tt [$($kind:tt)*], )*
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Clone, PartialEq, ::prost::Message)]
        pub struct $name {
            $( $(#[$fmeta])* #[prost($($kind)*, tag = $tag)] pub $field: $ty, )*
        }

        #[cfg(test)]
        impl Described for $name {
            const NAME: &'static str = stringify!($name);
            const FIELDS: &'static [FieldInfo] = &[$(
                FieldInfo { name: stringify!($field), number: $tag, kind: stringify!($($kind)*) },
            )*];
        }
    )*};
}

/// Declares prost enumerations with their `.proto` value names, for the same comparison.
macro_rules! enums {
    ($(
        $(#[$meta:meta])*
        pub enum $name:ident { $( $variant:ident = $num:tt => $proto:literal, )* }
    )*) => {$(
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
        #[repr(i32)]
        pub enum $name { $( $variant = $num, )* }

        #[cfg(test)]
        impl $name {
            const VALUES: &'static [(&'static str, i32)] = &[$(($proto, $num),)*];
        }
    )*};
}

messages! {
    /// A reading, as `dho.v1.Measurement`. Times are milliseconds since the epoch.
    pub struct Measurement {
        event_id: String = 1 [string],
        source_id: Option<String> = 2 [string, optional],
        patient: Option<PatientIdentifier> = 3 [message, optional],
        source: Option<Source> = 4 [message, optional],
        data_controller: Option<OrganisationIdentifier> = 5 [message, optional],
        code: String = 6 [string],
        snomed_code: Option<String> = 7 [string, optional],
        value: Option<Quantity> = 8 [message, optional],
        components: Vec<Component> = 9 [message, repeated],
        effective_time: i64 = 10 [int64],
        received_time: i64 = 11 [int64],
        /// A [`VkpSeverity`]; 0 = not set.
        severity: i32 = 12 [enumeration = "VkpSeverity"],
        /// A [`TriageColour`]; 0 = not set.
        triage: i32 = 13 [enumeration = "TriageColour"],
    }

    /// A questionnaire response, as `dho.v1.SelfReport`.
    pub struct SelfReport {
        event_id: String = 1 [string],
        source_id: Option<String> = 2 [string, optional],
        patient: Option<PatientIdentifier> = 3 [message, optional],
        source: Option<Source> = 4 [message, optional],
        data_controller: Option<OrganisationIdentifier> = 5 [message, optional],
        questionnaire_id: String = 6 [string],
        questionnaire_version: Option<String> = 7 [string, optional],
        authored_time: i64 = 8 [int64],
        received_time: i64 = 9 [int64],
        answers: Vec<Answer> = 10 [message, repeated],
        score: Option<f64> = 11 [double, optional],
    }

    /// `dho.v1.PatientIdentifier`.
    pub struct PatientIdentifier {
        /// A [`PatientIdSystem`].
        system: i32 = 1 [enumeration = "PatientIdSystem"],
        value: String = 2 [string],
    }

    /// `dho.v1.OrganisationIdentifier`.
    pub struct OrganisationIdentifier {
        /// An [`OrgIdSystem`].
        system: i32 = 1 [enumeration = "OrgIdSystem"],
        value: String = 2 [string],
        name: Option<String> = 3 [string, optional],
    }

    /// `dho.v1.Source`.
    pub struct Source {
        platform: Option<OrganisationIdentifier> = 1 [message, optional],
        device_id: Option<String> = 2 [string, optional],
        device_type: Option<String> = 3 [string, optional],
    }

    /// `dho.v1.Quantity`.
    pub struct Quantity {
        value: f64 = 1 [double],
        unit: String = 2 [string],
    }

    /// `dho.v1.Component`.
    pub struct Component {
        code: String = 1 [string],
        snomed_code: Option<String> = 2 [string, optional],
        value: Option<Quantity> = 3 [message, optional],
    }

    /// `dho.v1.Answer`: exactly one `value_*` is set.
    pub struct Answer {
        link_id: String = 1 [string],
        value_boolean: Option<bool> = 2 [bool, optional],
        value_integer: Option<i64> = 3 [int64, optional],
        value_decimal: Option<f64> = 4 [double, optional],
        value_string: Option<String> = 5 [string, optional],
        value_coding: Option<Coding> = 6 [message, optional],
        nested_in: Vec<String> = 7 [string, repeated],
    }

    /// `dho.v1.Coding`.
    pub struct Coding {
        system: String = 1 [string],
        code: String = 2 [string],
        display: Option<String> = 3 [string, optional],
    }
}

enums! {
    /// `dho.v1.PatientIdSystem`.
    pub enum PatientIdSystem {
        Unspecified = 0 => "PATIENT_ID_SYSTEM_UNSPECIFIED",
        Fnr = 1 => "PATIENT_ID_SYSTEM_FNR",
        Dnr = 2 => "PATIENT_ID_SYSTEM_DNR",
        Fhn = 3 => "PATIENT_ID_SYSTEM_FHN",
    }

    /// `dho.v1.OrgIdSystem`.
    pub enum OrgIdSystem {
        Unspecified = 0 => "ORG_ID_SYSTEM_UNSPECIFIED",
        Orgnr = 1 => "ORG_ID_SYSTEM_ORGNR",
        Resh = 2 => "ORG_ID_SYSTEM_RESH",
    }

    /// `dho.v1.VkpSeverity`.
    pub enum VkpSeverity {
        Unspecified = 0 => "VKP_SEVERITY_UNSPECIFIED",
        NotReported = 1 => "VKP_SEVERITY_NOT_REPORTED",
        Normal = 2 => "VKP_SEVERITY_NORMAL",
        Moderate = 3 => "VKP_SEVERITY_MODERATE",
        Severe = 4 => "VKP_SEVERITY_SEVERE",
        Critical = 5 => "VKP_SEVERITY_CRITICAL",
    }

    /// `dho.v1.TriageColour`.
    pub enum TriageColour {
        Unspecified = 0 => "TRIAGE_COLOUR_UNSPECIFIED",
        Red = 1 => "TRIAGE_COLOUR_RED",
        Orange = 2 => "TRIAGE_COLOUR_ORANGE",
        Yellow = 3 => "TRIAGE_COLOUR_YELLOW",
        Green = 4 => "TRIAGE_COLOUR_GREEN",
        Blue = 5 => "TRIAGE_COLOUR_BLUE",
        Black = 6 => "TRIAGE_COLOUR_BLACK",
        NotReported = 7 => "TRIAGE_COLOUR_NOT_REPORTED",
    }
}

/// Either event a Protobuf record can carry.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Measurement(m::Measurement),
    SelfReport(m::SelfReport),
}

/// Decodes a Protobuf `Measurement` body (after the Confluent header) into the model type.
pub fn decode_measurement(body: &[u8]) -> Result<m::Measurement> {
    let message = <Measurement as prost::Message>::decode(body).map_err(|e| Error::Decode {
        kind: "Measurement (Protobuf)",
        detail: e.to_string(),
    })?;
    Ok(m::Measurement::try_from(message)?)
}

/// Decodes a Protobuf `SelfReport` body into the model type.
pub fn decode_self_report(body: &[u8]) -> Result<m::SelfReport> {
    let message = <SelfReport as prost::Message>::decode(body).map_err(|e| Error::Decode {
        kind: "SelfReport (Protobuf)",
        detail: e.to_string(),
    })?;
    Ok(m::SelfReport::try_from(message)?)
}

/// Decodes a framed record's body by its message index ([`crate::wire::unframe_protobuf`]).
pub fn decode_event(message_index: &[i32], body: &[u8]) -> Result<Event> {
    if message_index == MEASUREMENT_INDEX {
        decode_measurement(body).map(Event::Measurement)
    } else if message_index == SELF_REPORT_INDEX {
        decode_self_report(body).map(Event::SelfReport)
    } else {
        Err(Error::UnknownMessageIndex {
            index: message_index.to_vec(),
        })
    }
}

/// The Protobuf body of a measurement.
pub fn encode_measurement(value: &m::Measurement) -> Vec<u8> {
    prost::Message::encode_to_vec(&Measurement::from(value))
}

/// The Protobuf body of a self-report.
pub fn encode_self_report(value: &m::SelfReport) -> Vec<u8> {
    prost::Message::encode_to_vec(&SelfReport::from(value))
}

fn missing(field: &str) -> ValidationError {
    ValidationError::new(field, Reason::Missing, "is required")
}

fn unknown_enum(field: &str, value: i32) -> ValidationError {
    ValidationError::new(
        field,
        Reason::Malformed,
        format!("{value} is not a known value of this enum"),
    )
}

/// Proto3 cannot mark a message field required: absence is checked here.
fn required<T>(field: &str, value: Option<T>) -> Result<T, ValidationError> {
    value.ok_or_else(|| missing(field))
}

fn patient(
    field: &str,
    p: Option<PatientIdentifier>,
) -> Result<m::PatientIdentifier, ValidationError> {
    let p = required(field, p)?;
    let system = match PatientIdSystem::try_from(p.system) {
        Ok(PatientIdSystem::Fnr) => m::PatientIdSystem::Fnr,
        Ok(PatientIdSystem::Dnr) => m::PatientIdSystem::Dnr,
        Ok(PatientIdSystem::Fhn) => m::PatientIdSystem::Fhn,
        Ok(PatientIdSystem::Unspecified) => return Err(missing(&format!("{field}.system"))),
        Err(_) => return Err(unknown_enum(&format!("{field}.system"), p.system)),
    };
    Ok(m::PatientIdentifier {
        system,
        value: p.value,
    })
}

fn organisation(
    field: &str,
    o: Option<OrganisationIdentifier>,
) -> Result<m::OrganisationIdentifier, ValidationError> {
    let o = required(field, o)?;
    let system = match OrgIdSystem::try_from(o.system) {
        Ok(OrgIdSystem::Orgnr) => m::OrgIdSystem::Orgnr,
        Ok(OrgIdSystem::Resh) => m::OrgIdSystem::Resh,
        Ok(OrgIdSystem::Unspecified) => return Err(missing(&format!("{field}.system"))),
        Err(_) => return Err(unknown_enum(&format!("{field}.system"), o.system)),
    };
    Ok(m::OrganisationIdentifier {
        system,
        value: o.value,
        name: o.name,
    })
}

fn source(s: Option<Source>) -> Result<m::Source, ValidationError> {
    let s = required("source", s)?;
    Ok(m::Source {
        platform: organisation("source.platform", s.platform)?,
        device_id: s.device_id,
        device_type: s.device_type,
    })
}

fn quantity(q: Quantity) -> m::Quantity {
    m::Quantity {
        value: q.value,
        unit: q.unit,
    }
}

fn severity(value: i32) -> Result<Option<m::VkpSeverity>, ValidationError> {
    Ok(Some(match VkpSeverity::try_from(value) {
        Ok(VkpSeverity::Unspecified) => return Ok(None),
        Ok(VkpSeverity::NotReported) => m::VkpSeverity::NotReported,
        Ok(VkpSeverity::Normal) => m::VkpSeverity::Normal,
        Ok(VkpSeverity::Moderate) => m::VkpSeverity::Moderate,
        Ok(VkpSeverity::Severe) => m::VkpSeverity::Severe,
        Ok(VkpSeverity::Critical) => m::VkpSeverity::Critical,
        Err(_) => return Err(unknown_enum("severity", value)),
    }))
}

fn triage(value: i32) -> Result<Option<m::TriageColour>, ValidationError> {
    Ok(Some(match TriageColour::try_from(value) {
        Ok(TriageColour::Unspecified) => return Ok(None),
        Ok(TriageColour::Red) => m::TriageColour::Red,
        Ok(TriageColour::Orange) => m::TriageColour::Orange,
        Ok(TriageColour::Yellow) => m::TriageColour::Yellow,
        Ok(TriageColour::Green) => m::TriageColour::Green,
        Ok(TriageColour::Blue) => m::TriageColour::Blue,
        Ok(TriageColour::Black) => m::TriageColour::Black,
        Ok(TriageColour::NotReported) => m::TriageColour::NotReported,
        Err(_) => return Err(unknown_enum("triage", value)),
    }))
}

impl TryFrom<Measurement> for m::Measurement {
    type Error = ValidationError;

    fn try_from(p: Measurement) -> Result<Self, ValidationError> {
        let components = p
            .components
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                Ok(m::Component {
                    code: c.code,
                    snomed_code: c.snomed_code,
                    value: quantity(required(&format!("components[{i}].value"), c.value)?),
                })
            })
            .collect::<Result<_, ValidationError>>()?;
        Ok(m::Measurement {
            event_id: p.event_id,
            source_id: p.source_id,
            patient: patient("patient", p.patient)?,
            source: source(p.source)?,
            data_controller: organisation("data_controller", p.data_controller)?,
            code: p.code,
            snomed_code: p.snomed_code,
            value: p.value.map(quantity),
            components,
            effective_time: p.effective_time,
            received_time: p.received_time,
            severity: severity(p.severity)?,
            triage: triage(p.triage)?,
            status: None,
            effective_end: None,
            effective_precision: None,
            value_coding: None,
        })
    }
}

impl TryFrom<SelfReport> for m::SelfReport {
    type Error = ValidationError;

    fn try_from(p: SelfReport) -> Result<Self, ValidationError> {
        Ok(m::SelfReport {
            event_id: p.event_id,
            source_id: p.source_id,
            patient: patient("patient", p.patient)?,
            source: source(p.source)?,
            data_controller: organisation("data_controller", p.data_controller)?,
            questionnaire_id: p.questionnaire_id,
            questionnaire_version: p.questionnaire_version,
            authored_time: p.authored_time,
            received_time: p.received_time,
            answers: p
                .answers
                .into_iter()
                .map(|a| m::Answer {
                    nested_in: a.nested_in,
                    link_id: a.link_id,
                    value_boolean: a.value_boolean,
                    value_integer: a.value_integer,
                    value_decimal: a.value_decimal,
                    value_string: a.value_string,
                    value_coding: a.value_coding.map(|c| m::Coding {
                        system: c.system,
                        code: c.code,
                        display: c.display,
                    }),
                })
                .collect(),
            score: p.score,
        })
    }
}

impl From<&m::PatientIdentifier> for PatientIdentifier {
    fn from(p: &m::PatientIdentifier) -> Self {
        let system = match p.system {
            m::PatientIdSystem::Fnr => PatientIdSystem::Fnr,
            m::PatientIdSystem::Dnr => PatientIdSystem::Dnr,
            m::PatientIdSystem::Fhn => PatientIdSystem::Fhn,
        };
        Self {
            system: system.into(),
            value: p.value.clone(),
        }
    }
}

impl From<&m::OrganisationIdentifier> for OrganisationIdentifier {
    fn from(o: &m::OrganisationIdentifier) -> Self {
        let system = match o.system {
            m::OrgIdSystem::Orgnr => OrgIdSystem::Orgnr,
            m::OrgIdSystem::Resh => OrgIdSystem::Resh,
        };
        Self {
            system: system.into(),
            value: o.value.clone(),
            name: o.name.clone(),
        }
    }
}

impl From<&m::Source> for Source {
    fn from(s: &m::Source) -> Self {
        Self {
            platform: Some((&s.platform).into()),
            device_id: s.device_id.clone(),
            device_type: s.device_type.clone(),
        }
    }
}

impl From<&m::Quantity> for Quantity {
    fn from(q: &m::Quantity) -> Self {
        Self {
            value: q.value,
            unit: q.unit.clone(),
        }
    }
}

impl From<&m::Measurement> for Measurement {
    fn from(v: &m::Measurement) -> Self {
        let severity = v.severity.map_or(VkpSeverity::Unspecified, |s| match s {
            m::VkpSeverity::NotReported => VkpSeverity::NotReported,
            m::VkpSeverity::Normal => VkpSeverity::Normal,
            m::VkpSeverity::Moderate => VkpSeverity::Moderate,
            m::VkpSeverity::Severe => VkpSeverity::Severe,
            m::VkpSeverity::Critical => VkpSeverity::Critical,
        });
        let triage = v.triage.map_or(TriageColour::Unspecified, |t| match t {
            m::TriageColour::Red => TriageColour::Red,
            m::TriageColour::Orange => TriageColour::Orange,
            m::TriageColour::Yellow => TriageColour::Yellow,
            m::TriageColour::Green => TriageColour::Green,
            m::TriageColour::Blue => TriageColour::Blue,
            m::TriageColour::Black => TriageColour::Black,
            m::TriageColour::NotReported => TriageColour::NotReported,
        });
        Self {
            event_id: v.event_id.clone(),
            source_id: v.source_id.clone(),
            patient: Some((&v.patient).into()),
            source: Some((&v.source).into()),
            data_controller: Some((&v.data_controller).into()),
            code: v.code.clone(),
            snomed_code: v.snomed_code.clone(),
            value: v.value.as_ref().map(Into::into),
            components: v
                .components
                .iter()
                .map(|c| Component {
                    code: c.code.clone(),
                    snomed_code: c.snomed_code.clone(),
                    value: Some((&c.value).into()),
                })
                .collect(),
            effective_time: v.effective_time,
            received_time: v.received_time,
            severity: severity.into(),
            triage: triage.into(),
        }
    }
}

impl From<&m::SelfReport> for SelfReport {
    fn from(v: &m::SelfReport) -> Self {
        Self {
            event_id: v.event_id.clone(),
            source_id: v.source_id.clone(),
            patient: Some((&v.patient).into()),
            source: Some((&v.source).into()),
            data_controller: Some((&v.data_controller).into()),
            questionnaire_id: v.questionnaire_id.clone(),
            questionnaire_version: v.questionnaire_version.clone(),
            authored_time: v.authored_time,
            received_time: v.received_time,
            answers: v
                .answers
                .iter()
                .map(|a| Answer {
                    nested_in: a.nested_in.clone(),
                    link_id: a.link_id.clone(),
                    value_boolean: a.value_boolean,
                    value_integer: a.value_integer,
                    value_decimal: a.value_decimal,
                    value_string: a.value_string.clone(),
                    value_coding: a.value_coding.as_ref().map(|c| Coding {
                        system: c.system.clone(),
                        code: c.code.clone(),
                        display: c.display.clone(),
                    }),
                })
                .collect(),
            score: v.score,
        }
    }
}

#[cfg(test)]
mod tests;
