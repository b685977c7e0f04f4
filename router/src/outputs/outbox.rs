//! A batch's deliveries and audit records, handed to librdkafka a topic at a time with
//! `rd_kafka_produce_batch`. rdkafka's `send` is `rd_kafka_producev` per record: a C string
//! of the topic name, a topic lookup under a lock, two clock readings and the producer
//! checks, every time; that was a third of the router's own CPU. The batch call resolves
//! the topic once (a handle kept per topic) and reads the clock once per call.
//!
//! The only unsafe code of the hub is here; each block says why it holds.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use rdkafka::util::IntoOpaque;

use super::{Acks, OutputProducer};

/// The index of an output topic in [`Outputs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TopicId(usize);

/// A librdkafka topic handle of the output producer.
struct TopicHandle(NonNull<rd::rd_kafka_topic_t>);

// SAFETY: librdkafka's topic handles are reference-counted and every function taking one is
// thread-safe (rdkafka.h: "all API calls are thread-safe").
unsafe impl Send for TopicHandle {}
unsafe impl Sync for TopicHandle {}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from rd_kafka_topic_new and is released once, here, while
        // the producer still exists (see `Outputs`' Drop).
        unsafe { rd::rd_kafka_topic_destroy(self.0.as_ptr()) }
    }
}

/// The output producer and a handle for every topic it writes batches to.
pub(crate) struct Outputs {
    topics: Vec<TopicHandle>,
    by_name: HashMap<String, TopicId>,
    producer: OutputProducer,
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs")
            .field("topics", &self.by_name.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        // Topic handles go before the producer: librdkafka waits for them when it is
        // destroyed.
        self.topics.clear();
    }
}

impl Outputs {
    pub(crate) fn new(producer: OutputProducer) -> Self {
        Self {
            topics: Vec::new(),
            by_name: HashMap::new(),
            producer,
        }
    }

    pub(crate) fn producer(&self) -> &OutputProducer {
        &self.producer
    }

    /// The id of `name`, making its handle on first use.
    pub(crate) fn topic(&mut self, name: &str) -> Result<TopicId, KafkaError> {
        if let Some(id) = self.by_name.get(name) {
            return Ok(*id);
        }
        let c_name = CString::new(name).map_err(KafkaError::Nul)?;
        // SAFETY: the client pointer is the live producer's; the name is a valid C string
        // that librdkafka copies; a null configuration means the producer's defaults.
        let handle = unsafe {
            rd::rd_kafka_topic_new(
                self.producer.client().native_ptr(),
                c_name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        let Some(handle) = NonNull::new(handle) else {
            // SAFETY: reads the calling thread's last librdkafka error; no pointers.
            let code = unsafe { rd::rd_kafka_last_error() };
            return Err(KafkaError::MessageProduction(code.into()));
        };
        let handle = TopicHandle(handle);
        // The handle must know the topic's partitions before its first batch: a message
        // produced while they are unknown waits in the unassigned partition, and in a
        // transaction librdkafka would add that one, not the message's, to the transaction.
        let metadata = tokio::task::block_in_place(|| {
            self.producer
                .client()
                .fetch_metadata(Some(name), Duration::from_secs(10))
        })?;
        if let Some(error) = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .and_then(|t| t.error())
        {
            return Err(KafkaError::MetadataFetch(error.into()));
        }
        let id = TopicId(self.topics.len());
        self.topics.push(handle);
        self.by_name.insert(name.to_string(), id);
        Ok(id)
    }

    /// Hands every record of `outbox` to librdkafka, in order per topic, each counted in the
    /// outbox's acknowledgement group; waits while librdkafka's queue is full. Empties it.
    pub(crate) async fn flush(&self, outbox: &mut Outbox) -> Result<(), KafkaError> {
        let result = self.flush_topics(outbox).await;
        outbox.records.clear();
        outbox.bytes.clear();
        result
    }

    async fn flush_topics(&self, outbox: &Outbox) -> Result<(), KafkaError> {
        // Topics in the order they first appear; a batch has a handful.
        let mut done: Vec<TopicId> = Vec::new();
        let mut records: Vec<&Pending> = Vec::with_capacity(outbox.records.len());
        for first in &outbox.records {
            if done.contains(&first.topic) {
                continue;
            }
            done.push(first.topic);
            records.clear();
            records.extend(outbox.records.iter().filter(|r| r.topic == first.topic));
            let mut start = 0;
            while start < records.len() {
                start += self.produce(first.topic, &records[start..], outbox)?;
                if start < records.len() {
                    // The rest met a full queue: wait for deliveries to make room.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        Ok(())
    }

    /// Produces `records` (all of `topic`, to the partitions they name) in one call. Returns
    /// how many from the start were taken; the rest met a full queue. Any other refusal is
    /// an error.
    fn produce(
        &self,
        topic: TopicId,
        records: &[&Pending],
        outbox: &Outbox,
    ) -> Result<usize, KafkaError> {
        let acks = &outbox.acks;
        let bytes = |(start, end): (usize, usize)| outbox.bytes[start..end].as_ptr() as *mut c_void;
        let mut messages: Vec<rd::rd_kafka_message_t> = records
            .iter()
            .map(|record| rd::rd_kafka_message_t {
                err: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                rkt: std::ptr::null_mut(),
                partition: record.partition,
                payload: bytes(record.payload),
                len: record.payload.1 - record.payload.0,
                key: bytes(record.key),
                key_len: record.key.1 - record.key.0,
                offset: 0,
                _private: acks.clone().into_ptr(),
            })
            .collect();
        // Counted before they are handed over: a report may come before the call returns.
        acks.outstanding.fetch_add(messages.len(), Ordering::AcqRel);
        let count = i32::try_from(messages.len()).unwrap_or(i32::MAX);
        // SAFETY: the topic handle is live (owned by self, like the producer); every message
        // points into the outbox's bytes, which outlive the call, and librdkafka copies
        // payloads (F_COPY) and keys before it returns; `_private` is an `Arc<Acks>` that the
        // delivery callback takes back (`OutputContext::DeliveryOpaque`), or the loop below
        // does for a refused message. Partition -1 (unassigned): each message names its own
        // (F_PARTITION).
        unsafe {
            rd::rd_kafka_produce_batch(
                self.topics[topic.0].0.as_ptr(),
                -1,
                rd::RD_KAFKA_MSG_F_COPY | rd::RD_KAFKA_MSG_F_PARTITION,
                messages.as_mut_ptr(),
                count,
            )
        };
        let mut taken = messages.len();
        let mut failure = None;
        for (i, message) in messages.iter().enumerate() {
            if message.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                continue;
            }
            // SAFETY: a refused message was never enqueued, so no delivery report will take
            // its opaque back: this is the one owner of the Arc made above.
            drop(unsafe { Arc::<Acks>::from_raw(message._private as *const Acks) });
            acks.not_handed_over();
            let code = RDKafkaErrorCode::from(message.err);
            if code == RDKafkaErrorCode::QueueFull {
                // A full queue refuses this message and every later one of the call.
                taken = taken.min(i);
            } else {
                failure.get_or_insert(KafkaError::MessageProduction(code));
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(taken),
        }
    }
}

/// One record waiting in an [`Outbox`]: where it goes and its bytes' ranges.
#[derive(Debug, Clone, Copy)]
struct Pending {
    topic: TopicId,
    partition: i32,
    key: (usize, usize),
    payload: (usize, usize),
}

/// Records of one acknowledgement group waiting to be handed to librdkafka together.
#[derive(Debug)]
pub(crate) struct Outbox {
    acks: Arc<Acks>,
    records: Vec<Pending>,
    /// Keys and payloads, end to end.
    bytes: Vec<u8>,
}

impl Outbox {
    /// How many records an outbox holds before the router hands them over: enough to make
    /// the per-call costs small, few enough that librdkafka is sending while the rest of a
    /// batch is routed.
    pub(crate) const HAND_OVER_AT: usize = 256;

    pub(crate) fn new(acks: Arc<Acks>) -> Self {
        Self {
            acks,
            records: Vec::new(),
            bytes: Vec::new(),
        }
    }

    pub(crate) fn acks(&self) -> &Arc<Acks> {
        &self.acks
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Adds a record for `topic`'s `partition` whose payload `write` appends to the
    /// outbox's bytes (written in place, not copied in); if `write` fails, nothing is added.
    pub(crate) fn push_with<E>(
        &mut self,
        topic: TopicId,
        partition: i32,
        key: &[u8],
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let key_start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let payload_start = self.bytes.len();
        if let Err(e) = write(&mut self.bytes) {
            self.bytes.truncate(key_start);
            return Err(e);
        }
        self.records.push(Pending {
            topic,
            partition,
            key: (key_start, payload_start),
            payload: (payload_start, self.bytes.len()),
        });
        Ok(())
    }

    /// Adds a record with a ready payload.
    #[cfg(test)]
    fn push(&mut self, topic: TopicId, partition: i32, key: &[u8], payload: &[u8]) {
        let written = self.push_with(topic, partition, key, |out| {
            out.extend_from_slice(payload);
            Ok::<(), std::convert::Infallible>(())
        });
        let Ok(()) = written;
    }
}

/// Against the development broker: what the outbox hands over arrives complete and in
/// order, and every acknowledgement-group reference it made is given back.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::OutputContext;
    use dho_kafka::TopicSpec;
    use dho_telemetry::{KafkaStats, StatsContext};

    const PARTITIONS: i32 = 3;

    async fn outputs(stack: &dho_tests::Stack, extra: &[(&str, &str)]) -> Outputs {
        let mut own = vec![("enable.idempotence", "true"), ("acks", "all")];
        own.extend_from_slice(extra);
        let producer: OutputProducer = stack
            .settings
            .client_config(&own)
            .unwrap()
            .create_with_context(OutputContext::new(StatsContext::new(KafkaStats::new(
                dho_telemetry::names::router::STATS,
                "outbox-test",
            ))))
            .unwrap();
        Outputs::new(producer)
    }

    async fn topics(stack: &dho_tests::Stack, names: &[&str]) {
        let specs: Vec<TopicSpec> = names
            .iter()
            .map(|name| TopicSpec::output(name.to_string(), PARTITIONS, None))
            .collect();
        dho_kafka::ensure_topics(&stack.settings, &specs)
            .await
            .unwrap();
    }

    /// Waits until `acks` has `owners` references left: a delivery callback drops the one
    /// its record carried just after counting the record in.
    async fn released(acks: &Arc<Acks>, owners: usize) {
        for _ in 0..500 {
            if Arc::strong_count(acks) == owners {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{} references to the group, not {owners}",
            Arc::strong_count(acks)
        );
    }

    /// `(key, payload)` per partition, in offset order.
    fn read(stack: &dho_tests::Stack, topic: &str) -> Vec<Vec<(String, String)>> {
        let mut by_partition = vec![Vec::new(); PARTITIONS as usize];
        let mut records = dho_tests::read_topic(&stack.settings, topic);
        records.sort_by_key(|r| (r.partition, r.offset));
        for record in records {
            by_partition[record.partition as usize].push((
                record.key.unwrap_or_default(),
                String::from_utf8(record.value.unwrap_or_default()).unwrap(),
            ));
        }
        by_partition
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_arrive_complete_and_in_order_even_when_the_queue_fills() {
        let stack = dho_tests::Stack::start().await;
        let (a, b) = ("outbox-a", "outbox-b");
        topics(&stack, &[a, b]).await;
        // A queue of 7 messages: most hand-overs meet a full queue and wait for room.
        let mut outputs = outputs(&stack, &[("queue.buffering.max.messages", "7")]).await;
        let ids = [outputs.topic(a).unwrap(), outputs.topic(b).unwrap()];
        assert_eq!(outputs.topic(a).unwrap(), ids[0], "one handle per topic");

        let acks = Acks::new();
        let mut outbox = Outbox::new(acks.clone());
        let mut expected = vec![vec![Vec::new(); PARTITIONS as usize]; 2];
        for i in 0..150 {
            // Interleaved across topics and partitions, as a batch's outputs are.
            let (t, partition) = (i % 2, (i / 2) % PARTITIONS);
            let (key, payload) = (format!("patient-{}", i % 5), format!("record-{i}"));
            outbox.push(
                ids[t as usize],
                partition,
                key.as_bytes(),
                payload.as_bytes(),
            );
            expected[t as usize][partition as usize].push((key, payload));
            if outbox.len() == 64 {
                outputs.flush(&mut outbox).await.unwrap();
                assert_eq!(outbox.len(), 0, "a flush empties the outbox");
            }
        }
        outputs.flush(&mut outbox).await.unwrap();
        let positions = tokio::time::timeout(Duration::from_secs(30), acks.all())
            .await
            .expect("every record acknowledged")
            .unwrap();
        assert!(positions.is_empty(), "a plain group keeps no positions");
        // The outbox's and the test's: every record's reference was given back.
        released(&acks, 2).await;

        assert_eq!(read(&stack, a), expected[0]);
        assert_eq!(read(&stack, b), expected[1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_record_fails_the_hand_over_and_leaves_nothing_counted() {
        let stack = dho_tests::Stack::start().await;
        let topic = "outbox-refused";
        topics(&stack, &[topic]).await;
        let mut outputs = outputs(&stack, &[]).await;
        let id = outputs.topic(topic).unwrap();

        let acks = Acks::new();
        let mut outbox = Outbox::new(acks.clone());
        outbox.push(id, 0, b"k", b"taken");
        outbox.push(id, PARTITIONS + 5, b"k", b"no such partition");
        outbox.push(id, 1, b"k", b"taken too");
        let error = outputs.flush(&mut outbox).await.unwrap_err();
        assert!(error.to_string().contains("Unknown partition"), "{error}");

        // The two records taken are acknowledged; the refused one is not waited for.
        tokio::time::timeout(Duration::from_secs(30), acks.all())
            .await
            .expect("the group settles without the refused record")
            .unwrap();
        // The outbox's and the test's: the refused record's reference was given back.
        released(&acks, 2).await;
        let read = read(&stack, topic);
        assert_eq!(read[0], vec![("k".into(), "taken".into())]);
        assert_eq!(read[1], vec![("k".into(), "taken too".into())]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_topic_the_broker_does_not_have_is_an_error_when_its_handle_is_made() {
        let stack = dho_tests::Stack::start().await;
        let mut outputs = outputs(&stack, &[("allow.auto.create.topics", "false")]).await;
        let error = outputs.topic("outbox-never-made").unwrap_err();
        assert!(error.to_string().contains("Unknown topic"), "{error}");
    }
}
