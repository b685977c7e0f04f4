//! The router's I/O around the pure decision: consume a batch of events, catch the state of
//! the batch's partitions up to the brokers' high watermarks, decide, produce deliveries,
//! audit records and dead letters, wait for every acknowledgement, then commit the input
//! offsets. A crash anywhere before the commit replays the batch; deterministic delivery
//! ids let the SDK drop the repeats (effectively once on any Kafka-API broker).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dho_kafka::{AvroSerde, Encoder, TopicSpec};
use dho_schemas::codec::AvroRecord;
use dho_schemas::model::*;
use dho_schemas::partition::partition_for;
use dho_schemas::topics::headers;
use dho_schemas::{Policy, TopicNames};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::RouterConfig;
use crate::decision::{EventView, Grant, Withheld, decide};
use crate::metrics as m;
use crate::state::PartitionState;

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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long a transaction call may block.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// The namespace of delivery ids (UUID v5 of source position and subscriber).
const DELIVERY_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6a1f_4c2e_9d3b_4e8a_a5c7_1b2d_3e4f_5a6b);

/// The deterministic id of the delivery of a source record to a subscriber.
pub fn delivery_id(source: &SourcePosition, subscriber_id: &str) -> String {
    let name = format!(
        "{}/{}/{}/{}",
        source.topic, source.partition, source.offset, subscriber_id
    );
    uuid::Uuid::new_v5(&DELIVERY_ID_NAMESPACE, name.as_bytes()).to_string()
}

/// Remembers revoked partitions so the loop drops their state before the next batch.
struct RebalanceTracker {
    revoked: Arc<Mutex<Vec<i32>>>,
}

impl ClientContext for RebalanceTracker {
    /// librdkafka's periodic statistics: consumer lag per input topic kind, and the
    /// broker round-trip time.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, stats) in &statistics.topics {
            let kind = if topic.ends_with(".measurements") {
                "measurements"
            } else {
                "selfreports"
            };
            // -1 means unknown (partition not fetched yet); count only known lag.
            let lag: i64 = stats
                .partitions
                .values()
                .map(|p| p.consumer_lag.max(0))
                .sum();
            metrics::gauge!(m::CONSUMER_LAG, "topic" => kind).set(lag as f64);
        }
        let rtt = statistics
            .brokers
            .values()
            .filter_map(|b| b.rtt.as_ref().map(|w| w.avg))
            .max()
            .unwrap_or(0);
        metrics::gauge!(m::BROKER_RTT).set(rtt as f64 / 1e6);
    }
}

impl ConsumerContext for RebalanceTracker {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            revoked.extend(list.elements().iter().map(|e| e.partition()));
        }
    }
}

/// An ingest event, decoded.
#[derive(Debug, Clone)]
enum Event {
    Measurement(Measurement),
    SelfReport(SelfReport),
}

impl Event {
    fn patient(&self) -> &PatientIdentifier {
        match self {
            Event::Measurement(e) => &e.patient,
            Event::SelfReport(e) => &e.patient,
        }
    }
    fn view(&self) -> EventView<'_> {
        match self {
            Event::Measurement(e) => EventView {
                category: DataCategory::Measurement,
                code: Some(&e.code),
            },
            Event::SelfReport(e) => EventView {
                category: DataCategory::SelfReport,
                code: Some(&e.questionnaire_id),
            },
        }
    }
    fn event_id(&self) -> &str {
        match self {
            Event::Measurement(e) => &e.event_id,
            Event::SelfReport(e) => &e.event_id,
        }
    }
    fn reference(&self) -> EventReference {
        let view = self.view();
        let effective_time = match self {
            Event::Measurement(e) => e.effective_time,
            Event::SelfReport(e) => e.authored_time,
        };
        EventReference {
            event_id: self.event_id().to_string(),
            category: view.category,
            code: view.code.map(str::to_string),
            effective_time,
        }
    }
    fn data_controller(&self) -> &OrganisationIdentifier {
        match self {
            Event::Measurement(e) => &e.data_controller,
            Event::SelfReport(e) => &e.data_controller,
        }
    }
}

/// Why a record went to the dead-letter topic (bounded: a metric label and a header).
#[derive(Debug)]
struct DeadLetter {
    reason: &'static str,
    detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum StateTopic {
    Consents,
    Subscriptions,
}

/// What one router instance did in its run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Batches routed and committed.
    pub batches: u64,
    /// Event records routed (delivered, withheld or dead-lettered).
    pub events: u64,
}

/// A running router instance.
pub struct Router {
    config: RouterConfig,
    topics: TopicNames,
    policy: Policy,
    serde: AvroSerde,
    events: StreamConsumer<RebalanceTracker>,
    state_consumer: BaseConsumer,
    /// Asks for the state topics' ends. A client of its own: the state reader always has a
    /// long-polling Fetch in flight, and a broker answers a connection's requests in order,
    /// so a ListOffsets on the reader's connection would wait up to fetch.wait.max.ms.
    state_ends: BaseConsumer,
    producer: FutureProducer,
    revoked: Arc<Mutex<Vec<i32>>>,
    owned: HashMap<i32, PartitionState>,
    /// Next offset to apply, per state topic and partition.
    positions: HashMap<(StateTopic, i32), i64>,
    audit: Encoder<DisclosureRecord>,
    deliver: HashMap<String, Encoder<Delivery>>,
    stats: RunStats,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("group", &self.config.group_id)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Creates the hub's topics if missing, registers schemas and joins the group.
    pub async fn connect(config: RouterConfig) -> Result<Self> {
        let settings = &config.kafka;
        settings.validate()?;
        if config.create_topics {
            dho_kafka::ensure_topics(settings, &dho_kafka::hub_topics(settings)).await?;
        }
        let topics = settings.topics();
        let serde = AvroSerde::new(&settings.schema_registry_url);
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

        let revoked = Arc::new(Mutex::new(Vec::new()));
        let session_timeout = config.session_timeout.as_millis().to_string();
        let heartbeat = (config.session_timeout.as_millis() / 4)
            .max(100)
            .to_string();
        let events: StreamConsumer<RebalanceTracker> = settings
            .client_config(&[
                ("group.id", config.group_id.as_str()),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("isolation.level", "read_committed"),
                ("session.timeout.ms", session_timeout.as_str()),
                ("heartbeat.interval.ms", heartbeat.as_str()),
                ("statistics.interval.ms", "5000"),
            ])?
            .create_with_context(RebalanceTracker {
                revoked: revoked.clone(),
            })?;
        events.subscribe(&[&topics.measurements(), &topics.selfreports()])?;
        // State topics are read by assignment, not by the group: each instance reads the
        // partitions matching the event partitions it owns.
        let state_consumer: BaseConsumer = settings
            .client_config(&[
                ("group.id", &format!("{}-state-reader", config.group_id)),
                ("enable.auto.commit", "false"),
                ("enable.partition.eof", "false"),
                // Catching up a newly owned partition waits on this; state changes are rare,
                // so short long-polls cost little.
                ("fetch.wait.max.ms", "50"),
            ])?
            .create()?;
        let state_ends: BaseConsumer = settings
            .client_config(&[
                ("group.id", &format!("{}-state-ends", config.group_id)),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
            ])?
            .create()?;
        let mut own = vec![
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "2"),
            ("partitioner", "murmur2_random"),
        ];
        if let Some(id) = &config.transactional_id {
            own.push(("transactional.id", id.as_str()));
        }
        let producer: FutureProducer = settings.client_config(&own)?.create()?;
        if config.transactional_id.is_some() {
            // Fences any older instance with the same id and aborts its open transaction.
            tokio::task::block_in_place(|| producer.init_transactions(TXN_TIMEOUT))
                .map_err(Error::Transaction)?;
        }
        info!(group = %config.group_id, "router connected");
        Ok(Self {
            policy: Policy {
                allow_synthetic: config.allow_synthetic_identifiers,
            },
            config,
            topics,
            serde,
            events,
            state_consumer,
            state_ends,
            producer,
            revoked,
            owned: HashMap::new(),
            positions: HashMap::new(),
            audit,
            deliver: HashMap::new(),
            stats: RunStats::default(),
        })
    }

    /// Routes until `shutdown` resolves, then finishes the batch, commits and leaves the group.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<RunStats> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let first = tokio::select! {
                _ = &mut shutdown => break,
                message = self.events.recv() => message,
            };
            let first = match first {
                Ok(message) => message.detach(),
                Err(e) => {
                    warn!(error = %e, "consumer error; continuing");
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < self.config.max_batch {
                match tokio::time::timeout(Duration::from_millis(2), self.events.recv()).await {
                    Ok(Ok(message)) => batch.push(message.detach()),
                    _ => break,
                }
            }
            self.route_batch(batch).await?;
        }
        info!("router stopping: committing and leaving the group");
        if let Ok(assignment) = self.events.assignment()
            && assignment.count() > 0
        {
            // Everything routed has been committed per batch; a final sync commit flushes
            // any commit still in flight.
            let _ = self.events.commit_consumer_state(CommitMode::Sync);
        }
        let _ = self.producer.flush(Duration::from_secs(10));
        Ok(self.stats)
    }

    async fn route_batch(&mut self, batch: Vec<OwnedMessage>) -> Result<()> {
        let started = Instant::now();
        self.drop_revoked();
        let partitions: BTreeSet<i32> = batch.iter().map(|msg| msg.partition()).collect();
        self.sync_state(&partitions).await?;
        let transactional = self.config.transactional_id.is_some();
        if transactional {
            tokio::task::block_in_place(|| self.producer.begin_transaction())
                .map_err(Error::Transaction)?;
        }

        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(batch.len() * 3);
        let mut next_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for message in &batch {
            self.route_one(message, &mut pending).await?;
            next_offsets.insert(
                (message.topic().to_string(), message.partition()),
                message.offset() + 1,
            );
        }
        for result in futures::future::join_all(pending).await {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(Error::NotAcknowledged(e)),
                Err(_) => return Err(Error::NotAcknowledged(KafkaError::Canceled)),
            }
        }
        // Outputs acknowledged: only now may the input offsets move on.
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &next_offsets {
            offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        if transactional {
            self.commit_transaction(&offsets)?;
        } else {
            self.events.commit(&offsets, CommitMode::Async)?;
        }
        self.stats.batches += 1;
        self.stats.events += batch.len() as u64;
        metrics::counter!(m::BATCHES).increment(1);
        metrics::histogram!(m::ROUTING_LATENCY).record(started.elapsed().as_secs_f64());
        let patients: usize = self.owned.values().map(PartitionState::patients).sum();
        metrics::gauge!(m::STATE_PATIENTS).set(patients as f64);
        metrics::gauge!(m::OWNED_PARTITIONS).set(self.owned.len() as f64);
        Ok(())
    }

    /// Offsets and outputs become visible together; on failure everything is aborted and
    /// the router stops, so the batch is routed again from the last committed offsets.
    fn commit_transaction(&self, offsets: &TopicPartitionList) -> Result<()> {
        let result = tokio::task::block_in_place(|| {
            let group = self.events.group_metadata().ok_or(KafkaError::Canceled)?;
            self.producer
                .send_offsets_to_transaction(offsets, &group, TXN_TIMEOUT)?;
            self.producer.commit_transaction(TXN_TIMEOUT)
        });
        if let Err(e) = result {
            let _ = tokio::task::block_in_place(|| self.producer.abort_transaction(TXN_TIMEOUT));
            return Err(Error::Transaction(e));
        }
        Ok(())
    }

    fn drop_revoked(&mut self) {
        let revoked: Vec<i32> =
            std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|e| e.into_inner()));
        if revoked.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for partition in revoked {
            if self.owned.remove(&partition).is_some() {
                for topic in [StateTopic::Consents, StateTopic::Subscriptions] {
                    self.positions.remove(&(topic, partition));
                    list.add_partition(&self.state_topic_name(topic), partition);
                }
            }
        }
        if list.count() > 0 {
            debug!(
                partitions = list.count(),
                "dropping state of revoked partitions"
            );
            if let Err(e) = self.state_consumer.incremental_unassign(&list) {
                warn!(error = %e, "could not unassign state partitions");
            }
        }
    }

    fn state_topic_name(&self, topic: StateTopic) -> String {
        match topic {
            StateTopic::Consents => self.topics.consents(),
            StateTopic::Subscriptions => self.topics.subscriptions(),
        }
    }

    /// Reads the state topics of `partitions` up to their current high watermarks: any
    /// change acknowledged before now is applied before the batch is routed.
    async fn sync_state(&mut self, partitions: &BTreeSet<i32>) -> Result<()> {
        let state_topics = [StateTopic::Consents, StateTopic::Subscriptions];
        let mut assign = TopicPartitionList::new();
        for &partition in partitions {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.owned.entry(partition) {
                slot.insert(PartitionState::default());
                for topic in state_topics {
                    self.positions.insert((topic, partition), 0);
                    assign.add_partition_offset(
                        &self.state_topic_name(topic),
                        partition,
                        Offset::Beginning,
                    )?;
                }
            }
        }
        if assign.count() > 0 {
            self.state_consumer.incremental_assign(&assign)?;
        }
        // One ListOffsets request for every partition of the batch: the "latest" offset of
        // a state partition now is its end, so everything acknowledged before it is applied.
        let mut query = TopicPartitionList::new();
        for &partition in partitions {
            for topic in state_topics {
                query.add_partition_offset(
                    &self.state_topic_name(topic),
                    partition,
                    Offset::End,
                )?;
            }
        }
        let client = &self.state_ends;
        let ends = tokio::task::block_in_place(|| {
            client.offsets_for_times(query, Duration::from_secs(10))
        })?;
        let mut targets = Vec::new();
        for element in ends.elements() {
            let topic = if element.topic() == self.topics.consents() {
                StateTopic::Consents
            } else {
                StateTopic::Subscriptions
            };
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
        let deadline = Instant::now() + self.config.state_sync_timeout;
        loop {
            let behind = targets
                .iter()
                .find(|(key, high)| self.positions.get(key).copied().unwrap_or(0) < *high);
            let Some(((_, partition), _)) = behind else {
                return Ok(());
            };
            if Instant::now() > deadline {
                return Err(Error::StateSyncTimeout {
                    partition: *partition,
                    seconds: self.config.state_sync_timeout.as_secs(),
                });
            }
            let consumer = &self.state_consumer;
            let polled = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(100)));
            match polled {
                Some(Ok(message)) => {
                    let message = message.detach();
                    self.apply_state(&message).await?;
                }
                Some(Err(e)) => warn!(error = %e, "state consumer error; retrying"),
                None => {}
            }
        }
    }

    async fn apply_state(&mut self, message: &OwnedMessage) -> Result<()> {
        let topic = if message.topic() == self.topics.consents() {
            StateTopic::Consents
        } else {
            StateTopic::Subscriptions
        };
        let partition = message.partition();
        self.positions
            .insert((topic, partition), message.offset() + 1);
        metrics::counter!(m::STATE_RECORDS, "topic" => match topic {
            StateTopic::Consents => "consents",
            StateTopic::Subscriptions => "subscriptions",
        })
        .increment(1);
        let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            return self
                .dead_letter(
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
        match (topic, message.payload()) {
            (StateTopic::Consents, None) => self.state_mut(partition).apply_consent(&key, None),
            (StateTopic::Subscriptions, None) => {
                self.state_mut(partition).apply_subscription(&key, None)
            }
            (StateTopic::Consents, Some(bytes)) => match self.decode::<Consent>(bytes).await {
                Ok(c) => match c.validate(self.policy) {
                    Ok(()) => self.state_mut(partition).apply_consent(&key, Some(c)),
                    Err(e) => {
                        return self
                            .dead_letter(message, e.reason.as_str(), e.to_string())
                            .await;
                    }
                },
                Err(dl) => return self.dead_letter(message, dl.reason, dl.detail).await,
            },
            (StateTopic::Subscriptions, Some(bytes)) => {
                match self.decode::<Subscription>(bytes).await {
                    Ok(s) => match s.validate(self.policy) {
                        Ok(()) => self.state_mut(partition).apply_subscription(&key, Some(s)),
                        Err(e) => {
                            return self
                                .dead_letter(message, e.reason.as_str(), e.to_string())
                                .await;
                        }
                    },
                    Err(dl) => return self.dead_letter(message, dl.reason, dl.detail).await,
                }
            }
        }
        Ok(())
    }

    fn state_mut(&mut self, partition: i32) -> &mut PartitionState {
        self.owned.entry(partition).or_default()
    }

    async fn decode<T: AvroRecord>(&self, bytes: &[u8]) -> Result<T, DeadLetter> {
        self.serde.decode::<T>(bytes).await.map_err(|e| DeadLetter {
            reason: match &e {
                dho_kafka::Error::UnknownSchema { .. } => "unknown_schema",
                dho_kafka::Error::WrongSchema { .. } => "wrong_schema",
                _ => "undecodable",
            },
            detail: e.to_string(),
        })
    }

    async fn decode_event(&self, message: &OwnedMessage) -> Result<Event, DeadLetter> {
        let Some(bytes) = message.payload() else {
            return Err(DeadLetter {
                reason: "empty",
                detail: "an event record without a value".into(),
            });
        };
        let (event, validation) = if message.topic() == self.topics.measurements() {
            let m = self.decode::<Measurement>(bytes).await?;
            let check = m.validate(self.policy, now_millis());
            (Event::Measurement(m), check)
        } else {
            let r = self.decode::<SelfReport>(bytes).await?;
            let check = r.validate(self.policy, now_millis());
            (Event::SelfReport(r), check)
        };
        validation.map_err(|e| DeadLetter {
            reason: e.reason.as_str(),
            detail: e.to_string(),
        })?;
        // The key decides the partition, and the partition decides which state applies:
        // a key that is not the patient would route against another patient's consent.
        if message.key() != Some(event.patient().key().as_bytes()) {
            return Err(DeadLetter {
                reason: "key_mismatch",
                detail: "the record key is not the event's patient".into(),
            });
        }
        Ok(event)
    }

    async fn route_one(
        &mut self,
        message: &OwnedMessage,
        pending: &mut Vec<DeliveryFuture>,
    ) -> Result<()> {
        let kind = if message.topic() == self.topics.measurements() {
            "measurements"
        } else {
            "selfreports"
        };
        metrics::counter!(m::EVENTS_IN, "topic" => kind).increment(1);
        let event = match self.decode_event(message).await {
            Ok(event) => event,
            Err(dl) => return self.dead_letter(message, dl.reason, dl.detail).await,
        };
        let source = SourcePosition {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let now = now_millis();
        let patient_key = event.patient().key().to_string();
        // Collect owned grants first, so the state borrow ends before producing.
        let (grants, withheld): (Vec<(Subscription, Consent)>, Vec<Withheld>) = {
            let state = self
                .owned
                .get(&message.partition())
                .and_then(|s| s.patient(&patient_key));
            let decision = decide(state, event.view(), now);
            (
                decision
                    .grants
                    .iter()
                    .map(
                        |Grant {
                             subscription,
                             consent,
                         }| ((*subscription).clone(), (*consent).clone()),
                    )
                    .collect(),
                decision.withheld,
            )
        };
        for reason in withheld {
            metrics::counter!(m::WITHHELD, "reason" => reason.as_str()).increment(1);
        }
        let category = event.view().category;
        for (subscription, consent) in grants {
            let delivery = self.delivery(&event, &source, &subscription, &consent, now);
            let record = DisclosureRecord {
                delivery_id: delivery.delivery_id.clone(),
                recorded_at: now,
                patient: event.patient().clone(),
                recipient: subscription.subscriber_org.clone(),
                subscriber_id: subscription.subscriber_id.clone(),
                subscription_id: subscription.subscription_id.clone(),
                purpose_of_use: subscription.purpose_of_use.clone(),
                decision_reference: consent.consent_id.clone(),
                legal_basis: consent.legal_basis.clone(),
                data_controller: event.data_controller().clone(),
                category,
                event_id: event.event_id().to_string(),
                content_level: delivery.content_level,
                source: source.clone(),
            };
            let encoder = self.deliver_encoder(&subscription.subscriber_id).await?;
            let delivery_bytes = encoder.encode(&delivery)?;
            let audit_bytes = self.audit.encode(&record)?;
            let topic = self.topics.deliver(&subscription.subscriber_id);
            pending.push(
                self.send(&topic, &patient_key, &delivery_bytes, None)
                    .await?,
            );
            pending.push(
                self.send(&self.topics.audit(), &patient_key, &audit_bytes, None)
                    .await?,
            );
            metrics::counter!(m::DELIVERIES, "category" => category.as_str()).increment(1);
        }
        Ok(())
    }

    fn delivery(
        &self,
        event: &Event,
        source: &SourcePosition,
        subscription: &Subscription,
        consent: &Consent,
        now: Millis,
    ) -> Delivery {
        let mut delivery = Delivery {
            delivery_id: delivery_id(source, &subscription.subscriber_id),
            subscriber_id: subscription.subscriber_id.clone(),
            subscription_id: subscription.subscription_id.clone(),
            consent_id: consent.consent_id.clone(),
            patient: event.patient().clone(),
            source: source.clone(),
            content_level: subscription.content_level,
            routed_at: now,
            measurement: None,
            self_report: None,
            alert: None,
            reference: None,
        };
        match (subscription.content_level, event) {
            (ContentLevel::Minimal, _) => delivery.reference = Some(event.reference()),
            (ContentLevel::Full, Event::Measurement(e)) => delivery.measurement = Some(e.clone()),
            (ContentLevel::Full, Event::SelfReport(e)) => delivery.self_report = Some(e.clone()),
        }
        delivery
    }

    /// The encoder for a subscriber's topic, creating the topic and subject on first use.
    async fn deliver_encoder(&mut self, subscriber_id: &str) -> Result<Encoder<Delivery>> {
        if let Some(encoder) = self.deliver.get(subscriber_id) {
            return Ok(encoder.clone());
        }
        let topic = self.topics.deliver(subscriber_id);
        let settings = &self.config.kafka;
        dho_kafka::ensure_topics(
            settings,
            &[TopicSpec::output(topic.clone(), settings.partitions, None)],
        )
        .await?;
        let encoder = self.serde.register::<Delivery>(&topic).await?;
        self.deliver
            .insert(subscriber_id.to_string(), encoder.clone());
        Ok(encoder)
    }

    /// Enqueues a record keyed and partitioned by patient; waits while the queue is full.
    async fn send(
        &self,
        topic: &str,
        patient_key: &str,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<DeliveryFuture> {
        let partition = partition_for(patient_key.as_bytes(), self.config.kafka.partitions);
        let mut record = FutureRecord::to(topic)
            .key(patient_key)
            .payload(payload)
            .partition(partition);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(future) => return Ok(future),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(Error::NotAcknowledged(e)),
            }
        }
    }

    /// Parks a record in the dead-letter topic with its original key and bytes, and waits
    /// for the acknowledgement (dead letters are rare; simplicity wins over batching).
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
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
        let topic = self.topics.deadletter();
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| Error::NotAcknowledged(e))
    }
}
