//! The first end-to-end path, against the real broker and registry: a measurement published
//! by the producer library reaches the entitled subscriber through the router and the SDK,
//! and nobody else; consent changes acknowledged before routing apply.

use std::time::Duration;

use dho_consumer::{Subscriber, SubscriberConfig};
use dho_publisher::Publisher;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::scenario::{consent, gp_and_home, subscribe};
use dho_tests::{Stack, read_decoded, read_topic, wait_for, wait_receipt_routed};

const GROUP: &str = "router";

/// Separate consents for the GP (`c-gp`) and home care (`c-home`); both subscribe.
async fn consent_to_gp_and_home(publisher: &Publisher, patient: &PatientIdentifier) {
    consent(publisher, patient, "c-gp", &[fixtures::gp()]).await;
    consent(publisher, patient, "c-home", &[fixtures::home_care()]).await;
    subscribe(publisher, patient, &gp_and_home()).await;
}

/// The patient withdraws the GP's consent (status inactive), acknowledged by the broker.
/// How many of `deliveries` are "sharing ended" notices, and how many carry a reading.
fn notices_and_readings(deliveries: &[Delivery]) -> (usize, usize) {
    let notices = deliveries
        .iter()
        .filter(|d| d.sharing_ended.is_some())
        .count();
    (notices, deliveries.len() - notices)
}

async fn withdraw_gp_consent(publisher: &Publisher, patient: &PatientIdentifier) {
    let mut revoked = fixtures::consent(patient, "c-gp", &[fixtures::gp()]);
    revoked.status = ConsentStatus::Inactive;
    publisher.put_consent(&revoked).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_entitled_subscriber_receives_the_measurement_and_the_unconsented_one_nothing() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let topics = stack.settings.topics();
    let patient = fixtures::patient(1);
    consent(&publisher, &patient, "c-gp", &[fixtures::gp()]).await;
    subscribe(&publisher, &patient, &gp_and_home()).await;
    let measurement = fixtures::spo2(&patient, 91.0, now_millis() - 60_000);
    let receipt = publisher.publish_measurement(&measurement).await.unwrap();

    let router = stack.spawn_router(GROUP).await;
    let mut subscriber = Subscriber::connect(SubscriberConfig::new(stack.settings.clone(), "gp"))
        .await
        .unwrap();
    let received = tokio::time::timeout(Duration::from_secs(60), subscriber.next())
        .await
        .expect("the GP receives a delivery")
        .unwrap();
    subscriber.commit(&received).unwrap();
    let delivery = received.delivery;
    assert_eq!(delivery.measurement.as_ref(), Some(&measurement));
    assert_eq!(delivery.consent_id, "c-gp");
    assert_eq!(delivery.patient, patient);
    assert_eq!(
        (
            delivery.source.topic.as_str(),
            delivery.source.partition,
            delivery.source.offset
        ),
        (receipt.topic.as_str(), receipt.partition, receipt.offset)
    );
    assert_eq!(
        delivery.delivery_id,
        dho_router::delivery_id(&delivery.source, "gp")
    );

    wait_receipt_routed(&stack.settings, GROUP, &receipt).await;
    assert!(
        read_topic(&stack.settings, &topics.deliver("home")).is_empty(),
        "home care has no consent"
    );
    let audit: Vec<DisclosureRecord> = read_decoded(&stack.settings, &topics.audit()).await;
    assert_eq!(audit.len(), 1, "exactly one disclosure record per delivery");
    assert_eq!(audit[0].delivery_id, delivery.delivery_id);
    assert_eq!(audit[0].recipient, fixtures::gp());
    assert_eq!(audit[0].decision_reference, "c-gp");
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_consent_stops_later_deliveries() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let topics = stack.settings.topics();
    let patient = fixtures::patient(2);
    consent_to_gp_and_home(&publisher, &patient).await;
    let router = stack.spawn_router(GROUP).await;

    let first = fixtures::spo2(&patient, 95.0, now_millis() - 60_000);
    publisher.publish_measurement(&first).await.unwrap();
    let gp: Vec<Delivery> = wait_for(&stack.settings, &topics.deliver("gp"), 1).await;
    assert_eq!(gp[0].measurement.as_ref().unwrap().event_id, first.event_id);

    // The patient withdraws consent for the GP; the broker acknowledges it before the next
    // reading is published.
    withdraw_gp_consent(&publisher, &patient).await;
    let second = fixtures::spo2(&patient, 89.0, now_millis() - 30_000);
    let receipt = publisher.publish_measurement(&second).await.unwrap();

    // Home care still receives both (it proves the second reading was routed) ...
    let home: Vec<Delivery> = wait_for(&stack.settings, &topics.deliver("home"), 2).await;
    assert_eq!(
        home[1].measurement.as_ref().unwrap().event_id,
        second.event_id
    );
    wait_receipt_routed(&stack.settings, GROUP, &receipt).await;
    // ... the GP only the first, and the notice that sharing ended.
    let gp: Vec<Delivery> = read_decoded(&stack.settings, &topics.deliver("gp")).await;
    let (gp_notices, gp_readings) = notices_and_readings(&gp);
    assert_eq!(gp_readings, 1, "no delivery to the GP after the revocation");
    assert_eq!(gp_notices, 1, "the GP is told that sharing ended");

    // Deleting the remaining consent (a tombstone) stops home care too.
    publisher.delete_consent(&patient, "c-home").await.unwrap();
    let third = fixtures::spo2(&patient, 90.0, now_millis() - 10_000);
    let receipt = publisher.publish_measurement(&third).await.unwrap();
    wait_receipt_routed(&stack.settings, GROUP, &receipt).await;
    let home: Vec<Delivery> = read_decoded(&stack.settings, &topics.deliver("home")).await;
    assert_eq!(
        notices_and_readings(&home),
        (1, 2),
        "no reading after the consent was deleted; told that sharing ended"
    );
    let deleted = home.iter().find_map(|d| d.sharing_ended.as_ref()).unwrap();
    assert_eq!(
        deleted.recorded_by, None,
        "a deleted consent names no recorder"
    );
    let audit: Vec<DisclosureRecord> = read_decoded(&stack.settings, &topics.audit()).await;
    assert_eq!(
        audit.len(),
        gp.len() + home.len(),
        "audit equals deliveries"
    );
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_acknowledged_before_routing_applies_even_when_the_router_lags() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let topics = stack.settings.topics();
    let patient = fixtures::patient(3);
    consent_to_gp_and_home(&publisher, &patient).await;
    // The reading is published while consent is given, but the router is not running yet;
    // the revocation is acknowledged before the router gets to route the reading.
    let reading = fixtures::spo2(&patient, 93.0, now_millis() - 60_000);
    let receipt = publisher.publish_measurement(&reading).await.unwrap();
    withdraw_gp_consent(&publisher, &patient).await;

    let router = stack.spawn_router(GROUP).await;
    wait_receipt_routed(&stack.settings, GROUP, &receipt).await;
    let home: Vec<Delivery> = read_decoded(&stack.settings, &topics.deliver("home")).await;
    assert_eq!(home.len(), 1);
    assert!(
        read_topic(&stack.settings, &topics.deliver("gp")).is_empty(),
        "consent first"
    );
    router.stop().await;
}

/// The router asks for the state ends halfway through a batch's wait for more readings, so
/// the broker answers during the wait. A reading that arrives after that question joins the
/// batch, and a revocation acknowledged before it was written must still apply: the ends
/// are asked again. A long `batch_wait` (6 s: the question 3 s after the first reading
/// arrives) holds the first reading in the batch while, after the question (at 4 s), the
/// revocation is acknowledged and the second reading is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_acknowledged_while_a_batch_waits_applies_to_the_whole_batch() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let topics = stack.settings.topics();
    let patient = fixtures::patient(5);
    consent_to_gp_and_home(&publisher, &patient).await;
    let mut config = stack.router_config(GROUP);
    config.batch_wait = Duration::from_secs(6);
    let router = stack.spawn_router_with(config).await;
    // A reading of another patient, routed: the group is joined and the clients are warm.
    let other = fixtures::patient(6);
    let warm_up = fixtures::spo2(&other, 97.0, now_millis() - 60_000);
    let receipt = publisher.publish_measurement(&warm_up).await.unwrap();
    wait_receipt_routed(&stack.settings, GROUP, &receipt).await;
    let routed_before = router.finished();

    let first = fixtures::spo2(&patient, 93.0, now_millis() - 60_000);
    publisher.publish_measurement(&first).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        router.finished(),
        routed_before,
        "the first reading should still wait in its batch"
    );
    withdraw_gp_consent(&publisher, &patient).await;
    let second = fixtures::spo2(&patient, 92.0, now_millis() - 30_000);
    let receipt = publisher.publish_measurement(&second).await.unwrap();
    wait_receipt_routed(&stack.settings, GROUP, &receipt).await;

    let home: Vec<Delivery> = read_decoded(&stack.settings, &topics.deliver("home")).await;
    assert_eq!(home.len(), 2, "home care keeps its consent");
    let gp: Vec<Delivery> = read_decoded(&stack.settings, &topics.deliver("gp")).await;
    // The GP was entitled before the revocation, so it is told that sharing ended.
    let (gp_notices, gp_readings) = notices_and_readings(&gp);
    assert_eq!(gp_notices, 1, "the GP is told that sharing ended");
    assert!(
        gp_readings == 0,
        "the second reading was written after the revocation was acknowledged and routed \
         in one batch with the first, yet the GP got {} readings",
        gp_readings
    );
    router.stop().await;
}
