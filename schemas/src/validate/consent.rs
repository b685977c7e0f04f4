//! A consent directive's rules, as the router relies on them: nesting that points backwards,
//! nested rules already narrowed to their parents (so a reader ignoring `parent` is only
//! ever stricter), and no permit the hub could not enforce.

use super::{Reason, Result, ValidationError, not_empty, organisation, patient};
use crate::Policy;
use crate::model::*;

/// An HPR number (helsepersonellnummer): 1 to 9 digits, no check digit.
pub fn hpr_number(field: &str, value: &str) -> Result {
    if !value.is_empty() && value.len() <= 9 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(ValidationError::new(
            format!("{field}.hpr_number"),
            Reason::InvalidIdentifier,
            "an HPR number is 1 to 9 digits",
        ))
    }
}

impl Consent {
    pub fn validate(&self, policy: Policy) -> Result {
        not_empty("consent_id", &self.consent_id)?;
        patient("patient", &self.patient, policy)?;
        not_empty("legal_basis", &self.legal_basis)?;
        organisation("recorded_by", &self.recorded_by)?;
        for (i, p) in self.provisions.iter().enumerate() {
            let field = format!("provisions[{i}]");
            let error = |what: &str, reason, detail: &str| {
                Err(ValidationError::new(
                    format!("{field}{what}"),
                    reason,
                    detail,
                ))
            };
            if let Some(actor) = &p.actor {
                organisation(&format!("{field}.actor"), actor)?;
            }
            if let Some(professional) = &p.professional {
                hpr_number(&format!("{field}.professional"), &professional.hpr_number)?;
                if p.actor.is_some() {
                    return error(
                        ".professional",
                        Reason::Malformed,
                        "a rule is about an organisation or a professional, not both",
                    );
                }
                if p.kind == ProvisionKind::Permit {
                    return error(
                        ".professional",
                        Reason::Malformed,
                        "the hub shares with organisations: a permit for one professional cannot be enforced",
                    );
                }
            }
            if p.kind == ProvisionKind::Permit && p.is_blanket() {
                return error(
                    ".actor",
                    Reason::Missing,
                    "a permit names the organisation it shares with",
                );
            }
            if let (Some(start), Some(end)) = (p.period_start, p.period_end)
                && start >= end
            {
                return error(
                    ".period_end",
                    Reason::Malformed,
                    "the period ends before it starts",
                );
            }
            let Some(at) = p.parent else { continue };
            let Some(parent) = usize::try_from(at)
                .ok()
                .filter(|&at| at < i)
                .map(|at| &self.provisions[at])
            else {
                return error(
                    ".parent",
                    Reason::Malformed,
                    "a nested rule's parent is an earlier rule",
                );
            };
            if !p.categories.iter().all(|c| parent.categories.contains(c)) {
                return error(
                    ".categories",
                    Reason::Malformed,
                    "a nested rule's categories are among its parent's",
                );
            }
            let starts_inside = match (parent.period_start, p.period_start) {
                (Some(outer), inner) => inner.is_some_and(|inner| outer <= inner),
                (None, _) => true,
            };
            let ends_inside = match (parent.period_end, p.period_end) {
                (Some(outer), inner) => inner.is_some_and(|inner| inner <= outer),
                (None, _) => true,
            };
            if !starts_inside || !ends_inside {
                return error(
                    ".period_start",
                    Reason::Malformed,
                    "a nested rule's period lies within its parent's",
                );
            }
            let same_party = match (&parent.actor, &parent.professional) {
                // A professional within the organisation: a deny carried in its deliveries.
                (Some(org), _) => match &p.actor {
                    Some(own) => own.same_entity(org),
                    None => p.professional.is_some(),
                },
                (None, Some(professional)) => p.professional.as_ref() == Some(professional),
                (None, None) => true,
            };
            if !same_party {
                return error(
                    ".actor",
                    Reason::Malformed,
                    "a rule nested in a rule about one organisation is about it or one professional; in one about a professional, about the same one",
                );
            }
        }
        Ok(())
    }
}
