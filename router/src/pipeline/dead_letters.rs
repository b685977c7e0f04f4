//! Dead letters: a record the router cannot route is parked in the dead-letter topic with
//! its original key, bytes and headers and the reason in headers of its own, never dropped and never a reason to
//! stop (see "Nothing lost" in ARCHITECTURE.md).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dho_kafka::outage::Throttle;
use dho_schemas::topics::headers;
use dho_telemetry::InternalEvent;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

use super::error::{Error, Result, await_acks, send_acknowledged};
use crate::events::DeadLettered;
use crate::outputs::{Acks, Output, OutputProducer};

/// A hold marker's value: not Avro (no magic byte 0), so no reader takes it for state.
const HOLD_MARKER: &[u8] = b"dho.hold";

/// Why a record went to the dead-letter topic (bounded: a metric label and a header).
#[derive(Debug)]
pub(super) struct DeadLetter {
    pub(super) reason: &'static str,
    pub(super) detail: String,
}

/// The dead-letter topic.
#[derive(Debug, Clone)]
pub(super) struct DeadLetters {
    topic: String,
    /// A flood of malformed input writes a line every few seconds, not one per record
    /// (the counter stays exact). Shared by the clones (the batch's and the state sync's).
    warnings: Arc<Mutex<Throttle>>,
}

impl DeadLetters {
    pub(super) fn new(topic: String) -> Self {
        Self {
            topic,
            warnings: Arc::new(Mutex::new(Throttle::every(Duration::from_secs(5)))),
        }
    }

    /// Parks a record in the dead-letter topic with its original key and bytes, and waits
    /// for the acknowledgement (the state sync's dead letters: rare, and outside a batch's
    /// outputs).
    pub(super) async fn park(
        &self,
        producer: &OutputProducer,
        message: &impl Message,
        reason: &'static str,
        detail: String,
    ) -> Result<()> {
        let acks = Acks::new();
        self.send(producer, message, reason, detail, &acks).await?;
        await_acks(&acks).await.map(|_| ())
    }

    /// For a state record written to another partition than its patient's (already
    /// dead-lettered): writes a hold marker under the same key on the patient's own
    /// partition of the same topic. That partition's owner, whichever instance it is, then
    /// holds the patient as for any unusable state record (see `StateSync::apply`); a valid
    /// record for the key replaces the marker, in order and under compaction, as it would
    /// the record itself. The value is no Avro, so a router that does not know the marker
    /// fails closed too: it dead-letters it as undecodable and holds the patient.
    pub(super) async fn hold_on_own_partition(
        &self,
        producer: &OutputProducer,
        message: &impl Message,
        own_partition: i32,
        reason: &'static str,
    ) -> Result<()> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let headers = add_headers(
            OwnedHeaders::new(),
            &[
                (headers::HOLD, reason),
                (headers::SOURCE_PARTITION, &partition),
                (headers::SOURCE_OFFSET, &offset),
            ],
        );
        let marker = Output {
            topic: message.topic(),
            partition: Some(own_partition),
            key: message.key(),
            payload: Some(HOLD_MARKER),
            headers: Some(headers),
        };
        send_acknowledged(producer, marker).await
    }

    /// Parks a record as one of `acks`' group: an event's dead letter is one of its batch's
    /// outputs, acknowledged with the others before the batch commits, so a flood of
    /// malformed input moves at the speed of good records instead of one round trip each.
    pub(super) async fn send(
        &self,
        producer: &OutputProducer,
        message: &impl Message,
        reason: &'static str,
        detail: String,
        acks: &Arc<Acks>,
    ) -> Result<()> {
        DeadLettered {
            reason,
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            warnings: &self.warnings,
        }
        .emit();
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        // The record's own headers first, so `dho-admin redrive` can send it back whole.
        let original = message.headers().into_iter().flat_map(|h| h.iter());
        let headers = add_headers(
            original.fold(OwnedHeaders::new(), |all, h| all.insert(h)),
            &[
                (headers::REASON, reason),
                (headers::DETAIL, &detail),
                (headers::SOURCE_TOPIC, message.topic()),
                (headers::SOURCE_PARTITION, &partition),
                (headers::SOURCE_OFFSET, &offset),
                (headers::COMPONENT, "router"),
            ],
        );
        let output = Output {
            topic: &self.topic,
            partition: None,
            key: message.key(),
            payload: message.payload(),
            headers: Some(headers),
        };
        crate::outputs::send(producer, output, acks)
            .await
            .map_err(Error::NotAcknowledged)
    }
}

/// `headers` with each `(key, value)` of `pairs` added.
fn add_headers(headers: OwnedHeaders, pairs: &[(&str, &str)]) -> OwnedHeaders {
    pairs.iter().fold(headers, |all, &(key, value)| {
        all.insert(Header {
            key,
            value: Some(value),
        })
    })
}
