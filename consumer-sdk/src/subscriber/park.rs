//! Parking: a delivery the handler cannot take (or a record that cannot be decoded) is
//! written with its original key and bytes and error headers to the subscriber's own
//! `<prefix>.deliver.<subscriber_id>.dlq` topic, acknowledged, and only then committed.

use std::time::Duration;

use dho_kafka::KafkaSettings;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::headers;
use crate::{Error, Result};

/// The error detail header is cut to this many bytes.
const MAX_DETAIL: usize = 1000;

/// What went wrong with one record.
#[derive(Debug)]
pub(crate) struct Failure<'a> {
    pub reason: &'static str,
    pub detail: String,
    pub attempts: u32,
    pub delivery_id: Option<&'a str>,
}

pub(crate) struct Parking {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for Parking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parking")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Parking {
    pub(crate) fn new(settings: &KafkaSettings, topic: String) -> Result<Self> {
        let producer = settings
            .client_config(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                // Same partition for the same patient as the hub's writers (Java murmur2).
                ("partitioner", "murmur2_random"),
            ])?
            .create()?;
        Ok(Self { producer, topic })
    }

    pub(crate) async fn park(
        &self,
        record: &RawRecord,
        source_topic: &str,
        partition: i32,
        offset: i64,
        failure: &Failure<'_>,
    ) -> Result<()> {
        let mut detail = failure.detail.clone();
        if detail.len() > MAX_DETAIL {
            let mut end = MAX_DETAIL;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
        }
        let (partition_text, offset_text, attempts) = (
            partition.to_string(),
            offset.to_string(),
            failure.attempts.to_string(),
        );
        let mut headers = OwnedHeaders::new();
        for (key, value) in [
            (headers::REASON, failure.reason),
            (headers::DETAIL, detail.as_str()),
            (headers::SOURCE_TOPIC, source_topic),
            (headers::SOURCE_PARTITION, partition_text.as_str()),
            (headers::SOURCE_OFFSET, offset_text.as_str()),
            (headers::COMPONENT, headers::COMPONENT_CONSUMER),
            (headers::ATTEMPTS, attempts.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        if let Some(id) = failure.delivery_id {
            headers = headers.insert(Header {
                key: headers::DELIVERY_ID,
                value: Some(id),
            });
        }
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = record.key.as_deref() {
            out = out.key(key);
        }
        if let Some(bytes) = record.payload.as_deref() {
            out = out.payload(bytes);
        }
        self.producer
            .send(out, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(source, _)| Error::NotParked {
                partition,
                offset,
                source,
            })
    }
}

/// A record's original key and bytes, kept for parking.
#[derive(Clone)]
pub(crate) struct RawRecord {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

// The key is the patient's number: never printed.
impl std::fmt::Debug for RawRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRecord")
            .field("payload_len", &self.payload.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}
