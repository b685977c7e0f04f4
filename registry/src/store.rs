//! The Kafka side: the compacted single-partition schemas topic, replayed at start-up and
//! appended to on every write.
//!
//! Single writer: this registry reads the topic once, at start-up, and afterwards trusts its
//! own acknowledged writes. Run one instance per topic (as Confluent does with its leader);
//! a second writer on the same topic would not see the first one's writes until restarted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::log::LogRecord;
use crate::state::RegistryState;
use crate::{Error, RegistryConfig, Result};

/// librdkafka keys this module sets itself; the pass-through map must not override them,
/// or the durability guarantees (acks=all, idempotence) would silently go away.
const RESERVED_KAFKA_KEYS: [&str; 6] = [
    "bootstrap.servers",
    "acks",
    "enable.idempotence",
    "group.id",
    "enable.auto.commit",
    "enable.partition.eof",
];

/// Appends records to the schemas topic.
pub(crate) struct KafkaStore {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaStore")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaStore {
    /// Creates the topic if missing, replays it to its end and returns the store and the
    /// rebuilt state.
    pub(crate) async fn open(config: &RegistryConfig) -> Result<(KafkaStore, RegistryState)> {
        check_options(&config.kafka_options)?;
        ensure_topic(config).await?;
        let replay_config = config.clone();
        let state = tokio::task::spawn_blocking(move || replay(&replay_config))
            .await
            .map_err(|e| Error::Store(format!("replay task failed: {e}")))??;

        // Defaults the pass-through map may override: a registry write should fail within
        // the configured timeout rather than hang for librdkafka's 5 minutes.
        let mut producer_config = ClientConfig::new();
        producer_config
            .set(
                "message.timeout.ms",
                config.kafka_timeout.as_millis().to_string(),
            )
            .set("linger.ms", "0");
        for (key, value) in &config.kafka_options {
            producer_config.set(key, value);
        }
        producer_config
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("acks", "all")
            .set("enable.idempotence", "true");
        let producer: FutureProducer = producer_config.create()?;
        Ok((
            KafkaStore {
                producer,
                topic: config.topic.clone(),
                timeout: config.kafka_timeout,
            },
            state,
        ))
    }

    /// Appends one record and waits until the broker acknowledged it (acks=all).
    pub(crate) async fn append(&self, record: &LogRecord) -> Result<()> {
        let (key, value) = record.encode();
        let mut kafka_record = FutureRecord::<Vec<u8>, Vec<u8>>::to(&self.topic)
            .key(&key)
            .partition(0);
        if let Some(value) = &value {
            kafka_record = kafka_record.payload(value);
        }
        match self
            .producer
            .send(kafka_record, Timeout::After(self.timeout))
            .await
        {
            Ok(delivery) => {
                tracing::debug!(
                    offset = delivery.offset,
                    "schemas topic record acknowledged"
                );
                Ok(())
            }
            Err((error, _)) => {
                tracing::error!(%error, topic = %self.topic, "could not write to the schemas topic");
                Err(Error::Store(format!(
                    "could not write to topic {}: {error}",
                    self.topic
                )))
            }
        }
    }
}

fn check_options(options: &BTreeMap<String, String>) -> Result<()> {
    for key in options.keys() {
        if RESERVED_KAFKA_KEYS.contains(&key.as_str()) {
            return Err(Error::Config(format!(
                "kafka option '{key}' is set by the registry itself and cannot be overridden"
            )));
        }
    }
    Ok(())
}

fn base_config(config: &RegistryConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (key, value) in &config.kafka_options {
        client.set(key, value);
    }
    client.set("bootstrap.servers", &config.bootstrap_servers);
    client
}

async fn ensure_topic(config: &RegistryConfig) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(config).create()?;
    let topic = NewTopic::new(
        &config.topic,
        1,
        TopicReplication::Fixed(config.replication_factor),
    )
    .set("cleanup.policy", "compact");
    let options = AdminOptions::new().operation_timeout(Some(Timeout::After(config.kafka_timeout)));
    let results = admin.create_topics([&topic], &options).await?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created the schemas topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %config.topic, "schemas topic exists")
            }
            Err((name, code)) => {
                return Err(Error::Store(format!(
                    "could not create the schemas topic {name}: {code}"
                )));
            }
        }
    }
    Ok(())
}

/// Reads the topic from the beginning to the high watermark taken at start.
fn replay(config: &RegistryConfig) -> Result<RegistryState> {
    let mut client = base_config(config);
    client
        .set(
            "group.id",
            format!("dho-registry-replay-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = client.create()?;
    let deadline = Instant::now() + config.kafka_timeout;

    // A topic just created can show no partitions until its metadata has spread to the
    // broker asked: that is waited for, only another count is a misconfiguration.
    let partitions = loop {
        let metadata = consumer.fetch_metadata(Some(&config.topic), config.kafka_timeout)?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == config.topic)
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if partitions > 0 || Instant::now() > deadline {
            break partitions;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if partitions != 1 {
        return Err(Error::Store(format!(
            "the schemas topic {} must have exactly one partition, it has {partitions}",
            config.topic
        )));
    }

    let (low, high) = consumer.fetch_watermarks(&config.topic, 0, config.kafka_timeout)?;
    let mut state = RegistryState::new();
    if high <= low {
        tracing::info!(topic = %config.topic, "schemas topic is empty");
        return Ok(state);
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&config.topic, 0, Offset::Offset(low))?;
    consumer.assign(&assignment)?;

    let mut applied = 0usize;
    let mut next = low;
    while next < high {
        if Instant::now() > deadline {
            return Err(Error::Store(format!(
                "timed out replaying {} at offset {next} of {high}",
                config.topic
            )));
        }
        let message = match consumer.poll(Duration::from_millis(200)) {
            // Offsets can end in gaps (compaction, control records): trust the position.
            None | Some(Err(KafkaError::PartitionEOF(_))) => {
                if let Some(position) = position(&consumer, &config.topic) {
                    next = next.max(position);
                }
                continue;
            }
            Some(Err(error)) => return Err(error.into()),
            Some(Ok(message)) => message,
        };
        next = message.offset() + 1;
        let Some(key) = message.key() else {
            tracing::warn!(
                offset = message.offset(),
                "schemas topic record without key skipped"
            );
            continue;
        };
        match LogRecord::decode(key, message.payload()) {
            Ok(record) => {
                state.apply(&record);
                applied += 1;
            }
            Err(reason) => {
                tracing::warn!(offset = message.offset(), %reason, "malformed schemas topic record skipped")
            }
        }
    }
    tracing::info!(
        topic = %config.topic,
        records = applied,
        max_id = state.max_id(),
        "replayed the schemas topic"
    );
    Ok(state)
}

fn position(consumer: &BaseConsumer, topic: &str) -> Option<i64> {
    let positions = consumer.position().ok()?;
    match positions.find_partition(topic, 0)?.offset() {
        Offset::Offset(offset) => Some(offset),
        _ => None,
    }
}
