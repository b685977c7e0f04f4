//! `dho-admin` manages subscriptions and applies changes in bulk, run as the program it is
//! against the real broker and a running router: a subscription it makes lets a consented
//! reading through and its removal withholds the next one, both audited like the
//! gateway's; a bulk file with a bad line in the middle applies every other line through
//! one connection, names the bad line, and exits non-zero.

use std::time::Instant;

use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::ingest::{admin_ok, json_lines, run_admin};
use dho_tests::{Stack, read_decoded, wait_for, wait_receipt_routed};

const GROUP: &str = "router";
const SUBSCRIBER: &str = "gp-admin";

/// Publishes a reading, waits until the router has routed it, returns its event id.
async fn reading(stack: &Stack, patient: &PatientIdentifier) -> String {
    let publisher = stack.publisher().await;
    let m = fixtures::spo2(patient, 95.0, now_millis() - 10_000);
    let receipt = publisher.publish_measurement(&m).await.unwrap();
    wait_receipt_routed(&stack.settings, GROUP, &receipt).await;
    m.event_id
}

fn delivered(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .filter_map(|d| d.measurement.as_ref().map(|m| m.event_id.clone()))
        .collect()
}

fn grant(stack: &Stack, patient: &PatientIdentifier) {
    let org = fixtures::home_care().value;
    admin_ok(
        stack,
        &[
            "grant",
            "--patient",
            &patient.value,
            "--recipient",
            &org,
            "--recorded-by",
            &org,
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_subscribe_delivers_and_unsubscribe_withholds_both_audited() {
    let stack = Stack::start().await;
    let router = stack.spawn_router(GROUP).await;
    let topics = stack.settings.topics();
    let deliver = topics.deliver(SUBSCRIBER);
    let patient = fixtures::patient(61);
    let org = fixtures::home_care().value;
    grant(&stack, &patient);

    let subscribed = admin_ok(
        &stack,
        &[
            "subscribe",
            "--patient",
            &patient.value,
            "--subscriber",
            SUBSCRIBER,
            "--subscriber-org",
            &org,
            "--operator",
            "test-operator",
        ],
    );
    let said = String::from_utf8_lossy(&subscribed.stdout).to_string();
    assert!(said.contains("subscribed gp-admin"), "{said}");
    assert!(
        !said.contains(&patient.value),
        "the output shows the number: {said}"
    );
    let listed = json_lines(&admin_ok(&stack, &["subscriptions", SUBSCRIBER]));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["subscription_id"], "gp-admin.admin");

    let first = reading(&stack, &patient).await;
    let deliveries: Vec<Delivery> = wait_for(&stack.settings, &deliver, 1).await;
    assert_eq!(delivered(&deliveries), vec![first.clone()]);

    admin_ok(
        &stack,
        &[
            "unsubscribe",
            "--patient",
            &patient.value,
            "--subscriber",
            SUBSCRIBER,
            "--recorded-by",
            &org,
            "--operator",
            "test-operator",
        ],
    );
    assert!(json_lines(&admin_ok(&stack, &["subscriptions", SUBSCRIBER])).is_empty());
    let _withheld = reading(&stack, &patient).await;
    let deliveries: Vec<Delivery> = read_decoded(&stack.settings, &deliver).await;
    assert_eq!(
        delivered(&deliveries),
        vec![first],
        "unsubscribed, still delivered"
    );

    let changes: Vec<SubscriptionChange> =
        read_decoded(&stack.settings, &topics.subscription_audit()).await;
    let actions: Vec<_> = changes.iter().map(|c| c.action).collect();
    assert_eq!(
        actions,
        vec![SubscriptionAction::Recorded, SubscriptionAction::Deleted]
    );
    for change in &changes {
        assert_eq!(change.principal, "test-operator");
        assert_eq!(change.channel, "admin-cli");
        assert_eq!(change.subscription_id, "gp-admin.admin");
        assert_eq!(change.changed_by.value, org);
    }
    assert!(changes[0].subscription.is_some() && changes[1].subscription.is_none());
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_apply_reports_each_line_and_a_bad_line_stops_nothing() {
    let stack = Stack::start().await;
    let router = stack.spawn_router(GROUP).await;
    let deliver = stack.settings.topics().deliver(SUBSCRIBER);
    let org = fixtures::home_care().value;
    let (p1, p2) = (fixtures::patient(71), fixtures::patient(72));
    let grant_line = |p: &PatientIdentifier| {
        format!(
            r#"{{"op": "grant", "patient": "{}", "recipient": "{org}", "recorded_by": "{org}"}}"#,
            p.value
        )
    };
    let subscribe = |p: &PatientIdentifier| {
        format!(
            r#"{{"op": "subscribe", "patient": "{}", "subscriber": "{SUBSCRIBER}", "subscriber_org": "{org}"}}"#,
            p.value
        )
    };
    let file = [
        grant_line(&p1),
        subscribe(&p1),
        // Line 3: a patient number that fails its check digit.
        format!(r#"{{"op": "subscribe", "patient": "01010101007", "subscriber": "{SUBSCRIBER}", "subscriber_org": "{org}"}}"#),
        String::new(),
        // Line 5: a misspelt key.
        format!(r#"{{"op": "grant", "patient": "{}", "recipent": "{org}", "recorded_by": "{org}"}}"#, p2.value),
        grant_line(&p2),
        subscribe(&p2),
    ]
    .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("changes.jsonl");
    std::fs::write(&path, file).unwrap();

    let output = run_admin(&stack, &["apply", "--file", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a failed line fails the run: {stderr}"
    );
    assert!(stderr.contains("2 of the changes failed"), "{stderr}");
    let lines = json_lines(&output);
    let (outcomes, summary) = lines.split_at(lines.len() - 1);
    let by_line: Vec<(u64, bool)> = outcomes
        .iter()
        .map(|o| (o["line"].as_u64().unwrap(), o["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        by_line,
        vec![
            (1, true),
            (2, true),
            (3, false),
            (5, false),
            (6, true),
            (7, true)
        ]
    );
    let error = |line: usize| outcomes[line]["error"].as_str().unwrap().to_string();
    assert!(error(2).contains("patient"), "{}", error(2));
    assert!(!error(2).contains("01010101007"), "{}", error(2));
    assert!(error(3).contains("recipent"), "{}", error(3));
    let summary = &summary[0]["summary"];
    assert_eq!(
        (summary["applied"].as_u64(), summary["failed"].as_u64()),
        (Some(4), Some(2))
    );
    // The figures for BENCHMARKS/the report: one connection, then each change.
    println!("bulk apply summary: {summary}");

    // Every good line applied: both patients' readings reach the subscriber.
    let expected = vec![reading(&stack, &p1).await, reading(&stack, &p2).await];
    let deliveries: Vec<Delivery> = wait_for(&stack.settings, &deliver, 2).await;
    assert_eq!(delivered(&deliveries), expected);

    // For comparison: one change as its own command, connecting each time.
    let started = Instant::now();
    grant(&stack, &p1);
    println!(
        "one grant as its own command: {} ms",
        started.elapsed().as_millis()
    );
    router.stop().await;
}
