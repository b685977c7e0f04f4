use super::*;
use dho_schemas::fixtures;
use proptest::prelude::*;

const NOW: Millis = 1_800_000_000_000;

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

// ---- Property test against an independent oracle ----

fn orgs() -> Vec<OrganisationIdentifier> {
    vec![
        fixtures::gp(),
        fixtures::home_care(),
        fixtures::lung_clinic(),
    ]
}

const CATS: [DataCategory; 3] = [
    DataCategory::Measurement,
    DataCategory::SelfReport,
    DataCategory::Alert,
];

prop_compose! {
    fn arb_provision()(kind in any::<bool>(), actor in 0usize..3, cats in proptest::sample::subsequence(CATS.to_vec(), 0..=3),
                       start in proptest::option::of(NOW - 10..NOW + 10), end in proptest::option::of(NOW - 10..NOW + 10)) -> ConsentProvision {
        ConsentProvision {
            kind: if kind { ProvisionKind::Permit } else { ProvisionKind::Deny },
            actor: orgs()[actor].clone(), categories: cats, period_start: start, period_end: end,
        }
    }
}

prop_compose! {
    fn arb_consent()(id in 0u8..4, active in any::<bool>(), provisions in proptest::collection::vec(arb_provision(), 0..4)) -> Consent {
        let mut c = fixtures::consent(&fixtures::patient(1), &format!("c{id}"), &[]);
        c.status = if active { ConsentStatus::Active } else { ConsentStatus::Inactive };
        c.provisions = provisions;
        c
    }
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

/// The rules written a second way: sets of (org, category) permitted and denied.
fn oracle(
    consents: &[Consent],
    subs: &[Subscription],
    cat: DataCategory,
    code: &str,
) -> std::collections::BTreeSet<String> {
    let in_period = |p: &ConsentProvision| {
        p.period_start.is_none_or(|s| s <= NOW) && p.period_end.is_none_or(|e| NOW < e)
    };
    let mut permitted = vec![];
    let mut denied = vec![];
    for c in consents
        .iter()
        .filter(|c| c.status == ConsentStatus::Active)
    {
        for p in c
            .provisions
            .iter()
            .filter(|p| in_period(p) && p.categories.contains(&cat))
        {
            match p.kind {
                ProvisionKind::Permit => permitted.push(p.actor.value.clone()),
                ProvisionKind::Deny => denied.push(p.actor.value.clone()),
            }
        }
    }
    subs.iter()
        .filter(|s| s.status == SubscriptionStatus::Active && s.active_from <= NOW)
        .filter(|s| s.categories.contains(&cat))
        .filter(|s| s.code_filter.is_empty() || s.code_filter.iter().any(|c| c == code))
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
                                   cat in 0usize..3, bp in any::<bool>()) {
        let code = if bp { dho_schemas::codes::BLOOD_PRESSURE } else { dho_schemas::codes::SPO2 };
        let s = state(consents.clone(), subs.clone());
        // Later duplicates of an id replace earlier ones, as on a compacted topic.
        let consents: Vec<Consent> = s.consents().values().cloned().collect();
        let subs: Vec<Subscription> = s.subscriptions().values().cloned().collect();
        let d = decide(Some(&s), EventView { category: CATS[cat], code: Some(code) }, NOW);
        let got: std::collections::BTreeSet<String> = granted(&d).into_iter().collect();
        prop_assert_eq!(got.len(), d.grants.len(), "one delivery per subscriber");
        prop_assert_eq!(got, oracle(&consents, &subs, CATS[cat], code));
        for g in &d.grants {
            prop_assert_eq!(g.consent.status, ConsentStatus::Active);
        }
    }
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
        let covered = |c: &Consent, kind: ProvisionKind| {
            c.provisions
                .iter()
                .any(|p| p.kind == kind && p.covers(recipient, event.category, now))
        };
        if active().any(|c| covered(c, ProvisionKind::Deny)) {
            decision.withheld.push(Withheld::ConsentDenied);
        } else if let Some(consent) = active().find(|c| covered(c, ProvisionKind::Permit)) {
            decision.grants.push(Grant {
                subscription,
                consent,
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
            let grants: Vec<(String, String)> = d
                .grants
                .iter()
                .map(|g| (g.subscription.subscription_id.clone(), g.consent.consent_id.clone()))
                .collect();
            (grants, d.withheld.to_vec())
        };
        prop_assert_eq!(ids(&decide(Some(&s), event, at)), ids(&reference_decide(&s, event, at)));
    }
}
