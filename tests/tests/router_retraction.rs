//! Retraction and correction of a delivered reading (issue 20, part 3), against the
//! development broker. A platform names its reading (`source_id`, from which the gateway
//! derives the event id) and later sends the same reading `entered-in-error`, or corrected.
//! The router's own record of deliveries (its alert-state topic) decides who hears of it:
//! exactly the subscribers who received the original, even one whose consent was withdrawn
//! meanwhile, never one entitled only since; the alerts the reading raised are retracted and
//! its alert track put back; a re-send of the original is not new. A router restart between
//! the original and the change shows the record survives it. The last test goes the whole
//! way: FHIR through the gateway, the SDK's delivery kinds and FHIR status.

use std::collections::BTreeSet;
use std::time::Duration;

use dho_consumer::{Subscriber, SubscriberConfig};
use dho_publisher::Publisher;
use dho_schemas::fhir::observation_from_measurement;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::ingest::{Http, PLATFORM_TOKEN, gateway_config, start_gateway};
use dho_tests::{Stack, read_decoded, wait_receipt_routed};

const GROUP: &str = "router-retraction";

/// Deliveries on `subscriber`'s topic, repeats of a delivery id dropped (what the SDK's
/// handler sees), in topic order.
async fn deliveries(stack: &Stack, subscriber: &str) -> Vec<Delivery> {
    let topic = stack.settings.topics().deliver(subscriber);
    let mut seen = BTreeSet::new();
    read_decoded::<Delivery>(&stack.settings, &topic)
        .await
        .into_iter()
        .filter(|d| seen.insert(d.delivery_id.clone()))
        .collect()
}

/// What a delivery is, in a few words: kind, payload, status or alert kind.
fn summary(d: &Delivery) -> String {
    let kind = match d.kind() {
        DeliveryKind::Disclosure => "new",
        DeliveryKind::Retraction(_) => "retraction",
        DeliveryKind::Correction(_) => "correction",
        DeliveryKind::SharingEnded(_) => "sharing ended",
    };
    let payload = match d.payload() {
        Some(Payload::Measurement(m)) => format!("reading {} {}", value(m), m.status()),
        Some(Payload::Reference(r)) => format!("reference {:?}", r.category),
        Some(Payload::Alert(a)) => format!("alert {:?}", a.kind),
        Some(Payload::SelfReport(_)) => "self-report".into(),
        Some(Payload::SharingEnded(e)) => format!("{:?}", e.categories),
        None => "none".into(),
    };
    format!("{kind}: {payload}")
}

fn value(m: &Measurement) -> f64 {
    m.value.as_ref().map_or(f64::NAN, |q| q.value)
}

/// The GP (measurements and alerts) is permitted throughout; home care (the same) until
/// its consent is withdrawn; the lung clinic subscribes from the start but is permitted
/// only later.
async fn setup(publisher: &Publisher, patient: &PatientIdentifier) {
    publisher
        .put_consent(&fixtures::consent(
            patient,
            "c",
            &[fixtures::gp(), fixtures::home_care()],
        ))
        .await
        .unwrap();
    for (subscriber, org) in [
        ("gp", fixtures::gp()),
        ("home", fixtures::home_care()),
        ("clinic", fixtures::lung_clinic()),
    ] {
        publisher
            .put_subscription(&fixtures::subscription(patient, subscriber, &org))
            .await
            .unwrap();
    }
    // SpO2: green ≥ 92, yellow ≥ 88, red below.
    publisher
        .put_care_plan(&fixtures::care_plan(patient))
        .await
        .unwrap();
}

/// The same reading as the platform sends it again with another status (the gateway
/// derives the same event id from the same identifier).
fn with_status(original: &Measurement, status: &str, value: f64) -> Measurement {
    let mut m = original.clone();
    m.status = Some(status.into());
    m.value = Some(Quantity {
        value,
        unit: "%".into(),
    });
    m.received_time += 60_000;
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retraction_reaches_exactly_the_subscribers_who_got_the_original() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let patient = fixtures::patient(31);
    setup(&publisher, &patient).await;
    let router = stack.spawn_router(GROUP).await;

    // A wrong reading (red: an alert) to the GP and home care, not to the clinic.
    let at = now_millis() - 60_000;
    let wrong = fixtures::spo2(&patient, 84.0, at);
    let receipt = publisher.publish_measurement(&wrong).await.unwrap();
    wait_receipt_routed(&stack.settings, GROUP, &receipt).await;
    router.stop().await;

    // Meanwhile home care's consent is withdrawn and the clinic's given.
    publisher
        .put_consent(&fixtures::consent(
            &patient,
            "c",
            &[fixtures::gp(), fixtures::lung_clinic()],
        ))
        .await
        .unwrap();
    // A router started afresh knows only what its topics tell it.
    let router = stack.spawn_router(GROUP).await;
    publisher
        .publish_measurement(&with_status(&wrong, RETRACTED, 84.0))
        .await
        .unwrap();
    // The original again (a platform that got no answer): not a new reading.
    publisher.publish_measurement(&wrong).await.unwrap();
    // A right reading after it: green, and with the alert retracted no RESOLVED either.
    let right = fixtures::spo2(&patient, 96.0, at + 30_000);
    let receipt = publisher.publish_measurement(&right).await.unwrap();
    wait_receipt_routed(&stack.settings, GROUP, &receipt).await;
    router.stop().await;

    let gp = deliveries(&stack, "gp").await;
    let home = deliveries(&stack, "home").await;
    let clinic = deliveries(&stack, "clinic").await;
    let summaries = |ds: &[Delivery]| ds.iter().map(summary).collect::<Vec<_>>();
    assert_eq!(
        summaries(&gp),
        [
            "new: reading 84 final",
            "new: alert ZoneEntered",
            "retraction: reading 84 entered-in-error",
            "retraction: alert ZoneEntered",
            "new: reading 96 final",
        ],
        "the GP: the original, its alert, both retracted, then only the right reading"
    );
    assert_eq!(
        summaries(&home),
        [
            "new: reading 84 final",
            "new: alert ZoneEntered",
            // Told when its consent was withdrawn (router_sharing_ended.rs).
            "sharing ended: [Measurement, SelfReport, Alert]",
            "retraction: reading 84 entered-in-error",
            "retraction: alert ZoneEntered",
        ],
        "home care, withdrawn since, still learns that what it received was wrong"
    );
    assert_eq!(
        summaries(&clinic),
        ["new: reading 96 final"],
        "the clinic never received the wrong reading, so hears nothing of its retraction"
    );

    // Each retraction names the delivery to the same subscriber it replaces, and rests on
    // the consent and subscription that delivery rested on.
    for ds in [&gp, &home] {
        // Home care's notice that sharing ended is not part of the reading's story.
        let ds: Vec<Delivery> = ds
            .iter()
            .filter(|d| d.sharing_ended.is_none())
            .cloned()
            .collect();
        let (originals, retractions) = (&ds[..2], &ds[2..4]);
        for (original, retraction) in originals.iter().zip(retractions) {
            let DeliveryKind::Retraction(replaces) = retraction.kind() else {
                panic!("not a retraction: {}", summary(retraction));
            };
            assert_eq!(replaces.delivery_id, original.delivery_id);
            assert_eq!(replaces.status, RETRACTED);
            assert_eq!(retraction.consent_id, original.consent_id);
            assert_eq!(retraction.subscription_id, original.subscription_id);
        }
        assert_eq!(
            ds[2].kind(),
            DeliveryKind::Retraction(ds[2].replaces.as_ref().unwrap())
        );
        assert_eq!(
            ds[3].replaces.as_ref().unwrap().event_id,
            ds[1].alert.as_ref().unwrap().alert_id
        );
    }

    // Audited like any delivery: one record per delivery, the retractions naming what they
    // replace.
    let audit =
        read_decoded::<DisclosureRecord>(&stack.settings, &stack.settings.topics().audit()).await;
    for d in gp.iter().chain(&home).chain(&clinic) {
        let records: Vec<_> = audit
            .iter()
            .filter(|r| r.delivery_id == d.delivery_id)
            .collect();
        assert_eq!(records.len(), 1, "one audit record for {}", summary(d));
        assert_eq!(
            records[0].replaces,
            d.replaces.as_ref().map(|r| r.delivery_id.clone()),
            "{}",
            summary(d)
        );
        assert_eq!(records[0].subscriber_id, d.subscriber_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_correction_replaces_the_values_for_the_entitled_and_names_them_to_the_rest() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let patient = fixtures::patient(32);
    setup(&publisher, &patient).await;
    let router = stack.spawn_router(GROUP).await;
    let at = now_millis() - 60_000;
    let wrong = fixtures::spo2(&patient, 84.0, at);
    let receipt = publisher.publish_measurement(&wrong).await.unwrap();
    wait_receipt_routed(&stack.settings, GROUP, &receipt).await;
    // Home care is withdrawn before the correction.
    publisher
        .put_consent(&fixtures::consent(&patient, "c", &[fixtures::gp()]))
        .await
        .unwrap();
    let corrected = with_status(&wrong, "corrected", 90.0);
    let receipt = publisher.publish_measurement(&corrected).await.unwrap();
    wait_receipt_routed(&stack.settings, GROUP, &receipt).await;
    router.stop().await;

    let gp = deliveries(&stack, "gp").await;
    let home = deliveries(&stack, "home").await;
    let summaries = |ds: &[Delivery]| ds.iter().map(summary).collect::<Vec<_>>();
    // The red alert is retracted; the corrected value (yellow) raises its own, to the GP.
    assert_eq!(
        summaries(&gp),
        [
            "new: reading 84 final",
            "new: alert ZoneEntered",
            "correction: reading 90 corrected",
            "retraction: alert ZoneEntered",
            "new: alert ZoneEntered",
        ]
    );
    assert_eq!(gp[4].alert.as_ref().unwrap().zone, Zone::Yellow);
    // Home care learns its copy is superseded, without the new values.
    assert_eq!(
        summaries(&home),
        [
            "new: reading 84 final",
            "new: alert ZoneEntered",
            "sharing ended: [Measurement, SelfReport, Alert]",
            "correction: reference Measurement",
            "retraction: alert ZoneEntered",
        ]
    );
    assert!(home[3].measurement.is_none());
}

/// A VKP batch of one Observation, as a platform posts it.
fn batch_of(observation: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"resourceType": "Bundle", "type": "batch", "entry": [{
        "fullUrl": "urn:uuid:6c1d1e4a-4c1b-4f7e-9d54-0a6c2f3e1b99",
        "resource": observation,
        "request": {"method": "POST", "url": "Observation"},
    }]})
}

/// Posts `observation` as the test platform (one `201` entry); its event id.
async fn post_observation(http: &Http, observation: serde_json::Value) -> String {
    let answer = http
        .post("/fhir", Some(PLATFORM_TOKEN), &batch_of(observation))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    let entry = &answer.json["entry"][0]["response"];
    assert!(
        entry["status"].as_str().unwrap().starts_with("201"),
        "{}",
        answer.json
    );
    let location = entry["location"].as_str().unwrap();
    location.rsplit('/').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_the_gateway_and_the_sdk_a_retracted_observation_is_a_retraction() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let patient = fixtures::patient(33);
    setup(&publisher, &patient).await;
    let gateway = start_gateway(gateway_config(&stack.settings)).await;
    let http = Http::new(gateway.url());
    let router = stack.spawn_router(GROUP).await;
    let mut gp = Subscriber::connect(SubscriberConfig::new(stack.settings.clone(), "gp"))
        .await
        .unwrap();

    // Green: no alert. The platform names it by its identifier.
    let reading = fixtures::spo2(&patient, 95.0, now_millis() - 60_000);
    let original = observation_from_measurement(&reading);
    let event_id = post_observation(&http, original.clone()).await;
    let mut retracted = original.clone();
    retracted["status"] = "entered-in-error".into();
    let retraction_event_id = post_observation(&http, retracted).await;
    assert_eq!(
        retraction_event_id, event_id,
        "the same identifier names the same reading"
    );
    // The original again, after the gateway saw the retraction: published, not delivered.
    post_observation(&http, original).await;
    // A sync point: a reading of its own after them.
    let last = post_observation(
        &http,
        observation_from_measurement(&fixtures::spo2(&patient, 96.0, now_millis() - 30_000)),
    )
    .await;

    let mut received = vec![];
    while received.last().is_none_or(|r: &dho_consumer::Received| {
        r.delivery.measurement.as_ref().map(|m| &m.event_id) != Some(&last)
    }) {
        let next = tokio::time::timeout(Duration::from_secs(60), gp.next())
            .await
            .expect("the GP receives its deliveries")
            .unwrap();
        gp.commit(&next).unwrap();
        received.push(next);
    }
    router.stop().await;
    let kinds: Vec<String> = received
        .iter()
        .map(|r| match r.kind() {
            DeliveryKind::Disclosure => format!("new {}", r.to_fhir().unwrap()["status"]),
            DeliveryKind::Retraction(replaces) => {
                assert_eq!(replaces.delivery_id, received[0].delivery.delivery_id);
                assert_eq!(replaces.event_id, event_id);
                format!("retraction {}", r.to_fhir().unwrap()["status"])
            }
            DeliveryKind::Correction(_) => "correction".into(),
            DeliveryKind::SharingEnded(_) => "sharing ended".into(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            r#"new "final""#,
            r#"retraction "entered-in-error""#,
            r#"new "final""#
        ],
        "the original, its retraction as FHIR entered-in-error, and no second original"
    );
    drop(gateway);
}
