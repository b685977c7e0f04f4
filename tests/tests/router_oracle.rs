//! Consent-first routing checked against an independent model: random interleavings of
//! consent grants, revocations and deletions, subscription changes and events, for many
//! patients, through the real broker. Every delivery and every non-delivery is checked,
//! and the audit must equal the deliveries. Part of the run has the router stopped, so
//! it routes old events after later consent changes (which must then apply).

use std::collections::{BTreeMap, BTreeSet};

use dho_schemas::model::*;
use dho_schemas::{codes, fixtures};
use dho_tests::{Stack, read_decoded, wait_routed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const GROUP: &str = "router";
const PATIENTS: u64 = 8;
const SUBSCRIBERS: [&str; 3] = ["gp", "home", "clinic"];
const CATEGORIES: [DataCategory; 3] = [
    DataCategory::Measurement,
    DataCategory::SelfReport,
    DataCategory::Alert,
];

fn org(subscriber: usize) -> OrganisationIdentifier {
    [
        fixtures::gp(),
        fixtures::home_care(),
        fixtures::lung_clinic(),
    ][subscriber]
        .clone()
}

/// The state the router should see, kept by the test from what it published.
#[derive(Default)]
struct Model {
    consents: BTreeMap<(u64, String), Consent>,
    subscriptions: BTreeMap<(u64, String), Subscription>,
}

/// What one subscriber should get for one event.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    content: ContentLevel,
    permitting_consents: BTreeSet<String>,
}

impl Model {
    /// The patient's consents and subscriptions, for a failure message.
    fn describe(&self, patient: u64) -> String {
        let consents = self.consents.iter().filter(|((p, _), _)| *p == patient);
        let subscriptions = self
            .subscriptions
            .iter()
            .filter(|((p, _), _)| *p == patient);
        let mut out = String::new();
        for (_, c) in consents {
            out += &format!("\n  consent {} {:?}:", c.consent_id, c.status);
            for p in &c.provisions {
                let actor = p.actor.as_ref().map_or("", |a| a.value.as_str());
                out += &format!(" {:?} {actor} {:?};", p.kind, p.categories);
            }
        }
        for (_, s) in subscriptions {
            out += &format!(
                "\n  subscription {} {:?} {:?} codes {:?} {:?}",
                s.subscription_id, s.status, s.categories, s.code_filter, s.content_level
            );
        }
        out
    }

    /// The rules, written independently of the router's code.
    fn entitled(
        &self,
        patient: u64,
        category: DataCategory,
        code: &str,
    ) -> BTreeMap<String, Expected> {
        let mut out = BTreeMap::new();
        for (s, name) in SUBSCRIBERS.iter().enumerate() {
            let wanting: Vec<&Subscription> = self
                .subscriptions
                .iter()
                .filter(|((p, _), sub)| *p == patient && sub.subscriber_id == *name)
                .map(|(_, sub)| sub)
                .filter(|sub| sub.status == SubscriptionStatus::Active)
                .filter(|sub| sub.categories.contains(&category))
                .filter(|sub| {
                    sub.code_filter.is_empty() || sub.code_filter.iter().any(|c| c == code)
                })
                .collect();
            if wanting.is_empty() {
                continue;
            }
            let recipient = org(s).value;
            let provisions = || {
                self.consents
                    .iter()
                    .filter(|((p, _), c)| *p == patient && c.status == ConsentStatus::Active)
                    .flat_map(|(_, c)| c.provisions.iter().map(move |p| (c, p)))
                    .filter(|(_, p)| {
                        p.actor.as_ref().is_some_and(|a| a.value == recipient)
                            && p.categories.contains(&category)
                    })
            };
            if provisions().any(|(_, p)| p.kind == ProvisionKind::Deny) {
                continue;
            }
            let permitting: BTreeSet<String> = provisions()
                .filter(|(_, p)| p.kind == ProvisionKind::Permit)
                .map(|(c, _)| c.consent_id.clone())
                .collect();
            if permitting.is_empty() {
                continue;
            }
            let content = if wanting
                .iter()
                .any(|s| s.content_level == ContentLevel::Full)
            {
                ContentLevel::Full
            } else {
                ContentLevel::Minimal
            };
            out.insert(
                name.to_string(),
                Expected {
                    content,
                    permitting_consents: permitting,
                },
            );
        }
        out
    }
}

fn random_categories(rng: &mut StdRng) -> Vec<DataCategory> {
    let cats: Vec<DataCategory> = CATEGORIES
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.6))
        .collect();
    if cats.is_empty() {
        vec![DataCategory::Measurement]
    } else {
        cats
    }
}

fn random_consent(rng: &mut StdRng, patient: u64) -> Consent {
    let id = format!("c{}", rng.random_range(0..2));
    let mut consent = fixtures::consent(&fixtures::patient(patient), &id, &[]);
    consent.status = if rng.random_bool(0.8) {
        ConsentStatus::Active
    } else {
        ConsentStatus::Inactive
    };
    consent.provisions = (0..rng.random_range(1..=3))
        .map(|_| {
            ConsentProvision::organisation(
                if rng.random_bool(0.8) {
                    ProvisionKind::Permit
                } else {
                    ProvisionKind::Deny
                },
                org(rng.random_range(0..3)),
                random_categories(rng),
            )
        })
        .collect();
    consent
}

fn random_subscription(rng: &mut StdRng, patient: u64) -> Subscription {
    let s = rng.random_range(0..3);
    let mut sub = fixtures::subscription(&fixtures::patient(patient), SUBSCRIBERS[s], &org(s));
    sub.subscription_id = format!("{}-{}", SUBSCRIBERS[s], rng.random_range(0..2));
    sub.categories = random_categories(rng);
    sub.code_filter = if rng.random_bool(0.3) {
        vec![codes::SPO2.into()]
    } else {
        vec![]
    };
    sub.content_level = if rng.random_bool(0.3) {
        ContentLevel::Minimal
    } else {
        ContentLevel::Full
    };
    sub.status = if rng.random_bool(0.85) {
        SubscriptionStatus::Active
    } else {
        SubscriptionStatus::Ended
    };
    sub
}

/// Where a record sits: topic, partition, offset.
type Position = (String, i32, i64);

struct PublishedEvent {
    source: Position,
    patient: u64,
    expected: Option<BTreeMap<String, Expected>>,
    category: DataCategory,
    code: String,
    /// When it was published and judged, and the patient's state it was judged on: what a
    /// failure needs to be read.
    published_in: usize,
    judged: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_and_non_delivery_matches_an_independent_model() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let topics = stack.settings.topics();
    let mut rng = StdRng::seed_from_u64(20261122);
    let mut model = Model::default();
    let mut events: Vec<PublishedEvent> = vec![];
    // Every patient starts with a consent and subscriptions, so entitlement is common and
    // the random changes below both grant and take away.
    for patient in 0..PATIENTS {
        let c = random_consent(&mut rng, patient);
        publisher.put_consent(&c).await.unwrap();
        model.consents.insert((patient, c.consent_id.clone()), c);
        for _ in 0..3 {
            let s = random_subscription(&mut rng, patient);
            publisher.put_subscription(&s).await.unwrap();
            model
                .subscriptions
                .insert((patient, s.subscription_id.clone()), s);
        }
    }
    let mut router = Some(stack.spawn_router(GROUP).await);

    for round in 0..16 {
        // Rounds 6 to 10 run with the router stopped: it will route their events late,
        // after all later consent changes, which must then apply.
        if round == 6 {
            router.take().unwrap().stop().await;
        }
        for _ in 0..rng.random_range(1..=5) {
            let patient = rng.random_range(0..PATIENTS);
            let p = fixtures::patient(patient);
            match rng.random_range(0..10) {
                0..=3 => {
                    let c = random_consent(&mut rng, patient);
                    publisher.put_consent(&c).await.unwrap();
                    model.consents.insert((patient, c.consent_id.clone()), c);
                }
                4 => {
                    let id = format!("c{}", rng.random_range(0..2));
                    publisher.delete_consent(&p, &id).await.unwrap();
                    model.consents.remove(&(patient, id));
                }
                5..=8 => {
                    let s = random_subscription(&mut rng, patient);
                    publisher.put_subscription(&s).await.unwrap();
                    model
                        .subscriptions
                        .insert((patient, s.subscription_id.clone()), s);
                }
                _ => {
                    let s = rng.random_range(0..3);
                    let id = format!("{}-{}", SUBSCRIBERS[s], rng.random_range(0..2));
                    publisher.delete_subscription(&p, &id).await.unwrap();
                    model.subscriptions.remove(&(patient, id));
                }
            }
        }
        // Started after this round's state changes: the backlog of rounds 6 to 10 is judged
        // on them, and a router started before them could route it first.
        if round == 11 {
            router = Some(stack.spawn_router(GROUP).await);
        }
        for _ in 0..rng.random_range(3..=8) {
            let patient = rng.random_range(0..PATIENTS);
            let p = fixtures::patient(patient);
            let at = now_millis() - 60_000;
            let (receipt, category, code) = if rng.random_bool(0.75) {
                let m = fixtures::spo2(&p, 94.0, at);
                (
                    publisher.publish_measurement(&m).await.unwrap(),
                    DataCategory::Measurement,
                    m.code,
                )
            } else {
                let r = fixtures::self_report(&p, at);
                (
                    publisher.publish_self_report(&r).await.unwrap(),
                    DataCategory::SelfReport,
                    r.questionnaire_id,
                )
            };
            events.push(PublishedEvent {
                source: (receipt.topic, receipt.partition, receipt.offset),
                patient,
                expected: None,
                category,
                code,
                published_in: round,
                judged: String::new(),
            });
        }
        if router.is_some() {
            // No state changes are published until these are routed, so the model's
            // current state is exactly what the router sees for every pending event.
            for e in events.iter_mut().filter(|e| e.expected.is_none()) {
                e.expected = Some(model.entitled(e.patient, e.category, &e.code));
                e.judged = format!("in round {round} on{}", model.describe(e.patient));
            }
            let mut last: BTreeMap<(String, i32), i64> = BTreeMap::new();
            for e in &events {
                last.insert((e.source.0.clone(), e.source.1), e.source.2);
            }
            for ((topic, partition), offset) in last {
                wait_routed(&stack.settings, GROUP, &topic, partition, offset).await;
            }
        }
    }
    router.take().unwrap().stop().await;

    let mut actual: BTreeMap<(Position, String), Vec<Delivery>> = BTreeMap::new();
    let mut delivered_ids = BTreeSet::new();
    for subscriber in SUBSCRIBERS {
        for d in read_decoded::<Delivery>(&stack.settings, &topics.deliver(subscriber)).await {
            assert!(
                delivered_ids.insert(d.delivery_id.clone()),
                "a duplicate delivery without a crash"
            );
            if d.sharing_ended.is_some() {
                // A notice that a consent change ended sharing, not a routed reading (its
                // own tests: router_sharing_ended.rs).
                continue;
            }
            let source = (d.source.topic.clone(), d.source.partition, d.source.offset);
            actual
                .entry((source, subscriber.to_string()))
                .or_default()
                .push(d);
        }
    }
    let mut checked = 0;
    let mut entitled_pairs = 0;
    for e in &events {
        let expected = e.expected.as_ref().expect("every event was evaluated");
        for subscriber in SUBSCRIBERS {
            checked += 1;
            let got = actual.remove(&(e.source.clone(), subscriber.to_string()));
            match (expected.get(subscriber), got) {
                (None, None) => {}
                (Some(want), Some(deliveries)) => {
                    entitled_pairs += 1;
                    assert_eq!(deliveries.len(), 1);
                    let d = &deliveries[0];
                    assert_eq!(
                        d.content_level, want.content,
                        "content level for {subscriber}"
                    );
                    assert!(
                        want.permitting_consents.contains(&d.consent_id),
                        "consent {} does not permit",
                        d.consent_id
                    );
                    match want.content {
                        ContentLevel::Full => {
                            assert!(d.measurement.is_some() || d.self_report.is_some())
                        }
                        ContentLevel::Minimal => {
                            assert!(
                                d.reference.is_some()
                                    && d.measurement.is_none()
                                    && d.self_report.is_none()
                            )
                        }
                    }
                }
                (Some(_), None) => panic!(
                    "{subscriber} was entitled to {:?} ({:?}, patient {}, published in round {}) but got nothing; judged {}",
                    e.source, e.category, e.patient, e.published_in, e.judged
                ),
                (None, Some(d)) => panic!(
                    "{subscriber} got {:?} ({:?}, patient {}, published in round {}) without entitlement, under consent {} and subscription {}; judged {}",
                    e.source,
                    e.category,
                    e.patient,
                    e.published_in,
                    d[0].consent_id,
                    d[0].subscription_id,
                    e.judged
                ),
            }
        }
    }
    assert!(
        actual.is_empty(),
        "deliveries of unknown sources: {:?}",
        actual.keys()
    );
    assert!(
        entitled_pairs > 10 && entitled_pairs < checked,
        "a meaningful mix: {entitled_pairs} of {checked}"
    );

    let audit: Vec<DisclosureRecord> = read_decoded(&stack.settings, &topics.audit()).await;
    let audit_ids: BTreeSet<String> = audit.iter().map(|r| r.delivery_id.clone()).collect();
    assert_eq!(
        audit.len(),
        audit_ids.len(),
        "one disclosure record per delivery"
    );
    assert_eq!(audit_ids, delivered_ids, "audit equals deliveries");
}
