//! The development broker as the demo and the tests use it.

use std::time::Duration;

use dho_devstack::{Broker, BrokerOptions, Storage};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

fn produce(bootstrap: &str, topic: &str, count: usize) {
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
fn sqlite_storage_keeps_every_record_across_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(BrokerOptions {
        storage: Storage::Sqlite(dir.path().join("broker.db")),
        ..BrokerOptions::default()
    })
    .expect("the development broker starts");
    produce(&broker.bootstrap_servers(), "kept", 100);
    assert_eq!(high_watermark(&broker.bootstrap_servers(), "kept"), 100);
    broker.restart().unwrap();
    assert_eq!(high_watermark(&broker.bootstrap_servers(), "kept"), 100);
}

#[test]
fn a_missing_broker_binary_is_an_error_that_says_how_to_install_it() {
    let err = Broker::start(BrokerOptions {
        binary: Some("/nonexistent/nisshi".into()),
        ..BrokerOptions::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("./dev install-broker") && err.contains("/nonexistent/nisshi"),
        "{err}"
    );
}
