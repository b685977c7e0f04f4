//! The routing decision: a pure function of (event, the patient's state, the time) to
//! deliveries and withheld reasons. No Kafka here; the pipeline does the I/O.
//!
//! Rules: default deny. A subscriber receives an event only if one of its subscriptions for
//! the patient wants it (active, category, code filter) *and* an active consent of the
//! patient permits the subscriber's organisation that category now, with no active consent
//! denying the same. One delivery per subscriber per event.
//!
//! Within a consent, rules nest as FHIR nests provisions: a rule applies where its own
//! conditions hold (its organisation or everyone, category, period) and its parent applies;
//! an applying rule with no applying nested rule decides, and a deny among those wins. A rule
//! about one health professional never applies to an organisation: a deny for one is handed
//! to the care system with every delivery it would govern (`Grant::professional_denies`).

use std::collections::{BTreeMap, BTreeSet};

use smallvec::{SmallVec, smallvec};

use dho_schemas::model::*;

/// What the router knows about one patient: their consent directives, the subscriptions
/// to them and their care plans, by record id; and the alert tracks, by track id
/// (`<code>|<plan owner>`, see [`crate::tracks::track_id`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatientState {
    consents: BTreeMap<String, Consent>,
    subscriptions: BTreeMap<String, Subscription>,
    pub care_plans: BTreeMap<String, CarePlan>,
    pub alerts: BTreeMap<String, crate::alerts::Track>,
    /// The consents and subscriptions as the decision reads them, rebuilt whenever one
    /// changes (which is why those two are only changed through the setters).
    routes: Routes,
    /// This patient's state records whose latest value could not be applied (see
    /// [`PartitionState::hold`](crate::state::PartitionState::hold)): while any is held,
    /// nothing of the patient is delivered.
    held: BTreeSet<String>,
}

impl PatientState {
    pub(crate) fn is_empty(&self) -> bool {
        self.consents.is_empty()
            && self.subscriptions.is_empty()
            && self.care_plans.is_empty()
            && self.alerts.is_empty()
            && self.held.is_empty()
    }

    /// Whether a state record of this patient could not be applied and nothing valid has
    /// replaced it yet.
    pub fn is_on_hold(&self) -> bool {
        !self.held.is_empty()
    }

    /// Holds the patient for the record `what`; true if the patient was not held before.
    pub(crate) fn hold(&mut self, what: String) -> bool {
        let was = self.is_on_hold();
        self.held.insert(what);
        !was
    }

    /// Releases the hold for the record `what`; true if that released the patient.
    pub(crate) fn release(&mut self, what: &str) -> bool {
        self.held.remove(what) && !self.is_on_hold()
    }

    pub fn consents(&self) -> &BTreeMap<String, Consent> {
        &self.consents
    }

    pub fn subscriptions(&self) -> &BTreeMap<String, Subscription> {
        &self.subscriptions
    }

    /// Sets (`Some`) or removes (`None`) the consent with record id `id`.
    pub fn set_consent(&mut self, id: String, consent: Option<Consent>) {
        match consent {
            Some(c) => self.consents.insert(id, c),
            None => self.consents.remove(&id),
        };
        self.routes = Routes::new(&self.consents, &self.subscriptions);
    }

    /// This patient's subscriptions under other `consents` (nothing else: no care plans,
    /// tracks or holds), to judge what those consents would allow now.
    pub fn with_consents(&self, consents: &BTreeMap<String, Consent>) -> PatientState {
        PatientState {
            routes: Routes::new(consents, &self.subscriptions),
            consents: consents.clone(),
            subscriptions: self.subscriptions.clone(),
            ..PatientState::default()
        }
    }

    /// Sets (`Some`) or removes (`None`) the subscription with record id `id`.
    pub fn set_subscription(&mut self, id: String, subscription: Option<Subscription>) {
        match subscription {
            Some(s) => self.subscriptions.insert(id, s),
            None => self.subscriptions.remove(&id),
        };
        self.routes = Routes::new(&self.consents, &self.subscriptions);
    }
}

/// Where a string sits in [`Routes::text`].
type Span = (u32, u32);

/// A patient's subscriptions and active consent provisions as the decision reads them: flat,
/// with their strings in one buffer. The records themselves keep each string and list in
/// an allocation of its own: about twenty places to read per decision, each likely a cache
/// miss with many patients (see BENCHMARKS.md).
#[derive(Debug, Clone, Default, PartialEq)]
struct Routes {
    text: String,
    /// Every subscription, in record id order.
    subscriptions: SmallVec<[SubscriptionRoute; 2]>,
    /// The code filters' codes, by `SubscriptionRoute::codes`.
    codes: SmallVec<[Span; 2]>,
    /// The provisions of the active consents, in consent record id order, then in order.
    provisions: SmallVec<[ProvisionRoute; 4]>,
}

#[derive(Debug, Clone, PartialEq)]
struct SubscriptionRoute {
    /// Its position among the patient's subscriptions.
    index: usize,
    subscriber: Span,
    org_system: OrgIdSystem,
    org_value: Span,
    active: bool,
    from: Millis,
    until: Option<Millis>,
    categories: u8,
    codes: std::ops::Range<usize>,
    full: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct ProvisionRoute {
    /// Its consent's position among the patient's consents.
    consent: usize,
    permit: bool,
    party: Party,
    categories: u8,
    start: Option<Millis>,
    end: Option<Millis>,
    /// The rule it is nested in, by position in `Routes::provisions` (always earlier).
    parent: Option<usize>,
}

/// Who a rule is about.
#[derive(Debug, Clone, PartialEq)]
enum Party {
    Everyone,
    Organisation(OrgIdSystem, Span),
    /// By HPR number.
    Professional(Span),
}

/// Per rule, flags for one decision; inline for the usual few rules.
type Flags = SmallVec<[u8; 16]>;
const APPLIES: u8 = 1;
const OVERRIDDEN: u8 = 2;
const PROFESSIONAL_APPLIES: u8 = 4;

fn category_bit(category: DataCategory) -> u8 {
    1 << category as u8
}

fn category_bits(categories: &[DataCategory]) -> u8 {
    categories.iter().fold(0, |bits, c| bits | category_bit(*c))
}

impl Routes {
    fn new(
        consents: &BTreeMap<String, Consent>,
        subscriptions: &BTreeMap<String, Subscription>,
    ) -> Self {
        let mut routes = Routes::default();
        for (index, sub) in subscriptions.values().enumerate() {
            let codes_start = routes.codes.len();
            for code in &sub.code_filter {
                let span = routes.keep(code);
                routes.codes.push(span);
            }
            let route = SubscriptionRoute {
                index,
                subscriber: routes.keep(&sub.subscriber_id),
                org_system: sub.subscriber_org.system,
                org_value: routes.keep(&sub.subscriber_org.value),
                active: sub.status == SubscriptionStatus::Active,
                from: sub.active_from,
                until: sub.active_until,
                categories: category_bits(&sub.categories),
                codes: codes_start..routes.codes.len(),
                full: sub.content_level == ContentLevel::Full,
            };
            routes.subscriptions.push(route);
        }
        for (consent, c) in consents.values().enumerate() {
            if c.status != ConsentStatus::Active {
                continue;
            }
            let first = routes.provisions.len();
            for (i, p) in c.provisions.iter().enumerate() {
                let party = match (&p.actor, &p.professional) {
                    (Some(org), _) => Party::Organisation(org.system, routes.keep(&org.value)),
                    (None, Some(hpr)) => Party::Professional(routes.keep(&hpr.hpr_number)),
                    (None, None) => Party::Everyone,
                };
                let permit = p.kind == ProvisionKind::Permit;
                let mut categories = category_bits(&p.categories);
                // Validated records nest backwards only; for any other, a permit never
                // applies and a deny stands on its own.
                let parent = match p
                    .parent
                    .map(|at| usize::try_from(at).ok().filter(|&at| at < i))
                {
                    None => None,
                    Some(Some(at)) => Some(first + at),
                    Some(None) => {
                        if permit {
                            categories = 0;
                        }
                        None
                    }
                };
                let route = ProvisionRoute {
                    consent,
                    permit,
                    party,
                    categories,
                    start: p.period_start,
                    end: p.period_end,
                    parent,
                };
                routes.provisions.push(route);
            }
        }
        routes
    }

    fn keep(&mut self, text: &str) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(text);
        (start, self.text.len() as u32)
    }

    fn text(&self, (start, end): Span) -> &str {
        &self.text[start as usize..end as usize]
    }

    /// `Subscription::wants`, on the route.
    fn wants(&self, sub: &SubscriptionRoute, category: u8, code: Option<&str>, at: Millis) -> bool {
        sub.active
            && sub.from <= at
            && sub.until.is_none_or(|until| at < until)
            && sub.categories & category != 0
            && (sub.codes.is_empty()
                || code.is_some_and(|c| {
                    self.codes[sub.codes.clone()]
                        .iter()
                        .any(|&f| self.text(f) == c)
                }))
    }

    /// Which rules apply to `sub`'s organisation receiving `category` at `now` (parents
    /// come first, so one pass), which of those a nested applying rule overrides, and which
    /// rules about one professional apply where their parents apply to the organisation.
    fn flags(&self, sub: &SubscriptionRoute, category: u8, now: Millis) -> Flags {
        let value = self.text(sub.org_value);
        let mut flags: Flags = SmallVec::with_capacity(self.provisions.len());
        for p in &self.provisions {
            let in_force = p.categories & category != 0
                && p.start.is_none_or(|start| start <= now)
                && p.end.is_none_or(|end| now < end);
            let parent = p.parent.map(|at| flags[at]);
            let under = |bit: u8| parent.is_none_or(|f| f & bit != 0);
            let mut f = 0;
            match p.party {
                Party::Everyone if in_force && under(APPLIES) => f |= APPLIES,
                Party::Organisation(system, actor)
                    if in_force
                        && under(APPLIES)
                        && system == sub.org_system
                        && self.text(actor) == value =>
                {
                    f |= APPLIES
                }
                Party::Professional(_) if in_force && under(APPLIES | PROFESSIONAL_APPLIES) => {
                    f |= PROFESSIONAL_APPLIES
                }
                _ => {}
            }
            flags.push(f);
        }
        for (i, p) in self.provisions.iter().enumerate() {
            if flags[i] & APPLIES != 0
                && let Some(at) = p.parent
            {
                flags[at] |= OVERRIDDEN;
            }
        }
        flags
    }

    /// The consent rules on the routes: the position of the consent that permits `sub`'s
    /// organisation `category` at `now`, unless an active consent denies it; with the HPR
    /// numbers of the professionals denied it there.
    fn permitting(
        &self,
        sub: &SubscriptionRoute,
        category: u8,
        now: Millis,
    ) -> Result<(usize, SmallVec<[&str; 1]>), Withheld> {
        let flags = self.flags(sub, category, now);
        let deciding = |p: &(&ProvisionRoute, &u8)| *p.1 & (APPLIES | OVERRIDDEN) == APPLIES;
        let rules = || self.provisions.iter().zip(flags.iter());
        if rules().filter(deciding).any(|(p, _)| !p.permit) {
            return Err(Withheld::ConsentDenied);
        }
        let consent = rules()
            .filter(deciding)
            .find(|(p, _)| p.permit)
            .map(|(p, _)| p.consent)
            .ok_or(Withheld::NoConsent)?;
        let mut denied: SmallVec<[&str; 1]> = SmallVec::new();
        for (p, f) in rules() {
            if let Party::Professional(hpr) = p.party
                && !p.permit
                && f & PROFESSIONAL_APPLIES != 0
                && !denied.contains(&self.text(hpr))
            {
                denied.push(self.text(hpr));
            }
        }
        denied.sort_unstable();
        Ok((consent, denied))
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
    /// One of the patient's state records could not be applied (unreadable, invalid, or
    /// filed under another patient's key): whatever it said, nothing is delivered until a
    /// valid record replaces it. It might have been a withdrawal.
    StateInvalid,
}

impl Withheld {
    pub fn as_str(self) -> &'static str {
        match self {
            Withheld::NoSubscription => "no_subscription",
            Withheld::NotRequested => "not_requested",
            Withheld::NoConsent => "no_consent",
            Withheld::ConsentDenied => "consent_denied",
            Withheld::StateInvalid => "state_invalid",
        }
    }
}

/// A permitted delivery: to whom, under which subscription and consent.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant<'a> {
    pub subscription: &'a Subscription,
    pub consent: &'a Consent,
    /// HPR numbers (sorted) of the professionals the patient's consents deny this: the
    /// care system keeps it from them (the hub cannot see who reads inside it).
    pub professional_denies: SmallVec<[&'a str; 1]>,
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
    if state.is_some_and(PatientState::is_on_hold) {
        return Decision {
            grants: SmallVec::new(),
            withheld: smallvec![Withheld::StateInvalid],
        };
    }
    let Some(state) = state.filter(|s| !s.subscriptions.is_empty()) else {
        return Decision {
            grants: SmallVec::new(),
            withheld: smallvec![Withheld::NoSubscription],
        };
    };
    let routes = &state.routes;
    let category = category_bit(event.category);
    // Per subscriber: the subscription that wants the event, FULL preferred over MINIMAL.
    let mut wanted: SmallVec<[(&str, Option<&SubscriptionRoute>); 4]> = SmallVec::new();
    for sub in &routes.subscriptions {
        let subscriber = routes.text(sub.subscriber);
        let at = match wanted.iter().position(|(s, _)| *s == subscriber) {
            Some(at) => at,
            None => {
                wanted.push((subscriber, None));
                wanted.len() - 1
            }
        };
        let entry = &mut wanted[at].1;
        if routes.wants(sub, category, event.code, now) {
            let better = match entry {
                None => true,
                Some(current) => !current.full && sub.full,
            };
            if better {
                *entry = Some(sub);
            }
        }
    }
    let mut decision = Decision::default();
    // In subscriber id order, as the grants are documented.
    wanted.sort_unstable_by_key(|(subscriber, _)| *subscriber);
    for (_, route) in wanted {
        let Some(route) = route else {
            decision.withheld.push(Withheld::NotRequested);
            continue;
        };
        match routes.permitting(route, category, now) {
            Ok((consent, professional_denies)) => decision.grants.push(Grant {
                subscription: nth(&state.subscriptions, route.index),
                consent: nth(&state.consents, consent),
                professional_denies,
            }),
            Err(reason) => decision.withheld.push(reason),
        }
    }
    decision
}

/// The record at a position the routes were built with.
fn nth<T>(records: &BTreeMap<String, T>, index: usize) -> &T {
    records
        .values()
        .nth(index)
        .expect("the routes are rebuilt whenever the records change")
}

#[cfg(test)]
pub(crate) mod tests;
