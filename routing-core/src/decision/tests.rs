use super::*;
use dho_schemas::fixtures;
use proptest::prelude::*;

pub(crate) const NOW: Millis = 1_800_000_000_000;

fn state(consents: Vec<Consent>, subs: Vec<Subscription>) -> PatientState {
    let mut state = PatientState::default();
    for c in consents {
        state.set_consent(c.consent_id.clone(), Some(c));
    }
    for s in subs {
        state.set_subscription(s.subscription_id.clone(), Some(s));
    }
    state
}

fn spo2() -> EventView<'static> {
    EventView {
        category: DataCategory::Measurement,
        code: Some(dho_schemas::codes::SPO2),
    }
}

fn granted(d: &Decision<'_>) -> Vec<String> {
    d.grants
        .iter()
        .map(|g| g.subscription.subscriber_id.clone())
        .collect()
}

#[test]
fn default_is_deny() {
    let p = fixtures::patient(1);
    assert_eq!(
        decide(None, spo2(), NOW).withheld.to_vec(),
        vec![Withheld::NoSubscription]
    );
    let s = state(
        vec![],
        vec![fixtures::subscription(&p, "gp", &fixtures::gp())],
    );
    let d = decide(Some(&s), spo2(), NOW);
    assert!(d.grants.is_empty());
    assert_eq!(d.withheld.to_vec(), vec![Withheld::NoConsent]);
}

#[test]
fn consent_and_subscription_together_deliver() {
    let p = fixtures::patient(1);
    let s = state(
        vec![fixtures::consent(&p, "c1", &[fixtures::gp()])],
        vec![
            fixtures::subscription(&p, "gp", &fixtures::gp()),
            fixtures::subscription(&p, "home", &fixtures::home_care()),
        ],
    );
    let d = decide(Some(&s), spo2(), NOW);
    assert_eq!(granted(&d), vec!["gp"]);
    assert_eq!(d.grants[0].consent.consent_id, "c1");
    assert_eq!(d.withheld.to_vec(), vec![Withheld::NoConsent]);
}

#[test]
fn a_deny_provision_wins_over_any_permit() {
    let p = fixtures::patient(1);
    let mut deny = fixtures::consent(&p, "c2", &[fixtures::gp()]);
    deny.provisions[0].kind = ProvisionKind::Deny;
    let s = state(
        vec![fixtures::consent(&p, "c1", &[fixtures::gp()]), deny],
        vec![fixtures::subscription(&p, "gp", &fixtures::gp())],
    );
    assert_eq!(
        decide(Some(&s), spo2(), NOW).withheld.to_vec(),
        vec![Withheld::ConsentDenied]
    );
}

#[test]
fn inactive_consent_and_expired_provision_permit_nothing() {
    let p = fixtures::patient(1);
    let sub = fixtures::subscription(&p, "gp", &fixtures::gp());
    let mut inactive = fixtures::consent(&p, "c1", &[fixtures::gp()]);
    inactive.status = ConsentStatus::Inactive;
    let s = state(vec![inactive], vec![sub.clone()]);
    assert_eq!(
        decide(Some(&s), spo2(), NOW).withheld.to_vec(),
        vec![Withheld::NoConsent]
    );

    let mut expired = fixtures::consent(&p, "c1", &[fixtures::gp()]);
    expired.provisions[0].period_end = Some(NOW);
    let s = state(vec![expired], vec![sub]);
    assert_eq!(
        decide(Some(&s), spo2(), NOW).withheld.to_vec(),
        vec![Withheld::NoConsent]
    );
}

#[test]
fn consent_for_another_category_does_not_cover() {
    let p = fixtures::patient(1);
    let mut c = fixtures::consent(&p, "c1", &[fixtures::gp()]);
    c.provisions[0].categories = vec![DataCategory::Alert];
    let s = state(
        vec![c],
        vec![fixtures::subscription(&p, "gp", &fixtures::gp())],
    );
    assert_eq!(
        decide(Some(&s), spo2(), NOW).withheld.to_vec(),
        vec![Withheld::NoConsent]
    );
}

#[test]
fn subscription_filters_and_periods_apply() {
    let p = fixtures::patient(1);
    let consent = fixtures::consent(&p, "c1", &[fixtures::gp()]);
    let mut filtered = fixtures::subscription(&p, "gp", &fixtures::gp());
    filtered.code_filter = vec![dho_schemas::codes::BLOOD_PRESSURE.into()];
    let s = state(vec![consent.clone()], vec![filtered.clone()]);
    assert_eq!(
        decide(Some(&s), spo2(), NOW).withheld.to_vec(),
        vec![Withheld::NotRequested]
    );

    let mut ended = filtered.clone();
    ended.code_filter.clear();
    ended.status = SubscriptionStatus::Ended;
    let s = state(vec![consent.clone()], vec![ended]);
    assert_eq!(
        decide(Some(&s), spo2(), NOW).withheld.to_vec(),
        vec![Withheld::NotRequested]
    );

    let mut future = filtered;
    future.code_filter.clear();
    future.active_from = NOW + 1;
    let s = state(vec![consent], vec![future]);
    assert_eq!(
        decide(Some(&s), spo2(), NOW).withheld.to_vec(),
        vec![Withheld::NotRequested]
    );
}

#[test]
fn one_delivery_per_subscriber_preferring_full_content() {
    let p = fixtures::patient(1);
    let mut minimal = fixtures::subscription(&p, "gp", &fixtures::gp());
    minimal.subscription_id = "a-minimal".into();
    minimal.content_level = ContentLevel::Minimal;
    let mut full = fixtures::subscription(&p, "gp", &fixtures::gp());
    full.subscription_id = "b-full".into();
    let s = state(
        vec![fixtures::consent(&p, "c1", &[fixtures::gp()])],
        vec![minimal, full],
    );
    let d = decide(Some(&s), spo2(), NOW);
    assert_eq!(d.grants.len(), 1);
    assert_eq!(d.grants[0].subscription.subscription_id, "b-full");
}

fn blanket(kind: ProvisionKind) -> ConsentProvision {
    let mut p = ConsentProvision::organisation(kind, fixtures::gp(), CATS.to_vec());
    p.actor = None;
    p
}

fn professional(hpr: &str) -> ConsentProvision {
    let mut p = blanket(ProvisionKind::Deny);
    p.professional = Some(HealthProfessional {
        hpr_number: hpr.into(),
    });
    p
}

#[test]
fn a_blanket_deny_withholds_from_everyone_whatever_else_permits() {
    let p = fixtures::patient(1);
    let mut withdrawal = fixtures::consent(&p, "c2", &[]);
    withdrawal.provisions = vec![blanket(ProvisionKind::Deny)];
    let s = state(
        vec![
            fixtures::consent(&p, "c1", &[fixtures::gp(), fixtures::home_care()]),
            withdrawal,
        ],
        vec![
            fixtures::subscription(&p, "gp", &fixtures::gp()),
            fixtures::subscription(&p, "home", &fixtures::home_care()),
        ],
    );
    let d = decide(Some(&s), spo2(), NOW);
    assert!(d.grants.is_empty());
    assert_eq!(
        d.withheld.to_vec(),
        vec![Withheld::ConsentDenied, Withheld::ConsentDenied]
    );
}

#[test]
fn a_nested_deny_overrides_its_permit_where_it_applies() {
    let p = fixtures::patient(1);
    let mut c = fixtures::consent(&p, "c1", &[fixtures::gp()]);
    let mut deny = c.provisions[0].clone();
    deny.kind = ProvisionKind::Deny;
    deny.categories = vec![DataCategory::Measurement];
    deny.period_start = Some(NOW - 5);
    deny.parent = Some(0);
    c.provisions.push(deny);
    let s = state(
        vec![c],
        vec![fixtures::subscription(&p, "gp", &fixtures::gp())],
    );
    assert_eq!(
        decide(Some(&s), spo2(), NOW).withheld.to_vec(),
        vec![Withheld::ConsentDenied]
    );
    assert_eq!(granted(&decide(Some(&s), spo2(), NOW - 6)), vec!["gp"]);
    let alert = EventView {
        category: DataCategory::Alert,
        code: None,
    };
    assert_eq!(granted(&decide(Some(&s), alert, NOW)), vec!["gp"]);
}

#[test]
fn a_nested_permit_is_an_exception_to_a_blanket_deny_for_its_organisation_only() {
    let p = fixtures::patient(1);
    let mut c = fixtures::consent(&p, "c1", &[fixtures::gp()]);
    c.provisions[0].parent = Some(0);
    c.provisions.insert(0, blanket(ProvisionKind::Deny));
    let s = state(
        vec![c],
        vec![
            fixtures::subscription(&p, "gp", &fixtures::gp()),
            fixtures::subscription(&p, "home", &fixtures::home_care()),
        ],
    );
    let d = decide(Some(&s), spo2(), NOW);
    assert_eq!(granted(&d), vec!["gp"]);
    assert_eq!(d.withheld.to_vec(), vec![Withheld::ConsentDenied]);
}

#[test]
fn a_deny_for_one_professional_travels_with_the_deliveries_it_governs() {
    let p = fixtures::patient(1);
    let mut c = fixtures::consent(&p, "c1", &[fixtures::gp(), fixtures::lung_clinic()]);
    // Everywhere: 9144897. Only at the lung clinic: 1234567 (nested in its permit).
    c.provisions.push(professional("9144897"));
    let mut at_clinic = professional("1234567");
    at_clinic.parent = Some(1);
    c.provisions.push(at_clinic);
    let s = state(
        vec![c],
        vec![
            fixtures::subscription(&p, "clinic", &fixtures::lung_clinic()),
            fixtures::subscription(&p, "gp", &fixtures::gp()),
        ],
    );
    let d = decide(Some(&s), spo2(), NOW);
    assert_eq!(
        granted(&d),
        vec!["clinic", "gp"],
        "a professional's deny withholds nothing from the organisation"
    );
    assert_eq!(
        d.grants[0].professional_denies.to_vec(),
        vec!["1234567", "9144897"]
    );
    assert_eq!(d.grants[1].professional_denies.to_vec(), vec!["9144897"]);
}

// ---- Property test against an independent oracle ----

pub(crate) fn orgs() -> Vec<OrganisationIdentifier> {
    vec![
        fixtures::gp(),
        fixtures::home_care(),
        fixtures::lung_clinic(),
    ]
}

pub(crate) const CATS: [DataCategory; 3] = [
    DataCategory::Measurement,
    DataCategory::SelfReport,
    DataCategory::Alert,
];

/// Oslo midnights as FHIR dates make them, in winter (UTC+1) and in summer (UTC+2): a
/// date-only start and the instant after a date-only end.
fn oslo_midnights() -> Vec<Millis> {
    use dho_schemas::fhir::time::period_bound;
    ["2027-01-15", "2026-07-01"]
        .iter()
        .flat_map(|d| {
            [
                period_bound(d, false).unwrap(),
                period_bound(d, true).unwrap(),
            ]
        })
        .collect()
}

/// A period bound near NOW, or just around an Oslo midnight.
fn arb_bound() -> impl Strategy<Value = Option<Millis>> {
    proptest::option::of(prop_oneof![
        NOW - 10..NOW + 10,
        (proptest::sample::select(oslo_midnights()), -1i64..=1).prop_map(|(m, off)| m + off),
    ])
}

const PROFESSIONALS: [&str; 2] = ["9144897", "1234567"];

prop_compose! {
    /// Any party: one of the organisations, everyone, or a professional; nested in any
    /// earlier rule (fixed up by `arb_consent`), or not.
    fn arb_provision()(kind in any::<bool>(), party in 0usize..6, cats in proptest::sample::subsequence(CATS.to_vec(), 0..=3),
                       start in arb_bound(), end in arb_bound(),
                       nested in proptest::option::of(any::<proptest::sample::Index>())) -> (ConsentProvision, Option<proptest::sample::Index>) {
        let kind = if kind { ProvisionKind::Permit } else { ProvisionKind::Deny };
        let mut p = ConsentProvision::organisation(kind, orgs()[party % 3].clone(), cats);
        if party >= 3 {
            p.actor = None;
        }
        if party >= 4 {
            p.professional = Some(HealthProfessional { hpr_number: PROFESSIONALS[party - 4].into() });
        }
        p.period_start = start;
        p.period_end = end;
        (p, nested)
    }
}

prop_compose! {
    pub(crate) fn arb_consent()(id in 0u8..4, active in any::<bool>(), provisions in proptest::collection::vec(arb_provision(), 0..5)) -> Consent {
        let mut c = fixtures::consent(&fixtures::patient(1), &format!("c{id}"), &[]);
        c.status = if active { ConsentStatus::Active } else { ConsentStatus::Inactive };
        c.provisions = provisions
            .into_iter()
            .enumerate()
            .map(|(i, (mut p, nested))| {
                p.parent = nested.filter(|_| i > 0).map(|at| at.index(i) as i32);
                p
            })
            .collect();
        c
    }
}

/// The times worth deciding at: NOW, and each of the state's period edges, each -1, 0, +1.
fn edges(consents: &[Consent]) -> Vec<Millis> {
    let mut at = vec![NOW];
    for p in consents.iter().flat_map(|c| &c.provisions) {
        at.extend(p.period_start.into_iter().chain(p.period_end));
    }
    at
}

prop_compose! {
    fn arb_subscription()(id in 0u8..5, who in 0usize..3, cats in proptest::sample::subsequence(CATS.to_vec(), 1..=3),
                          filter in any::<bool>(), active in any::<bool>(), from in NOW - 10..NOW + 10, minimal in any::<bool>()) -> Subscription {
        let org = orgs()[who].clone();
        let mut s = fixtures::subscription(&fixtures::patient(1), ["gp", "home", "clinic"][who], &org);
        s.subscription_id = format!("s{id}");
        s.categories = cats;
        s.code_filter = if filter { vec![dho_schemas::codes::BLOOD_PRESSURE.into()] } else { vec![] };
        s.status = if active { SubscriptionStatus::Active } else { SubscriptionStatus::Ended };
        s.active_from = from;
        s.content_level = if minimal { ContentLevel::Minimal } else { ContentLevel::Full };
        s
    }
}

/// The rules written a second way: per organisation, walking up from each rule to the top.
/// A rule decides if every rule on its way up speaks about the organisation and none nested
/// directly in it does too.
fn oracle(
    consents: &[Consent],
    subs: &[Subscription],
    cat: DataCategory,
    code: &str,
    now: Millis,
) -> std::collections::BTreeSet<String> {
    let mut permitted = vec![];
    let mut denied = vec![];
    for org in orgs() {
        for c in consents
            .iter()
            .filter(|c| c.status == ConsentStatus::Active)
        {
            let rules = &c.provisions;
            let chain = |mut i: usize| loop {
                if !rules[i].covers(&org, cat, now) {
                    break false;
                }
                match rules[i].parent {
                    Some(up) => i = up as usize,
                    None => break true,
                }
            };
            for (i, p) in rules.iter().enumerate() {
                let decides = chain(i)
                    && !(0..rules.len()).any(|j| rules[j].parent == Some(i as i32) && chain(j));
                match (decides, p.kind) {
                    (true, ProvisionKind::Permit) => permitted.push(org.value.clone()),
                    (true, ProvisionKind::Deny) => denied.push(org.value.clone()),
                    (false, _) => {}
                }
            }
        }
    }
    subs.iter()
        .filter(|s| s.wants(cat, Some(code), now))
        .filter(|s| {
            permitted.contains(&s.subscriber_org.value) && !denied.contains(&s.subscriber_org.value)
        })
        .map(|s| s.subscriber_id.clone())
        .collect()
}

proptest! {
    #[test]
    fn decision_matches_the_oracle(consents in proptest::collection::vec(arb_consent(), 0..4),
                                   subs in proptest::collection::vec(arb_subscription(), 0..5),
                                   cat in 0usize..3, bp in any::<bool>(),
                                   edge in any::<proptest::sample::Index>(), off in -1i64..=1) {
        let code = if bp { dho_schemas::codes::BLOOD_PRESSURE } else { dho_schemas::codes::SPO2 };
        let s = state(consents.clone(), subs.clone());
        // Later duplicates of an id replace earlier ones, as on a compacted topic.
        let consents: Vec<Consent> = s.consents().values().cloned().collect();
        let subs: Vec<Subscription> = s.subscriptions().values().cloned().collect();
        let at = edges(&consents);
        let now = at[edge.index(at.len())] + off;
        let d = decide(Some(&s), EventView { category: CATS[cat], code: Some(code) }, now);
        let got: std::collections::BTreeSet<String> = granted(&d).into_iter().collect();
        prop_assert_eq!(got.len(), d.grants.len(), "one delivery per subscriber");
        prop_assert_eq!(got, oracle(&consents, &subs, CATS[cat], code, now));
        for g in &d.grants {
            prop_assert_eq!(g.consent.status, ConsentStatus::Active);
        }
    }
}

/// What one consent says to `recipient` about `category` at `now`, as FHIR nests it: a rule
/// that speaks about it defers to its nested rules that do (a deny among them wins), and
/// decides itself if none does.
fn verdict(
    consent: &Consent,
    parent: Option<usize>,
    recipient: &OrganisationIdentifier,
    category: DataCategory,
    now: Millis,
) -> Option<ProvisionKind> {
    let mut said = None;
    for (i, p) in consent.provisions.iter().enumerate() {
        if p.parent.map(|at| at as usize) != parent || !p.covers(recipient, category, now) {
            continue;
        }
        let kind = verdict(consent, Some(i), recipient, category, now).unwrap_or(p.kind);
        if said != Some(ProvisionKind::Deny) {
            said = Some(kind);
        }
    }
    said
}

/// The professionals one consent denies `category` at `now` wherever `recipient` receives
/// it: rules about a professional, in force, nested only in rules that apply to the
/// recipient or in rules about a professional that hold the same way.
fn professional_denies<'c>(
    consent: &'c Consent,
    recipient: &OrganisationIdentifier,
    category: DataCategory,
    now: Millis,
) -> Vec<&'c str> {
    let rules = &consent.provisions;
    fn applies(
        rules: &[ConsentProvision],
        i: usize,
        to: &OrganisationIdentifier,
        c: DataCategory,
        now: Millis,
    ) -> bool {
        rules[i].covers(to, c, now)
            && rules[i]
                .parent
                .is_none_or(|up| applies(rules, up as usize, to, c, now))
    }
    fn holds(
        rules: &[ConsentProvision],
        i: usize,
        to: &OrganisationIdentifier,
        c: DataCategory,
        now: Millis,
    ) -> bool {
        rules[i].professional.is_some()
            && rules[i].in_force(c, now)
            && rules[i].parent.is_none_or(|up| {
                applies(rules, up as usize, to, c, now) || holds(rules, up as usize, to, c, now)
            })
    }
    rules
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            p.kind == ProvisionKind::Deny && holds(rules, *i, recipient, category, now)
        })
        .filter_map(|(_, p)| p.professional.as_ref().map(|h| h.hpr_number.as_str()))
        .collect()
}

/// The decision as it was written before `Routes`: straight from the records. The routes
/// must decide exactly as this does, grant for grant and reason for reason.
fn reference_decide<'a>(
    state: &'a PatientState,
    event: EventView<'_>,
    now: Millis,
) -> Decision<'a> {
    if state.subscriptions().is_empty() {
        return Decision {
            grants: SmallVec::new(),
            withheld: smallvec![Withheld::NoSubscription],
        };
    }
    let mut wanted: Vec<(&str, Option<&Subscription>)> = Vec::new();
    for sub in state.subscriptions().values() {
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
    wanted.sort_by_key(|(subscriber, _)| *subscriber);
    let mut decision = Decision::default();
    for (_, subscription) in wanted {
        let Some(subscription) = subscription else {
            decision.withheld.push(Withheld::NotRequested);
            continue;
        };
        let recipient = &subscription.subscriber_org;
        let active = || {
            state
                .consents()
                .values()
                .filter(|c| c.status == ConsentStatus::Active)
        };
        let says = |c: &Consent, kind: ProvisionKind| {
            verdict(c, None, recipient, event.category, now) == Some(kind)
        };
        if active().any(|c| says(c, ProvisionKind::Deny)) {
            decision.withheld.push(Withheld::ConsentDenied);
        } else if let Some(consent) = active().find(|c| says(c, ProvisionKind::Permit)) {
            let mut denies: Vec<&str> = vec![];
            for c in active() {
                denies.extend(professional_denies(c, recipient, event.category, now));
            }
            denies.sort();
            denies.dedup();
            decision.grants.push(Grant {
                subscription,
                consent,
                professional_denies: denies.into_iter().collect(),
            });
        } else {
            decision.withheld.push(Withheld::NoConsent);
        }
    }
    decision
}

#[derive(Debug, Clone)]
enum Change {
    Consent(Consent),
    ConsentRemoved(u8),
    Subscription(Subscription),
    SubscriptionRemoved(u8),
}

/// Changes that grant often (active records, permits, wide categories), so that which
/// subscription and which consent a grant names is checked, not only that nothing is granted.
fn arb_change() -> impl Strategy<Value = Change> {
    let consent = (
        arb_consent(),
        0u8..10,
        proptest::collection::vec(0u8..10, 4),
    )
        .prop_map(|(mut c, active, permits)| {
            if active < 8 {
                c.status = ConsentStatus::Active;
            }
            for (p, permit) in c.provisions.iter_mut().zip(permits) {
                if permit < 7 {
                    p.kind = ProvisionKind::Permit;
                }
                if permit % 2 == 0 {
                    p.categories = CATS.to_vec();
                }
            }
            c
        });
    let until = proptest::option::of(NOW - 10..NOW + 10);
    let subscription = (arb_subscription(), until, 0u8..10).prop_map(|(mut s, until, odds)| {
        s.active_until = until;
        if odds < 8 {
            s.status = SubscriptionStatus::Active;
        }
        if odds < 6 {
            s.active_from = NOW - 20;
            s.categories = CATS.to_vec();
            s.code_filter.clear();
        }
        Change::Subscription(s)
    });
    prop_oneof![
        4 => consent.prop_map(Change::Consent),
        1 => (0u8..4).prop_map(Change::ConsentRemoved),
        4 => subscription,
        1 => (0u8..5).prop_map(Change::SubscriptionRemoved),
    ]
}

proptest! {
    // Cheap cases, and the edges that matter (a grant at a period's edge) are a few in a
    // hundred: more than the default 256.
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// The routes after any sequence of changes (the setters rebuild them) decide as the
    /// records do, for every category, with and without a code, at times around the
    /// periods' edges.
    #[test]
    fn routes_decide_as_the_records_do(changes in proptest::collection::vec(arb_change(), 0..16),
                                       cat in 0usize..3, code in 0usize..3,
                                       edge in any::<proptest::sample::Index>(), off in -1i64..=1) {
        let mut s = PatientState::default();
        for change in changes {
            match change {
                Change::Consent(c) => s.set_consent(c.consent_id.clone(), Some(c)),
                Change::ConsentRemoved(id) => s.set_consent(format!("c{id}"), None),
                Change::Subscription(sub) => s.set_subscription(sub.subscription_id.clone(), Some(sub)),
                Change::SubscriptionRemoved(id) => s.set_subscription(format!("s{id}"), None),
            }
        }
        // At, just before or just after one of the state's own period edges: where a `<`
        // written as `<=` would show.
        let mut edges = vec![NOW];
        for c in s.consents().values() {
            for p in &c.provisions {
                edges.extend(p.period_start.into_iter().chain(p.period_end));
            }
        }
        for sub in s.subscriptions().values() {
            edges.extend(std::iter::once(sub.active_from).chain(sub.active_until));
        }
        let at = edges[edge.index(edges.len())] + off;
        let code = [None, Some(dho_schemas::codes::SPO2), Some(dho_schemas::codes::BLOOD_PRESSURE)][code];
        let event = EventView { category: CATS[cat], code };
        let ids = |d: &Decision<'_>| {
            let grants: Vec<(String, String, Vec<String>)> = d
                .grants
                .iter()
                .map(|g| (
                    g.subscription.subscription_id.clone(),
                    g.consent.consent_id.clone(),
                    g.professional_denies.iter().map(|h| h.to_string()).collect(),
                ))
                .collect();
            (grants, d.withheld.to_vec())
        };
        prop_assert_eq!(ids(&decide(Some(&s), event, at)), ids(&reference_decide(&s, event, at)));
    }
}
