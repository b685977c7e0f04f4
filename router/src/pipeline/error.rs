//! What stops the router, and the waits on the output producer that can.

use rdkafka::error::KafkaError;

use crate::outputs::{Acks, Outbox, Output, OutputProducer, Outputs};

/// Errors that stop the router (bad input never does: it is dead-lettered).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Setup(#[from] dho_kafka::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the broker did not tell the end of state partition {partition}")]
    StateEndUnknown { partition: i32 },
    #[error("state of partition {partition} did not catch up within {seconds}s")]
    StateSyncTimeout { partition: i32, seconds: u64 },
    #[error("an output was not acknowledged by the broker: {0}; the batch will be replayed")]
    NotAcknowledged(KafkaError),
    #[error("the batch's transaction failed and was aborted: {0}; the batch will be replayed")]
    Transaction(KafkaError),
    /// In exactly-once mode: another instance with the same `transactional_id` started
    /// (this one is a zombie now), or the broker lost this producer's state.
    #[error(
        "the output producer failed for good ({code:?}: {reason}); nothing of the batch is \
         committed, and an instance with the same transactional_id routes it again"
    )]
    ProducerFatal {
        code: rdkafka::types::RDKafkaErrorCode,
        reason: String,
    },
    /// The event consumer's fatal error: with static membership, another live instance
    /// has the same `group_instance_id` and the broker fenced this one.
    #[error(
        "the event consumer failed for good ({code:?}: {reason}); FencedInstanceId means \
         another live instance has this group_instance_id, which must be unique"
    )]
    ConsumerFatal {
        code: rdkafka::types::RDKafkaErrorCode,
        reason: String,
    },
    /// The consumer refused the group's assignment in the rebalance callback: its
    /// partitions would be owned and never read.
    #[error("the consumer could not apply the group's assignment: {0}")]
    AssignmentRefused(KafkaError),
}

impl Error {
    /// Exactly-once mode: the group coordinator refused the batch's offsets because the
    /// group moved on while the batch was routed (a rebalance, or this instance was taken
    /// for dead). The transaction was aborted; the batch can be routed again.
    pub(super) fn group_moved_on(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode as Code;
        match self {
            Error::Transaction(KafkaError::Transaction(e)) => matches!(
                e.code(),
                Code::IllegalGeneration
                    | Code::UnknownMemberId
                    | Code::RebalanceInProgress
                    // A static member that rejoined under a new member id in the background:
                    // the batch's old id is fenced (a duplicate id is the consumer's fatal
                    // error instead, see `Input::check_fatal`).
                    | Code::FencedInstanceId
            ),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Hands the records in `outbox` to librdkafka (see `Outputs::flush`).
pub(super) async fn hand_over(outputs: &Outputs, outbox: &mut Outbox) -> Result<()> {
    outputs.flush(outbox).await.map_err(Error::NotAcknowledged)
}

/// Waits for the broker's acknowledgement of every record of `acks`; where each landed.
pub(super) async fn await_acks(acks: &Acks) -> Result<Vec<(i32, i64)>> {
    acks.all().await.map_err(Error::NotAcknowledged)
}

/// Sends one record and waits for its acknowledgement (the state sync's rare outputs,
/// outside a batch's).
pub(super) async fn send_acknowledged<K>(
    producer: &OutputProducer,
    output: Output<'_, K>,
) -> Result<()>
where
    K: rdkafka::message::ToBytes + ?Sized,
{
    let acks = Acks::new();
    crate::outputs::send(producer, output, &acks)
        .await
        .map_err(Error::NotAcknowledged)?;
    await_acks(&acks).await.map(|_| ())
}
