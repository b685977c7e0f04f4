//! Helpers for the consumer SDK's tests: deliveries written straight onto a subscriber
//! topic with the router's deterministic ids (so a test can re-send one exactly as a
//! replaying router would), committed offsets of a group, and the SDK's example binaries.

use std::path::PathBuf;
use std::time::Duration;

use dho_kafka::{Encoder, KafkaSettings, TopicSpec};
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_schemas::partition::partition_for;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::PARTITIONS;

/// A delivery of a synthetic measurement to `subscriber`, as the router would make it for
/// the source record at `offset` of `<prefix>.measurements` partition 0.
pub fn measurement_delivery(
    settings: &KafkaSettings,
    subscriber: &str,
    patient_seed: u64,
    offset: i64,
) -> Delivery {
    let patient = fixtures::patient(patient_seed);
    let measurement = fixtures::spo2(&patient, 90.0 + (offset % 8) as f64, now_millis() - 60_000);
    envelope(settings, subscriber, patient, offset, |d| {
        d.measurement = Some(measurement)
    })
}

/// A delivery carrying an alert (the router does not raise alerts yet).
pub fn alert_delivery(
    settings: &KafkaSettings,
    subscriber: &str,
    patient_seed: u64,
    offset: i64,
    severity: VkpSeverity,
) -> Delivery {
    let patient = fixtures::patient(patient_seed);
    let reading = fixtures::spo2(&patient, 86.0, now_millis() - 60_000);
    let alert = Alert {
        alert_id: format!("alert-{offset}"),
        patient: patient.clone(),
        kind: AlertKind::ZoneEntered,
        zone: Zone::Red,
        severity,
        code: reading.code.clone(),
        plan_id: "plan-1".into(),
        plan_version: 1,
        plan_owner: None,
        triggering_event_id: Some(reading.event_id.clone()),
        reading: Some(reading),
        raised_at: now_millis(),
    };
    envelope(settings, subscriber, patient, offset, |d| {
        d.alert = Some(alert)
    })
}

fn envelope(
    settings: &KafkaSettings,
    subscriber: &str,
    patient: PatientIdentifier,
    offset: i64,
    fill: impl FnOnce(&mut Delivery),
) -> Delivery {
    let source = SourcePosition {
        topic: settings.topics().measurements(),
        partition: 0,
        offset,
    };
    let mut delivery = Delivery {
        delivery_id: dho_router::delivery_id(&source, subscriber),
        subscriber_id: subscriber.to_string(),
        subscription_id: format!("sub-{subscriber}"),
        consent_id: "c-1".into(),
        patient,
        source,
        content_level: ContentLevel::Full,
        routed_at: now_millis(),
        measurement: None,
        self_report: None,
        alert: None,
        reference: None,
        replaces: None,
        professional_denies: vec![],
        sharing_ended: None,
    };
    fill(&mut delivery);
    delivery
}

/// Writes records onto one subscriber's delivery topic, keyed and partitioned by patient
/// like the router.
#[allow(missing_debug_implementations)]
pub struct DeliveryWriter {
    producer: FutureProducer,
    encoder: Encoder<Delivery>,
    topic: String,
}

/// Where a written record landed, and its bytes.
#[derive(Debug, Clone)]
pub struct Written {
    pub partition: i32,
    pub offset: i64,
    pub bytes: Vec<u8>,
}

impl DeliveryWriter {
    pub async fn new(settings: &KafkaSettings, subscriber: &str) -> Self {
        let topic = settings.topics().deliver(subscriber);
        dho_kafka::ensure_topics(
            settings,
            &[TopicSpec::output(topic.clone(), PARTITIONS, None)],
        )
        .await
        .unwrap();
        let encoder = dho_kafka::AvroSerde::new(&settings.schema_registry_url)
            .register::<Delivery>(&topic)
            .await
            .unwrap();
        let producer = settings
            .client_config(&[("enable.idempotence", "true"), ("acks", "all")])
            .unwrap()
            .create()
            .unwrap();
        Self {
            producer,
            encoder,
            topic,
        }
    }

    pub async fn send(&self, delivery: &Delivery) -> Written {
        let bytes = self.encoder.encode(delivery).unwrap();
        self.send_raw(delivery.patient.key(), bytes).await
    }

    /// Any bytes, keyed by `patient_key`, e.g. a record that is not a delivery at all.
    pub async fn send_raw(&self, patient_key: &str, bytes: Vec<u8>) -> Written {
        let partition = partition_for(patient_key.as_bytes(), PARTITIONS);
        let rdkafka::producer::future_producer::Delivery {
            partition, offset, ..
        } = self
            .producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(patient_key)
                    .payload(&bytes)
                    .partition(partition),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        Written {
            partition,
            offset,
            bytes,
        }
    }
}

/// The committed offsets of `group` on every partition of `topic` (absent: none).
pub fn committed(settings: &KafkaSettings, group: &str, topic: &str) -> Vec<Option<i64>> {
    committed_offsets(settings, group, topic)
        .into_iter()
        .map(|offset| match offset {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect()
}

/// What OffsetFetch answers for `group` on every partition of `topic`, as librdkafka gives
/// it (`None`: the partition is missing from the answer).
pub fn committed_offsets(
    settings: &KafkaSettings,
    group: &str,
    topic: &str,
) -> Vec<Option<Offset>> {
    let consumer: BaseConsumer = settings
        .client_config(&[("group.id", group), ("enable.auto.commit", "false")])
        .unwrap()
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    (0..PARTITIONS)
        .map(|p| committed.find_partition(topic, p).map(|e| e.offset()))
        .collect()
}

/// The high watermark of every partition of `topic`.
pub fn high_watermarks(settings: &KafkaSettings, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = settings
        .client_config(&[("group.id", "dho-tests-watermarks")])
        .unwrap()
        .create()
        .unwrap();
    (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect()
}

/// The path of one of the consumer SDK's examples, built first.
///
/// Cargo builds examples only for their own package's tests, and `CARGO_BIN_EXE_*` exists
/// only for binaries, so the examples are built here with the cargo running this test
/// (`$CARGO`), into the target directory this test binary lives in (derived from
/// `current_exe`, so `CARGO_TARGET_DIR` or a config's `target-dir` are both honoured),
/// with the same profile. Under nextest nothing holds the build lock while tests run; under
/// `cargo test` the lock is released before tests start. The build runs once per process
/// and is a no-op when the examples are fresh.
pub fn example(name: &str) -> PathBuf {
    let path = crate::build_programs("dho-consumer", "--examples")
        .join("examples")
        .join(name);
    assert!(path.exists(), "example {} not found", path.display());
    path
}

/// The command line every example takes to reach this stack.
pub fn example_args(settings: &KafkaSettings, subscriber: &str) -> Vec<String> {
    vec![
        "--bootstrap-servers".into(),
        settings.bootstrap_servers.clone(),
        "--schema-registry-url".into(),
        settings.schema_registry_url.clone(),
        "--topic-prefix".into(),
        settings.topic_prefix.clone(),
        "--subscriber-id".into(),
        subscriber.into(),
        "--partitions".into(),
        PARTITIONS.to_string(),
        // A killed member is noticed quickly, so a restarted one gets its partitions soon.
        "--librdkafka".into(),
        "session.timeout.ms=6000".into(),
        "--librdkafka".into(),
        "heartbeat.interval.ms=500".into(),
    ]
}
