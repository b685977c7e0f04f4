//! The routing decision: a pure function of (event, the patient's state, the time) to
//! deliveries and withheld reasons. No Kafka here; the pipeline does the I/O.
//!
//! Rules: default deny. A subscriber receives an event only if one of its subscriptions for
//! the patient wants it (active, category, code filter) *and* an active consent of the
//! patient permits the subscriber's organisation that category now, with no active deny
//! provision covering the same. One delivery per subscriber per event.

use std::collections::BTreeMap;

use smallvec::{SmallVec, smallvec};

use dho_schemas::model::*;

/// What the router knows about one patient: their consent directives, the subscriptions
/// to them and their care plans, by record id; and the alert tracks, by measurement code.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatientState {
    pub consents: BTreeMap<String, Consent>,
    pub subscriptions: BTreeMap<String, Subscription>,
    pub care_plans: BTreeMap<String, CarePlan>,
    pub alerts: BTreeMap<String, crate::alerts::Track>,
}

impl PatientState {
    pub(crate) fn is_empty(&self) -> bool {
        self.consents.is_empty()
            && self.subscriptions.is_empty()
            && self.care_plans.is_empty()
            && self.alerts.is_empty()
    }
}

/// The routing-relevant view of an event.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    pub category: DataCategory,
    /// LOINC code (measurements) or questionnaire id (self-reports).
    pub code: Option<&'a str>,
}

/// Why a subscriber did not receive an event. Bounded: used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Withheld {
    /// Nobody subscribes to this patient at all.
    NoSubscription,
    /// Subscriptions exist but none wants this (ended, outside its period, other category
    /// or code).
    NotRequested,
    /// The subscriber wants it but no active consent permits its organisation.
    NoConsent,
    /// An active deny provision covers the subscriber's organisation.
    ConsentDenied,
}

impl Withheld {
    pub fn as_str(self) -> &'static str {
        match self {
            Withheld::NoSubscription => "no_subscription",
            Withheld::NotRequested => "not_requested",
            Withheld::NoConsent => "no_consent",
            Withheld::ConsentDenied => "consent_denied",
        }
    }
}

/// A permitted delivery: to whom, under which subscription and consent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grant<'a> {
    pub subscription: &'a Subscription,
    pub consent: &'a Consent,
}

/// Inline for the usual few subscribers of a patient: no allocation per decision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision<'a> {
    /// At most one per subscriber id, in subscriber id order.
    pub grants: SmallVec<[Grant<'a>; 4]>,
    /// Per subscriber that did not receive it (or one `NoSubscription` entry).
    pub withheld: SmallVec<[Withheld; 4]>,
}

/// Decides who receives `event` about the patient whose state is `state`, at time `now`.
pub fn decide<'a>(
    state: Option<&'a PatientState>,
    event: EventView<'_>,
    now: Millis,
) -> Decision<'a> {
    let Some(state) = state.filter(|s| !s.subscriptions.is_empty()) else {
        return Decision {
            grants: SmallVec::new(),
            withheld: smallvec![Withheld::NoSubscription],
        };
    };
    // Per subscriber: the subscription that wants the event, FULL preferred over MINIMAL.
    let mut wanted: SmallVec<[(&str, Option<&Subscription>); 4]> = SmallVec::new();
    for sub in state.subscriptions.values() {
        let subscriber = sub.subscriber_id.as_str();
        let at = match wanted.iter().position(|(s, _)| *s == subscriber) {
            Some(at) => at,
            None => {
                wanted.push((subscriber, None));
                wanted.len() - 1
            }
        };
        let entry = &mut wanted[at].1;
        if sub.wants(event.category, event.code, now) {
            let better = match entry {
                None => true,
                Some(current) => {
                    current.content_level == ContentLevel::Minimal
                        && sub.content_level == ContentLevel::Full
                }
            };
            if better {
                *entry = Some(sub);
            }
        }
    }
    let mut decision = Decision::default();
    // In subscriber id order, as the grants are documented.
    wanted.sort_unstable_by_key(|(subscriber, _)| *subscriber);
    for (_, subscription) in wanted {
        let Some(subscription) = subscription else {
            decision.withheld.push(Withheld::NotRequested);
            continue;
        };
        match permitting_consent(state, &subscription.subscriber_org, event.category, now) {
            Ok(consent) => decision.grants.push(Grant {
                subscription,
                consent,
            }),
            Err(reason) => decision.withheld.push(reason),
        }
    }
    decision
}

/// The consent that permits `recipient` to receive `category` at `now`, unless a deny wins.
pub fn permitting_consent<'a>(
    state: &'a PatientState,
    recipient: &OrganisationIdentifier,
    category: DataCategory,
    now: Millis,
) -> Result<&'a Consent, Withheld> {
    let active = || {
        state
            .consents
            .values()
            .filter(|c| c.status == ConsentStatus::Active)
    };
    let covered = |c: &Consent, kind: ProvisionKind| {
        c.provisions
            .iter()
            .any(|p| p.kind == kind && p.covers(recipient, category, now))
    };
    if active().any(|c| covered(c, ProvisionKind::Deny)) {
        return Err(Withheld::ConsentDenied);
    }
    active()
        .find(|c| covered(c, ProvisionKind::Permit))
        .ok_or(Withheld::NoConsent)
}

#[cfg(test)]
mod tests;
