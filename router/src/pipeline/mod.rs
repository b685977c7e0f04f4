//! The router's I/O around the pure decision: consume a batch of events, catch the state of
//! the batch's partitions up to the brokers' high watermarks, decide, produce deliveries,
//! audit records and dead letters, wait for every acknowledgement, then commit the input
//! offsets. A crash anywhere before the commit replays the batch; deterministic delivery
//! ids let the SDK drop the repeats (effectively once on any Kafka-API broker).
//!
//! [`Router`] runs the loop and hands each step to the part that owns it:
//! - `input`: the event consumer in the router's group, and the partitions the group takes
//!   away (the rebalance callback);
//! - `rebalance`: loading the partitions given, dropping those taken away, and routing
//!   again a batch whose offsets the group refused (exactly-once mode);
//! - `batch`: filling a batch, asking for the state ends while it fills;
//! - `state_sync`: the owned partitions' state, read up to those ends before a batch;
//! - `decode`: events and state records, decoded and validated;
//! - `disclose`: the decision, then deliveries and disclosure records; the alerts a reading
//!   raises;
//! - `dead_letters`: parking what cannot be routed;
//! - `commit`: acknowledgements, alert tracks, then the offsets or the transaction;
//! - `silence`: which alert tracks the no-data timer finds silent;
//! - `migrate`: alert tracks from before plans per organisation, taken over or dropped;
//! - `sharing`: the "sharing ended" notices a consent change calls for;
//! - `ids`: deterministic delivery ids.
//!
//! The parts know each other in one direction only (`disclose` uses `state_sync` and
//! `commit`, `state_sync` uses `decode` and `dead_letters`, ...); only this module knows
//! them all.

mod batch;
mod commit;
mod dead_letters;
mod decode;
mod disclose;
mod error;
mod ids;
mod input;
mod migrate;
mod rebalance;
mod sharing;
mod silence;
mod state_sync;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use dho_kafka::AvroSerde;
use dho_kafka::outage::Outage;
use dho_schemas::Policy;
use dho_schemas::model::*;
use dho_telemetry::{InternalEvent, KafkaStats};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use self::batch::{Filled, fill_batch};
use self::commit::{BatchOutputs, Commits, InFlight, output_producer};
use self::dead_letters::DeadLetters;
use self::decode::{Decoder, Event, EventDecoder};
use self::disclose::{Disclosed, Disclosure, Outgoing};
use self::error::hand_over;
use self::input::Input;
use self::silence::Silence;
use self::state_sync::StateSync;
use crate::config::RouterConfig;
use crate::events::BatchAbandoned;
use crate::outputs::Outputs;

pub use self::commit::RunStats;
pub use self::error::{Error, Result};
pub use self::ids::delivery_id;

/// The router's clock (a function, so tests can move time forward to reach a silence).
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

/// A running router instance.
pub struct Router {
    config: RouterConfig,
    input: Input,
    state: StateSync,
    events: EventDecoder,
    disclosure: Disclosure,
    /// The output producer, with a handle per delivery and audit topic.
    outputs: Outputs,
    dead_letters: DeadLetters,
    commits: Commits,
    silence: Silence,
    clock: Clock,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("group", &self.config.group_id)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Creates the hub's topics if missing (or, with `create_topics` off, checks that they
    /// exist), registers schemas and joins the group.
    pub async fn connect(config: RouterConfig) -> Result<Self> {
        let settings = &config.kafka;
        settings.validate()?;
        let topics = settings.topics();
        let serde = AvroSerde::new(&settings.schema_registry_url);
        // A router started before the broker or the registry (or during their restart)
        // comes up when they do, instead of exiting for someone to restart it.
        let mut outage = Outage::new("the broker and the schema registry, to start");
        let (audit, partitions) = loop {
            match Self::prepare(&config, &serde).await {
                Ok(prepared) => break prepared,
                Err(e) if e.is_outage() => tokio::time::sleep(outage.pause_after(&e)).await,
                Err(e) => return Err(e.into()),
            }
        };

        let state_loaded = Arc::new(AtomicBool::new(false));
        let kafka_stats =
            KafkaStats::new(dho_telemetry::names::router::STATS, config.group_id.clone());
        let input = Input::subscribe(&config, &topics, kafka_stats.clone(), state_loaded.clone())?;
        let decoder = Decoder::new(
            serde.clone(),
            Policy {
                allow_synthetic: config.allow_synthetic_identifiers,
            },
            partitions,
        );
        let dead_letters = DeadLetters::new(topics.deadletter());
        let state = StateSync::connect(
            &config,
            &topics,
            state_loaded,
            decoder.clone(),
            dead_letters.clone(),
        )?;
        let mut outputs = Outputs::new(output_producer(&config, kafka_stats)?);
        let audit_topic = outputs.topic(&topics.audit())?;
        info!(group = %config.group_id, "router connected");
        Ok(Self {
            input,
            state,
            events: EventDecoder::new(decoder),
            disclosure: Disclosure::new(&config, serde, audit, audit_topic),
            outputs,
            dead_letters,
            commits: Commits::new(config.transactional_id.is_some()),
            silence: Silence::default(),
            clock: Arc::new(now_millis),
            config,
        })
    }

    /// Creates or checks the hub's topics and registers the schemas. Returns the audit
    /// record's encoder (the router's) and the topics' partition count (they are
    /// co-partitioned), by which a record's partition is checked.
    async fn prepare(
        config: &RouterConfig,
        serde: &AvroSerde,
    ) -> dho_kafka::Result<(dho_kafka::Encoder<DisclosureRecord>, i32)> {
        let settings = &config.kafka;
        if config.create_topics {
            dho_kafka::ensure_topics(settings, &dho_kafka::hub_topics(settings)).await?;
        } else {
            // Provisioned by operators: only check that they exist and are co-partitioned.
            dho_kafka::check_topics(settings, &dho_kafka::hub_topics(settings)).await?;
        }
        let topics = settings.topics();
        // Registering the input schemas too makes records written with them decode on the
        // fast path without a registry round trip.
        serde
            .register::<Measurement>(&topics.measurements())
            .await?;
        serde.register::<SelfReport>(&topics.selfreports()).await?;
        serde.register::<Consent>(&topics.consents()).await?;
        serde
            .register::<Subscription>(&topics.subscriptions())
            .await?;
        let audit = serde.register::<DisclosureRecord>(&topics.audit()).await?;
        let partitions = dho_kafka::partition_count(settings, &topics.measurements()).await?;
        Ok((audit, partitions))
    }

    /// Readiness: set while records decode, cleared while one waits for the schema
    /// registry (for `/readyz`).
    pub fn registry_reachable(&self) -> Arc<AtomicBool> {
        self.events.registry_reachable()
    }

    /// Readiness: true once the state of the owned partitions has been caught up at least
    /// once, or the group has assigned this instance nothing yet (for `/readyz`).
    pub fn state_loaded(&self) -> Arc<AtomicBool> {
        self.state.loaded()
    }

    /// How many event records this instance has finished (outputs acknowledged, offsets
    /// committed) so far; read by the benchmark without asking the broker.
    pub fn finished(&self) -> Arc<AtomicU64> {
        self.commits.finished()
    }

    /// Replaces the router's clock (tests move time forward to reach a silence).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> Millis {
        (self.clock)()
    }

    /// Routes until `shutdown` resolves, then finishes the batch, commits and leaves the group.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<RunStats> {
        let mut shutdown = std::pin::pin!(shutdown);
        let events = self.input.consumer.clone();
        let assigned = self.input.assigned.clone();
        let mut silence_timer = tokio::time::interval(self.config.silence_check_interval);
        silence_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut consumer_errors: Option<Outage> = None;
        loop {
            // Fenced (static membership with a duplicate id), or an assignment the consumer
            // refused: going on would route partitions another instance owns, or none.
            // librdkafka reports a fatal error once, to whichever `recv` comes first (a
            // batch's filling swallows errors), so it is asked here.
            self.input.check_fatal()?;
            if !self.commits.is_idle() {
                if futures::FutureExt::now_or_never(&mut shutdown).is_some() {
                    break;
                }
                // Keep the pipeline full while a backlog lasts; when nothing is waiting,
                // finish the routed batches now rather than when the next reading comes.
                let next = futures::FutureExt::now_or_never(events.recv());
                // A revocation is served inside recv: before anything in flight is finished
                // and committed, its partitions' part is dropped.
                self.drop_revoked();
                match next {
                    Some(Ok(message)) => {
                        let batch =
                            fill_batch(&events, message, &self.config, &self.input, &self.state)
                                .await?;
                        self.route_batch(batch).await?;
                        continue;
                    }
                    _ => self.finish_in_flight().await?,
                }
            }
            // In this order. New partitions' state is loaded at once, not at their first
            // record or the next no-data check (until then the instance is not ready),
            // and before their first record is routed (in exactly-once mode the load is
            // a transaction of its own).
            let first = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = assigned.notified() => {
                    self.load_assigned().await?;
                    continue;
                }
                _ = silence_timer.tick() => {
                    self.check_silences().await?;
                    continue;
                }
                message = events.recv() => message,
            };
            // `first` was fetched after any revocation this recv served: only what was in
            // hand before it (in flight, state) is dropped.
            self.drop_revoked();
            let first = match first {
                Ok(message) => {
                    consumer_errors = None;
                    message
                }
                Err(e) => {
                    // One warning now and then, not one per event (an outage queues many),
                    // and a short pause so the loop yields.
                    let pause = consumer_errors
                        .get_or_insert_with(|| Outage::new("the input topics"))
                        .event_pause(&e);
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            let batch = fill_batch(&events, first, &self.config, &self.input, &self.state).await?;
            self.route_batch(batch).await?;
        }
        info!("router stopping: committing and leaving the group");
        self.finish_in_flight().await?;
        let mut stats = self.commits.leave(&self.input.consumer, &self.outputs);
        stats.partitions_loaded = self.state.partitions_loaded();
        Ok(stats)
    }

    async fn route_batch(&mut self, filled: Filled<'_>) -> Result<()> {
        let started = Instant::now();
        let Filled {
            batch,
            ends,
            revoked,
        } = filled;
        // The batch holds no record fetched before a revocation (see `fill_batch`); what this
        // instance kept for those partitions goes now, so a partition given back is loaded
        // afresh.
        self.forget_partitions(revoked);
        if batch.is_empty() {
            return Ok(());
        }
        let partitions: BTreeSet<i32> = batch.iter().map(|msg| msg.partition()).collect();
        let group = self.commits.membership(&self.input.consumer)?;
        // Exactly-once mode: librdkafka found this member's session ran out (the revocation
        // waits in the consumer). Its group metadata has generation -1 then, which the
        // coordinator does not check, so the batch's offsets would be committed over those
        // of the instance that owns the partitions now. Checked after the metadata was
        // taken: librdkafka sets the flag and the generation in one step, and only this
        // loop's `recv` clears the flag.
        if self.config.transactional_id.is_some() && self.input.consumer.assignment_lost() {
            BatchAbandoned {
                events: batch.len(),
            }
            .emit();
            self.forget_partitions(partitions.into_iter().collect());
            return Ok(());
        }
        // Begun before the state sync: a state record dead-lettered there is an output of
        // this batch, and a transactional producer refuses to produce outside a transaction.
        self.commits.begin(&self.outputs)?;
        self.state.own_partitions(&partitions)?;
        // The state ends are asked for once the batch's records are in hand (a change
        // acknowledged before any of them was written is below the ends): while the batch
        // filled, or now. While the broker answers, the oldest routed batch is finished if
        // the pipeline is full.
        let ends = match ends {
            Some(ends) => ends,
            None => self.state.ask_ends(&partitions)?,
        };
        self.commits
            .make_room(&self.outputs, &self.input.consumer, &mut self.state)
            .await?;
        let ends = ends
            .await
            .map_err(|_| Error::Kafka(KafkaError::Canceled))??;
        self.state
            .catch_up(ends, &partitions, self.outputs.producer())
            .await?;

        let mut out = BatchOutputs::new();
        // One time for the whole batch: consent, subscription and validity are judged at the
        // batch's start, a few milliseconds before its records are routed (a change
        // acknowledged after the state sync above applies from the next batch anyway).
        let now = self.now();
        // Consent changes the sync applied: notices to those whose deliveries they ended.
        self.judge_sharing(now, &mut out).await?;
        // Per (is a measurement, partition): the first and the next offset, and the newest
        // timestamp. A few entries, searched in order: cheaper per record than a map keyed
        // by topic name.
        let mut positions: Vec<(bool, i32, i64, i64, Option<Millis>)> = Vec::new();
        // Each record's position, in one value for the batch (no topic name copied per record).
        let mut source = SourcePosition {
            topic: String::new(),
            partition: 0,
            offset: 0,
        };
        for message in &batch {
            // librdkafka hands out the topic as a C string: read it once per record.
            let topic = message.topic();
            let is_measurement = topic == self.input.measurements;
            if source.topic != topic {
                source.topic.clear();
                source.topic.push_str(topic);
            }
            source.partition = message.partition();
            source.offset = message.offset();
            self.route_one(message, is_measurement, &source, now, &mut out)
                .await?;
            let at = message.timestamp().to_millis();
            match positions
                .iter_mut()
                .find(|p| p.0 == is_measurement && p.1 == source.partition)
            {
                Some(position) => {
                    position.3 = source.offset + 1;
                    position.4 = position.4.max(at);
                }
                None => positions.push((
                    is_measurement,
                    source.partition,
                    source.offset,
                    source.offset + 1,
                    at,
                )),
            }
        }
        let mut offsets = TopicPartitionList::new();
        let mut from = TopicPartitionList::new();
        for &(is_measurement, partition, first, next, newest) in &positions {
            let topic = if is_measurement {
                if let Some(at) = newest {
                    self.silence.routed(partition, at);
                }
                &self.input.measurements
            } else {
                &self.input.selfreports
            };
            offsets.add_partition_offset(topic, partition, Offset::Offset(next))?;
            from.add_partition_offset(topic, partition, Offset::Offset(first))?;
        }
        // The rest of the batch's outputs go to librdkafka now, not when it is finished.
        hand_over(&self.outputs, &mut out.outbox).await?;
        let events = batch.len();
        let routed = InFlight {
            out,
            offsets,
            group,
            started,
            events,
        };
        match self
            .commits
            .routed(routed, &self.outputs, &self.input.consumer, &mut self.state)
            .await
        {
            Err(e) if e.group_moved_on() => self.rewind(from, events, &e),
            other => other,
        }
    }

    async fn route_one(
        &mut self,
        message: &impl Message,
        is_measurement: bool,
        source: &SourcePosition,
        now: Millis,
        out: &mut BatchOutputs,
    ) -> Result<()> {
        let event = match self.events.event(message, is_measurement, now).await {
            Ok(event) => event,
            Err(dl) => {
                let acks = out.outbox.acks().clone();
                return self
                    .dead_letters
                    .send(
                        self.outputs.producer(),
                        message,
                        dl.reason,
                        dl.detail,
                        &acks,
                    )
                    .await;
            }
        };
        if let Event::Measurement(reading) = &event
            && reading.source_id.is_some()
        {
            // A reading the platform named: recorded, and judged by what was delivered of it.
            self.disclosure
                .route_named(&event, &mut self.state, &mut self.outputs, source, now, out)
                .await?;
            if let Event::Measurement(reading) = event {
                self.events.reuse(reading);
            }
            return Ok(());
        }
        let what = Disclosed {
            outgoing: Outgoing::Event(&event),
            view: event.view(),
            source,
            data_controller: event.data_controller(),
        };
        self.disclosure
            .disclose(
                what,
                &self.state,
                &mut self.outputs,
                now,
                &mut out.outbox,
                None,
            )
            .await?;
        if let Event::Measurement(reading) = event {
            self.disclosure
                .observe_reading(
                    &mut self.state,
                    &mut self.outputs,
                    &reading,
                    source,
                    now,
                    out,
                )
                .await?;
            self.events.reuse(reading);
        }
        Ok(())
    }

    /// The no-data timer: in every partition this instance owns whose readings are all
    /// routed (so a reading waiting in the backlog cannot be mistaken for silence), raises
    /// `NO_DATA` for each alert track silent past its plan's interval.
    async fn check_silences(&mut self) -> Result<()> {
        // A question to the broker that fails skips this tick (the next one asks again);
        // only a failure to deliver an alert stops the router.
        let Some(partitions) = self.settle_and_list("no-data check").await? else {
            return Ok(());
        };
        let measurements = self.input.measurements.clone();
        let consumer = &self.input.consumer;
        let caught_up = match silence::caught_up(
            consumer,
            self.state.ends_client(),
            &measurements,
            &partitions,
        ) {
            Ok(caught_up) => caught_up,
            Err(e) => {
                warn!(error = %e, "no-data check skipped: the positions are unknown");
                return Ok(());
            }
        };
        // Begun before the state sync, which may dead-letter a state record (see route_batch).
        self.commits.begin(&self.outputs)?;
        // Every owned partition, routed or not yet: after a restart an idle partition's
        // tracks are loaded here.
        self.state
            .sync(&partitions, self.outputs.producer())
            .await?;
        let mut out = BatchOutputs::new();
        for &partition in &partitions {
            migrate::legacy_tracks(&mut self.state, partition, &mut out);
        }
        let now = self.now();
        // Consent changes are judged here too: a patient whose readings stopped still has
        // subscribers to tell.
        self.judge_sharing(now, &mut out).await?;
        let raised = self.silence.due(&self.state, &partitions, &caught_up, now);
        // Every notice comes with its patient's new snapshot; a migration, with its tracks.
        if raised.is_empty() && out.tracks.is_empty() && out.sharing.is_empty() {
            if self.config.transactional_id.is_some() {
                // Holds at most dead letters of the state sync; librdkafka ends a transaction
                // with nothing in it locally.
                self.commits
                    .commit_transaction(&self.outputs, &TopicPartitionList::new(), None)?;
            }
            return Ok(());
        }
        for silent in raised {
            let silence::Silent {
                partition,
                key,
                track,
                alert,
                data_controller,
            } = silent;
            // The silence follows the last reading: its position names the source.
            let source = SourcePosition {
                topic: measurements.clone(),
                partition,
                offset: track.applied_through,
            };
            self.state
                .partition_mut(partition)
                .apply_track(&key, Some(track.clone()));
            out.tracks.insert((partition, key), Some(track));
            self.disclosure
                .raise(
                    &alert,
                    &source,
                    &data_controller,
                    &self.state,
                    &mut self.outputs,
                    now,
                    &mut out.outbox,
                    None,
                )
                .await?;
        }
        self.commits
            .acknowledge(out, &self.outputs, &mut self.state)
            .await?;
        if self.config.transactional_id.is_some() {
            self.commits
                .commit_transaction(&self.outputs, &TopicPartitionList::new(), None)?;
        }
        self.state.gauges();
        Ok(())
    }

    /// Finishes the batches still waiting for their acknowledgements, oldest first.
    async fn finish_in_flight(&mut self) -> Result<()> {
        self.commits
            .finish_in_flight(&self.outputs, &self.input.consumer, &mut self.state)
            .await
    }
}
