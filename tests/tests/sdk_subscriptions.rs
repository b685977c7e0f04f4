//! Subscription management through the SDK against the real broker, the ingest gateway in
//! this process and a router: a care service creates a subscription with its own token and
//! receives deliveries under it; changing it to MINIMAL changes what arrives; ending it
//! stops deliveries. Another service's subscription id, another service's subscriber id, a
//! platform token and a wrong token are refused with the typed error that says "fix the
//! configuration", and none of them leaves a record on the subscriptions topic.

use std::time::Duration;

use dho_consumer::{
    Action, Error, NotConvertible, Received, Subscriber, SubscriberConfig, SubscriptionClient,
    SubscriptionRequest,
};
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::ingest::{
    GP, GP_TOKEN, HOME, HOME_TOKEN, PLATFORM_TOKEN, gateway_config, start_gateway,
};
use dho_tests::{Stack, read_topic_sizes, wait_receipt_routed};

const GROUP: &str = "sdk-subscriptions-router";

/// The next delivery, committed, or `None` if nothing arrives within `quiet`.
async fn next(subscriber: &mut Subscriber, quiet: Duration) -> Option<Received> {
    let received = tokio::time::timeout(quiet, subscriber.next()).await.ok()?;
    let received = received.expect("the subscriber receives");
    subscriber.commit(&received).unwrap();
    Some(received)
}

/// Publishes a reading for `patient` and waits until the router has routed it.
async fn publish_routed(
    stack: &Stack,
    publisher: &dho_publisher::Publisher,
    patient: &PatientIdentifier,
    value: f64,
) -> Measurement {
    let m = fixtures::spo2(patient, value, now_millis() - 60_000);
    let receipt = publisher.publish_measurement(&m).await.unwrap();
    wait_receipt_routed(&stack.settings, GROUP, &receipt).await;
    m
}

fn assert_refused(e: &Error, status: u16) {
    assert_eq!(e.status(), Some(status), "{e}");
    assert_eq!(e.action(), Action::FixConfiguration, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_a_care_service_manages_its_own_subscription_and_receives_under_it() {
    let stack = Stack::start().await;
    let gateway = start_gateway(gateway_config(&stack.settings)).await;
    let publisher = stack.publisher().await;
    let patient = fixtures::patient(11);
    publisher
        .put_consent(&fixtures::consent(
            &patient,
            "c-11",
            &[fixtures::home_care()],
        ))
        .await
        .unwrap();
    let router = stack.spawn_router(GROUP).await;
    let mut subscriber = Subscriber::connect(
        SubscriberConfig::new(stack.settings.clone(), HOME).group_id("sdk-subscriptions-home"),
    )
    .await
    .unwrap();

    // Create through the SDK: the id is '<subscriber_id>.<name>', the organisation comes
    // from the token.
    let home = SubscriptionClient::new(&gateway.url(), HOME_TOKEN).unwrap();
    let created = home
        .create(
            &SubscriptionRequest::new(HOME, patient.clone())
                .name("p11")
                .categories([DataCategory::Measurement]),
        )
        .await
        .unwrap();
    assert_eq!(created.subscription_id, "bergen-home-care.p11");
    assert!(created.subscriber_org.same_entity(&fixtures::home_care()));
    assert_eq!(created.status, SubscriptionStatus::Active);

    // A reading now arrives under it, in full, and converts to FHIR.
    let m = publish_routed(&stack, &publisher, &patient, 93.0).await;
    let received = next(&mut subscriber, Duration::from_secs(20))
        .await
        .expect("a delivery under the new subscription");
    assert_eq!(received.delivery.subscription_id, created.subscription_id);
    assert_eq!(received.delivery.measurement.as_ref(), Some(&m));
    assert_eq!(received.to_fhir().unwrap()["id"], m.event_id.as_str());

    // Update: MINIMAL content; the next reading arrives as a reference only.
    let mut minimal = created.clone();
    minimal.content_level = ContentLevel::Minimal;
    let updated = home.update(&minimal).await.unwrap();
    assert_eq!(updated.content_level, ContentLevel::Minimal);
    let m = publish_routed(&stack, &publisher, &patient, 94.0).await;
    let received = next(&mut subscriber, Duration::from_secs(20))
        .await
        .expect("a delivery under the updated subscription");
    assert_eq!(received.delivery.content_level, ContentLevel::Minimal);
    assert!(received.delivery.measurement.is_none());
    assert!(matches!(
        received.to_fhir(),
        Err(NotConvertible::NoValues { event_id, .. }) if event_id == m.event_id
    ));

    // Refusals, each typed "fix the configuration", none of them written to Kafka.
    let subscriptions_topic = stack.settings.topics().subscriptions();
    let before = read_topic_sizes(&stack.settings, &subscriptions_topic);
    let gp = SubscriptionClient::new(&gateway.url(), GP_TOKEN).unwrap();
    // Another service's subscription id, to change, end or delete it.
    assert_refused(&gp.update(&updated).await.unwrap_err(), 403);
    assert_refused(&gp.end(&updated).await.unwrap_err(), 403);
    assert_refused(
        &gp.delete(&updated.subscription_id, &patient)
            .await
            .unwrap_err(),
        403,
    );
    // Another service's subscriber id, and a name under it.
    assert_refused(
        &gp.create(&SubscriptionRequest::new(HOME, patient.clone()).name("x"))
            .await
            .unwrap_err(),
        403,
    );
    // The GP's own subscriber id, but written under home care's id.
    let mut hijack = updated.clone();
    hijack.subscriber_id = GP.into();
    hijack.subscriber_org = fixtures::gp();
    assert_refused(&gp.update(&hijack).await.unwrap_err(), 403);
    // A device platform's token, and a token the gateway does not know.
    let platform = SubscriptionClient::new(&gateway.url(), PLATFORM_TOKEN).unwrap();
    assert_refused(
        &platform
            .create(&SubscriptionRequest::new(HOME, patient.clone()).name("p"))
            .await
            .unwrap_err(),
        403,
    );
    assert_refused(
        &platform
            .delete(&updated.subscription_id, &patient)
            .await
            .unwrap_err(),
        403,
    );
    let stranger = SubscriptionClient::new(&gateway.url(), "not-a-token").unwrap();
    let e = stranger
        .create(&SubscriptionRequest::new(HOME, patient.clone()).name("p"))
        .await
        .unwrap_err();
    assert_refused(&e, 401);
    // No message names the token or the patient.
    for text in [e.to_string(), format!("{e:?}"), format!("{stranger:?}")] {
        assert!(
            !text.contains("not-a-token") && !text.contains(&patient.value),
            "{text}"
        );
    }
    assert_eq!(
        read_topic_sizes(&stack.settings, &subscriptions_topic),
        before,
        "a refused request wrote a subscription record"
    );
    // The refusals changed nothing: readings still arrive.
    publish_routed(&stack, &publisher, &patient, 95.0).await;
    assert!(
        next(&mut subscriber, Duration::from_secs(20))
            .await
            .is_some()
    );

    // End it: nothing more arrives, though the router routed the next reading.
    let ended = home.end(&updated).await.unwrap();
    assert_eq!(ended.status, SubscriptionStatus::Ended);
    publish_routed(&stack, &publisher, &patient, 96.0).await;
    assert!(
        next(&mut subscriber, Duration::from_secs(5))
            .await
            .is_none(),
        "a delivery under an ended subscription"
    );

    // A new subscription, then deleted (DELETE with the patient in the body): deliveries
    // come under it and stop after the delete.
    let again = home
        .create(&SubscriptionRequest::new(HOME, patient.clone()).name("again"))
        .await
        .unwrap();
    publish_routed(&stack, &publisher, &patient, 97.0).await;
    let received = next(&mut subscriber, Duration::from_secs(20))
        .await
        .expect("a delivery under the second subscription");
    assert_eq!(received.delivery.subscription_id, again.subscription_id);
    home.delete(&again.subscription_id, &patient).await.unwrap();
    publish_routed(&stack, &publisher, &patient, 98.0).await;
    assert!(
        next(&mut subscriber, Duration::from_secs(5))
            .await
            .is_none(),
        "a delivery under a deleted subscription"
    );

    router.stop().await;
    gateway.stop().await.unwrap();
}
