//! The development broker as the demo and the tests use it.

use std::time::Duration;

use dho_devstack::{Broker, BrokerOptions};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

fn create_topic(bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .unwrap();
}

fn produce(bootstrap: &str, topic: &str, count: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for i in 0..count {
        let payload = format!("record-{i}");
        producer
            .send(BaseRecord::<(), _>::to(topic).payload(&payload))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn high_watermark(bootstrap: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap()
        .1
}

#[test]
fn kept_storage_keeps_every_record_across_a_broker_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(BrokerOptions {
        home: Some(dir.path().join("kafka")),
        ..BrokerOptions::default()
    })
    .expect("the development broker starts");
    create_topic(&broker.bootstrap_servers(), "kept");
    produce(&broker.bootstrap_servers(), "kept", 100);
    assert_eq!(high_watermark(&broker.bootstrap_servers(), "kept"), 100);
    // SIGKILL, then the same log folder: what acks=all acknowledged is still there.
    broker.restart().unwrap();
    assert_eq!(high_watermark(&broker.bootstrap_servers(), "kept"), 100);
    produce(&broker.bootstrap_servers(), "kept", 10);
    assert_eq!(high_watermark(&broker.bootstrap_servers(), "kept"), 110);
}

#[test]
fn the_broker_is_apache_kafka_at_the_pinned_version() {
    let version = dho_devstack::kafka_version();
    assert!(
        version.split('.').count() == 3 && version.split('.').all(|p| p.parse::<u32>().is_ok()),
        "kafka.version in devstack/kafka/pom.xml is a release number: {version}"
    );
    let jar = dho_devstack::broker_libs().join(format!("kafka_2.13-{version}.jar"));
    assert!(jar.is_file(), "{} is installed", jar.display());
}

#[test]
fn a_missing_install_is_an_error_that_says_how_to_install_it() {
    let err = Broker::start(BrokerOptions {
        libs: Some("/nonexistent/kafka/libs".into()),
        ..BrokerOptions::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("./dev install-broker") && err.contains("/nonexistent/kafka/libs"),
        "{err}"
    );
}

#[test]
fn a_missing_jdk_is_an_error_that_names_what_to_install() {
    let err = Broker::start(BrokerOptions {
        java: Some("/nonexistent/jdk/bin/java".into()),
        ..BrokerOptions::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("JDK 17") && err.contains("/nonexistent/jdk/bin/java"),
        "{err}"
    );
}
