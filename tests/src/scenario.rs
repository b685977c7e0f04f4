//! A traffic scenario shared by the router's robustness tests (crash, scale-out): patients
//! who all consent to home care and, for even patients only, to the GP; a steady stream of
//! readings; and the check that what arrived is exactly what was entitled.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dho_kafka::KafkaSettings;
use dho_publisher::{Publisher, Receipt};
use dho_schemas::fixtures;
use dho_schemas::model::*;

use crate::{read_decoded, wait_routed};

/// One published reading.
#[derive(Debug, Clone)]
pub struct Published {
    pub patient: u64,
    pub event_id: String,
    pub receipt: Receipt,
}

/// Records consent `consent_id` of `patient`, permitting `recipients` every category.
pub async fn consent(
    publisher: &Publisher,
    patient: &PatientIdentifier,
    consent_id: &str,
    recipients: &[OrganisationIdentifier],
) {
    let c = fixtures::consent(patient, consent_id, recipients);
    publisher.put_consent(&c).await.unwrap();
}

/// Subscribes each `(subscriber id, organisation)` to every category of `patient`.
pub async fn subscribe(
    publisher: &Publisher,
    patient: &PatientIdentifier,
    subscribers: &[(&str, OrganisationIdentifier)],
) {
    for (subscriber, org) in subscribers {
        let s = fixtures::subscription(patient, subscriber, org);
        publisher.put_subscription(&s).await.unwrap();
    }
}

/// The two subscribers most tests use: the GP and home care.
pub fn gp_and_home() -> [(&'static str, OrganisationIdentifier); 2] {
    [("gp", fixtures::gp()), ("home", fixtures::home_care())]
}

/// Consents and subscriptions: home care for everyone, the GP for even patients.
pub async fn two_subscribers(publisher: &Publisher, patients: u64) {
    for i in 0..patients {
        let p = fixtures::patient(i);
        let mut permitted = vec![fixtures::home_care()];
        if i % 2 == 0 {
            permitted.push(fixtures::gp());
        }
        consent(publisher, &p, "c", &permitted).await;
        subscribe(publisher, &p, &gp_and_home()).await;
    }
}

/// Publishes `count` readings round-robin over the patients, `pause` apart.
pub async fn stream(
    publisher: Publisher,
    patients: u64,
    count: u64,
    pause: Duration,
) -> Vec<Published> {
    let mut published = vec![];
    for n in 0..count {
        let patient = n % patients;
        let m = fixtures::spo2(
            &fixtures::patient(patient),
            90.0 + (n % 10) as f64,
            now_millis() - 60_000,
        );
        let receipt = publisher.publish_measurement(&m).await.unwrap();
        published.push(Published {
            patient,
            event_id: m.event_id,
            receipt,
        });
        tokio::time::sleep(pause).await;
    }
    published
}

/// Waits until `group` has routed everything in `published`.
pub async fn wait_all_routed(settings: &KafkaSettings, group: &str, published: &[Published]) {
    let mut last = BTreeMap::new();
    for p in published {
        last.insert(
            (p.receipt.topic.clone(), p.receipt.partition),
            p.receipt.offset,
        );
    }
    for ((topic, partition), offset) in last {
        wait_routed(settings, group, &topic, partition, offset).await;
    }
}

/// Checks the outcome: each entitled reading exactly once per subscriber after
/// de-duplication by delivery id (what the SDK does), nothing unentitled, ingest order per
/// patient, and one distinct disclosure record per distinct delivery. Returns how many
/// repeated records the de-duplication dropped.
pub async fn assert_exactly_entitled(settings: &KafkaSettings, published: &[Published]) -> usize {
    let topics = settings.topics();
    let mut repeats = 0;
    let mut distinct_deliveries = 0;
    for subscriber in ["gp", "home"] {
        let deliveries: Vec<Delivery> = read_decoded(settings, &topics.deliver(subscriber)).await;
        let mut seen = BTreeSet::new();
        let unique: Vec<&Delivery> = deliveries
            .iter()
            .filter(|d| seen.insert(d.delivery_id.clone()))
            .collect();
        repeats += deliveries.len() - unique.len();
        distinct_deliveries += unique.len();
        let got: BTreeSet<&str> = unique
            .iter()
            .map(|d| {
                d.measurement
                    .as_ref()
                    .expect("full content")
                    .event_id
                    .as_str()
            })
            .collect();
        let want: BTreeSet<&str> = published
            .iter()
            .filter(|p| subscriber == "home" || p.patient % 2 == 0)
            .map(|p| p.event_id.as_str())
            .collect();
        assert_eq!(
            got.len(),
            unique.len(),
            "{subscriber}: one delivery id per event"
        );
        let missing: Vec<&&str> = want.difference(&got).collect();
        let unentitled: Vec<&&str> = got.difference(&want).collect();
        assert!(
            missing.is_empty() && unentitled.is_empty(),
            "{subscriber}: every entitled event exactly once, nothing else; {} of {} missing \
             (first: {:?}), {} unentitled (first: {:?})",
            missing.len(),
            want.len(),
            missing.first(),
            unentitled.len(),
            unentitled.first()
        );
        let mut offsets: BTreeMap<&str, i64> = BTreeMap::new();
        for d in &unique {
            let previous = offsets.insert(d.patient.value.as_str(), d.source.offset);
            assert!(
                previous.is_none_or(|p| p < d.source.offset),
                "{subscriber}: order per patient"
            );
        }
    }
    let audit: Vec<DisclosureRecord> = read_decoded(settings, &topics.audit()).await;
    let audit_ids: BTreeSet<&str> = audit.iter().map(|r| r.delivery_id.as_str()).collect();
    assert_eq!(
        audit_ids.len(),
        distinct_deliveries,
        "one distinct disclosure record per delivery"
    );
    repeats
}
