//! The state topics are compacted by Apache Kafka itself: consents overwritten many times
//! and one withdrawn by a tombstone, on segments small enough (`segment.ms`) that the log
//! cleaner runs during the test. A router rebuilt from the compacted topics decides exactly
//! as one that read every version did, and the revocation by tombstone still applies.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_schemas::partition::partition_for;
use dho_tests::scenario::{Published, consent, stream, subscribe, wait_all_routed};
use dho_tests::{PARTITIONS, Stack, read_topic};
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

const PATIENTS: u64 = 6;
/// Versions written of each patient's consent before its last one.
const VERSIONS: usize = 30;
/// Patient whose consent is withdrawn by a tombstone.
const WITHDRAWN: u64 = 1;

/// Small segments and an eager cleaner for the state topics (and nothing else changes:
/// AlterConfigs replaces a topic's settings, so the compaction policy is restated).
async fn compact_eagerly(stack: &Stack) {
    let admin: AdminClient<DefaultClientContext> =
        stack.settings.client_config(&[]).unwrap().create().unwrap();
    let topics = stack.settings.topics();
    let names = [topics.consents(), topics.subscriptions()];
    let changes: Vec<AlterConfig<'_>> = names
        .iter()
        .map(|name| {
            AlterConfig::new(ResourceSpecifier::Topic(name))
                .set("cleanup.policy", "compact")
                .set("segment.ms", "200")
                .set("min.cleanable.dirty.ratio", "0.01")
                .set("min.compaction.lag.ms", "0")
                .set("delete.retention.ms", "600000")
        })
        .collect();
    for result in admin
        .alter_configs(&changes, &AdminOptions::new())
        .await
        .unwrap()
    {
        result.expect("the state topic's settings are changed");
    }
}

/// Per delivery topic partition, where the next record goes.
type Marks = BTreeMap<(String, i32), i64>;

/// (event id, subscriber) of every delivery to the GP and home care written at or after
/// `from`, and where the topics end now.
async fn deliveries(stack: &Stack, from: &Marks) -> (BTreeSet<(String, String)>, Marks) {
    let topics = stack.settings.topics();
    let serde = dho_kafka::AvroSerde::new(&stack.settings.schema_registry_url);
    let mut out = BTreeSet::new();
    let mut ends = Marks::new();
    for subscriber in ["gp", "home"] {
        let topic = topics.deliver(subscriber);
        for record in read_topic(&stack.settings, &topic) {
            let key = (topic.clone(), record.partition);
            let end = ends.entry(key.clone()).or_insert(0);
            *end = (*end).max(record.offset + 1);
            if record.offset < from.get(&key).copied().unwrap_or(0) {
                continue;
            }
            let d: Delivery = serde.decode(&record.value.unwrap()).await.unwrap();
            let event = d.measurement.expect("full content").event_id;
            out.insert((event, subscriber.to_string()));
        }
    }
    (out, ends)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_rebuilt_from_compacted_state_decides_the_same_and_a_tombstone_still_revokes() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    compact_eagerly(&stack).await;
    let subscribers = [("gp", fixtures::gp()), ("home", fixtures::home_care())];
    // Every patient's consent, rewritten many times: it ends permitting home care, and the
    // GP for even patients. Odd versions permit everyone, so a stale version would show.
    for version in 0..=VERSIONS {
        for patient in 0..PATIENTS {
            let p = fixtures::patient(patient);
            let mut permitted = vec![fixtures::home_care()];
            if patient % 2 == 0 || version % 2 == 1 {
                permitted.push(fixtures::gp());
            }
            consent(&publisher, &p, "c", &permitted).await;
            if version == 0 {
                subscribe(&publisher, &p, &subscribers).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let withdrawn = fixtures::patient(WITHDRAWN);
    publisher.delete_consent(&withdrawn, "c").await.unwrap();

    // Before compaction: a router that reads every version.
    let first = stream(publisher.clone(), PATIENTS, PATIENTS, Duration::ZERO).await;
    let router = stack.spawn_router("before-compaction").await;
    wait_all_routed(&stack.settings, "before-compaction", &first).await;
    router.stop().await;
    let (before, marks) = deliveries(&stack, &Marks::new()).await;

    // Let the cleaner run: the active segment is never cleaned, so a record written after
    // segment.ms rolls it; then wait until the old versions are gone.
    let topics = stack.settings.topics();
    let written = PATIENTS as usize * (VERSIONS + 1) + 1;
    let mut rollers = BTreeMap::new();
    for n in 100.. {
        let p = fixtures::patient(n);
        rollers
            .entry(partition_for(p.key().as_bytes(), PARTITIONS))
            .or_insert(p);
        if rollers.len() == PARTITIONS as usize {
            break;
        }
    }
    let rollers: Vec<PatientIdentifier> = rollers.into_values().collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A consent of a patient who takes no part in the routing rolls the segment, in
        // every partition.
        for patient in &rollers {
            consent(&publisher, patient, "roll", &[fixtures::gp()]).await;
        }
        let kept = read_topic(&stack.settings, &topics.consents());
        let versions_of_first: usize = kept
            .iter()
            .filter(|r| r.key.as_deref() == Some(state_key_of(0).as_str()))
            .count();
        // Each partition is cleaned on its own: the withdrawn patient's may lag the first's.
        let withdrawn_permits = kept
            .iter()
            .filter(|r| r.key.as_deref() == Some(state_key_of(WITHDRAWN).as_str()))
            .filter(|r| r.value.is_some())
            .count();
        if versions_of_first == 1 && withdrawn_permits == 0 {
            eprintln!(
                "compacted: {written} consent records written, {} kept",
                kept.len()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broker did not compact the consents topic ({} records, {versions_of_first} \
             versions of one key)",
            kept.len()
        );
    }
    let kept = read_topic(&stack.settings, &topics.consents());
    let withdrawn_key = state_key_of(WITHDRAWN);
    assert!(
        kept.iter()
            .filter(|r| r.key.as_deref() == Some(withdrawn_key.as_str()))
            .all(|r| r.value.is_none()),
        "the withdrawn consent's permits were compacted away (only its tombstone, if any, is left)"
    );

    // After compaction: a router of a new group reads the compacted state from the start and
    // routes the same readings again, and new ones.
    let second = stream(publisher.clone(), PATIENTS, PATIENTS, Duration::ZERO).await;
    let router = stack.spawn_router("after-compaction").await;
    let mut all = first.clone();
    all.extend(second.iter().cloned());
    wait_all_routed(&stack.settings, "after-compaction", &all).await;
    router.stop().await;
    // Only what the rebuilt router wrote.
    let (after, _) = deliveries(&stack, &marks).await;

    let want = |published: &[Published]| -> BTreeSet<(String, String)> {
        let mut want = BTreeSet::new();
        for p in published {
            if p.patient == WITHDRAWN {
                continue;
            }
            want.insert((p.event_id.clone(), "home".to_string()));
            if p.patient % 2 == 0 {
                want.insert((p.event_id.clone(), "gp".to_string()));
            }
        }
        want
    };
    assert_eq!(before, want(&first), "the first router's decisions");
    assert_eq!(
        after,
        want(&all),
        "the router rebuilt from compacted state decides the same, new readings included"
    );
    let by_patient: BTreeMap<u64, usize> = all
        .iter()
        .map(|p| {
            let n = after.iter().filter(|(e, _)| *e == p.event_id).count();
            (p.patient, n)
        })
        .collect();
    assert_eq!(
        by_patient[&WITHDRAWN], 0,
        "the consent withdrawn by tombstone permits nothing"
    );
}

fn state_key_of(patient: u64) -> String {
    dho_schemas::topics::state_key(&fixtures::patient(patient), "c")
}
