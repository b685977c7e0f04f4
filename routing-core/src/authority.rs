//! Whether a change to a patient's consent directives narrows or widens sharing, judged by
//! the routing decision itself: the gateway asks this before it records a change, to decide
//! who may make it (see ARCHITECTURE.md, "Who may change consent").
//!
//! A change *narrows* sharing when [`decide`] over the patient's directives after it allows
//! nothing it did not allow before, to any organisation, of any category, now or at any later
//! time. Anything else *widens* sharing: a permit, a deny made inactive, shorter or
//! deleted, a rule about one professional removed. The decision is probed with one
//! subscription per organisation the directives name, plus one for every organisation they
//! do not name (a blanket rule is about those too), at now and at every period boundary
//! after now: between boundaries the decision cannot change.

use std::collections::{BTreeMap, BTreeSet};

use dho_schemas::model::*;

use crate::decision::{PatientState, decide};

/// An organisation as the decision tells them apart (the display name does not count).
pub type Organisation = (OrgIdSystem, String);

/// What a change does to each organisation's access.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effect {
    /// Organisations allowed something they were not allowed before (a category at some
    /// time, or the same without a professional's deny it carried).
    pub widened: BTreeSet<Organisation>,
    /// Whether organisations the directives do not name are allowed something new (a
    /// blanket permit, a blanket deny removed).
    pub widened_for_others: bool,
    /// Organisations allowed less than before.
    pub narrowed: BTreeSet<Organisation>,
    /// Whether organisations the directives do not name lose something (a blanket deny).
    pub narrowed_for_others: bool,
}

impl Effect {
    /// True when the change allows nothing it did not allow before.
    pub fn only_narrows(&self) -> bool {
        self.widened.is_empty() && !self.widened_for_others
    }

    /// True when the change takes access from nobody but `org`.
    pub fn narrows_only(&self, org: &OrganisationIdentifier) -> bool {
        !self.narrowed_for_others
            && self
                .narrowed
                .iter()
                .all(|(system, value)| *system == org.system && *value == org.value)
    }

    /// True when the change changes nobody's access.
    pub fn is_none(&self) -> bool {
        self.only_narrows() && self.narrowed.is_empty() && !self.narrowed_for_others
    }
}

/// What replacing the directives `before` by `after` (by record id; an absent id is a
/// deleted or not yet recorded directive) does to sharing from `now` on.
pub fn judge(
    before: &BTreeMap<String, Consent>,
    after: &BTreeMap<String, Consent>,
    now: Millis,
) -> Effect {
    let named = named_organisations(before.values().chain(after.values()));
    // An organisation no directive names stands for all of them: a probe id nobody has.
    let others: Organisation = (OrgIdSystem::Orgnr, String::new());
    let probe = |consents: &BTreeMap<String, Consent>| {
        let mut state = PatientState::default();
        for (id, consent) in consents {
            state.set_consent(id.clone(), Some(consent.clone()));
        }
        for (i, (system, value)) in named.iter().chain([&others]).enumerate() {
            state.set_subscription(format!("{i:08}"), Some(probe_subscription(*system, value)));
        }
        state
    };
    let (was, is) = (probe(before), probe(after));
    let mut effect = Effect::default();
    for at in instants(before.values().chain(after.values()), now) {
        for category in [
            DataCategory::Measurement,
            DataCategory::SelfReport,
            DataCategory::Alert,
        ] {
            let event = crate::decision::EventView {
                category,
                code: None,
            };
            let granted = |state: &PatientState| -> BTreeMap<Organisation, Vec<String>> {
                decide(Some(state), event, at)
                    .grants
                    .iter()
                    .map(|g| {
                        let org = &g.subscription.subscriber_org;
                        let denies = g.professional_denies.iter().map(|s| s.to_string());
                        ((org.system, org.value.clone()), denies.collect())
                    })
                    .collect()
            };
            let (then, later) = (granted(&was), granted(&is));
            for org in named.iter().chain([&others]) {
                let (widens, narrows) = match (then.get(org), later.get(org)) {
                    (None, Some(_)) => (true, false),
                    (Some(_), None) => (false, true),
                    (Some(old), Some(new)) => (
                        old.iter().any(|hpr| !new.contains(hpr)),
                        new.iter().any(|hpr| !old.contains(hpr)),
                    ),
                    (None, None) => (false, false),
                };
                let is_others = org == &others;
                match (widens, is_others) {
                    (true, true) => effect.widened_for_others = true,
                    (true, false) => {
                        effect.widened.insert(org.clone());
                    }
                    _ => {}
                }
                match (narrows, is_others) {
                    (true, true) => effect.narrowed_for_others = true,
                    (true, false) => {
                        effect.narrowed.insert(org.clone());
                    }
                    _ => {}
                }
            }
        }
    }
    effect
}

fn named_organisations<'a>(consents: impl Iterator<Item = &'a Consent>) -> BTreeSet<Organisation> {
    consents
        .flat_map(|c| &c.provisions)
        .filter_map(|p| p.actor.as_ref())
        .map(|org| (org.system, org.value.clone()))
        .collect()
}

/// `now`, and every period boundary after it: where the decision may change.
fn instants<'a>(consents: impl Iterator<Item = &'a Consent>, now: Millis) -> BTreeSet<Millis> {
    let mut at: BTreeSet<Millis> = consents
        .flat_map(|c| &c.provisions)
        .flat_map(|p| [p.period_start, p.period_end])
        .flatten()
        .filter(|&t| t > now)
        .collect();
    at.insert(now);
    at
}

/// A subscription that wants everything, always: the decision then answers for consent alone.
fn probe_subscription(system: OrgIdSystem, value: &str) -> Subscription {
    Subscription {
        subscription_id: String::new(),
        subscriber_id: format!("{system:?}:{value}"),
        subscriber_org: OrganisationIdentifier {
            system,
            value: value.to_string(),
            name: None,
        },
        patient: PatientIdentifier::fnr(""),
        categories: vec![
            DataCategory::Measurement,
            DataCategory::SelfReport,
            DataCategory::Alert,
        ],
        code_filter: vec![],
        content_level: ContentLevel::Full,
        status: SubscriptionStatus::Active,
        active_from: Millis::MIN,
        active_until: None,
        purpose_of_use: String::new(),
        updated_at: 0,
    }
}

#[cfg(test)]
mod tests;
