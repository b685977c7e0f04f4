//! Dead letters: a record the router cannot route is parked in the dead-letter topic with
//! its original key, bytes and the reason in headers, never dropped and never a reason to
//! stop (see "Nothing lost" in ARCHITECTURE.md).

use dho_schemas::topics::headers;
use rdkafka::message::{Header, Message, OwnedHeaders};
use tracing::warn;

use super::error::{Error, Result, await_acks};
use crate::metrics as m;
use crate::outputs::{Acks, Output, OutputProducer};

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
}

impl DeadLetters {
    pub(super) fn new(topic: String) -> Self {
        Self { topic }
    }

    /// Parks a record in the dead-letter topic with its original key and bytes, and waits
    /// for the acknowledgement (dead letters are rare; simplicity wins over batching).
    pub(super) async fn park(
        &self,
        producer: &OutputProducer,
        message: &impl Message,
        reason: &'static str,
        detail: String,
    ) -> Result<()> {
        metrics::counter!(m::DEADLETTERS, "reason" => reason).increment(1);
        warn!(
            reason,
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            "dead-lettered a record"
        );
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: headers::REASON,
                value: Some(reason),
            })
            .insert(Header {
                key: headers::DETAIL,
                value: Some(detail.as_str()),
            })
            .insert(Header {
                key: headers::SOURCE_TOPIC,
                value: Some(message.topic()),
            })
            .insert(Header {
                key: headers::SOURCE_PARTITION,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: headers::SOURCE_OFFSET,
                value: Some(offset.as_str()),
            })
            .insert(Header {
                key: headers::COMPONENT,
                value: Some("router"),
            });
        let output = Output {
            topic: &self.topic,
            partition: None,
            key: message.key(),
            payload: message.payload(),
            headers: Some(headers),
        };
        let acks = Acks::new();
        crate::outputs::send(producer, output, &acks)
            .await
            .map_err(Error::NotAcknowledged)?;
        await_acks(&acks).await.map(|_| ())
    }
}
