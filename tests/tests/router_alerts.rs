//! Alerts end to end (issue 7), against the development broker: the issue's sequence
//! green → yellow → yellow → red → green → silence gives exactly yellow, escalation,
//! resolution and no-data, to the subscriber of alerts only; a router killed in the middle
//! of it changes nothing in the output; a plan change acknowledged before a reading applies
//! to it. The router's clock is moved forward to reach the silence (24 hours in the plan).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use dho_publisher::Publisher;
use dho_router::{Router, RouterConfig};
use dho_schemas::model::*;
use dho_schemas::{codes, fixtures};
use dho_tests::{Stack, read_decoded, wait_routed};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const HOUR: i64 = 3_600_000;

/// A router on a clock that runs `offset` ahead of the wall clock.
struct AlertRouter {
    stop: oneshot::Sender<()>,
    task: JoinHandle<dho_router::Result<dho_router::RunStats>>,
}

async fn spawn(config: RouterConfig, offset: &Arc<AtomicI64>) -> AlertRouter {
    let offset = offset.clone();
    let router = Router::connect(config)
        .await
        .expect("router connects")
        .with_clock(Arc::new(move || {
            now_millis() + offset.load(Ordering::SeqCst)
        }));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(router.run(async {
        let _ = stopped.await;
    }));
    AlertRouter { stop, task }
}

impl AlertRouter {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().expect("router ran without error");
    }

    /// A crash as far as Kafka can tell: the task is dropped wherever it is, nothing is
    /// committed or flushed on the way out.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn config(stack: &Stack) -> RouterConfig {
    let mut config = stack.router_config("router-alerts");
    config.silence_check_interval = Duration::from_millis(300);
    config.session_timeout = Duration::from_secs(3);
    config
}

/// Home care subscribes to alerts only; the GP to measurements only. Both are permitted.
async fn setup(publisher: &Publisher, patient: &PatientIdentifier) {
    publisher
        .put_consent(&fixtures::consent(
            patient,
            "c",
            &[fixtures::home_care(), fixtures::gp()],
        ))
        .await
        .unwrap();
    let only = |subscriber: &str, org, category| Subscription {
        categories: vec![category],
        ..fixtures::subscription(patient, subscriber, &org)
    };
    publisher
        .put_subscription(&only("home", fixtures::home_care(), DataCategory::Alert))
        .await
        .unwrap();
    publisher
        .put_subscription(&only("gp", fixtures::gp(), DataCategory::Measurement))
        .await
        .unwrap();
    // SpO2: green ≥ 92, yellow ≥ 88, red below; a reading expected every 24 hours.
    publisher
        .put_care_plan(&fixtures::care_plan(patient))
        .await
        .unwrap();
}

/// Publishes an SpO2 reading and returns where it landed.
async fn read_spo2(publisher: &Publisher, patient: &PatientIdentifier, value: f64) -> (i32, i64) {
    let m = fixtures::spo2(patient, value, now_millis() - 5_000);
    let receipt = publisher.publish_measurement(&m).await.unwrap();
    (receipt.partition, receipt.offset)
}

async fn routed(stack: &Stack, at: (i32, i64)) {
    let topic = stack.settings.topics().measurements();
    wait_routed(&stack.settings, "router-alerts", &topic, at.0, at.1).await;
}

/// The alert deliveries on `subscriber`'s topic, repeats of a delivery id dropped (what
/// the SDK's handler sees), in topic order.
async fn alerts_of(stack: &Stack, subscriber: &str) -> Vec<Delivery> {
    let topic = stack.settings.topics().deliver(subscriber);
    let mut seen = BTreeMap::new();
    let mut out = vec![];
    for d in read_decoded::<Delivery>(&stack.settings, &topic).await {
        if d.alert.is_some() && seen.insert(d.delivery_id.clone(), ()).is_none() {
            out.push(d);
        }
    }
    out
}

async fn wait_alerts(stack: &Stack, subscriber: &str, count: usize) -> Vec<Delivery> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let alerts = alerts_of(stack, subscriber).await;
        if alerts.len() >= count {
            return alerts;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {count} alerts; got {:?}",
            summary(&alerts)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn summary(deliveries: &[Delivery]) -> Vec<(AlertKind, Zone, VkpSeverity)> {
    deliveries
        .iter()
        .map(|d| {
            let a = d.alert.as_ref().unwrap();
            (a.kind, a.zone, a.severity)
        })
        .collect()
}

fn expected() -> Vec<(AlertKind, Zone, VkpSeverity)> {
    vec![
        (AlertKind::ZoneEntered, Zone::Yellow, VkpSeverity::Moderate),
        (AlertKind::Escalated, Zone::Red, VkpSeverity::Severe),
        (AlertKind::Resolved, Zone::Green, VkpSeverity::Normal),
        (AlertKind::NoData, Zone::Green, VkpSeverity::Normal),
    ]
}

/// Runs the issue's sequence; `restart` is called just after the red reading is published,
/// and returns the router that continues.
async fn the_sequence<F, Fut>(mut restart: F) -> (Stack, Vec<Delivery>)
where
    F: FnMut(Stack, AlertRouter, Arc<AtomicI64>) -> Fut,
    Fut: std::future::Future<Output = (Stack, AlertRouter)>,
{
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let patient = fixtures::patient(7);
    setup(&publisher, &patient).await;
    let clock = Arc::new(AtomicI64::new(0));
    let router = spawn(config(&stack), &clock).await;

    for value in [95.0, 90.0, 89.0] {
        let at = read_spo2(&publisher, &patient, value).await;
        routed(&stack, at).await;
    }
    // The escalating reading: the restart may come before, during or after its routing.
    read_spo2(&publisher, &patient, 85.0).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (stack, router) = restart(stack, router, clock.clone()).await;
    let at = read_spo2(&publisher, &patient, 96.0).await;
    routed(&stack, at).await;
    let before_silence = alerts_of(&stack, "home").await;
    assert_eq!(
        summary(&before_silence),
        expected()[..3],
        "zone alerts before the silence (and no no-data alert yet)"
    );
    // 25 hours of silence.
    clock.store(25 * HOUR, Ordering::SeqCst);
    let alerts = wait_alerts(&stack, "home", 4).await;
    // A few more timer ticks: the no-data alert is raised once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alerts_later = alerts_of(&stack, "home").await;
    assert_eq!(
        alerts_later.len(),
        alerts.len(),
        "no repeated no-data alert"
    );
    router.stop().await;
    (stack, alerts)
}

fn check_alerts(stack: &Stack, alerts: &[Delivery], patient: &PatientIdentifier) {
    assert_eq!(summary(alerts), expected());
    let ids: std::collections::BTreeSet<&str> = alerts
        .iter()
        .map(|d| d.alert.as_ref().unwrap().alert_id.as_str())
        .collect();
    assert_eq!(ids.len(), alerts.len(), "one delivery per alert");
    for d in alerts {
        let a = d.alert.as_ref().unwrap();
        assert_eq!(&a.patient, patient);
        assert_eq!(a.code, codes::SPO2);
        assert_eq!((a.plan_id.as_str(), a.plan_version), ("plan-1", 1));
        assert_eq!(d.content_level, ContentLevel::Full);
        match a.kind {
            AlertKind::NoData => assert!(a.reading.is_none() && a.triggering_event_id.is_none()),
            _ => {
                let reading = a
                    .reading
                    .as_ref()
                    .expect("a zone alert carries its reading");
                assert_eq!(
                    a.triggering_event_id.as_deref(),
                    Some(reading.event_id.as_str())
                );
            }
        }
    }
    let _ = stack;
}

async fn check_audit_and_gp(stack: &Stack, alerts: &[Delivery]) {
    // The GP subscribes to measurements only: all five readings, no alert.
    let gp =
        read_decoded::<Delivery>(&stack.settings, &stack.settings.topics().deliver("gp")).await;
    assert!(
        gp.iter().all(|d| d.alert.is_none()),
        "the GP did not ask for alerts"
    );
    let gp_readings: std::collections::BTreeSet<_> =
        gp.iter().map(|d| d.delivery_id.clone()).collect();
    assert_eq!(gp_readings.len(), 5);
    // Each alert delivery has its disclosure record, category ALERT, naming the alert.
    let audit =
        read_decoded::<DisclosureRecord>(&stack.settings, &stack.settings.topics().audit()).await;
    for d in alerts {
        let record = audit
            .iter()
            .find(|r| r.delivery_id == d.delivery_id)
            .expect("every alert delivery is audited");
        assert_eq!(record.category, DataCategory::Alert);
        assert_eq!(record.event_id, d.alert.as_ref().unwrap().alert_id);
        assert_eq!(record.subscriber_id, "home");
    }
    let alert_records: std::collections::BTreeSet<_> = audit
        .iter()
        .filter(|r| r.category == DataCategory::Alert)
        .map(|r| r.delivery_id.clone())
        .collect();
    assert_eq!(
        alert_records.len(),
        alerts.len(),
        "no audit without its delivery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issue_sequence_raises_exactly_four_alerts() {
    let (stack, alerts) = the_sequence(|stack, router, _| async move { (stack, router) }).await;
    check_alerts(&stack, &alerts, &fixtures::patient(7));
    check_audit_and_gp(&stack, &alerts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_mid_sequence_changes_nothing() {
    let (stack, alerts) = the_sequence(|stack, router, clock| async move {
        // Killed with the red reading possibly half routed, then a new instance (state
        // rebuilt from the topics) takes over.
        router.kill().await;
        let router = spawn(config(&stack), &clock).await;
        (stack, router)
    })
    .await;
    check_alerts(&stack, &alerts, &fixtures::patient(7));
    check_audit_and_gp(&stack, &alerts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_change_acknowledged_before_a_reading_applies_to_it() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let patient = fixtures::patient(8);
    setup(&publisher, &patient).await;
    let clock = Arc::new(AtomicI64::new(0));
    let router = spawn(config(&stack), &clock).await;
    // 90 is yellow under version 1.
    let at = read_spo2(&publisher, &patient, 90.0).await;
    routed(&stack, at).await;
    // Version 2 widens green down to 89: acknowledged, then at once a reading of 89.5.
    let mut v2 = fixtures::care_plan(&patient);
    v2.version = 2;
    v2.updated_at += 1;
    v2.targets[0].green.low = Some(89.0);
    publisher.put_care_plan(&v2).await.unwrap();
    let at = read_spo2(&publisher, &patient, 89.5).await;
    routed(&stack, at).await;
    let alerts = wait_alerts(&stack, "home", 2).await;
    let versions: Vec<(AlertKind, i32)> = alerts
        .iter()
        .map(|d| {
            let a = d.alert.as_ref().unwrap();
            (a.kind, a.plan_version)
        })
        .collect();
    assert_eq!(
        versions,
        [(AlertKind::ZoneEntered, 1), (AlertKind::Resolved, 2)]
    );
    router.stop().await;
}
