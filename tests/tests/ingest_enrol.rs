//! `dho-simulator`, the program, with `--enrol-token`: before streaming it records through
//! the gateway, for every simulated patient, a consent permitting the enrolling care
//! organisation, a subscription for its subscriber and the patient's care plan by that
//! organisation. With a router running, every accepted reading then reaches the
//! subscriber, for the fleet's patients only; without the option, nothing is delivered.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_simulator::{Fleet, SIM_PLAN_NAME};
use dho_tests::ingest::{
    HOME, HOME_TOKEN, PLATFORM_TOKEN, PORTAL_TOKEN, gateway_config, portal, program, start_gateway,
};
use dho_tests::{Stack, read_decoded, read_topic, read_topic_sizes, wait_routed};
use serde_json::Value;

const SEED: u64 = 7;
const PATIENTS: usize = 6;

async fn simulator(gateway: &str, extra: &[&str]) -> Value {
    let output = tokio::process::Command::new(program("dho-simulator"))
        .args(["--gateway", gateway, "--token", PLATFORM_TOKEN])
        .args(["--seed", &SEED.to_string()])
        .args(["--patients", &PATIENTS.to_string()])
        .args(["--rate", "25", "--duration", "2"])
        .args(extra)
        .env_remove("DHO_ENROL_TOKEN")
        .output()
        .await
        .expect("dho-simulator runs");
    assert!(
        output.status.success(),
        "dho-simulator failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn readings(deliveries: &[Delivery]) -> Vec<&PatientIdentifier> {
    deliveries
        .iter()
        .filter_map(|d| match (&d.measurement, &d.self_report) {
            (Some(m), _) => Some(&m.patient),
            (_, Some(r)) => Some(&r.patient),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_enrol_the_simulator_enrols_its_fleet_and_its_readings_reach_the_subscriber() {
    const GROUP: &str = "router";
    let stack = Stack::start().await;
    let gw = start_gateway(gateway_config(&stack.settings)).await;
    let topics = stack.settings.topics();
    let deliver = topics.deliver(HOME);
    let router = stack.spawn_router(GROUP).await;

    // Not enrolled: the readings are accepted and routed, but withheld.
    let plain = simulator(&gw.url(), &[]).await;
    assert_eq!(plain["enrolled"], 0, "{plain}");
    assert!(plain["accepted"].as_u64().unwrap() > 0, "{plain}");
    for topic in [topics.measurements(), topics.selfreports()] {
        let mut last = BTreeMap::new();
        for record in read_topic(&stack.settings, &topic) {
            let offset = last.entry(record.partition).or_insert(record.offset);
            *offset = record.offset.max(*offset);
        }
        for (partition, offset) in last {
            wait_routed(&stack.settings, GROUP, &topic, partition, offset).await;
        }
    }
    assert_eq!(read_topic_sizes(&stack.settings, &deliver), 0);

    // Enrolled for home care: the same fleet again.
    let home = fixtures::home_care().value;
    let stats = simulator(
        &gw.url(),
        &[
            "--enrol-token",
            HOME_TOKEN,
            "--enrol-orgnr",
            &home,
            "--enrol-subscriber",
            HOME,
            // The patients consent through their portal: home care may not grant itself.
            "--consent-token",
            PORTAL_TOKEN,
        ],
    )
    .await;
    assert_eq!(stats["enrolled"], PATIENTS as u64, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    assert_eq!(stats["rejected"], 0, "{stats}");
    let accepted = stats["accepted"].as_u64().unwrap() as usize;
    assert!(accepted >= 30, "{stats}");

    // Through the gateway, one of each per patient, by home care.
    let fleet: BTreeSet<PatientIdentifier> = Fleet::new(SEED, PATIENTS)
        .patients()
        .iter()
        .map(|p| p.id.clone())
        .collect();
    let plans: Vec<CarePlan> = read_decoded(&stack.settings, &topics.careplans()).await;
    assert_eq!(plans.len(), PATIENTS);
    for plan in &plans {
        assert!(fleet.contains(&plan.patient));
        assert_eq!(plan.plan_id, format!("{home}.{SIM_PLAN_NAME}"));
        assert!(plan.updated_by.same_entity(&fixtures::home_care()));
        assert!(!plan.targets.is_empty());
    }
    let planned: BTreeSet<_> = plans.iter().map(|p| p.patient.clone()).collect();
    assert_eq!(planned, fleet);
    let subscriptions: Vec<Subscription> =
        read_decoded(&stack.settings, &topics.subscriptions()).await;
    assert_eq!(subscriptions.len(), PATIENTS);
    assert!(subscriptions.iter().all(|s| s.subscriber_id == HOME));
    assert_eq!(read_topic_sizes(&stack.settings, &topics.consents()), 6);

    // Every accepted reading of the enrolled run reaches home care (the first run's were
    // withheld: consent and subscription apply from when they were recorded).
    let deadline = Instant::now() + Duration::from_secs(90);
    let deliveries = loop {
        let deliveries: Vec<Delivery> = read_decoded(&stack.settings, &deliver).await;
        if readings(&deliveries).len() >= accepted {
            break deliveries;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {accepted} readings delivered",
            readings(&deliveries).len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let delivered = readings(&deliveries);
    assert_eq!(delivered.len(), accepted, "each accepted reading once");
    assert!(delivered.iter().all(|p| fleet.contains(p)));
    for d in &deliveries {
        assert_eq!(d.subscriber_id, HOME);
        assert!(
            d.subscription_id
                .starts_with(&format!("{HOME}.sim-{SEED}-"))
        );
        let portal = portal().value;
        assert!(d.consent_id.starts_with(&format!("{portal}.sim-{SEED}-")));
    }
    // Alerts, when an exacerbation crossed a plan limit, come from home care's plans.
    for alert in deliveries.iter().filter_map(|d| d.alert.as_ref()) {
        assert_eq!(alert.plan_id, format!("{home}.{SIM_PLAN_NAME}"));
    }
    router.stop().await;
    gw.stop().await.unwrap();
}
