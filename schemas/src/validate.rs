//! Validation of events and state records before they reach a clinician. Every error names
//! the field and a bounded reason (usable as a metric label and a dead-letter header).

use crate::codes::{self, UnitRange};
use crate::ids::{self, IdError, Population};
use crate::model::*;

/// How far in the future a reading's time may be (device clocks drift).
pub const MAX_CLOCK_SKEW_MILLIS: Millis = 5 * 60 * 1000;

/// Bounded reasons, for metric labels and dead-letter headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Missing,
    InvalidIdentifier,
    SyntheticIdentifier,
    UnknownCode,
    CodeMismatch,
    WrongUnit,
    Implausible,
    FutureTime,
    Malformed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::InvalidIdentifier => "invalid_identifier",
            Reason::SyntheticIdentifier => "synthetic_identifier",
            Reason::UnknownCode => "unknown_code",
            Reason::CodeMismatch => "code_mismatch",
            Reason::WrongUnit => "wrong_unit",
            Reason::Implausible => "implausible",
            Reason::FutureTime => "future_time",
            Reason::Malformed => "malformed",
        }
    }
}

/// A refused record: which field, why, and a human-readable detail (never an identifier).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct ValidationError {
    pub field: String,
    pub reason: Reason,
    pub detail: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason,
            detail: detail.into(),
        }
    }
}

type Result<T = ()> = std::result::Result<T, ValidationError>;

/// Deployment choices that change what is valid. No default: each caller says which it
/// is, and every service's configuration refuses synthetic identities unless it says
/// otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Accept numbers from the synthetic test populations: development, tests and the
    /// demo. Production refuses them.
    pub allow_synthetic: bool,
}

impl Policy {
    /// Development, tests and the demo: the synthetic test populations too.
    pub const SYNTHETIC_ALLOWED: Policy = Policy {
        allow_synthetic: true,
    };
}

fn id_error(field: &str, error: IdError) -> ValidationError {
    let reason = match error {
        IdError::SyntheticRefused => Reason::SyntheticIdentifier,
        _ => Reason::InvalidIdentifier,
    };
    ValidationError::new(field, reason, error.to_string())
}

pub fn patient(field: &str, id: &PatientIdentifier, policy: Policy) -> Result {
    let population = match id.system {
        PatientIdSystem::Fnr => ids::validate_birth_number(&id.value, false),
        PatientIdSystem::Dnr => ids::validate_birth_number(&id.value, true),
        PatientIdSystem::Fhn => ids::validate_help_number(&id.value),
    }
    .map_err(|e| id_error(&format!("{field}.value"), e))?;
    if population != Population::Real && !policy.allow_synthetic {
        return Err(id_error(
            &format!("{field}.value"),
            IdError::SyntheticRefused,
        ));
    }
    Ok(())
}

pub fn organisation(field: &str, org: &OrganisationIdentifier) -> Result {
    match org.system {
        OrgIdSystem::Orgnr => {
            ids::validate_orgnr(&org.value).map_err(|e| id_error(&format!("{field}.value"), e))
        }
        OrgIdSystem::Resh => {
            if !org.value.is_empty()
                && org.value.len() <= 12
                && org.value.bytes().all(|b| b.is_ascii_digit())
            {
                Ok(())
            } else {
                Err(ValidationError::new(
                    format!("{field}.value"),
                    Reason::InvalidIdentifier,
                    "a RESH id is 1 to 12 digits",
                ))
            }
        }
    }
}

fn not_empty(field: &str, value: &str) -> Result {
    if value.trim().is_empty() {
        Err(ValidationError::new(
            field,
            Reason::Missing,
            "must not be empty",
        ))
    } else {
        Ok(())
    }
}

fn not_in_future(field: &str, at: Millis, now: Millis) -> Result {
    if at > now + MAX_CLOCK_SKEW_MILLIS {
        Err(ValidationError::new(
            field,
            Reason::FutureTime,
            "lies in the future beyond the allowed clock skew",
        ))
    } else if at <= 0 {
        Err(ValidationError::new(
            field,
            Reason::Missing,
            "must be a time after 1970",
        ))
    } else {
        Ok(())
    }
}

fn quantity(field: &str, q: &Quantity, allowed: &[UnitRange], code: &str) -> Result {
    let Some(range) = allowed.iter().find(|u| u.unit == q.unit) else {
        let units: Vec<&str> = allowed.iter().map(|u| u.unit).collect();
        return Err(ValidationError::new(
            format!("{field}.unit"),
            Reason::WrongUnit,
            format!(
                "'{}' is not a unit for {code}; expected one of {units:?}",
                q.unit
            ),
        ));
    };
    if !q.value.is_finite() || q.value < range.min || q.value > range.max {
        let hint = if range.unit == "%" && q.value > 0.0 && q.value <= 1.0 {
            " (a percentage 0-100 is expected, not a fraction)"
        } else {
            ""
        };
        return Err(ValidationError::new(
            format!("{field}.value"),
            Reason::Implausible,
            format!(
                "{} {} is outside the plausible range {}..{} for {code}{hint}",
                q.value, q.unit, range.min, range.max
            ),
        ));
    }
    Ok(())
}

fn source(src: &Source) -> Result {
    organisation("source.platform", &src.platform)
}

impl Measurement {
    /// Checks identifiers, code, unit, plausibility and time.
    pub fn validate(&self, policy: Policy, now: Millis) -> Result {
        not_empty("event_id", &self.event_id)?;
        patient("patient", &self.patient, policy)?;
        source(&self.source)?;
        organisation("data_controller", &self.data_controller)?;
        let spec = codes::lookup(&self.code).ok_or_else(|| {
            ValidationError::new(
                "code",
                Reason::UnknownCode,
                format!("LOINC code '{}' is not one the hub accepts", self.code),
            )
        })?;
        if let Some(snomed) = &self.snomed_code
            && spec.snomed != Some(snomed.as_str())
        {
            return Err(ValidationError::new(
                "snomed_code",
                Reason::CodeMismatch,
                format!(
                    "SNOMED CT '{snomed}' does not pair with LOINC {}",
                    spec.loinc
                ),
            ));
        }
        if spec.coded_value {
            let coded = self.value_coding.as_ref().ok_or_else(|| {
                ValidationError::new(
                    "value",
                    Reason::Missing,
                    format!("{} needs a coded value", spec.loinc),
                )
            })?;
            not_empty("value_coding.system", &coded.system)?;
            not_empty("value_coding.code", &coded.code)?;
            if self.value.is_some() || !self.components.is_empty() {
                return Err(ValidationError::new(
                    "value",
                    Reason::Malformed,
                    format!("{} has a coded value only", spec.loinc),
                ));
            }
        } else if self.value_coding.is_some() {
            return Err(ValidationError::new(
                "value_coding",
                Reason::Malformed,
                format!("{} is not a coded value", spec.loinc),
            ));
        } else if spec.components.is_empty() {
            let value = self.value.as_ref().ok_or_else(|| {
                ValidationError::new(
                    "value",
                    Reason::Missing,
                    format!("{} needs a value", spec.loinc),
                )
            })?;
            quantity("value", value, spec.units, spec.loinc)?;
        } else {
            if self.value.is_some() {
                return Err(ValidationError::new(
                    "value",
                    Reason::Malformed,
                    format!("{} carries its values in components", spec.loinc),
                ));
            }
            for c in spec.components {
                if !self.components.iter().any(|found| found.code == c.loinc) {
                    return Err(ValidationError::new(
                        "components",
                        Reason::Missing,
                        format!("{} needs component {} ({})", spec.loinc, c.loinc, c.display),
                    ));
                }
            }
        }
        for (i, found) in self.components.iter().enumerate() {
            let Some(c) = spec
                .components
                .iter()
                .chain(spec.optional_components)
                .find(|c| c.loinc == found.code)
            else {
                return Err(
                    if spec.components.is_empty() && spec.optional_components.is_empty() {
                        ValidationError::new(
                            "components",
                            Reason::Malformed,
                            format!("{} has no components", spec.loinc),
                        )
                    } else {
                        ValidationError::new(
                            format!("components[{i}].code"),
                            Reason::UnknownCode,
                            format!("'{}' is not a component of {}", found.code, spec.loinc),
                        )
                    },
                );
            };
            quantity(
                &format!("components[{i}].value"),
                &found.value,
                c.units,
                c.loinc,
            )?;
        }
        if let Some(status) = &self.status
            && !OBSERVATION_STATUSES.contains(&status.as_str())
        {
            return Err(ValidationError::new(
                "status",
                Reason::UnknownCode,
                format!("'{status}' is not a reading status ({OBSERVATION_STATUSES:?})"),
            ));
        }
        if let Some(precision) = &self.effective_precision
            && precision != PRECISION_DAY
        {
            return Err(ValidationError::new(
                "effective_precision",
                Reason::Malformed,
                format!("'{precision}' is not a precision; only {PRECISION_DAY} is"),
            ));
        }
        if let Some(end) = self.effective_end
            && end < self.effective_time
        {
            return Err(ValidationError::new(
                "effective_end",
                Reason::Malformed,
                "the period ends before it starts",
            ));
        }
        not_in_future("effective_time", self.effective_time, now)
    }
}

impl SelfReport {
    pub fn validate(&self, policy: Policy, now: Millis) -> Result {
        not_empty("event_id", &self.event_id)?;
        patient("patient", &self.patient, policy)?;
        source(&self.source)?;
        organisation("data_controller", &self.data_controller)?;
        not_empty("questionnaire_id", &self.questionnaire_id)?;
        not_in_future("authored_time", self.authored_time, now)?;
        for (i, answer) in self.answers.iter().enumerate() {
            not_empty(&format!("answers[{i}].link_id"), &answer.link_id)?;
            let set = [
                answer.value_boolean.is_some(),
                answer.value_integer.is_some(),
                answer.value_decimal.is_some(),
                answer.value_string.is_some(),
                answer.value_coding.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count();
            if set != 1 {
                return Err(ValidationError::new(
                    format!("answers[{i}]"),
                    Reason::Malformed,
                    format!("exactly one value_* must be set, found {set}"),
                ));
            }
            if answer.value_decimal.is_some_and(|v| !v.is_finite()) {
                return Err(ValidationError::new(
                    format!("answers[{i}].value_decimal"),
                    Reason::Implausible,
                    "must be a finite number",
                ));
            }
        }
        if self.score.is_some_and(|s| !s.is_finite()) {
            return Err(ValidationError::new(
                "score",
                Reason::Implausible,
                "must be a finite number",
            ));
        }
        Ok(())
    }
}

mod consent;
pub use consent::hpr_number;

/// A subscriber id becomes part of a topic name: keep it to a safe alphabet.
pub fn subscriber_id(value: &str) -> Result {
    let ok = !value.is_empty()
        && value.len() <= 100
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "subscriber_id",
            Reason::Malformed,
            "1 to 100 characters of a-z, 0-9 and '-'",
        ))
    }
}

impl Subscription {
    pub fn validate(&self, policy: Policy) -> Result {
        not_empty("subscription_id", &self.subscription_id)?;
        subscriber_id(&self.subscriber_id)?;
        organisation("subscriber_org", &self.subscriber_org)?;
        patient("patient", &self.patient, policy)?;
        if self.categories.is_empty() {
            return Err(ValidationError::new(
                "categories",
                Reason::Missing,
                "name at least one category",
            ));
        }
        for (i, code) in self.code_filter.iter().enumerate() {
            if codes::lookup(code).is_none() {
                return Err(ValidationError::new(
                    format!("code_filter[{i}]"),
                    Reason::UnknownCode,
                    format!("LOINC code '{code}' is not one the hub accepts"),
                ));
            }
        }
        if let Some(until) = self.active_until
            && until <= self.active_from
        {
            return Err(ValidationError::new(
                "active_until",
                Reason::Malformed,
                "the subscription ends before it starts",
            ));
        }
        Ok(())
    }
}

impl CarePlan {
    pub fn validate(&self, policy: Policy) -> Result {
        not_empty("plan_id", &self.plan_id)?;
        patient("patient", &self.patient, policy)?;
        organisation("updated_by", &self.updated_by)?;
        for (i, t) in self.targets.iter().enumerate() {
            let green_in_yellow = self.targets[i]
                .yellow
                .low
                .is_none_or(|yl| t.green.low.is_some_and(|gl| yl <= gl))
                && t.yellow
                    .high
                    .is_none_or(|yh| t.green.high.is_some_and(|gh| gh <= yh));
            if !green_in_yellow {
                return Err(ValidationError::new(
                    format!("targets[{i}].yellow"),
                    Reason::Malformed,
                    "the yellow range must contain the green range",
                ));
            }
        }
        Ok(())
    }
}
