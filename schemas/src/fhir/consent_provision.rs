//! A Consent's provisions → the hub's rules: one per actor, nested ones narrowed to their
//! parents (see `consent.rs` for the resource around them).

use serde::Deserialize;
use serde_json::Value;

use super::consent::{CATEGORY_SYSTEM, ROLE_SYSTEM, invalid, only_known, shape};
use super::types::{CodeableConcept, Coding, Period, Reference};
use super::{FhirError, HPR_OID, IssueCode, ORGNR_OID, RESH_OID, VkpCode};
use crate::model::*;
use crate::validate;

/// The roles an actor may have: the data's recipient. A role given as text only describes
/// the actor and is accepted as that.
const RECIPIENT_ROLES: [&str; 2] = ["IRCP", "PRCP"];
/// Nested provisions are split per actor: a bound on the rules one Consent becomes.
const MAX_RULES: usize = 256;

/// The elements of a provision and of an actor the hub evaluates (or, `id` and plain
/// extensions, may ignore). Anything else is refused, naming it.
const PROVISION_ELEMENTS: &[&str] = &[
    "id",
    "extension",
    "type",
    "period",
    "actor",
    "class",
    "provision",
];
const ACTOR_ELEMENTS: &[&str] = &["id", "extension", "role", "reference"];

#[derive(Debug, Deserialize)]
struct Provision {
    #[serde(rename = "type")]
    type_: Option<String>,
    period: Option<Period>,
    /// Read one by one in `party`, to name an unknown element in one.
    #[serde(default)]
    actor: Vec<Value>,
    #[serde(default)]
    class: Vec<Coding>,
}

#[derive(Debug, Deserialize)]
struct Actor {
    role: Option<CodeableConcept>,
    reference: Option<Reference>,
}

/// Who a rule is about.
#[derive(Debug, Clone, PartialEq)]
enum Party {
    Everyone,
    Organisation(OrganisationIdentifier),
    Professional(HealthProfessional),
}

impl Party {
    fn of(p: &ConsentProvision) -> Self {
        match (&p.actor, &p.professional) {
            (Some(org), _) => Party::Organisation(org.clone()),
            (None, Some(hpr)) => Party::Professional(hpr.clone()),
            (None, None) => Party::Everyone,
        }
    }

    /// Whether a rule about `self` can sit inside one about `outer`: the same party, one
    /// professional inside an organisation, or anything inside a rule about everyone.
    fn within(&self, outer: &Party) -> bool {
        match (outer, self) {
            (Party::Everyone, _) => true,
            (Party::Organisation(o), Party::Organisation(me)) => me.same_entity(o),
            (Party::Organisation(_), Party::Professional(_)) => true,
            (Party::Professional(o), Party::Professional(me)) => me == o,
            _ => false,
        }
    }
}

/// A provision holding nothing but nested provisions.
pub(super) fn is_container(json: &Value) -> bool {
    json.as_object().is_some_and(|o| {
        o.contains_key("provision")
            && o.keys()
                .all(|k| matches!(k.as_str(), "provision" | "id" | "extension"))
    })
}

pub(super) fn nested_provisions<'a>(json: &'a Value, at: &str) -> Result<&'a [Value], FhirError> {
    match json.get("provision") {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(invalid(
            format!("{at}.provision"),
            IssueCode::Structure,
            "expected an array",
        )),
    }
}

/// Adds the rules of provision `json` (at `at`, nested in the rule at `parent`) to `out`:
/// one per actor, each followed by the rules of the nested provisions. A nested rule keeps
/// only what lies within its parent (categories, period, party), so each rule states every
/// condition it has.
pub(super) fn flatten(
    json: &Value,
    at: &str,
    parent: Option<usize>,
    out: &mut Vec<ConsentProvision>,
) -> Result<(), FhirError> {
    only_known(json, PROVISION_ELEMENTS, at)?;
    let p: Provision = serde_path_to_error::deserialize(json).map_err(|e| shape(at, e))?;
    let outer = parent.map(|i| out[i].clone());
    let kind = match (p.type_.as_deref(), &outer) {
        (Some("permit"), _) => ProvisionKind::Permit,
        (Some("deny"), _) => ProvisionKind::Deny,
        (Some(_), _) => {
            return Err(invalid(
                format!("{at}.type"),
                IssueCode::Value,
                "must be permit or deny",
            ));
        }
        (None, Some(outer)) => outer.kind,
        (None, None) => {
            return Err(invalid(
                format!("{at}.type"),
                IssueCode::Required,
                "permit or deny is required",
            ));
        }
    };
    let (period_start, period_end) = period(&p, at, outer.as_ref())?;
    let categories = categories(&p, at, outer.as_ref())?;
    let outer_party = outer.as_ref().map_or(Party::Everyone, Party::of);
    let mut parties = vec![];
    for (i, actor) in p.actor.iter().enumerate() {
        let location = format!("{at}.actor[{i}]");
        let party = party(actor, &location)?;
        if !party.within(&outer_party) {
            return Err(invalid(
                location,
                IssueCode::Value,
                "a nested provision is about its parent's organisation (or one professional there) or its parent's professional; about anyone else it would never apply",
            ));
        }
        if kind == ProvisionKind::Permit && matches!(party, Party::Professional(_)) {
            return Err(FhirError::new(
                format!("{location}.reference.identifier.system"),
                IssueCode::NotSupported,
                VkpCode::SystemId,
                "the hub shares with organisations: it cannot permit one health professional (deny one instead, or permit the organisation)",
            ));
        }
        parties.push(party);
    }
    if parties.is_empty() {
        parties.push(outer_party);
    }
    if kind == ProvisionKind::Permit && parties == [Party::Everyone] {
        return Err(invalid(
            format!("{at}.actor"),
            IssueCode::Required,
            "a permit names the organisation it shares with (actor, here or in an enclosing provision)",
        ));
    }
    let nested = nested_provisions(json, at)?;
    for party in parties {
        if out.len() >= MAX_RULES {
            return Err(invalid(
                "Consent.provision",
                IssueCode::NotSupported,
                "too many rules (nested provisions times actors)",
            ));
        }
        let (actor, professional) = match party {
            Party::Everyone => (None, None),
            Party::Organisation(org) => (Some(org), None),
            Party::Professional(hpr) => (None, Some(hpr)),
        };
        let index = out.len();
        out.push(ConsentProvision {
            kind,
            actor,
            categories: categories.clone(),
            period_start,
            period_end,
            professional,
            parent: parent.map(|i| i as i32),
        });
        for (i, child) in nested.iter().enumerate() {
            flatten(child, &format!("{at}.provision[{i}]"), Some(index), out)?;
        }
    }
    Ok(())
}

/// The provision's period as the hub's instants (see `period_bound`), within its parent's.
fn period(
    p: &Provision,
    at: &str,
    outer: Option<&ConsentProvision>,
) -> Result<(Option<Millis>, Option<Millis>), FhirError> {
    let bound = |field: &str, text: Option<&String>| {
        text.map(|t| {
            super::time::period_bound(t, field == "end").map_err(|_| {
                invalid(
                    format!("{at}.period.{field}"),
                    IssueCode::Value,
                    "not a FHIR date or dateTime",
                )
            })
        })
        .transpose()
    };
    let mut start = bound("start", p.period.as_ref().and_then(|p| p.start.as_ref()))?;
    let mut end = bound("end", p.period.as_ref().and_then(|p| p.end.as_ref()))?;
    if let Some(outer) = outer {
        start = start.max(outer.period_start);
        end = match (end, outer.period_end) {
            (Some(own), Some(theirs)) => Some(own.min(theirs)),
            (own, theirs) => own.or(theirs),
        };
    }
    if let (Some(start), Some(end)) = (start, end)
        && start >= end
    {
        let what = if outer.is_some() {
            "the period ends before it starts, or lies outside its parent's"
        } else {
            "the period ends before it starts"
        };
        return Err(invalid(format!("{at}.period"), IssueCode::Value, what));
    }
    Ok((start, end))
}

/// The provision's data categories (all, without `class`), within its parent's.
fn categories(
    p: &Provision,
    at: &str,
    outer: Option<&ConsentProvision>,
) -> Result<Vec<DataCategory>, FhirError> {
    let all = [
        DataCategory::Measurement,
        DataCategory::SelfReport,
        DataCategory::Alert,
    ];
    let mut own = vec![];
    for (i, c) in p.class.iter().enumerate() {
        let category = match (c.system.as_deref(), c.code.as_deref()) {
            (Some(CATEGORY_SYSTEM) | None, Some("measurement")) => DataCategory::Measurement,
            (Some(CATEGORY_SYSTEM) | None, Some("self-report")) => DataCategory::SelfReport,
            (Some(CATEGORY_SYSTEM) | None, Some("alert")) => DataCategory::Alert,
            _ => {
                return Err(invalid(
                    format!("{at}.class[{i}]"),
                    IssueCode::CodeInvalid,
                    "a data category is measurement, self-report or alert",
                ));
            }
        };
        if !own.contains(&category) {
            own.push(category);
        }
    }
    if own.is_empty() {
        own = all.to_vec();
    }
    if let Some(outer) = outer {
        own.retain(|c| outer.categories.contains(c));
        if own.is_empty() {
            return Err(invalid(
                format!("{at}.class"),
                IssueCode::Value,
                "none of these categories is in the parent provision's: it would never apply",
            ));
        }
    }
    Ok(own)
}

/// An actor: an organisation (orgnr, RESH) or one health professional (HPR), with a
/// recipient role if any.
fn party(actor: &Value, at: &str) -> Result<Party, FhirError> {
    only_known(actor, ACTOR_ELEMENTS, at)?;
    let parsed: Actor = serde_path_to_error::deserialize(actor).map_err(|e| shape(at, e))?;
    if let Some(role) = &parsed.role
        && role.coding.iter().any(|c| {
            c.system.as_deref() != Some(ROLE_SYSTEM)
                || !c
                    .code
                    .as_deref()
                    .is_some_and(|code| RECIPIENT_ROLES.contains(&code))
        })
    {
        return Err(invalid(
            format!("{at}.role"),
            IssueCode::NotSupported,
            "the hub evaluates an actor as the data's recipient: a coded role must be v3-ParticipationType IRCP or PRCP (or give the role as text only)",
        ));
    }
    let location = format!("{at}.reference.identifier");
    let identifier = parsed
        .reference
        .as_ref()
        .and_then(|r| r.identifier.as_ref())
        .ok_or_else(|| {
            FhirError::new(
                location.clone(),
                IssueCode::Required,
                VkpCode::SystemId,
                "the actor is an organisation or a health professional, as an identifier",
            )
        })?;
    let value = identifier.value.clone().unwrap_or_default();
    let id_error = |detail: String| {
        FhirError::new(
            format!("{location}.value"),
            IssueCode::CodeInvalid,
            VkpCode::SystemId,
            detail,
        )
    };
    let system = match identifier.system.as_deref() {
        Some(ORGNR_OID) => OrgIdSystem::Orgnr,
        Some(RESH_OID) => OrgIdSystem::Resh,
        Some(HPR_OID) => {
            validate::hpr_number("actor", &value).map_err(|e| id_error(e.detail))?;
            return Ok(Party::Professional(HealthProfessional {
                hpr_number: value,
            }));
        }
        _ => {
            return Err(FhirError::new(
                format!("{location}.system"),
                IssueCode::CodeInvalid,
                VkpCode::SystemId,
                "must be organisation number (urn:oid:2.16.578.1.12.4.1.4.101), RESH (.102) or HPR number (urn:oid:2.16.578.1.12.4.1.4.4)",
            ));
        }
    };
    let org = OrganisationIdentifier {
        system,
        value,
        name: parsed.reference.as_ref().and_then(|r| r.display.clone()),
    };
    validate::organisation("actor", &org).map_err(|e| id_error(e.detail))?;
    Ok(Party::Organisation(org))
}
