//! Broker access control (issue 19, item 5) on the real broker's SASL/SCRAM listener, with
//! the hub's own access plan (`deploy/kafka/acls.txt`) applied by `dho_devstack::access`:
//! a principal without the ACL cannot write a state topic (TopicAuthorizationFailed), a
//! device platform writes readings but not consent, a subscriber cannot read another's
//! delivery topic, and the hub works end to end with the gateway, the router, the
//! publishers and the SDK each on its own principal.

use std::path::Path;
use std::time::Duration;

use dho_consumer::{Subscriber, SubscriberConfig};
use dho_devstack::access;
use dho_kafka::KafkaSettings;
use dho_publisher::Publisher;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::Stack;
use dho_tests::ingest::{Http, PLATFORM_TOKEN, gateway_config, start_gateway};
use dho_tests::scenario::consent;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

const PLATFORM: &str = "acl-platform";
const PRINCIPALS: [&str; 6] = [
    "dho-gateway",
    "dho-router",
    "dho-admin",
    "dho-platform-acl-platform",
    "dho-subscriber-gp",
    "dho-subscriber-home",
];

/// The stack's settings as `principal` on the SASL listener, its password in a file.
fn as_principal(
    settings: &KafkaSettings,
    sasl_bootstrap: &str,
    principal: &str,
    secrets: &Path,
) -> KafkaSettings {
    let mut settings = settings.clone();
    settings.bootstrap_servers = sasl_bootstrap.to_string();
    settings.sasl_username = Some(principal.to_string());
    settings.sasl_password_file = Some(secrets.join(principal));
    // The development broker's SASL listener is in the clear; production's is SASL_SSL.
    settings
        .librdkafka
        .insert("security.protocol".into(), "SASL_PLAINTEXT".into());
    settings
}

/// The principals and the plan's ACLs for this stack's prefix, on the shared broker.
fn make_principals(stack: &Stack, secrets: &Path) {
    // Principals are the broker's, not a topic prefix's: tests that run at once make the
    // same ones, so each must set the same password.
    let passwords: Vec<(String, String)> = PRINCIPALS
        .iter()
        .map(|p| (p.to_string(), format!("development-only-password-of-{p}")))
        .collect();
    for (principal, password) in &passwords {
        std::fs::write(secrets.join(principal), password).unwrap();
    }
    let users: Vec<(&str, &str)> = passwords
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    let acls = access::plan_acls(&stack.settings.topic_prefix, &[PLATFORM], &["gp", "home"]);
    access::apply(&stack.settings.bootstrap_servers, &users, &acls)
        .unwrap_or_else(|e| panic!("the principals and ACLs were not made: {e}"));
}

/// The error code of a single record's delivery to `topic` as `settings`' principal.
async fn write(settings: &KafkaSettings, topic: &str) -> Result<(), RDKafkaErrorCode> {
    let producer: FutureProducer = settings
        .client_config(&[("message.timeout.ms", "20000")])
        .unwrap()
        .create()
        .unwrap();
    let sent = producer
        .send(
            FutureRecord::to(topic).key("k").payload("not a record"),
            Duration::from_secs(20),
        )
        .await;
    match sent {
        Ok(_) => Ok(()),
        Err((KafkaError::MessageProduction(code), _)) => Err(code),
        Err((other, _)) => panic!("writing {topic}: {other}"),
    }
}

/// The first error a consumer subscribed to `topic` meets, as `settings`' principal.
fn read_error(settings: &KafkaSettings, topic: &str) -> Option<RDKafkaErrorCode> {
    let consumer: BaseConsumer = settings
        // Its own group: the question is the topic, not the group.
        .client_config(&[("group.id", "dho-subscriber-home")])
        .unwrap()
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Err(KafkaError::MessageConsumption(code))) => return Some(code),
            Some(Err(other)) => panic!("reading {topic}: {other}"),
            Some(Ok(_)) | None => {}
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_acl_state_topics_readings_and_deliveries_are_each_principals_own() {
    let stack = Stack::start().await;
    // The hub's topics, made by the super user (as the compose stack's topics job does).
    dho_kafka::ensure_topics(&stack.settings, &dho_kafka::hub_topics(&stack.settings))
        .await
        .unwrap();
    let topics = stack.settings.topics();
    for subscriber in ["gp", "home"] {
        let spec = dho_kafka::TopicSpec::output(topics.deliver(subscriber), 1, None);
        dho_kafka::ensure_topics(&stack.settings, &[spec])
            .await
            .unwrap();
    }
    let secrets = tempfile::tempdir().unwrap();
    make_principals(&stack, secrets.path());
    let sasl = stack.broker.sasl_bootstrap_servers();
    let principal = |name: &str| as_principal(&stack.settings, &sasl, name, secrets.path());
    let platform = principal("dho-platform-acl-platform");
    let gateway = principal("dho-gateway");
    let subscriber_home = principal("dho-subscriber-home");

    // A platform writes readings; no principal without the ACL writes a state topic.
    assert_eq!(write(&platform, &topics.measurements()).await, Ok(()));
    for state in [
        topics.consents(),
        topics.subscriptions(),
        topics.careplans(),
    ] {
        assert_eq!(
            write(&platform, &state).await,
            Err(RDKafkaErrorCode::TopicAuthorizationFailed),
            "a platform wrote {state}"
        );
        assert_eq!(
            write(&subscriber_home, &state).await,
            Err(RDKafkaErrorCode::TopicAuthorizationFailed),
            "a subscriber wrote {state}"
        );
    }
    assert_eq!(write(&gateway, &topics.consents()).await, Ok(()));
    // Through the publisher library too: a platform's consent is refused by the broker.
    let as_platform = Publisher::connect(&platform, dho_schemas::Policy::SYNTHETIC_ALLOWED)
        .await
        .unwrap();
    let patient = fixtures::patient(19);
    let refused = tokio::time::timeout(
        Duration::from_secs(60),
        as_platform.put_consent(&fixtures::consent(&patient, "c-self", &[fixtures::gp()])),
    )
    .await
    .expect("a refused write is an answer, not a wait")
    .unwrap_err()
    .to_string();
    assert!(refused.contains("authorization"), "{refused}");

    // A subscriber reads its own delivery topic, not another's, nor a reading topic.
    assert_eq!(
        read_error(&subscriber_home, &topics.deliver("gp")),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    assert_eq!(
        read_error(&subscriber_home, &topics.measurements()),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    let wrong = Subscriber::connect(SubscriberConfig::new(subscriber_home.clone(), "gp")).await;
    assert!(
        wrong.is_err(),
        "home care's principal connected as the GP's subscriber"
    );
}

/// The hub end to end with every Kafka client on a principal of its own: the state written
/// by the gateway's principal, a reading by the platform's directly and one through the
/// gateway, the router routing, and the GP's SDK receiving both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_acl_the_hub_works_end_to_end_on_sasl_principals() {
    let stack = Stack::start().await;
    dho_kafka::ensure_topics(&stack.settings, &dho_kafka::hub_topics(&stack.settings))
        .await
        .unwrap();
    let secrets = tempfile::tempdir().unwrap();
    make_principals(&stack, secrets.path());
    let sasl = stack.broker.sasl_bootstrap_servers();
    let principal = |name: &str| as_principal(&stack.settings, &sasl, name, secrets.path());

    let state_writer = Publisher::connect(
        &principal("dho-gateway"),
        dho_schemas::Policy::SYNTHETIC_ALLOWED,
    )
    .await
    .unwrap();
    let patient = fixtures::patient(20);
    consent(&state_writer, &patient, "c-gp", &[fixtures::gp()]).await;
    let subscription = fixtures::subscription(&patient, "gp", &fixtures::gp());
    state_writer.put_subscription(&subscription).await.unwrap();

    let mut router_config = stack.router_config("dho-router-acl");
    router_config.kafka = principal("dho-router");
    let router = stack.spawn_router_with(router_config).await;
    let mut gp = Subscriber::connect(SubscriberConfig::new(principal("dho-subscriber-gp"), "gp"))
        .await
        .unwrap();

    let platform = Publisher::connect(
        &principal("dho-platform-acl-platform"),
        dho_schemas::Policy::SYNTHETIC_ALLOWED,
    )
    .await
    .unwrap();
    let direct = fixtures::spo2(&patient, 93.0, now_millis() - 60_000);
    platform.publish_measurement(&direct).await.unwrap();

    let gateway = start_gateway(gateway_config(&principal("dho-gateway"))).await;
    let through_gateway = fixtures::spo2(&patient, 94.0, now_millis() - 30_000);
    let answer = Http::new(gateway.url())
        .post(
            "/measurements",
            Some(PLATFORM_TOKEN),
            &serde_json::to_value(&through_gateway).unwrap(),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.json);

    let mut received = Vec::new();
    while received.len() < 2 {
        let next = tokio::time::timeout(Duration::from_secs(60), gp.next())
            .await
            .expect("the GP receives both readings")
            .unwrap();
        gp.commit(&next).unwrap();
        received.push(next.delivery.measurement.unwrap().event_id);
    }
    received.sort();
    // The gateway names its readings' events itself.
    let gateway_event = answer.json["event_id"].as_str().unwrap().to_string();
    let mut sent = vec![direct.event_id, gateway_event];
    sent.sort();
    assert_eq!(received, sent);
    router.stop().await;
}
