//! The router process is killed with SIGKILL several times in the middle of a stream and
//! restarted. Afterwards every entitled delivery is present, exactly once after the SDK's
//! de-duplication by delivery id, in ingest order per patient; nothing ever reached an
//! unentitled subscriber; and the audit holds one record per distinct delivery.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::{Stack, read_decoded, wait_routed};

const GROUP: &str = "router-crash";
const PATIENTS: u64 = 12;

fn spawn_router(stack: &Stack) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dho-router"))
        .args(["--bootstrap-servers", &stack.settings.bootstrap_servers])
        .args(["--schema-registry-url", &stack.settings.schema_registry_url])
        .args(["--topic-prefix", &stack.settings.topic_prefix])
        .args(["--partitions", &stack.settings.partitions.to_string()])
        .args(["--group-id", GROUP])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the router binary starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_router_mid_stream_loses_nothing_and_leaks_nothing() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let topics = stack.settings.topics();
    // Every patient consents to home care; only even patients to the GP. Both subscribe.
    for i in 0..PATIENTS {
        let p = fixtures::patient(i);
        let mut permitted = vec![fixtures::home_care()];
        if i % 2 == 0 {
            permitted.push(fixtures::gp());
        }
        publisher
            .put_consent(&fixtures::consent(&p, "c", &permitted))
            .await
            .unwrap();
        publisher
            .put_subscription(&fixtures::subscription(&p, "gp", &fixtures::gp()))
            .await
            .unwrap();
        publisher
            .put_subscription(&fixtures::subscription(&p, "home", &fixtures::home_care()))
            .await
            .unwrap();
    }

    let mut router = spawn_router(&stack);
    let producer = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let mut published = vec![];
            for n in 0..600u64 {
                let patient = n % PATIENTS;
                let m = fixtures::spo2(
                    &fixtures::patient(patient),
                    90.0 + (n % 10) as f64,
                    now_millis() - 60_000,
                );
                let receipt = publisher.publish_measurement(&m).await.unwrap();
                published.push((patient, m.event_id, receipt));
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
            published
        })
    };
    for pause in [700, 1100, 900, 1300] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        router.kill().unwrap(); // SIGKILL: no shutdown hook runs
        router.wait().unwrap();
        router = spawn_router(&stack);
    }
    let published = producer.await.unwrap();
    let mut last = BTreeMap::new();
    for (_, _, r) in &published {
        last.insert(r.partition, r.offset);
    }
    for (partition, offset) in &last {
        wait_routed(
            &stack.settings,
            GROUP,
            &topics.measurements(),
            *partition,
            *offset,
        )
        .await;
    }
    router.kill().unwrap();
    router.wait().unwrap();

    for subscriber in ["gp", "home"] {
        let deliveries: Vec<Delivery> =
            read_decoded(&stack.settings, &topics.deliver(subscriber)).await;
        // What the SDK's de-duplication leaves: first occurrence of each delivery id.
        let mut seen = BTreeSet::new();
        let unique: Vec<&Delivery> = deliveries
            .iter()
            .filter(|d| seen.insert(d.delivery_id.clone()))
            .collect();
        let entitled: Vec<&(u64, String, dho_producer::Receipt)> = published
            .iter()
            .filter(|(patient, _, _)| subscriber == "home" || patient % 2 == 0)
            .collect();
        let got: BTreeSet<&str> = unique
            .iter()
            .map(|d| d.measurement.as_ref().unwrap().event_id.as_str())
            .collect();
        let want: BTreeSet<&str> = entitled.iter().map(|(_, id, _)| id.as_str()).collect();
        assert_eq!(
            got.len(),
            unique.len(),
            "{subscriber}: one delivery id per event"
        );
        assert_eq!(
            got, want,
            "{subscriber}: every entitled event exactly once, nothing else"
        );
        // Ingest order per patient survives the crashes.
        let mut offsets: BTreeMap<String, i64> = BTreeMap::new();
        for d in &unique {
            let previous = offsets.insert(d.patient.value.clone(), d.source.offset);
            assert!(
                previous.is_none_or(|p| p < d.source.offset),
                "{subscriber}: order per patient"
            );
        }
        eprintln!(
            "{subscriber}: {} records, {} after de-duplication",
            deliveries.len(),
            unique.len()
        );
    }
    let audit: Vec<DisclosureRecord> = read_decoded(&stack.settings, &topics.audit()).await;
    let audit_ids: BTreeSet<&str> = audit.iter().map(|r| r.delivery_id.as_str()).collect();
    let expected_deliveries =
        published.len() + published.iter().filter(|(p, _, _)| p % 2 == 0).count();
    assert_eq!(
        audit_ids.len(),
        expected_deliveries,
        "one distinct disclosure record per delivery"
    );
}
