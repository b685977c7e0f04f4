use super::*;
use crate::state::PartitionState;
use dho_schemas::fixtures;
use dho_schemas::topics::state_key;

const NOW: Millis = 1_767_225_600_000;
const ALL: [DataCategory; 3] = [
    DataCategory::Measurement,
    DataCategory::SelfReport,
    DataCategory::Alert,
];

fn orgs() -> [(&'static str, OrganisationIdentifier); 3] {
    [
        ("gp", fixtures::gp()),
        ("home", fixtures::home_care()),
        ("lung", fixtures::lung_clinic()),
    ]
}

/// A patient with a blanket permit (`c-blanket`, everyone, every category) and each of the
/// three organisations subscribed to everything.
fn patient() -> (PatientIdentifier, PatientState) {
    let p = fixtures::patient(1);
    let mut state = PatientState::default();
    for (subscriber, org) in orgs() {
        state.set_subscription(
            format!("s-{subscriber}"),
            Some(fixtures::subscription(&p, subscriber, &org)),
        );
    }
    state.set_consent("c-blanket".into(), Some(blanket(&p)));
    (p, state)
}

fn blanket(p: &PatientIdentifier) -> Consent {
    let mut c = fixtures::consent(p, "c-blanket", &[]);
    c.provisions = vec![ConsentProvision {
        actor: None,
        ..ConsentProvision::organisation(ProvisionKind::Permit, fixtures::gp(), ALL.to_vec())
    }];
    c
}

fn deny(
    p: &PatientIdentifier,
    org: OrganisationIdentifier,
    categories: &[DataCategory],
) -> Consent {
    let mut c = fixtures::consent(p, "c-deny", &[]);
    c.provisions = vec![ConsentProvision::organisation(
        ProvisionKind::Deny,
        org,
        categories.to_vec(),
    )];
    c
}

fn snapshot(state: &PatientState) -> SharingSnapshot {
    SharingSnapshot {
        consents: state.consents().clone(),
        consents_offset: 0,
    }
}

/// Who lost what, by subscriber id.
fn ended(judged: Judged) -> Vec<(String, Vec<DataCategory>)> {
    match judged {
        Judged::Changed(ended) => ended
            .into_iter()
            .map(|e| {
                (
                    e.subscription.subscriber_id,
                    e.categories.into_iter().collect(),
                )
            })
            .collect(),
        other => panic!("expected a change, got {other:?}"),
    }
}

#[test]
fn a_deny_for_one_organisation_ends_exactly_its_sharing() {
    let (p, mut state) = patient();
    let before = snapshot(&state);
    state.set_consent("c-deny".into(), Some(deny(&p, fixtures::home_care(), &ALL)));
    assert_eq!(
        ended(judge(&before, &state, NOW)),
        vec![("home".to_string(), ALL.to_vec())]
    );
}

#[test]
fn a_deny_of_one_category_names_only_that_category() {
    let (p, mut state) = patient();
    let before = snapshot(&state);
    state.set_consent(
        "c-deny".into(),
        Some(deny(&p, fixtures::gp(), &[DataCategory::Alert])),
    );
    assert_eq!(
        ended(judge(&before, &state, NOW)),
        vec![("gp".to_string(), vec![DataCategory::Alert])]
    );
}

#[test]
fn withdrawing_a_blanket_permit_ends_every_subscriber_s_sharing() {
    for withdraw in ["inactive", "deleted"] {
        let (p, mut state) = patient();
        let before = snapshot(&state);
        let mut withdrawn = blanket(&p);
        withdrawn.status = ConsentStatus::Inactive;
        let value = (withdraw == "inactive").then_some(withdrawn);
        state.set_consent("c-blanket".into(), value);
        let subscribers: Vec<String> = ended(judge(&before, &state, NOW))
            .into_iter()
            .map(|(s, categories)| {
                assert_eq!(categories, ALL.to_vec());
                s
            })
            .collect();
        assert_eq!(subscribers, ["gp", "home", "lung"], "{withdraw}");
    }
}

#[test]
fn a_subscription_its_owner_ended_ends_nothing() {
    let (p, mut state) = patient();
    let before = snapshot(&state);
    let mut sub = fixtures::subscription(&p, "lung", &fixtures::lung_clinic());
    sub.status = SubscriptionStatus::Ended;
    state.set_subscription("s-lung".into(), Some(sub));
    assert_eq!(judge(&before, &state, NOW), Judged::Unchanged);
    // Even with a deny for it recorded at the same time: it asked for nothing any more.
    state.set_consent(
        "c-deny".into(),
        Some(deny(&p, fixtures::lung_clinic(), &ALL)),
    );
    assert_eq!(ended(judge(&before, &state, NOW)), vec![]);
    // Deleted altogether, likewise.
    state.set_subscription("s-lung".into(), None);
    assert_eq!(ended(judge(&before, &state, NOW)), vec![]);
}

#[test]
fn a_permit_running_out_is_no_narrowing() {
    let (p, mut state) = patient();
    let mut expiring = fixtures::consent(&p, "c-blanket", &[fixtures::gp()]);
    expiring.provisions[0].period_end = Some(NOW - 1);
    state.set_consent("c-blanket".into(), Some(expiring));
    state.set_consent(
        "c-home".into(),
        Some(fixtures::consent(&p, "c-home", &[fixtures::home_care()])),
    );
    let before = snapshot(&state);
    // An unrelated change after the gp's permit ran out: the gp's flow ended with time,
    // not with this change.
    let mut more = fixtures::consent(&p, "c-lung", &[fixtures::lung_clinic()]);
    more.recorded_at = NOW;
    state.set_consent("c-lung".into(), Some(more));
    assert_eq!(ended(judge(&before, &state, NOW)), vec![]);
}

#[test]
fn a_widening_ends_nothing_and_the_same_consents_are_unchanged() {
    let (p, state) = patient();
    assert_eq!(judge(&snapshot(&state), &state, NOW), Judged::Unchanged);
    let mut narrow = state.clone();
    narrow.set_consent(
        "c-blanket".into(),
        Some(fixtures::consent(&p, "c-blanket", &[fixtures::gp()])),
    );
    let before = snapshot(&narrow);
    assert_eq!(ended(judge(&before, &state, NOW)), vec![]);
}

#[test]
fn a_patient_on_hold_is_judged_once_released() {
    let p = fixtures::patient(1);
    let (_, patient_state) = patient();
    let before = snapshot(&patient_state);
    let mut partition = PartitionState::default();
    for (id, sub) in patient_state.subscriptions() {
        partition.apply_subscription(&state_key(&p, id), Some(sub.clone()));
    }
    partition.apply_consent(&state_key(&p, "c-blanket"), Some(blanket(&p)));
    // A consent record that could not be applied: a withdrawal, perhaps.
    partition.hold(crate::state::StateKind::Consent, &state_key(&p, "c-deny"));
    partition.apply_consent(&state_key(&p, "c-blanket"), None);
    let held = partition.patient(p.key()).unwrap();
    assert_eq!(judge(&before, held, NOW), Judged::OnHold);
    partition.apply_consent(&state_key(&p, "c-deny"), None);
    let released = partition.patient(p.key()).unwrap();
    assert_eq!(ended(judge(&before, released, NOW)).len(), 3);
}

#[test]
fn a_subscriber_filtering_codes_loses_what_it_filtered_for() {
    let (p, mut state) = patient();
    let mut sub = fixtures::subscription(&p, "lung", &fixtures::lung_clinic());
    sub.code_filter = vec!["59408-5".into()];
    sub.categories = vec![DataCategory::Measurement];
    state.set_subscription("s-lung".into(), Some(sub));
    let before = snapshot(&state);
    state.set_consent(
        "c-deny".into(),
        Some(deny(&p, fixtures::lung_clinic(), &ALL)),
    );
    assert_eq!(
        ended(judge(&before, &state, NOW)),
        vec![("lung".to_string(), vec![DataCategory::Measurement])]
    );
}

#[test]
fn an_older_snapshot_never_replaces_a_newer_one() {
    let p = fixtures::patient(1);
    let key = snapshot_key(p.key());
    assert!(is_snapshot_key(&key));
    assert!(!is_snapshot_key(&state_key(&p, "59408-5")));
    let mut partition = PartitionState::default();
    let newer = SharingSnapshot {
        consents_offset: 9,
        ..SharingSnapshot::default()
    };
    partition.apply_sharing(&key, Some(newer.clone()));
    partition.apply_sharing(
        &key,
        Some(SharingSnapshot {
            consents_offset: 3,
            ..SharingSnapshot::default()
        }),
    );
    assert_eq!(partition.sharing(p.key()), Some(&newer));
    // JSON round trip, as the alert-state topic stores it.
    let (_, state) = patient();
    let stored = snapshot(&state);
    let back: SharingSnapshot =
        serde_json::from_slice(&serde_json::to_vec(&stored).unwrap()).unwrap();
    assert_eq!(back, stored);
    partition.remove_own(&key);
    assert_eq!(partition.sharing(p.key()), None);
}
