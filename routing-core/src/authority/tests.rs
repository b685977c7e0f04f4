use super::*;
use crate::decision::tests::{CATS, NOW, arb_consent, orgs};
use dho_schemas::fixtures;
use proptest::prelude::*;

const DAY: Millis = 86_400_000;

fn org(o: &OrganisationIdentifier) -> Organisation {
    (o.system, o.value.clone())
}

fn records(consents: Vec<Consent>) -> BTreeMap<String, Consent> {
    consents
        .into_iter()
        .map(|c| (c.consent_id.clone(), c))
        .collect()
}

fn deny(id: &str, actor: Option<OrganisationIdentifier>) -> Consent {
    let p = fixtures::patient(1);
    let mut c = fixtures::consent(&p, id, &[fixtures::gp()]);
    c.provisions[0].kind = ProvisionKind::Deny;
    c.provisions[0].actor = actor;
    c
}

#[test]
fn a_permit_widens_for_its_organisation_only() {
    let p = fixtures::patient(1);
    let gp = fixtures::consent(&p, "c1", &[fixtures::gp()]);
    let both = fixtures::consent(&p, "c2", &[fixtures::lung_clinic()]);
    let effect = judge(&records(vec![gp.clone()]), &records(vec![gp, both]), NOW);
    assert!(!effect.only_narrows());
    assert_eq!(
        effect.widened,
        BTreeSet::from([org(&fixtures::lung_clinic())])
    );
    assert!(!effect.widened_for_others);
    assert!(effect.narrowed.is_empty());
}

#[test]
fn a_deny_of_ones_own_access_narrows_only_that_organisation() {
    let p = fixtures::patient(1);
    let permits = fixtures::consent(&p, "c1", &[fixtures::gp(), fixtures::lung_clinic()]);
    let effect = judge(
        &records(vec![permits.clone()]),
        &records(vec![permits, deny("d1", Some(fixtures::gp()))]),
        NOW,
    );
    assert!(effect.only_narrows());
    assert!(effect.narrows_only(&fixtures::gp()));
    assert!(!effect.narrows_only(&fixtures::lung_clinic()));
}

#[test]
fn a_deny_naming_another_organisation_narrows_that_one() {
    let p = fixtures::patient(1);
    let permits = fixtures::consent(&p, "c1", &[fixtures::gp(), fixtures::lung_clinic()]);
    let effect = judge(
        &records(vec![permits.clone()]),
        &records(vec![permits, deny("d1", Some(fixtures::lung_clinic()))]),
        NOW,
    );
    assert!(effect.only_narrows());
    assert!(!effect.narrows_only(&fixtures::gp()));
}

#[test]
fn a_blanket_deny_narrows_everyone_it_covers() {
    let p = fixtures::patient(1);
    let permits = fixtures::consent(&p, "c1", &[fixtures::gp(), fixtures::lung_clinic()]);
    let effect = judge(
        &records(vec![permits.clone()]),
        &records(vec![permits, deny("d1", None)]),
        NOW,
    );
    assert!(effect.only_narrows());
    assert_eq!(effect.narrowed.len(), 2);
    assert!(!effect.narrows_only(&fixtures::gp()));
}

#[test]
fn inactivating_or_deleting_a_deny_widens() {
    let p = fixtures::patient(1);
    let permits = fixtures::consent(&p, "c1", &[fixtures::gp()]);
    let own_deny = deny("d1", Some(fixtures::gp()));
    let mut inactive = own_deny.clone();
    inactive.status = ConsentStatus::Inactive;
    let before = records(vec![permits.clone(), own_deny]);
    for after in [
        records(vec![permits.clone(), inactive]),
        records(vec![permits]),
    ] {
        let effect = judge(&before, &after, NOW);
        assert!(!effect.only_narrows());
        assert_eq!(effect.widened, BTreeSet::from([org(&fixtures::gp())]));
    }
}

#[test]
fn shortening_a_deny_widens_from_its_new_end() {
    let p = fixtures::patient(1);
    let permits = fixtures::consent(&p, "c1", &[fixtures::gp()]);
    let mut long = deny("d1", Some(fixtures::gp()));
    long.provisions[0].period_end = Some(NOW + 30 * DAY);
    let mut short = long.clone();
    short.provisions[0].period_end = Some(NOW + 10 * DAY);
    let effect = judge(
        &records(vec![permits.clone(), long.clone()]),
        &records(vec![permits.clone(), short.clone()]),
        NOW,
    );
    assert!(!effect.only_narrows(), "shorter: {effect:?}");
    // And lengthening it narrows.
    let effect = judge(
        &records(vec![permits.clone(), short]),
        &records(vec![permits, long]),
        NOW,
    );
    assert!(effect.only_narrows(), "longer: {effect:?}");
}

#[test]
fn a_change_that_only_matters_in_the_past_changes_nothing() {
    let p = fixtures::patient(1);
    let permits = fixtures::consent(&p, "c1", &[fixtures::gp()]);
    let mut ended = deny("d1", Some(fixtures::gp()));
    ended.provisions[0].period_end = Some(NOW - DAY);
    let effect = judge(
        &records(vec![permits.clone(), ended]),
        &records(vec![permits]),
        NOW,
    );
    assert!(effect.is_none(), "{effect:?}");
}

#[test]
fn a_blanket_permit_widens_for_organisations_nobody_named() {
    let p = fixtures::patient(1);
    let mut blanket = fixtures::consent(&p, "c1", &[fixtures::gp()]);
    blanket.provisions[0].actor = None;
    let effect = judge(&BTreeMap::new(), &records(vec![blanket]), NOW);
    assert!(effect.widened_for_others);
}

#[test]
fn removing_a_professional_deny_widens_for_the_organisation() {
    let p = fixtures::patient(1);
    let mut c = fixtures::consent(&p, "c1", &[fixtures::gp()]);
    let mut nested = c.provisions[0].clone();
    nested.kind = ProvisionKind::Deny;
    nested.actor = None;
    nested.professional = Some(HealthProfessional {
        hpr_number: "9144889".into(),
    });
    nested.parent = Some(0);
    let before = {
        let mut c = c.clone();
        c.provisions.push(nested);
        c
    };
    c.consent_id = before.consent_id.clone();
    let effect = judge(
        &records(vec![before.clone()]),
        &records(vec![c.clone()]),
        NOW,
    );
    assert_eq!(effect.widened, BTreeSet::from([org(&fixtures::gp())]));
    // The other way the professional loses access: a narrowing.
    let effect = judge(&records(vec![c]), &records(vec![before]), NOW);
    assert!(effect.only_narrows());
    assert!(effect.narrows_only(&fixtures::gp()));
}

#[test]
fn a_redundant_change_changes_nothing() {
    let p = fixtures::patient(1);
    let permits = fixtures::consent(&p, "c1", &[fixtures::gp()]);
    let mut again = fixtures::consent(&p, "c2", &[fixtures::gp()]);
    again.recorded_by = fixtures::gp();
    let effect = judge(
        &records(vec![permits.clone()]),
        &records(vec![permits, again]),
        NOW,
    );
    assert!(effect.is_none());
}

/// Per organisation (the three named ones and one nobody names), category and instant:
/// what the decision grants, with the professionals denied.
fn grants(consents: &BTreeMap<String, Consent>, at: Millis) -> Vec<Option<Vec<String>>> {
    let mut who = orgs();
    who.push(OrganisationIdentifier::orgnr(
        fixtures::orgnr(97_000_001),
        "Nobody named",
    ));
    let mut state = PatientState::default();
    for (id, c) in consents {
        state.set_consent(id.clone(), Some(c.clone()));
    }
    for (i, org) in who.iter().enumerate() {
        state.set_subscription(
            format!("s{i}"),
            Some(probe_subscription(org.system, &org.value)),
        );
    }
    let mut out = vec![];
    for category in CATS {
        let d = decide(
            Some(&state),
            crate::decision::EventView {
                category,
                code: None,
            },
            at,
        );
        for org in &who {
            let sub = format!("{:?}:{}", org.system, org.value);
            out.push(
                d.grants
                    .iter()
                    .find(|g| g.subscription.subscriber_id == sub)
                    .map(|g| {
                        g.professional_denies
                            .iter()
                            .map(|s| s.to_string())
                            .collect()
                    }),
            );
        }
    }
    out
}

/// Whether `after` allows something `before` did not, at `at`.
fn wider(before: &[Option<Vec<String>>], after: &[Option<Vec<String>>]) -> bool {
    before.iter().zip(after).any(|(b, a)| match (b, a) {
        (None, Some(_)) => true,
        (Some(b), Some(a)) => b.iter().any(|hpr| !a.contains(hpr)),
        _ => false,
    })
}

proptest! {
    /// The judge agrees with the decision sampled at every boundary and either side of it:
    /// a change it calls narrowing allows nothing new anywhere from now on, and one it calls
    /// widening allows something new somewhere.
    #[test]
    fn the_judge_agrees_with_the_decision_at_every_instant_from_now(
        before in proptest::collection::vec(arb_consent(), 0..3),
        change in arb_consent(),
        delete in any::<bool>(),
    ) {
        let before: BTreeMap<String, Consent> =
            before.into_iter().map(|c| (c.consent_id.clone(), c)).collect();
        let mut after = before.clone();
        if delete {
            after.remove(&change.consent_id);
        } else {
            after.insert(change.consent_id.clone(), change);
        }
        let effect = judge(&before, &after, NOW);
        let mut instants = vec![NOW];
        for p in before.values().chain(after.values()).flat_map(|c| &c.provisions) {
            for t in [p.period_start, p.period_end].into_iter().flatten() {
                instants.extend([t - 1, t, t + 1]);
            }
        }
        let widened_somewhere = instants
            .iter()
            .filter(|&&t| t >= NOW)
            .any(|&t| wider(&grants(&before, t), &grants(&after, t)));
        prop_assert_eq!(!effect.only_narrows(), widened_somewhere, "{:?}", effect);
    }
}
