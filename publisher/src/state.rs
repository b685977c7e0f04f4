//! Reads topics to their end: the current state of a compacted state topic (consents,
//! subscriptions), every record up to the high watermark folded by key, tombstones
//! removing; and whole topics as records (dead letters, redrive audit). Used by
//! `dho-admin` and the tests; the router keeps its own, incremental, state.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dho_kafka::{AvroSerde, KafkaSettings};
use dho_schemas::codec::AvroRecord;
use dho_schemas::partition::partition_for;
use dho_schemas::topics::patient_key;
use dho_schemas::{PatientIdentifier, Subscription};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use crate::{Error, Result};

/// How long reading one topic up to its high watermarks may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The current records of one patient on a state topic (only that patient's partition is
/// read), by state key.
pub async fn patient_state<T: AvroRecord>(
    settings: &KafkaSettings,
    topic: &str,
    patient: &PatientIdentifier,
) -> Result<BTreeMap<String, T>> {
    let partition = partition_for(patient.key().as_bytes(), settings.partitions);
    let wanted = patient.key().to_string();
    let raw = read(settings, topic, Some(partition), move |key| {
        patient_key(key) == wanted
    })
    .await?;
    decode(settings, raw).await
}

/// Every current subscription of `subscriber_id` (all partitions are read).
pub async fn subscriptions_of(
    settings: &KafkaSettings,
    subscriber_id: &str,
) -> Result<Vec<Subscription>> {
    let raw = read(settings, &settings.topics().subscriptions(), None, |_| true).await?;
    Ok(decode::<Subscription>(settings, raw)
        .await?
        .into_values()
        .filter(|s| s.subscriber_id == subscriber_id)
        .collect())
}

async fn decode<T: AvroRecord>(
    settings: &KafkaSettings,
    raw: BTreeMap<String, Vec<u8>>,
) -> Result<BTreeMap<String, T>> {
    let serde = AvroSerde::new(&settings.schema_registry_url);
    let mut out = BTreeMap::new();
    for (key, bytes) in raw {
        out.insert(key, serde.decode::<T>(&bytes).await?);
    }
    Ok(out)
}

/// Latest value per key (tombstones remove), up to the high watermarks at the start.
async fn read(
    settings: &KafkaSettings,
    topic: &str,
    partition: Option<i32>,
    keep: impl Fn(&str) -> bool + Send + 'static,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut state = BTreeMap::new();
    for message in read_to_end(settings, topic, partition).await? {
        let Some(key) = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
        else {
            continue;
        };
        if !keep(&key) {
            continue;
        }
        match message.payload() {
            Some(value) => state.insert(key, value.to_vec()),
            None => state.remove(&key),
        };
    }
    Ok(state)
}

/// Every record of `topic` (or of one partition), from the start up to the high watermarks
/// when called, as committed (`read_committed`: aborted transactions are skipped).
pub async fn read_to_end(
    settings: &KafkaSettings,
    topic: &str,
    partition: Option<i32>,
) -> Result<Vec<OwnedMessage>> {
    let settings = settings.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || read_blocking(&settings, &topic, partition))
        .await
        .map_err(|e| Error::Setup(dho_kafka::Error::Config(format!("reader task: {e}"))))?
}

fn read_blocking(
    settings: &KafkaSettings,
    topic: &str,
    partition: Option<i32>,
) -> Result<Vec<OwnedMessage>> {
    let kafka = |e: rdkafka::error::KafkaError| Error::Setup(dho_kafka::Error::from(e));
    let consumer: BaseConsumer = settings
        .client_config(&[
            ("group.id", "dho-admin-reader"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
        ])?
        .create()
        .map_err(kafka)?;
    let partitions: Vec<i32> = match partition {
        Some(p) => vec![p],
        None => {
            dho_kafka::partition_ids(&consumer, topic, Duration::from_secs(10)).map_err(kafka)?
        }
    };
    let mut list = TopicPartitionList::new();
    let mut remaining = BTreeMap::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(kafka)?;
        if high > low {
            remaining.insert(p, high);
            list.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(kafka)?;
        }
    }
    let mut messages = Vec::new();
    if remaining.is_empty() {
        return Ok(messages);
    }
    let highs = remaining.clone();
    consumer.assign(&list).map_err(kafka)?;
    let deadline = Instant::now() + READ_TIMEOUT;
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            return Err(Error::Setup(dho_kafka::Error::Config(format!(
                "timed out reading {topic}"
            ))));
        }
        // Under read_committed the last offsets may be transaction markers, never
        // returned: the position past the high watermark says the partition is read.
        for (p, high) in remaining.clone() {
            let position = consumer.position().map_err(kafka)?;
            if let Some(Offset::Offset(at)) = position.find_partition(topic, p).map(|e| e.offset())
                && at >= high
            {
                remaining.remove(&p);
            }
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.map_err(kafka)?;
        let high = highs.get(&message.partition()).copied().unwrap_or(0);
        if message.offset() + 1 >= high {
            remaining.remove(&message.partition());
        }
        if message.offset() < high {
            messages.push(message.detach());
        }
    }
    Ok(messages)
}
