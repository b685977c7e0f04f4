//! Finishing routed batches: wait for every output's acknowledgement, write the batch's
//! alert tracks and delivery records, then commit its input offsets, or in exactly-once mode commit its
//! transaction with the offsets in it. Batches finish strictly in order, so a commit never
//! passes an unacknowledged output.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dho_routing_core::alerts::Track;
use dho_routing_core::delivered::DeliveryRecord;
use dho_routing_core::sharing::SharingSnapshot;
use dho_telemetry::{InternalEvent, KafkaStats, StatsContext};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use serde::Serialize;
use tracing::warn;

use super::error::{Error, Result, await_acks, hand_over};
use super::input::EventConsumer;
use super::state_sync::{StateSync, StateTopic};
use crate::config::RouterConfig;
use crate::events::BatchCommitted;
use crate::outputs::{Acks, Outbox, Output, OutputContext, OutputProducer, Outputs};

/// How many routed batches may wait for their acknowledgements at once. Two: the state
/// ends of the next batch are asked for while the oldest one's acknowledgements are
/// collected, and a batch has a whole batch's routing time to be acknowledged.
const PIPELINE_DEPTH: usize = 2;

/// How long a transaction call may block.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// What one router instance did in its run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Batches routed and committed.
    pub batches: u64,
    /// Event records routed (delivered, withheld or dead-lettered).
    pub events: u64,
    /// Input partitions whose state was loaded from the start (see
    /// `dho_router_state_partition_loads_total`).
    pub partitions_loaded: u64,
    /// Exactly-once mode: batches aborted because the group moved on during them, and
    /// routed again.
    pub batches_rewound: u64,
}

/// What routing one batch produced, before it is acknowledged.
pub(super) struct BatchOutputs {
    /// Deliveries, audit records and alerts: waiting to be handed over, then for their
    /// acknowledgements.
    pub(super) outbox: Outbox,
    /// Alert tracks changed in the batch, as they were at its end, by (partition,
    /// `patient|<track id>` key): written once the batch's outputs are acknowledged. `None`
    /// is a tombstone (a track from before plans per organisation, migrated).
    pub(super) tracks: BTreeMap<(i32, String), Option<Track>>,
    /// What was delivered of the batch's named readings, by (partition,
    /// `patient|delivered:<event id>` key): written with the tracks, on the same terms.
    pub(super) delivered: BTreeMap<(i32, String), DeliveryRecord>,
    /// The consents each patient's sharing was judged by in the batch, by (partition,
    /// `patient|sharing:consents` key): written with the tracks, after the "sharing ended"
    /// notices they account for are acknowledged.
    pub(super) sharing: BTreeMap<(i32, String), SharingSnapshot>,
}

impl BatchOutputs {
    pub(super) fn new() -> Self {
        Self {
            outbox: Outbox::new(Acks::new()),
            tracks: BTreeMap::new(),
            delivered: BTreeMap::new(),
            sharing: BTreeMap::new(),
        }
    }
}

/// A routed batch whose outputs may not be acknowledged yet.
pub(super) struct InFlight {
    pub(super) out: BatchOutputs,
    /// The input offsets to commit once it is acknowledged.
    pub(super) offsets: TopicPartitionList,
    /// Exactly-once mode: the group membership the batch's records were fetched under. Its
    /// offsets are committed under it, so if the group has moved on meanwhile (this
    /// instance was taken for dead and its partitions given to another), the broker
    /// refuses the commit (KIP-447) instead of taking offsets from a zombie. librdkafka
    /// updates the membership in the background on rejoining, so asking at commit time
    /// could already name the new generation. A refusal rewinds the batch (see
    /// `Router::rewind`).
    pub(super) group: Option<ConsumerGroupMetadata>,
    pub(super) started: Instant,
    pub(super) events: usize,
}

/// The output producer: idempotent, `acks=all`; transactional in exactly-once mode.
pub(super) fn output_producer(
    config: &RouterConfig,
    kafka_stats: KafkaStats,
) -> Result<OutputProducer> {
    let settings = &config.kafka;
    let mut own = vec![
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("linger.ms", "2"),
        ("partitioner", "murmur2_random"),
        ("statistics.interval.ms", "5000"),
    ];
    if let Some(id) = &config.transactional_id {
        own.push(("transactional.id", id.as_str()));
    }
    let producer: OutputProducer = settings
        .client_config(&own)?
        .create_with_context(OutputContext::new(StatsContext::new(kafka_stats)))?;
    if config.transactional_id.is_some() {
        // Fences any older instance with the same id and aborts its open transaction.
        tokio::task::block_in_place(|| producer.init_transactions(TXN_TIMEOUT))
            .map_err(Error::Transaction)?;
    }
    Ok(producer)
}

/// The routed batches waiting for their acknowledgements, and what finished.
pub(super) struct Commits {
    /// Exactly-once mode: one transaction per batch.
    transactional: bool,
    /// Batches routed but not yet acknowledged, oldest first (effectively-once mode; at
    /// most `PIPELINE_DEPTH`).
    in_flight: VecDeque<InFlight>,
    /// The offsets the last finished batch committed (asynchronously).
    last_offsets: Option<TopicPartitionList>,
    stats: RunStats,
    /// Event records whose outputs are acknowledged and offsets committed, in this run.
    finished: Arc<AtomicU64>,
}

impl Commits {
    pub(super) fn new(transactional: bool) -> Self {
        Self {
            transactional,
            in_flight: VecDeque::new(),
            last_offsets: None,
            stats: RunStats::default(),
            finished: Arc::default(),
        }
    }

    pub(super) fn finished(&self) -> Arc<AtomicU64> {
        self.finished.clone()
    }

    /// Whether no routed batch waits for its acknowledgements.
    pub(super) fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Exactly-once mode: the group membership a batch's records are fetched under (see
    /// [`InFlight::group`]).
    pub(super) fn membership(
        &self,
        consumer: &EventConsumer,
    ) -> Result<Option<ConsumerGroupMetadata>> {
        Ok(match self.transactional {
            true => Some(consumer.group_metadata().ok_or(KafkaError::Canceled)?),
            false => None,
        })
    }

    /// Starts the batch's transaction in exactly-once mode.
    pub(super) fn begin(&self, outputs: &Outputs) -> Result<()> {
        if self.transactional {
            tokio::task::block_in_place(|| outputs.producer().begin_transaction())
                .map_err(Error::Transaction)?;
        }
        Ok(())
    }

    /// Finishes the oldest routed batches until another one may be routed.
    pub(super) async fn make_room(
        &mut self,
        outputs: &Outputs,
        consumer: &EventConsumer,
        state: &mut StateSync,
    ) -> Result<()> {
        while self.in_flight.len() >= PIPELINE_DEPTH {
            if let Some(oldest) = self.in_flight.pop_front() {
                self.finish(oldest, outputs, consumer, state).await?;
            }
        }
        Ok(())
    }

    /// Takes a routed batch whose outputs are handed over.
    pub(super) async fn routed(
        &mut self,
        batch: InFlight,
        outputs: &Outputs,
        consumer: &EventConsumer,
        state: &mut StateSync,
    ) -> Result<()> {
        if self.transactional {
            // One transaction at a time: finished before the next batch begins.
            return self.finish(batch, outputs, consumer, state).await;
        }
        // Pipelined: this batch's outputs are on their way while the next batch is routed
        // (see PIPELINE_DEPTH). Batches finish in order, so committed offsets still never
        // pass an unacknowledged output.
        self.in_flight.push_back(batch);
        Ok(())
    }

    /// Finishes the batches still waiting for their acknowledgements, oldest first.
    pub(super) async fn finish_in_flight(
        &mut self,
        outputs: &Outputs,
        consumer: &EventConsumer,
        state: &mut StateSync,
    ) -> Result<()> {
        while let Some(batch) = self.in_flight.pop_front() {
            self.finish(batch, outputs, consumer, state).await?;
        }
        Ok(())
    }

    /// Waits for a routed batch's acknowledgements, writes its alert tracks, then commits
    /// its input offsets (in exactly-once mode, commits its transaction).
    async fn finish(
        &mut self,
        batch: InFlight,
        outputs: &Outputs,
        consumer: &EventConsumer,
        state: &mut StateSync,
    ) -> Result<()> {
        let InFlight {
            out,
            offsets,
            group,
            started,
            events,
        } = batch;
        self.acknowledge(out, outputs, state).await?;
        // Outputs acknowledged: only now may the input offsets move on.
        if self.transactional {
            self.commit_transaction(outputs, &offsets, group.as_ref())?;
        } else {
            consumer.commit(&offsets, CommitMode::Async)?;
            self.last_offsets = Some(offsets);
        }
        self.stats.batches += 1;
        self.stats.events += events as u64;
        self.finished.fetch_add(events as u64, Ordering::Relaxed);
        BatchCommitted { started }.emit();
        state.gauges();
        Ok(())
    }

    /// Waits until the broker acknowledged every output, then writes the batch's alert
    /// tracks (as they were at the end of the batch) and delivery records. A track is
    /// written only after the alerts it raised are acknowledged: a crash in between replays
    /// the reading, which raises the same alert (same id) again, where writing the track
    /// first could lose it. Likewise a delivery record names only acknowledged deliveries.
    /// In exactly-once mode the transaction makes both one step.
    pub(super) async fn acknowledge(
        &self,
        out: BatchOutputs,
        outputs: &Outputs,
        state: &mut StateSync,
    ) -> Result<()> {
        let BatchOutputs {
            mut outbox,
            tracks,
            delivered,
            sharing,
        } = out;
        let own = OwnRecords {
            tracks: &tracks,
            delivered: &delivered,
            sharing: &sharing,
        };
        hand_over(outputs, &mut outbox).await?;
        let acks = outbox.acks();
        if self.transactional {
            let track_writes = write_tracks(own, outputs, state).await?;
            let (delivered, written) = futures::join!(await_acks(acks), await_acks(&track_writes));
            let written = delivered.and(written).map_err(|e| fatal_or(outputs, e))?;
            state.note_own_writes(written);
            return Ok(());
        }
        await_acks(acks).await?;
        if tracks.is_empty() && delivered.is_empty() && sharing.is_empty() {
            return Ok(());
        }
        let track_writes = write_tracks(own, outputs, state).await?;
        let written = await_acks(&track_writes).await?;
        state.note_own_writes(written);
        Ok(())
    }

    /// The part of the batches in flight that belongs to partitions the group took away:
    /// its offsets are not committed and its alert tracks not written (the new owner routes
    /// those records again, with the same ids, and a late write from here could overwrite
    /// the new owner's).
    pub(super) fn forget(&mut self, revoked: &[i32]) {
        for in_flight in &mut self.in_flight {
            in_flight
                .out
                .tracks
                .retain(|(partition, _), _| !revoked.contains(partition));
            in_flight
                .out
                .delivered
                .retain(|(partition, _), _| !revoked.contains(partition));
            in_flight
                .out
                .sharing
                .retain(|(partition, _), _| !revoked.contains(partition));
            let mut kept = TopicPartitionList::new();
            for e in in_flight.offsets.elements() {
                if !revoked.contains(&e.partition())
                    && let Err(err) =
                        kept.add_partition_offset(e.topic(), e.partition(), e.offset())
                {
                    warn!(error = %err, "could not keep an in-flight offset");
                }
            }
            in_flight.offsets = kept;
        }
    }

    /// Offsets and outputs become visible together; on failure everything is aborted and
    /// the router stops, so the batch is routed again from the last committed offsets.
    pub(super) fn commit_transaction(
        &self,
        outputs: &Outputs,
        offsets: &TopicPartitionList,
        group: Option<&ConsumerGroupMetadata>,
    ) -> Result<()> {
        let result = tokio::task::block_in_place(|| {
            // The no-data timer's transactions consume nothing: no offsets to send.
            if offsets.count() > 0 {
                #[cfg(feature = "fault-injection")]
                crate::fault::before_commit()?;
                let group = group.ok_or(KafkaError::Canceled)?;
                outputs
                    .producer()
                    .send_offsets_to_transaction(offsets, group, TXN_TIMEOUT)?;
            }
            outputs.producer().commit_transaction(TXN_TIMEOUT)
        });
        if let Err(e) = result {
            let _ =
                tokio::task::block_in_place(|| outputs.producer().abort_transaction(TXN_TIMEOUT));
            return Err(Error::Transaction(e));
        }
        Ok(())
    }

    /// Counts a batch aborted because the group moved on during it (see `Router::rewind`).
    pub(super) fn rewound(&mut self) {
        self.stats.batches_rewound += 1;
    }

    /// Before leaving the group: batches commit asynchronously; the last one's offsets
    /// again, synchronously, so the group has them before this instance leaves.
    pub(super) fn leave(&mut self, consumer: &Arc<EventConsumer>, outputs: &Outputs) -> RunStats {
        if let Some(offsets) = self.last_offsets.take()
            && let Err(e) = dho_kafka::outage::commit_within(consumer, offsets, FINAL_COMMIT)
        {
            warn!(error = %e, "the last commit was not confirmed; the batch may be routed again");
        }
        let _ = outputs.producer().flush(Duration::from_secs(10));
        self.stats
    }
}

/// How long a stopping router waits for its last commit (a broker that is down would
/// keep it waiting for ever).
const FINAL_COMMIT: Duration = Duration::from_secs(10);

/// A failed acknowledgement in exactly-once mode is usually the producer's fatal error
/// (fenced by a newer instance), which says more than the purged records do.
fn fatal_or(outputs: &Outputs, e: Error) -> Error {
    match outputs.producer().client().fatal_error() {
        Some((code, reason)) => Error::ProducerFatal { code, reason },
        None => e,
    }
}

/// A batch's records for the alert-state topic, by (partition, key).
#[derive(Clone, Copy)]
struct OwnRecords<'a> {
    tracks: &'a BTreeMap<(i32, String), Option<Track>>,
    delivered: &'a BTreeMap<(i32, String), DeliveryRecord>,
    sharing: &'a BTreeMap<(i32, String), SharingSnapshot>,
}

/// Produces the batch's alert tracks, delivery records and sharing snapshots, acknowledged
/// (with their positions) in the group returned.
async fn write_tracks(
    own: OwnRecords<'_>,
    outputs: &Outputs,
    state: &StateSync,
) -> Result<Arc<Acks>> {
    let track_writes = Acks::with_positions();
    let records = own
        .tracks
        .iter()
        .map(|(at, track)| (at, track.as_ref().map(|t| t as &(dyn ErasedRecord + Sync))))
        .chain(
            own.delivered
                .iter()
                .map(|(at, record)| (at, Some(record as &(dyn ErasedRecord + Sync)))),
        )
        .chain(
            own.sharing
                .iter()
                .map(|(at, record)| (at, Some(record as &(dyn ErasedRecord + Sync)))),
        );
    for ((partition, key), track) in records {
        write_track(
            outputs.producer(),
            state.topic_name(StateTopic::AlertState),
            *partition,
            key,
            track,
            &track_writes,
        )
        .await?;
    }
    Ok(track_writes)
}

/// A record of the alert-state topic (a track, a delivery record or a sharing snapshot), as
/// JSON.
trait ErasedRecord {
    fn to_json(&self) -> serde_json::Result<Vec<u8>>;
}

impl<T: Serialize> ErasedRecord for T {
    fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }
}

/// Produces an alert track under its `patient|<track id>` key (`None`: its tombstone), or a
/// delivery record under its `patient|delivered:<event id>` key, to the alert-state topic.
async fn write_track(
    producer: &OutputProducer,
    topic: &str,
    partition: i32,
    key: &str,
    track: Option<&(dyn ErasedRecord + Sync)>,
    acks: &Arc<Acks>,
) -> Result<()> {
    let bytes = track
        .map(ErasedRecord::to_json)
        .transpose()
        .map_err(|e| Error::Setup(dho_kafka::Error::Config(format!("alert state: {e}"))))?;
    let output = Output {
        topic,
        partition: Some(partition),
        key: Some(key),
        payload: bytes.as_deref(),
        headers: None,
    };
    crate::outputs::send(producer, output, acks)
        .await
        .map_err(Error::NotAcknowledged)
}
