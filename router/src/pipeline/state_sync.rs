//! The patients' state for the partitions this instance owns, read from the compacted state
//! topics by assignment (not by the group): each instance reads the state partitions
//! matching the event partitions it owns. Consent first: before a batch is routed, the
//! state is read up to the ends the brokers report once all of the batch's records are in
//! hand, so every change acknowledged before that applies to it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dho_kafka::outage::Outage;
use dho_routing_core::alerts::Track;
use dho_routing_core::delivered::event_id_of_key;
use dho_routing_core::sharing::is_snapshot_key;
use dho_routing_core::state::PartitionState;
use dho_schemas::TopicNames;
use dho_schemas::model::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use super::dead_letters::{DeadLetter, DeadLetters};
use super::decode::Decoder;
use super::error::{Error, Result};
use crate::config::RouterConfig;
use crate::events::{StateMeasured, StatePartitionsLoaded, StateRecordRead};
use crate::outputs::OutputProducer;
pub(super) use consent_changes::ConsentSeen;
use misplaced::{Misplaced, Pending, hold_marker, misplaced_note};

mod consent_changes;
mod misplaced;
mod topic;
use dho_telemetry::InternalEvent;
pub(super) use topic::StateTopic;

/// A record of the router's own (a track or a delivery record): a fixed detail, since the
/// parser's message could quote a value (an identifier).
fn own_record<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DeadLetter> {
    serde_json::from_slice(bytes).map_err(|_| DeadLetter {
        reason: "undecodable",
        detail: "an alert-state record this router cannot read".into(),
    })
}

/// The broker's answer to a question for state ends (see [`StateSync::ask_ends`]).
pub(super) type EndsAnswer = tokio::task::JoinHandle<Result<TopicPartitionList, KafkaError>>;

/// The state of the owned partitions, and how far each state partition has been read.
pub(super) struct StateSync {
    consumer: BaseConsumer,
    /// Asks for the state topics' ends. A client of its own: the state reader always has a
    /// long-polling Fetch in flight, and a broker answers a connection's requests in order,
    /// so a ListOffsets on the reader's connection would wait up to fetch.wait.max.ms.
    ends: Arc<BaseConsumer>,
    owned: HashMap<i32, PartitionState>,
    /// Next offset to apply, per state topic and partition.
    positions: HashMap<(StateTopic, i32), i64>,
    /// Indexed by `StateTopic as usize`.
    topics: [String; 4],
    /// Readiness: set once state has been caught up (or the group assigned nothing).
    loaded: Arc<AtomicBool>,
    sync_timeout: Duration,
    /// Exactly-once mode: the router's own alert-state writes are transactional.
    transactional: bool,
    decoder: Decoder,
    /// Where a state record that does not decode or validate goes.
    dead_letters: DeadLetters,
    /// State records found on another partition than their patient's while catching up,
    /// per partition read: handled once the partition's state is caught up (see
    /// [`Misplaced`]).
    misplaced: HashMap<i32, Misplaced>,
    /// Partitions whose state was loaded from the start, in this run.
    partitions_loaded: u64,
    /// Patients whose consents changed and whose sharing is not judged yet, by (partition,
    /// patient key): the latest consent record seen of each (see `pipeline::sharing`).
    consent_changes: HashMap<(i32, String), ConsentSeen>,
}

impl std::fmt::Debug for StateSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSync")
            .field("owned", &self.owned.len())
            .finish_non_exhaustive()
    }
}

impl StateSync {
    /// Makes the state reader and the client that asks for the state topics' ends.
    pub(super) fn connect(
        config: &RouterConfig,
        topics: &TopicNames,
        loaded: Arc<AtomicBool>,
        decoder: Decoder,
        dead_letters: DeadLetters,
    ) -> Result<Self> {
        let settings = &config.kafka;
        // State topics are read by assignment, not by the group: each instance reads the
        // partitions matching the event partitions it owns.
        let state_consumer: BaseConsumer = settings
            .client_config_tuned(
                &[
                    ("group.id", &format!("{}-state-reader", config.group_id)),
                    ("enable.auto.commit", "false"),
                    ("enable.partition.eof", "false"),
                    // The router's own alert-state writes are transactional in exactly-once
                    // mode.
                    ("isolation.level", "read_committed"),
                ],
                // Catching up a newly owned partition waits on this; state changes are rare,
                // so short long-polls cost little.
                &[("fetch.wait.max.ms", "50")],
            )?
            .create()?;
        let topics = [
            topics.consents(),
            topics.subscriptions(),
            topics.careplans(),
            topics.alert_state(),
        ];
        // librdkafka asks where a newly assigned partition starts only once it knows the
        // partition's leader, and otherwise tries again after 500 ms: learnt now, the state
        // load after the first assignment (which every event of its partitions waits for)
        // does not wait for that. (The leaders stay known for `metadata.max.age.ms`.)
        tokio::task::block_in_place(|| {
            topics.iter().try_for_each(|topic| {
                state_consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(10))
                    .map(drop)
            })
        })?;
        let state_ends: BaseConsumer = settings
            .client_config(&[
                ("group.id", &format!("{}-state-ends", config.group_id)),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
            ])?
            .create()?;
        Ok(Self {
            consumer: state_consumer,
            ends: Arc::new(state_ends),
            owned: HashMap::new(),
            positions: HashMap::new(),
            partitions_loaded: 0,
            topics,
            loaded,
            sync_timeout: config.state_sync_timeout,
            transactional: config.transactional_id.is_some(),
            decoder,
            dead_letters,
            misplaced: HashMap::new(),
            consent_changes: HashMap::new(),
        })
    }

    /// Readiness (for `/readyz`).
    pub(super) fn loaded(&self) -> Arc<AtomicBool> {
        self.loaded.clone()
    }

    /// The client that asks the brokers for ends (it never waits behind a long poll).
    pub(super) fn ends_client(&self) -> &BaseConsumer {
        &self.ends
    }

    pub(super) fn partition(&self, partition: i32) -> Option<&PartitionState> {
        self.owned.get(&partition)
    }

    pub(super) fn partition_mut(&mut self, partition: i32) -> &mut PartitionState {
        self.owned.entry(partition).or_default()
    }

    pub(super) fn topic_name(&self, topic: StateTopic) -> &str {
        &self.topics[topic as usize]
    }

    fn topic(&self, name: &str) -> StateTopic {
        StateTopic::ALL
            .into_iter()
            .find(|t| self.topic_name(*t) == name)
            .unwrap_or(StateTopic::Consents)
    }

    /// Reads the state topics of `partitions` up to their current high watermarks: any
    /// change acknowledged before now is applied before the batch is routed.
    pub(super) async fn sync(
        &mut self,
        partitions: &BTreeSet<i32>,
        producer: &OutputProducer,
    ) -> Result<()> {
        self.own_partitions(partitions)?;
        let ends = self.ask_ends(partitions)?;
        let ends = ends
            .await
            .map_err(|_| Error::Kafka(KafkaError::Canceled))??;
        self.catch_up(ends, partitions, producer).await
    }

    /// Starts reading the state topics of partitions new to this instance.
    pub(super) fn own_partitions(&mut self, partitions: &BTreeSet<i32>) -> Result<()> {
        let mut assign = TopicPartitionList::new();
        for &partition in partitions {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.owned.entry(partition) {
                slot.insert(PartitionState::default());
                for topic in StateTopic::ALL {
                    self.positions.insert((topic, partition), 0);
                    assign.add_partition_offset(
                        self.topic_name(topic),
                        partition,
                        Offset::Beginning,
                    )?;
                }
            }
        }
        if assign.count() > 0 {
            self.consumer.incremental_assign(&assign)?;
            let partitions = assign.count() / StateTopic::ALL.len();
            self.partitions_loaded += partitions as u64;
            StatePartitionsLoaded { partitions }.emit();
        }
        Ok(())
    }

    /// The partitions this instance holds state for.
    pub(super) fn owned_partitions(&self) -> Vec<i32> {
        self.owned.keys().copied().collect()
    }

    /// How many partitions' state was loaded from the start in this run (each assignment,
    /// and each reload after a rewind).
    pub(super) fn partitions_loaded(&self) -> u64 {
        self.partitions_loaded
    }

    /// Asks the broker for the current ends of the state topics of `partitions` (one
    /// ListOffsets request, on a blocking thread): the "latest" offset of a state partition
    /// now is its end, so everything acknowledged before now is below it, and
    /// [`catch_up`](Self::catch_up) reads up to it.
    pub(super) fn ask_ends(&self, partitions: &BTreeSet<i32>) -> Result<EndsAnswer> {
        let mut query = TopicPartitionList::new();
        for &partition in partitions {
            for topic in StateTopic::ALL {
                query.add_partition_offset(self.topic_name(topic), partition, Offset::End)?;
            }
        }
        let client = self.ends.clone();
        // While the broker is down the batch waits for it (uncommitted), as consent first
        // requires: routing without the state's end could miss a withdrawal.
        Ok(tokio::task::spawn_blocking(move || {
            Outage::wait_blocking("the state topics' ends", || {
                client.offsets_for_times(query.clone(), Duration::from_secs(10))
            })
        }))
    }

    /// Applies the state records of each of `partitions` up to its end in `ends` (which may
    /// name more: asked for before a partition in it was revoked).
    pub(super) async fn catch_up(
        &mut self,
        ends: TopicPartitionList,
        partitions: &BTreeSet<i32>,
        producer: &OutputProducer,
    ) -> Result<()> {
        let mut targets = Vec::new();
        for element in ends.elements() {
            if !partitions.contains(&element.partition()) {
                continue;
            }
            let topic = self.topic(element.topic());
            match element.offset() {
                Offset::Offset(end) => targets.push(((topic, element.partition()), end)),
                // An empty partition has nothing to apply.
                Offset::End | Offset::Beginning => {}
                other => {
                    warn!(offset = ?other, partition = element.partition(), "unexpected end offset");
                    return Err(Error::StateEndUnknown {
                        partition: element.partition(),
                    });
                }
            }
        }
        let mut deadline = Instant::now() + self.sync_timeout;
        let mut state_errors: Option<Outage> = None;
        loop {
            let behind = targets
                .iter()
                .find(|(key, high)| self.positions.get(key).copied().unwrap_or(0) < *high);
            let Some(((_, partition), _)) = behind else {
                // Caught up, the alert-state topic included: what was handled before is
                // known now.
                self.handle_misplaced(producer).await?;
                self.loaded.store(true, Ordering::Relaxed);
                return Ok(());
            };
            if Instant::now() > deadline && self.broker_down() {
                // An outage is waited out; only a broker that answers yet does not hand over
                // the state is an error.
                deadline = Instant::now() + self.sync_timeout;
            } else if Instant::now() > deadline {
                return Err(Error::StateSyncTimeout {
                    partition: *partition,
                    seconds: self.sync_timeout.as_secs(),
                });
            }
            let consumer = &self.consumer;
            let polled = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(100)));
            match polled {
                Some(Ok(message)) => {
                    let message = message.detach();
                    self.apply(&message, producer).await?;
                }
                Some(Err(e)) => {
                    // Warned about now and then, not per event (an outage queues many);
                    // the poll itself waits.
                    state_errors
                        .get_or_insert_with(|| Outage::new("the state topics"))
                        .event_pause(&e);
                }
                None => self.step_over_control_records(),
            }
        }
    }

    /// Whether the broker fails to answer a metadata request for a reason that is an outage.
    fn broker_down(&self) -> bool {
        let client = &self.ends;
        let answer =
            tokio::task::block_in_place(|| client.fetch_metadata(None, Duration::from_secs(5)));
        match answer {
            Ok(_) => false,
            Err(e) => {
                let down = dho_kafka::outage::is_transient(&e);
                if down {
                    warn!(error = %e, "the broker does not answer; the state sync waits for it");
                }
                down
            }
        }
    }

    /// Transaction markers and aborted records take offsets but never reach the
    /// application, so a partition ending in one would look unread forever. The reader's
    /// own position steps over them (it only moves past records it handed over, each
    /// applied at once, or past records it never hands over).
    /// Only in exactly-once mode: nothing else writes state transactionally.
    fn step_over_control_records(&mut self) {
        if !self.transactional {
            return;
        }
        let Ok(read) = self.consumer.position() else {
            return;
        };
        for element in read.elements() {
            if let Offset::Offset(next) = element.offset() {
                let key = (self.topic(element.topic()), element.partition());
                let position = self.positions.entry(key).or_insert(0);
                *position = (*position).max(next);
            }
        }
    }

    async fn apply(&mut self, message: &OwnedMessage, producer: &OutputProducer) -> Result<()> {
        let topic = self.topic(message.topic());
        let partition = message.partition();
        let position = (topic, partition);
        if self
            .positions
            .get(&position)
            .is_some_and(|p| message.offset() < *p)
        {
            // Already applied: the router's own alert-state write, known since its ack.
            return Ok(());
        }
        self.positions.insert(position, message.offset() + 1);
        StateRecordRead {
            topic: topic.label(),
        }
        .emit();
        let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            return self
                .dead_letters
                .park(
                    producer,
                    message,
                    "bad_key",
                    "state record without a UTF-8 key".into(),
                )
                .await;
        };
        let key = key.to_string();
        if !self.owned.contains_key(&partition) {
            // Revoked while the record was in flight.
            return Ok(());
        }
        if topic == StateTopic::Consents {
            self.saw_consent(partition, &key, message);
        }
        if topic == StateTopic::AlertState
            && let Some(note) = misplaced_note(&key)
        {
            self.misplaced
                .entry(partition)
                .or_default()
                .handled
                .insert(note);
            return Ok(());
        }
        if let Some(kind) = topic.kind()
            && let Some(reason) = hold_marker(message)
        {
            // Stands for a record of this patient that went to another partition.
            self.partition_mut(partition).hold(kind, &key);
            warn!(
                reason,
                kind = kind.as_str(),
                partition,
                offset = message.offset(),
                "a state record went to another partition than its patient's: the \
                 patient's deliveries are held until a valid record replaces it"
            );
            return Ok(());
        }
        let Some(bytes) = message.payload() else {
            let state = self.partition_mut(partition);
            match topic {
                StateTopic::Consents => state.apply_consent(&key, None),
                StateTopic::Subscriptions => state.apply_subscription(&key, None),
                StateTopic::CarePlans => state.apply_care_plan(&key, None),
                StateTopic::AlertState => state.remove_own(&key),
            }
            return Ok(());
        };
        let applied = match topic {
            StateTopic::Consents => self
                .decoder
                .decode_state(bytes, &key, partition, Consent::validate, |c: &Consent| {
                    &c.patient
                })
                .await
                .map(|c| self.partition_mut(partition).apply_consent(&key, Some(c))),
            StateTopic::Subscriptions => self
                .decoder
                .decode_state(
                    bytes,
                    &key,
                    partition,
                    Subscription::validate,
                    |s: &Subscription| &s.patient,
                )
                .await
                .map(|s| {
                    self.partition_mut(partition)
                        .apply_subscription(&key, Some(s))
                }),
            StateTopic::CarePlans => self
                .decoder
                .decode_state(
                    bytes,
                    &key,
                    partition,
                    CarePlan::validate,
                    |p: &CarePlan| &p.patient,
                )
                .await
                .map(|p| self.partition_mut(partition).apply_care_plan(&key, Some(p))),
            StateTopic::AlertState if event_id_of_key(&key).is_some() => own_record(bytes)
                .map(|r| self.partition_mut(partition).apply_delivered(&key, Some(r))),
            StateTopic::AlertState if is_snapshot_key(&key) => own_record(bytes)
                .map(|s| self.partition_mut(partition).apply_sharing(&key, Some(s))),
            StateTopic::AlertState => {
                own_record(bytes).map(|t| self.apply_track_record(partition, &key, t))
            }
        };
        match applied {
            Ok(()) => Ok(()),
            Err(dl) if dl.reason == "wrong_partition" && topic.kind().is_some() => {
                // No reading of this patient is routed here: the hold must be where they
                // are; handled once caught up (see `Misplaced`).
                self.misplaced
                    .entry(partition)
                    .or_default()
                    .pending
                    .push(Pending {
                        topic,
                        key,
                        message: message.clone(),
                        dead: dl,
                    });
                Ok(())
            }
            Err(dl) => {
                if let Some(kind) = topic.kind() {
                    // Fail closed: whatever the record said, a withdrawal perhaps, the
                    // patient's old state must not go on deciding.
                    self.partition_mut(partition).hold(kind, &key);
                    warn!(
                        reason = dl.reason,
                        kind = kind.as_str(),
                        partition,
                        offset = message.offset(),
                        "a state record could not be applied: its patient's deliveries are \
                         held until a valid record replaces it"
                    );
                }
                self.dead_letters
                    .park(producer, message, dl.reason, dl.detail)
                    .await
            }
        }
    }

    /// Applies an alert track read from the topic, unless the one in memory has seen later
    /// readings: a late write from a previous owner of the partition must not set the
    /// patient's episode back.
    fn apply_track_record(&mut self, partition: i32, key: &str, track: Track) {
        let (patient, code) = key.split_once('|').unwrap_or((key, ""));
        let newer_in_memory = self
            .owned
            .get(&partition)
            .and_then(|s| s.patient(patient))
            .and_then(|p| p.alerts.get(code))
            .is_some_and(|current| current.applied_through > track.applied_through);
        if !newer_in_memory {
            self.partition_mut(partition).apply_track(key, Some(track));
        }
    }

    /// The router's own alert-state writes are already applied in memory: when nothing
    /// else was written before one, move the state position past it, so the next batch
    /// does not wait to read it back.
    pub(super) fn note_own_writes(&mut self, written: Vec<(i32, i64)>) {
        for (partition, offset) in written {
            let position = self
                .positions
                .entry((StateTopic::AlertState, partition))
                .or_insert(0);
            if *position == offset {
                *position = offset + 1;
            }
        }
    }

    /// Drops the state of partitions the group took away, and stops reading them, so a
    /// partition given back is loaded afresh.
    pub(super) fn forget(&mut self, revoked: &[i32]) {
        let mut list = TopicPartitionList::new();
        for &partition in revoked {
            if self.owned.remove(&partition).is_some() {
                self.misplaced.remove(&partition);
                self.consent_changes.retain(|(p, _), _| *p != partition);
                for topic in StateTopic::ALL {
                    self.positions.remove(&(topic, partition));
                    list.add_partition(self.topic_name(topic), partition);
                }
            }
        }
        if list.count() > 0 {
            debug!(
                partitions = list.count(),
                "dropping state of revoked partitions"
            );
            if let Err(e) = self.consumer.incremental_unassign(&list) {
                warn!(error = %e, "could not unassign state partitions");
            }
        }
    }

    pub(super) fn gauges(&self) {
        let on_hold: usize = self
            .owned
            .values()
            .map(PartitionState::patients_on_hold)
            .sum();
        let patients: usize = self.owned.values().map(PartitionState::patients).sum();
        let in_red: usize = self
            .owned
            .values()
            .map(PartitionState::patients_in_red)
            .sum();
        StateMeasured {
            patients,
            on_hold,
            in_red,
            owned_partitions: self.owned.len(),
        }
        .emit();
    }
}
