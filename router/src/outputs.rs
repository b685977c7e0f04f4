//! The router's producer and its acknowledgements. A batch's outputs are one [`Acks`]
//! group: the producer's delivery callback counts them down and wakes the router once,
//! when the last one is in, where a future per record (rdkafka's `FutureProducer`) costs
//! two allocations, a channel and a wake-up for every record.

mod outbox;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dho_telemetry::StatsContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Statistics};

pub(crate) use outbox::{Outbox, Outputs, TopicId};

/// The router's producer: its delivery reports go to the [`Acks`] each record was sent with.
pub(crate) type OutputProducer = ThreadedProducer<OutputContext>;

/// Records librdkafka's statistics and counts delivery reports into their groups.
pub(crate) struct OutputContext {
    stats: StatsContext,
}

impl OutputContext {
    pub(crate) fn new(stats: StatsContext) -> Self {
        Self { stats }
    }
}

impl ClientContext for OutputContext {
    fn stats(&self, statistics: Statistics) {
        self.stats.observe(&statistics);
    }
}

impl ProducerContext for OutputContext {
    type DeliveryOpaque = Arc<Acks>;

    fn delivery(&self, result: &DeliveryResult<'_>, acks: Arc<Acks>) {
        match result {
            Ok(message) => acks.acknowledged(message.partition(), message.offset()),
            Err((error, _)) => acks.failed(error.clone()),
        }
    }
}

/// The acknowledgements of a group of records (a batch's outputs), counted as they come.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    outstanding: AtomicUsize,
    /// Set by the delivery callback of a record the broker did not take.
    failure: Mutex<Option<KafkaError>>,
    /// Where each record landed, for groups that need it (see [`Acks::with_positions`]).
    positions: Option<Mutex<Vec<(i32, i64)>>>,
    done: tokio::sync::Notify,
}

impl Acks {
    pub(crate) fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A group that also keeps the partition and offset of every acknowledged record.
    pub(crate) fn with_positions() -> Arc<Self> {
        Arc::new(Self {
            positions: Some(Mutex::default()),
            ..Self::default()
        })
    }

    fn acknowledged(&self, partition: i32, offset: i64) {
        if let Some(positions) = &self.positions {
            lock(positions).push((partition, offset));
        }
        self.settle();
    }

    fn failed(&self, error: KafkaError) {
        lock(&self.failure).get_or_insert(error);
        self.settle();
    }

    /// A record counted in the group that librdkafka did not take: no report will come.
    fn not_handed_over(&self) {
        self.settle();
    }

    fn settle(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Wakes a waiter registered before its last check (see `all`).
            self.done.notify_waiters();
        }
    }

    /// Waits until every record sent with this group so far has its delivery report; the
    /// first failure if any record was not acknowledged, else where each landed (empty
    /// unless made [`with_positions`](Acks::with_positions)).
    pub(crate) async fn all(&self) -> Result<Vec<(i32, i64)>, KafkaError> {
        loop {
            // Registered before the check: a report settling the group in between still
            // wakes it.
            let settled = self.done.notified();
            if self.outstanding.load(Ordering::Acquire) == 0 {
                break;
            }
            settled.await;
        }
        if let Some(error) = lock(&self.failure).take() {
            return Err(error);
        }
        Ok(self
            .positions
            .as_ref()
            .map(|p| std::mem::take(&mut *lock(p)))
            .unwrap_or_default())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind: still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A record for [`send`].
pub(crate) struct Output<'a, K: ?Sized> {
    pub topic: &'a str,
    pub partition: Option<i32>,
    pub key: Option<&'a K>,
    pub payload: Option<&'a [u8]>,
    pub headers: Option<OwnedHeaders>,
}

/// Enqueues `output` as one of `acks`' records; waits while librdkafka's queue is full.
pub(crate) async fn send<K>(
    producer: &OutputProducer,
    output: Output<'_, K>,
    acks: &Arc<Acks>,
) -> Result<(), KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
{
    let mut record = BaseRecord::with_opaque_to(output.topic, acks.clone());
    record.partition = output.partition;
    record.key = output.key;
    record.payload = output.payload;
    record.headers = output.headers;
    // Counted before it is handed over: its report may come before `send` returns.
    acks.outstanding.fetch_add(1, Ordering::AcqRel);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => {
                acks.not_handed_over();
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_group_settles_when_its_last_report_is_in() {
        let acks = Acks::with_positions();
        acks.outstanding.store(3, Ordering::Release);
        let waiter = tokio::spawn({
            let acks = acks.clone();
            async move { acks.all().await }
        });
        acks.acknowledged(0, 10);
        acks.acknowledged(1, 4);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one report is still outstanding");
        acks.acknowledged(0, 11);
        let positions = waiter.await.unwrap().unwrap();
        assert_eq!(positions, vec![(0, 10), (1, 4), (0, 11)]);
    }

    #[tokio::test]
    async fn one_failed_record_fails_the_group() {
        let acks = Acks::new();
        acks.outstanding.store(2, Ordering::Release);
        acks.failed(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageTimedOut,
        ));
        acks.acknowledged(0, 1);
        let failure = acks.all().await.unwrap_err();
        assert!(failure.to_string().contains("timed out"), "{failure}");
    }
}
