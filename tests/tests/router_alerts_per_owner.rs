//! Two organisations' plans for one code (issue 19, item 2), against the development
//! broker: each plan classifies every reading on its own alert track, so the two raise
//! independent alert episodes with distinct ids, each naming its plan and its owner; a
//! reading red under one plan and green under the other raises only the first's alert; and
//! each track's silence is measured against its own plan's interval. Every alert goes to
//! the subscriber entitled to the patient's alerts, whichever plan raised it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use dho_publisher::Publisher;
use dho_router::Router;
use dho_schemas::model::*;
use dho_schemas::{codes, fixtures};
use dho_tests::{Stack, read_decoded, wait_routed};
use tokio::sync::oneshot;

const HOUR: i64 = 3_600_000;
const GROUP: &str = "router-alerts-per-owner";

/// Home care's plan: green ≥ 92, yellow ≥ 90, red below; a reading every 24 hours.
fn home_plan(patient: &PatientIdentifier) -> CarePlan {
    let mut plan = fixtures::care_plan(patient);
    plan.plan_id = format!("{}.kols", fixtures::home_care().value);
    plan.updated_by = fixtures::home_care();
    plan.targets[0].green.low = Some(92.0);
    plan.targets[0].yellow.low = Some(90.0);
    plan.targets[0].expected_interval_hours = Some(24);
    plan
}

/// The lung clinic's plan: green ≥ 88, yellow ≥ 85, red below; a reading every 48 hours.
/// Updated after home care's: before plans per organisation, it would have replaced home
/// care's thresholds.
fn lung_plan(patient: &PatientIdentifier) -> CarePlan {
    let mut plan = fixtures::care_plan(patient);
    plan.plan_id = format!("{}.kols", fixtures::lung_clinic().value);
    plan.updated_by = fixtures::lung_clinic();
    plan.updated_at += 1_000;
    plan.targets[0].green.low = Some(88.0);
    plan.targets[0].yellow.low = Some(85.0);
    plan.targets[0].expected_interval_hours = Some(48);
    plan
}

/// Both organisations are permitted; the GP subscribes to the patient's alerts only.
async fn setup(publisher: &Publisher, patient: &PatientIdentifier) {
    let orgs = [
        fixtures::home_care(),
        fixtures::lung_clinic(),
        fixtures::gp(),
    ];
    publisher
        .put_consent(&fixtures::consent(patient, "c", &orgs))
        .await
        .unwrap();
    publisher
        .put_subscription(&Subscription {
            categories: vec![DataCategory::Alert],
            ..fixtures::subscription(patient, "gp-alerts", &fixtures::gp())
        })
        .await
        .unwrap();
    publisher.put_care_plan(&home_plan(patient)).await.unwrap();
    publisher.put_care_plan(&lung_plan(patient)).await.unwrap();
}

async fn read_spo2(stack: &Stack, publisher: &Publisher, patient: &PatientIdentifier, value: f64) {
    let m = fixtures::spo2(patient, value, now_millis() - 5_000);
    let receipt = publisher.publish_measurement(&m).await.unwrap();
    let topic = stack.settings.topics().measurements();
    wait_routed(
        &stack.settings,
        GROUP,
        &topic,
        receipt.partition,
        receipt.offset,
    )
    .await;
}

/// The alerts delivered to the GP, repeats of a delivery id dropped, in topic order.
async fn alerts(stack: &Stack) -> Vec<Alert> {
    let topic = stack.settings.topics().deliver("gp-alerts");
    let mut seen = BTreeSet::new();
    read_decoded::<Delivery>(&stack.settings, &topic)
        .await
        .into_iter()
        .filter(|d| seen.insert(d.delivery_id.clone()))
        .filter_map(|d| d.alert)
        .collect()
}

async fn wait_alerts(stack: &Stack, count: usize) -> Vec<Alert> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = alerts(stack).await;
        if got.len() >= count {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {count} alerts; got {:?}",
            summary(&got)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (kind, zone, plan id, owner's number) of each alert.
fn summary(alerts: &[Alert]) -> Vec<(AlertKind, Zone, String, Option<String>)> {
    alerts
        .iter()
        .map(|a| {
            let owner = a.plan_owner.as_ref().map(|o| o.value.clone());
            (a.kind, a.zone, a.plan_id.clone(), owner)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_organisations_plans_for_one_code_raise_independent_episodes_with_distinct_ids() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let patient = fixtures::patient(19);
    setup(&publisher, &patient).await;
    let (home, lung) = (home_plan(&patient), lung_plan(&patient));
    let home_alert = |kind, zone| {
        (
            kind,
            zone,
            home.plan_id.clone(),
            Some(home.updated_by.value.clone()),
        )
    };
    let lung_alert = |kind, zone| {
        (
            kind,
            zone,
            lung.plan_id.clone(),
            Some(lung.updated_by.value.clone()),
        )
    };

    let clock = Arc::new(AtomicI64::new(0));
    let mut config = stack.router_config(GROUP);
    config.silence_check_interval = Duration::from_millis(300);
    let offset = clock.clone();
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

    // Green under both: nothing.
    read_spo2(&stack, &publisher, &patient, 95.0).await;
    // Red under home care's plan, green under the lung clinic's: only home care's alert,
    // though the lung clinic's plan is the newer.
    read_spo2(&stack, &publisher, &patient, 89.0).await;
    assert_eq!(
        summary(&alerts(&stack).await),
        [home_alert(AlertKind::ZoneEntered, Zone::Red)],
        "a reading red under one plan and green under the other"
    );
    // Red under both: home care's episode is open already, the lung clinic's opens.
    read_spo2(&stack, &publisher, &patient, 84.0).await;
    // Green under both: each episode resolved on its own track.
    read_spo2(&stack, &publisher, &patient, 96.0).await;
    let zone_alerts = alerts(&stack).await;
    let mut resolved = summary(&zone_alerts[2..]);
    resolved.sort_by(|a, b| a.2.cmp(&b.2));
    let mut expected_resolved = vec![
        home_alert(AlertKind::Resolved, Zone::Green),
        lung_alert(AlertKind::Resolved, Zone::Green),
    ];
    expected_resolved.sort_by(|a, b| a.2.cmp(&b.2));
    assert_eq!(
        summary(&zone_alerts[..2]),
        [
            home_alert(AlertKind::ZoneEntered, Zone::Red),
            lung_alert(AlertKind::ZoneEntered, Zone::Red)
        ]
    );
    assert_eq!(resolved, expected_resolved);
    for a in &zone_alerts {
        assert_eq!((&a.patient, a.code.as_str()), (&patient, codes::SPO2));
        assert!(a.reading.is_some(), "a zone alert carries its reading");
    }
    // The last reading raised one alert per plan: same trigger, distinct ids.
    assert_eq!(
        zone_alerts[2].triggering_event_id,
        zone_alerts[3].triggering_event_id
    );

    // 25 hours of silence: past home care's interval, not the lung clinic's.
    clock.store(25 * HOUR, Ordering::SeqCst);
    let after_day = wait_alerts(&stack, 5).await;
    assert_eq!(
        summary(&after_day[4..]),
        [home_alert(AlertKind::NoData, Zone::Green)]
    );
    // 49 hours: the lung clinic's too, raised only now.
    clock.store(49 * HOUR, Ordering::SeqCst);
    let all = wait_alerts(&stack, 6).await;
    assert_eq!(
        summary(&all[5..]),
        [lung_alert(AlertKind::NoData, Zone::Green)]
    );
    assert!(
        all[5].raised_at > now_millis() + 48 * HOUR - 60_000,
        "the lung clinic's silence is measured against its own 48 hours, not raised at 25"
    );
    let ids: BTreeSet<&str> = all.iter().map(|a| a.alert_id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "every alert has an id of its own");

    let _ = stop.send(());
    task.await.unwrap().expect("router ran without error");
}
