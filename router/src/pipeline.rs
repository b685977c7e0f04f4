//! The router's I/O around the pure decision: consume a batch of events, catch the state of
//! the batch's partitions up to the brokers' high watermarks, decide, produce deliveries,
//! audit records and dead letters, wait for every acknowledgement, then commit the input
//! offsets. A crash anywhere before the commit replays the batch; deterministic delivery
//! ids let the SDK drop the repeats (effectively once on any Kafka-API broker).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dho_kafka::outage::Outage;
use dho_kafka::{AvroSerde, Encoder, TopicSpec};
use dho_schemas::codec::{AvroRecord, DeliveryView, DisclosureView, ReferenceView};
use dho_schemas::model::*;
use dho_schemas::partition::partition_for;
use dho_schemas::topics::{headers, state_key};
use dho_schemas::{Policy, TopicNames};
use dho_telemetry::{KafkaStats, StatsContext};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
    StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::Producer;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::RouterConfig;
use dho_routing_core::alerts::{self, Observed, Track};
use dho_routing_core::decision::{EventView, Grant, decide};
use dho_routing_core::state::PartitionState;

use crate::metrics as m;
use crate::outputs::{Acks, Outbox, Output, OutputContext, OutputProducer, Outputs, TopicId};

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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How far behind the newest routed reading a silence must have ended before it counts
/// while the partition is not caught up: producers' clocks and in-flight records.
const SILENCE_MARGIN_MS: Millis = 60_000;

/// How many routed batches may wait for their acknowledgements at once. Two: the state
/// ends of the next batch are asked for while the oldest one's acknowledgements are
/// collected, and a batch has a whole batch's routing time to be acknowledged.
const PIPELINE_DEPTH: usize = 2;

/// How long a transaction call may block.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// The namespace of delivery ids (UUID v5 of source position and subscriber).
const DELIVERY_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6a1f_4c2e_9d3b_4e8a_a5c7_1b2d_3e4f_5a6b);

/// `Uuid::new_v5(&DELIVERY_ID_NAMESPACE, name)`, with a SHA-1 that uses the CPU's SHA
/// instructions where it has them (uuid's own is portable code: 4% of the router's CPU).
fn uuid_v5(name: &[u8]) -> uuid::Uuid {
    uuid_v5_of(&[name])
}

/// [`uuid_v5`] of the concatenation of `parts` (no buffer to join them in).
fn uuid_v5_of(parts: &[&[u8]]) -> uuid::Uuid {
    use sha1::Digest;
    let mut hash = sha1::Sha1::new();
    hash.update(DELIVERY_ID_NAMESPACE.as_bytes());
    for part in parts {
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// The deterministic id of the delivery of a source record to a subscriber.
pub fn delivery_id(source: &SourcePosition, subscriber_id: &str) -> String {
    delivery_id_into(source, subscriber_id, &mut [0; 36]).to_string()
}

/// [`delivery_id`] written into `out` (no allocation or formatting per delivery): the
/// UUID v5 of `<topic>/<partition>/<offset>/<subscriber>`.
fn delivery_id_into<'b>(
    source: &SourcePosition,
    subscriber_id: &str,
    out: &'b mut [u8; 36],
) -> &'b str {
    let (mut partition, mut offset) = ([0; 20], [0; 20]);
    uuid_v5_of(&[
        source.topic.as_bytes(),
        b"/",
        decimal(source.partition.into(), &mut partition),
        b"/",
        decimal(source.offset, &mut offset),
        b"/",
        subscriber_id.as_bytes(),
    ])
    .hyphenated()
    .encode_lower(out)
}

/// `value` in decimal, as `Display` writes it, in `buffer`.
fn decimal(value: i64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut rest = value.unsigned_abs();
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0 {
        start -= 1;
        buffer[start] = b'-';
    }
    &buffer[start..]
}

/// Remembers revoked partitions so the loop drops their state before the next batch.
struct RebalanceTracker {
    revoked: Arc<Mutex<Vec<i32>>>,
    stats: StatsContext,
}

impl ClientContext for RebalanceTracker {
    /// librdkafka's periodic statistics: consumer lag per group and input topic, the broker
    /// round-trip time; and "state loaded" once the group assigned this member nothing.
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.stats.observe(&statistics);
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
    /// What a minimal delivery carries instead of the values.
    fn reference(&self) -> ReferenceView<'_> {
        let view = self.view();
        let effective_time = match self {
            Event::Measurement(e) => e.effective_time,
            Event::SelfReport(e) => e.authored_time,
        };
        ReferenceView {
            event_id: self.event_id(),
            category: view.category,
            code: view.code,
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

/// What a delivery discloses: an ingest event, or an alert about the patient.
#[derive(Debug, Clone, Copy)]
enum Outgoing<'a> {
    Event(&'a Event),
    Alert(&'a Alert),
}

impl Outgoing<'_> {
    fn category(self) -> DataCategory {
        match self {
            Outgoing::Event(e) => e.view().category,
            Outgoing::Alert(_) => DataCategory::Alert,
        }
    }

    fn patient(&self) -> &PatientIdentifier {
        match self {
            Outgoing::Event(e) => e.patient(),
            Outgoing::Alert(a) => &a.patient,
        }
    }

    /// The audit record's event id: the event's, or the alert's.
    fn event_id(&self) -> &str {
        match self {
            Outgoing::Event(e) => e.event_id(),
            Outgoing::Alert(a) => &a.alert_id,
        }
    }

    /// The id of the delivery to `subscriber_id`, written into `out`.
    fn delivery_id<'b>(
        self,
        source: &SourcePosition,
        subscriber_id: &str,
        name: &mut String,
        out: &'b mut [u8; 36],
    ) -> &'b str {
        match self {
            Outgoing::Event(_) => delivery_id_into(source, subscriber_id, out),
            Outgoing::Alert(a) => alert_delivery_id_into(&a.alert_id, subscriber_id, name, out),
        }
    }
}

/// The deterministic id of an alert's delivery to a subscriber (the alert id is
/// deterministic too, so a replay produces the same delivery id), written into `out`, with
/// `name` as scratch.
fn alert_delivery_id_into<'b>(
    alert_id: &str,
    subscriber_id: &str,
    name: &mut String,
    out: &'b mut [u8; 36],
) -> &'b str {
    use std::fmt::Write;
    name.clear();
    let _ = write!(name, "alert/{alert_id}/{subscriber_id}");
    uuid_v5(name.as_bytes()).hyphenated().encode_lower(out)
}

/// A bounded label value for a zone.
fn zone_label(zone: Zone) -> &'static str {
    match zone {
        Zone::Green => "green",
        Zone::Yellow => "yellow",
        Zone::Red => "red",
    }
}

/// What routing one batch produced, before it is acknowledged.
struct BatchOutputs {
    /// Deliveries, audit records and alerts: waiting to be handed over, then for their
    /// acknowledgements.
    outbox: Outbox,
    /// Alert tracks changed in the batch, as they were at its end, by (partition,
    /// `patient|code` key): written once the batch's outputs are acknowledged.
    tracks: BTreeMap<(i32, String), Track>,
}

/// The broker's answer to a question for state ends (see `Router::ask_state_ends`).
type EndsAnswer = tokio::task::JoinHandle<Result<TopicPartitionList, KafkaError>>;

/// A filled batch, and the state ends asked for while it filled if they hold for all of it.
struct Filled<'c> {
    batch: Vec<BorrowedMessage<'c>>,
    ends: Option<EndsAnswer>,
    /// Partitions the group took away while the batch filled. Their records fetched before
    /// that are already out of `batch`; what is left of them was fetched after the group
    /// gave them back, and is this instance's to route.
    revoked: Vec<i32>,
}

/// A routed batch whose outputs may not be acknowledged yet.
struct InFlight {
    out: BatchOutputs,
    /// The input offsets to commit once it is acknowledged.
    offsets: TopicPartitionList,
    /// Exactly-once mode: the group membership the batch's records were fetched under. Its
    /// offsets are committed under it, so if the group has moved on meanwhile (this
    /// instance was taken for dead and its partitions given to another), the broker
    /// refuses the commit (KIP-447) instead of taking offsets from a zombie. librdkafka
    /// updates the membership in the background on rejoining, so asking at commit time
    /// could already name the new generation.
    group: Option<ConsumerGroupMetadata>,
    started: Instant,
    events: usize,
}

impl BatchOutputs {
    fn new() -> Self {
        Self {
            outbox: Outbox::new(Acks::new()),
            tracks: BTreeMap::new(),
        }
    }
}

/// Waits for the broker's acknowledgement of every record of `acks`; where each landed.
async fn await_acks(acks: &Acks) -> Result<Vec<(i32, i64)>> {
    acks.all().await.map_err(Error::NotAcknowledged)
}

/// Why a record went to the dead-letter topic (bounded: a metric label and a header).
#[derive(Debug)]
struct DeadLetter {
    reason: &'static str,
    detail: String,
}

/// The dead letter for a record that did not decode.
fn dead_letter_for(e: dho_kafka::Error) -> DeadLetter {
    DeadLetter {
        reason: match &e {
            dho_kafka::Error::UnknownSchema { .. } => "unknown_schema",
            dho_kafka::Error::WrongSchema { .. } => "wrong_schema",
            _ => "undecodable",
        },
        detail: e.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum StateTopic {
    Consents,
    Subscriptions,
    CarePlans,
    /// The router's own alert tracks (written by the router, read back on assignment).
    AlertState,
}

impl StateTopic {
    const ALL: [StateTopic; 4] = [
        StateTopic::Consents,
        StateTopic::Subscriptions,
        StateTopic::CarePlans,
        StateTopic::AlertState,
    ];

    fn label(self) -> &'static str {
        match self {
            StateTopic::Consents => "consents",
            StateTopic::Subscriptions => "subscriptions",
            StateTopic::CarePlans => "careplans",
            StateTopic::AlertState => "alertstate",
        }
    }
}

/// Scratch space the router reuses for every delivery.
#[derive(Debug, Default)]
struct Scratch {
    /// The name a delivery id is made from.
    id_name: String,
}

/// Topic names the router uses per record.
#[derive(Debug)]
struct Names {
    measurements: String,
    selfreports: String,
    /// Indexed by `StateTopic as usize`.
    state: [String; 4],
}

impl Names {
    fn new(topics: &TopicNames) -> Self {
        Self {
            measurements: topics.measurements(),
            selfreports: topics.selfreports(),
            state: [
                topics.consents(),
                topics.subscriptions(),
                topics.careplans(),
                topics.alert_state(),
            ],
        }
    }
}

/// The per-record counters, resolved once: `counter!` with labels hashes its key on every
/// call. (So the metrics recorder must be installed before the router connects.)
#[derive(Debug)]
struct Counters {
    /// Indexed measurements, self-reports.
    events_in: [metrics::Counter; 2],
    /// Indexed by `Withheld as usize`.
    withheld: [metrics::Counter; 4],
    /// Indexed by `DataCategory as usize`.
    deliveries: [metrics::Counter; 3],
}

impl Counters {
    fn new() -> Self {
        use dho_routing_core::decision::Withheld as W;
        let events_in = |topic: &'static str| metrics::counter!(m::EVENTS_IN, "topic" => topic);
        let withheld = |w: W| metrics::counter!(m::WITHHELD, "reason" => w.as_str());
        let deliveries =
            |c: DataCategory| metrics::counter!(m::DELIVERIES, "category" => c.as_str());
        Self {
            events_in: [events_in("measurements"), events_in("selfreports")],
            withheld: [
                withheld(W::NoSubscription),
                withheld(W::NotRequested),
                withheld(W::NoConsent),
                withheld(W::ConsentDenied),
            ],
            deliveries: [
                deliveries(DataCategory::Measurement),
                deliveries(DataCategory::SelfReport),
                deliveries(DataCategory::Alert),
            ],
        }
    }
}

/// The router's clock (a function, so tests can move time forward to reach a silence).
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

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
    /// Topic names used per record, made once (`TopicNames` formats on every call).
    names: Names,
    counters: Counters,
    policy: Policy,
    serde: AvroSerde,
    /// Shared with `run`, whose batches borrow their records from it (no copy per record).
    events: Arc<StreamConsumer<RebalanceTracker>>,
    state_consumer: BaseConsumer,
    /// Asks for the state topics' ends. A client of its own: the state reader always has a
    /// long-polling Fetch in flight, and a broker answers a connection's requests in order,
    /// so a ListOffsets on the reader's connection would wait up to fetch.wait.max.ms.
    state_ends: Arc<BaseConsumer>,
    /// The output producer, with a handle per delivery and audit topic.
    outputs: Outputs,
    /// The audit topic, in `outputs`.
    audit_topic: TopicId,
    revoked: Arc<Mutex<Vec<i32>>>,
    /// Readiness: set once state has been caught up (or the group assigned nothing).
    state_loaded: Arc<AtomicBool>,
    /// Event records whose outputs are acknowledged and offsets committed, in this run.
    finished: Arc<AtomicU64>,
    owned: HashMap<i32, PartitionState>,
    /// Next offset to apply, per state topic and partition.
    positions: HashMap<(StateTopic, i32), i64>,
    audit: Encoder<DisclosureRecord>,
    /// Per subscriber: the encoder and the topic of its deliveries.
    deliver: HashMap<String, (Encoder<Delivery>, TopicId)>,
    /// Scratch space reused for every delivery.
    scratch: Scratch,
    /// The last reading routed: the next one is decoded into its allocations.
    spare_reading: Option<Measurement>,
    stats: RunStats,
    /// Batches routed but not yet acknowledged, oldest first (effectively-once mode; at
    /// most `PIPELINE_DEPTH`).
    in_flight: VecDeque<InFlight>,
    /// The offsets the last finished batch committed (asynchronously).
    last_offsets: Option<TopicPartitionList>,
    /// Per input partition, the newest measurement timestamp routed (see `check_silences`).
    routed_until: HashMap<i32, Millis>,
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
        if config.create_topics {
            dho_kafka::ensure_topics(settings, &dho_kafka::hub_topics(settings)).await?;
        } else {
            // Provisioned by operators: only check that they exist and are co-partitioned.
            dho_kafka::check_topics(settings, &dho_kafka::hub_topics(settings)).await?;
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
        let state_loaded = Arc::new(AtomicBool::new(false));
        let kafka_stats = KafkaStats::new(m::STATS, config.group_id.clone());
        let session_timeout = config.session_timeout.as_millis().to_string();
        let heartbeat = (config.session_timeout.as_millis() / 4)
            .max(100)
            .to_string();
        let events: StreamConsumer<RebalanceTracker> = settings
            .client_config_tuned(
                &[
                    ("group.id", config.group_id.as_str()),
                    ("enable.auto.commit", "false"),
                    ("enable.auto.offset.store", "false"),
                    ("auto.offset.reset", "earliest"),
                    ("isolation.level", "read_committed"),
                    ("session.timeout.ms", session_timeout.as_str()),
                    ("heartbeat.interval.ms", heartbeat.as_str()),
                    ("statistics.interval.ms", "5000"),
                ],
                dho_kafka::FETCH_PROMPTLY,
            )?
            .create_with_context(RebalanceTracker {
                revoked: revoked.clone(),
                stats: StatsContext::new(kafka_stats.clone())
                    .ready_when_unassigned(state_loaded.clone()),
            })?;
        events.subscribe(&[&topics.measurements(), &topics.selfreports()])?;
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
        let names = Names::new(&topics);
        // librdkafka asks where a newly assigned partition starts only once it knows the
        // partition's leader, and otherwise tries again after 500 ms: learnt now, the state
        // load after the first assignment (which every event of its partitions waits for)
        // does not wait for that. (The leaders stay known for `metadata.max.age.ms`.)
        tokio::task::block_in_place(|| {
            names.state.iter().try_for_each(|topic| {
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
        let mut outputs = Outputs::new(producer);
        let audit_topic = outputs.topic(&topics.audit())?;
        info!(group = %config.group_id, "router connected");
        Ok(Self {
            policy: Policy {
                allow_synthetic: config.allow_synthetic_identifiers,
            },
            config,
            names,
            counters: Counters::new(),
            topics,
            serde,
            events: Arc::new(events),
            state_consumer,
            state_ends: Arc::new(state_ends),
            outputs,
            audit_topic,
            revoked,
            state_loaded,
            finished: Arc::default(),
            owned: HashMap::new(),
            positions: HashMap::new(),
            audit,
            deliver: HashMap::new(),
            scratch: Scratch::default(),
            spare_reading: None,
            stats: RunStats::default(),
            in_flight: VecDeque::new(),
            last_offsets: None,
            routed_until: HashMap::new(),
            clock: Arc::new(now_millis),
        })
    }

    /// Readiness: true once the state of the owned partitions has been caught up at least
    /// once, or the group has assigned this instance nothing yet (for `/readyz`).
    pub fn state_loaded(&self) -> Arc<AtomicBool> {
        self.state_loaded.clone()
    }

    /// How many event records this instance has finished (outputs acknowledged, offsets
    /// committed) so far; read by the benchmark without asking the broker.
    pub fn finished(&self) -> Arc<AtomicU64> {
        self.finished.clone()
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
        let events = self.events.clone();
        let mut silence_timer = tokio::time::interval(self.config.silence_check_interval);
        silence_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !self.in_flight.is_empty() {
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
                        let batch = self.fill_batch(&events, message).await?;
                        self.route_batch(batch).await?;
                        continue;
                    }
                    _ => self.finish_in_flight().await?,
                }
            }
            let first = tokio::select! {
                _ = &mut shutdown => break,
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
                Ok(message) => message,
                Err(e) => {
                    warn!(error = %e, "consumer error; continuing");
                    continue;
                }
            };
            let batch = self.fill_batch(&events, first).await?;
            self.route_batch(batch).await?;
        }
        info!("router stopping: committing and leaving the group");
        self.finish_in_flight().await?;
        // Batches commit asynchronously; the last one's offsets again, synchronously, so
        // the group has them before this instance leaves.
        if let Some(offsets) = self.last_offsets.take()
            && let Err(e) = self.events.commit(&offsets, CommitMode::Sync)
        {
            warn!(error = %e, "the last commit was not confirmed; the batch may be routed again");
        }
        let _ = self.outputs.producer().flush(Duration::from_secs(10));
        Ok(self.stats)
    }

    /// A batch: `first` and what else arrives within `batch_wait` (2 ms) of the last
    /// record, up to `max_batch`. Once half a wait has passed with no record, the state
    /// ends are asked for, so the broker answers while the batch waits (not at once: the
    /// records of one Fetch reach the queue a partition at a time). The answer holds for
    /// the batch only if no record came after the question (see `route_batch`).
    async fn fill_batch<'c>(
        &self,
        events: &'c StreamConsumer<RebalanceTracker>,
        first: BorrowedMessage<'c>,
    ) -> Result<Filled<'c>> {
        let wait = self.config.batch_wait;
        let mut batch = vec![first];
        let mut asked: Option<(EndsAnswer, usize)> = None;
        let mut revoked = Vec::new();
        while batch.len() < self.config.max_batch {
            // What is already fetched needs no timer (a timer per record showed in profiles).
            let next = match futures::FutureExt::now_or_never(events.recv()) {
                Some(next) => next,
                None => {
                    let deadline = tokio::time::Instant::now() + wait;
                    let mut next = None;
                    if asked.is_none() {
                        match tokio::time::timeout(wait / 2, events.recv()).await {
                            Ok(early) => next = Some(early),
                            Err(_) => {
                                let partitions = batch.iter().map(|m| m.partition()).collect();
                                asked = Some((self.ask_state_ends(&partitions)?, batch.len()));
                            }
                        }
                    }
                    match next {
                        Some(next) => next,
                        None => match tokio::time::timeout_at(deadline, events.recv()).await {
                            Ok(next) => next,
                            Err(_) => break,
                        },
                    }
                }
            };
            // The recv that returned `next` may have served a revocation: the records in hand
            // of those partitions are the new owner's, `next` is not (it came after).
            self.forget_revoked_records(&mut batch, &mut revoked);
            match next {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        self.forget_revoked_records(&mut batch, &mut revoked);
        let ends = asked
            .filter(|(_, in_hand)| *in_hand == batch.len())
            .map(|(ends, _)| ends);
        Ok(Filled {
            batch,
            ends,
            revoked,
        })
    }

    /// Takes the revocations noticed since the last look and removes their partitions'
    /// records from `batch` (fetched before the revocation); notes them in `revoked` for
    /// the state to be dropped before the batch is routed.
    fn forget_revoked_records(&self, batch: &mut Vec<BorrowedMessage<'_>>, revoked: &mut Vec<i32>) {
        let newly = self.take_revoked();
        if newly.is_empty() {
            return;
        }
        batch.retain(|m| !newly.contains(&m.partition()));
        revoked.extend(newly);
    }

    /// The no-data timer: in every partition this instance owns whose readings are all
    /// routed (so a reading waiting in the backlog cannot be mistaken for silence), raises
    /// `NO_DATA` for each alert track silent past its plan's interval.
    async fn check_silences(&mut self) -> Result<()> {
        // Revoked partitions' part of the batches in flight is dropped before they finish.
        self.drop_revoked();
        self.finish_in_flight().await?;
        let measurements = self.names.measurements.clone();
        // A question to the broker that fails skips this tick (the next one asks again);
        // only a failure to deliver an alert stops the router.
        let partitions: BTreeSet<i32> = match self.events.assignment() {
            Ok(assignment) => assignment
                .elements()
                .iter()
                .filter(|e| e.topic() == measurements)
                .map(|e| e.partition())
                .collect(),
            Err(e) => {
                warn!(error = %e, "no-data check skipped: the assignment is unknown");
                return Ok(());
            }
        };
        if partitions.is_empty() {
            return Ok(());
        }
        let caught_up = match self.caught_up(&measurements, &partitions) {
            Ok(caught_up) => caught_up,
            Err(e) => {
                warn!(error = %e, "no-data check skipped: the positions are unknown");
                return Ok(());
            }
        };
        // Begun before the state sync, which may dead-letter a state record (see route_batch).
        self.begin()?;
        // Every owned partition, routed or not yet: after a restart an idle partition's
        // tracks are loaded here.
        self.sync_state(&partitions).await?;
        let now = self.now();
        let mut raised = Vec::new();
        for &partition in &partitions {
            let Some(state) = self.owned.get(&partition) else {
                continue;
            };
            // How far the partition is routed: all of it, or up to the newest reading's
            // timestamp. A partition is in ingest order, so once a reading received after a
            // track's deadline (with a margin for producers' clocks) is routed, no reading of
            // that patient from before the deadline can still be waiting: under steady load
            // a partition is never quite caught up, and silence must still be noticed.
            let routed_until = if caught_up.contains(&partition) {
                Millis::MAX
            } else {
                self.routed_until
                    .get(&partition)
                    .map_or(Millis::MIN, |t| t.saturating_sub(SILENCE_MARGIN_MS))
            };
            for (patient_key, patient) in state.iter() {
                for (code, track) in &patient.alerts {
                    let codes: Vec<&str> = track.target_codes.iter().map(String::as_str).collect();
                    let Some(plan) = alerts::plan_for(patient.care_plans.values(), code, &codes)
                    else {
                        continue;
                    };
                    match track.silence_deadline(plan) {
                        Some(deadline) if deadline <= now && deadline <= routed_until => {}
                        _ => continue,
                    }
                    let mut track = track.clone();
                    if let Some(alert) = track.check_silence(plan, now) {
                        let key = format!("{patient_key}|{code}");
                        raised.push((partition, key, track, alert, plan.updated_by.clone()));
                    }
                }
            }
        }
        if raised.is_empty() {
            if self.config.transactional_id.is_some() {
                // Holds at most dead letters of the state sync; librdkafka ends a transaction
                // with nothing in it locally.
                self.commit_transaction(&TopicPartitionList::new(), None)?;
            }
            return Ok(());
        }
        let mut out = BatchOutputs::new();
        for (partition, key, track, alert, controller) in raised {
            // The silence follows the last reading: its position names the source.
            let source = SourcePosition {
                topic: measurements.clone(),
                partition,
                offset: track.applied_through,
            };
            self.state_mut(partition)
                .apply_track(&key, Some(track.clone()));
            out.tracks.insert((partition, key), track);
            self.raise(
                &alert,
                partition,
                &source,
                &controller,
                now,
                &mut out.outbox,
            )
            .await?;
        }
        self.acknowledge(out).await?;
        if self.config.transactional_id.is_some() {
            self.commit_transaction(&TopicPartitionList::new(), None)?;
        }
        self.state_gauges();
        Ok(())
    }

    /// The partitions of `topic` whose committed position has reached the end.
    fn caught_up(&self, topic: &str, partitions: &BTreeSet<i32>) -> Result<BTreeSet<i32>> {
        if partitions.is_empty() {
            return Ok(BTreeSet::new());
        }
        let mut ends = TopicPartitionList::new();
        let mut list = TopicPartitionList::new();
        for &partition in partitions {
            ends.add_partition_offset(topic, partition, Offset::End)?;
            list.add_partition(topic, partition);
        }
        let (ends, committed) = tokio::task::block_in_place(|| {
            let ends = self
                .state_ends
                .offsets_for_times(ends, Duration::from_secs(10))?;
            let committed = self
                .events
                .committed_offsets(list, Duration::from_secs(10))?;
            Ok::<_, KafkaError>((ends, committed))
        })?;
        let offset_of = |list: &TopicPartitionList, partition: i32| {
            list.find_partition(topic, partition).map(|e| e.offset())
        };
        Ok(partitions
            .iter()
            .copied()
            .filter(|&p| match (offset_of(&ends, p), offset_of(&committed, p)) {
                (Some(Offset::Offset(end)), Some(Offset::Offset(next))) => next >= end,
                (Some(Offset::Offset(0) | Offset::End | Offset::Beginning), _) => true,
                _ => false,
            })
            .collect())
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
        // Begun before the state sync: a state record dead-lettered there is an output of
        // this batch, and a transactional producer refuses to produce outside a transaction.
        self.begin()?;
        let group = match self.config.transactional_id {
            Some(_) => Some(self.events.group_metadata().ok_or(KafkaError::Canceled)?),
            None => None,
        };
        self.own_state_partitions(&partitions)?;
        // The state ends are asked for once the batch's records are in hand (a change
        // acknowledged before any of them was written is below the ends): while the batch
        // filled, or now. While the broker answers, the oldest routed batch is finished if
        // the pipeline is full.
        let ends = match ends {
            Some(ends) => ends,
            None => self.ask_state_ends(&partitions)?,
        };
        while self.in_flight.len() >= PIPELINE_DEPTH {
            if let Some(oldest) = self.in_flight.pop_front() {
                self.finish(oldest).await?;
            }
        }
        let ends = ends
            .await
            .map_err(|_| Error::Kafka(KafkaError::Canceled))??;
        self.catch_up_state(ends, &partitions).await?;

        let mut out = BatchOutputs::new();
        // One time for the whole batch: consent, subscription and validity are judged at the
        // batch's start, a few milliseconds before its records are routed (a change
        // acknowledged after the state sync above applies from the next batch anyway).
        let now = self.now();
        // Per (is a measurement, partition): the next offset and the newest timestamp. A few
        // entries, searched in order: cheaper per record than a map keyed by topic name.
        let mut positions: Vec<(bool, i32, i64, Option<Millis>)> = Vec::new();
        // Each record's position, in one value for the batch (no topic name copied per record).
        let mut source = SourcePosition {
            topic: String::new(),
            partition: 0,
            offset: 0,
        };
        for message in &batch {
            // librdkafka hands out the topic as a C string: read it once per record.
            let topic = message.topic();
            let is_measurement = topic == self.names.measurements;
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
                    position.2 = source.offset + 1;
                    position.3 = position.3.max(at);
                }
                None => positions.push((is_measurement, source.partition, source.offset + 1, at)),
            }
        }
        let mut offsets = TopicPartitionList::new();
        for &(is_measurement, partition, next, newest) in &positions {
            let topic = if is_measurement {
                if let Some(at) = newest {
                    let until = self.routed_until.entry(partition).or_insert(at);
                    *until = (*until).max(at);
                }
                &self.names.measurements
            } else {
                &self.names.selfreports
            };
            offsets.add_partition_offset(topic, partition, Offset::Offset(next))?;
        }
        // The rest of the batch's outputs go to librdkafka now, not when it is finished.
        self.hand_over(&mut out.outbox).await?;
        let routed = InFlight {
            out,
            offsets,
            group,
            started,
            events: batch.len(),
        };
        if self.config.transactional_id.is_some() {
            // One transaction at a time: finished before the next batch begins.
            return self.finish(routed).await;
        }
        // Pipelined: this batch's outputs are on their way while the next batch is routed
        // (see PIPELINE_DEPTH). Batches finish in order, so committed offsets still never
        // pass an unacknowledged output.
        self.in_flight.push_back(routed);
        Ok(())
    }

    /// Finishes the batches still waiting for their acknowledgements, oldest first.
    async fn finish_in_flight(&mut self) -> Result<()> {
        while let Some(batch) = self.in_flight.pop_front() {
            self.finish(batch).await?;
        }
        Ok(())
    }

    /// Waits for a routed batch's acknowledgements, writes its alert tracks, then commits
    /// its input offsets (in exactly-once mode, commits its transaction).
    async fn finish(&mut self, batch: InFlight) -> Result<()> {
        let InFlight {
            out,
            offsets,
            group,
            started,
            events,
        } = batch;
        self.acknowledge(out).await?;
        // Outputs acknowledged: only now may the input offsets move on.
        if self.config.transactional_id.is_some() {
            self.commit_transaction(&offsets, group.as_ref())?;
        } else {
            self.events.commit(&offsets, CommitMode::Async)?;
            self.last_offsets = Some(offsets);
        }
        self.stats.batches += 1;
        self.stats.events += events as u64;
        self.finished.fetch_add(events as u64, Ordering::Relaxed);
        metrics::counter!(m::BATCHES).increment(1);
        metrics::histogram!(m::ROUTING_LATENCY).record(started.elapsed().as_secs_f64());
        self.state_gauges();
        Ok(())
    }

    fn state_gauges(&self) {
        let patients: usize = self.owned.values().map(PartitionState::patients).sum();
        metrics::gauge!(m::STATE_PATIENTS).set(patients as f64);
        metrics::gauge!(m::OWNED_PARTITIONS).set(self.owned.len() as f64);
        let in_red: usize = self
            .owned
            .values()
            .map(PartitionState::patients_in_red)
            .sum();
        metrics::gauge!(m::PATIENTS_IN_RED).set(in_red as f64);
    }

    /// Starts the batch's transaction in exactly-once mode.
    fn begin(&self) -> Result<()> {
        if self.config.transactional_id.is_some() {
            tokio::task::block_in_place(|| self.outputs.producer().begin_transaction())
                .map_err(Error::Transaction)?;
        }
        Ok(())
    }

    /// Waits until the broker acknowledged every output, then writes the batch's alert
    /// tracks (as they were at the end of the batch). A track is written only after the
    /// alerts it raised are acknowledged: a crash in between replays the reading, which
    /// raises the same alert (same id) again, where writing the track first could lose it.
    /// In exactly-once mode the transaction makes both one step.
    async fn acknowledge(&mut self, out: BatchOutputs) -> Result<()> {
        let BatchOutputs { mut outbox, tracks } = out;
        self.hand_over(&mut outbox).await?;
        let acks = outbox.acks();
        if self.config.transactional_id.is_some() {
            let track_writes = Acks::with_positions();
            for ((partition, key), track) in &tracks {
                self.write_track(*partition, key, track, &track_writes)
                    .await?;
            }
            let (outputs, written) = futures::join!(await_acks(acks), await_acks(&track_writes));
            let written = outputs.and(written).map_err(|e| self.fatal_or(e))?;
            self.note_own_writes(written);
            return Ok(());
        }
        await_acks(acks).await?;
        if tracks.is_empty() {
            return Ok(());
        }
        let track_writes = Acks::with_positions();
        for ((partition, key), track) in &tracks {
            self.write_track(*partition, key, track, &track_writes)
                .await?;
        }
        let written = await_acks(&track_writes).await?;
        self.note_own_writes(written);
        Ok(())
    }

    /// A failed acknowledgement in exactly-once mode is usually the producer's fatal error
    /// (fenced by a newer instance), which says more than the purged records do.
    fn fatal_or(&self, e: Error) -> Error {
        match self.outputs.producer().client().fatal_error() {
            Some((code, reason)) => Error::ProducerFatal { code, reason },
            None => e,
        }
    }

    /// Produces an alert track under its `patient|code` key to the alert-state topic.
    async fn write_track(
        &self,
        partition: i32,
        key: &str,
        track: &Track,
        acks: &Arc<Acks>,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(track)
            .map_err(|e| Error::Setup(dho_kafka::Error::Config(format!("alert state: {e}"))))?;
        let output = Output {
            topic: self.state_topic_name(StateTopic::AlertState),
            partition: Some(partition),
            key: Some(key),
            payload: Some(bytes.as_slice()),
            headers: None,
        };
        crate::outputs::send(self.outputs.producer(), output, acks)
            .await
            .map_err(Error::NotAcknowledged)
    }

    /// The router's own alert-state writes are already applied in memory: when nothing
    /// else was written before one, move the state position past it, so the next batch
    /// does not wait to read it back.
    fn note_own_writes(&mut self, written: Vec<(i32, i64)>) {
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

    /// Offsets and outputs become visible together; on failure everything is aborted and
    /// the router stops, so the batch is routed again from the last committed offsets.
    fn commit_transaction(
        &self,
        offsets: &TopicPartitionList,
        group: Option<&ConsumerGroupMetadata>,
    ) -> Result<()> {
        let result = tokio::task::block_in_place(|| {
            // The no-data timer's transactions consume nothing: no offsets to send.
            if offsets.count() > 0 {
                let group = group.ok_or(KafkaError::Canceled)?;
                self.outputs
                    .producer()
                    .send_offsets_to_transaction(offsets, group, TXN_TIMEOUT)?;
            }
            self.outputs.producer().commit_transaction(TXN_TIMEOUT)
        });
        if let Err(e) = result {
            let _ = tokio::task::block_in_place(|| {
                self.outputs.producer().abort_transaction(TXN_TIMEOUT)
            });
            return Err(Error::Transaction(e));
        }
        Ok(())
    }

    /// Drops what this instance kept for the partitions the group took away: their state,
    /// and the part of the batch in flight that is theirs (its offsets are not committed
    /// and its alert tracks not written: the new owner routes those records again, with the
    /// same ids, and a late write from here could overwrite the new owner's).
    fn drop_revoked(&mut self) {
        let revoked = self.take_revoked();
        self.forget_partitions(revoked);
    }

    /// The partitions revoked since the last look (the rebalance callback notes them).
    fn take_revoked(&self) -> Vec<i32> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// See [`drop_revoked`](Self::drop_revoked).
    fn forget_partitions(&mut self, revoked: Vec<i32>) {
        if revoked.is_empty() {
            return;
        }
        for in_flight in &mut self.in_flight {
            in_flight
                .out
                .tracks
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
        let mut list = TopicPartitionList::new();
        for &partition in &revoked {
            self.routed_until.remove(&partition);
            if self.owned.remove(&partition).is_some() {
                for topic in StateTopic::ALL {
                    self.positions.remove(&(topic, partition));
                    list.add_partition(self.state_topic_name(topic), partition);
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

    fn state_topic_name(&self, topic: StateTopic) -> &str {
        &self.names.state[topic as usize]
    }

    fn state_topic(&self, name: &str) -> StateTopic {
        StateTopic::ALL
            .into_iter()
            .find(|t| self.state_topic_name(*t) == name)
            .unwrap_or(StateTopic::Consents)
    }

    /// Reads the state topics of `partitions` up to their current high watermarks: any
    /// change acknowledged before now is applied before the batch is routed.
    async fn sync_state(&mut self, partitions: &BTreeSet<i32>) -> Result<()> {
        self.own_state_partitions(partitions)?;
        let ends = self.ask_state_ends(partitions)?;
        let ends = ends
            .await
            .map_err(|_| Error::Kafka(KafkaError::Canceled))??;
        self.catch_up_state(ends, partitions).await
    }

    /// Starts reading the state topics of partitions new to this instance.
    fn own_state_partitions(&mut self, partitions: &BTreeSet<i32>) -> Result<()> {
        let mut assign = TopicPartitionList::new();
        for &partition in partitions {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.owned.entry(partition) {
                slot.insert(PartitionState::default());
                for topic in StateTopic::ALL {
                    self.positions.insert((topic, partition), 0);
                    assign.add_partition_offset(
                        self.state_topic_name(topic),
                        partition,
                        Offset::Beginning,
                    )?;
                }
            }
        }
        if assign.count() > 0 {
            self.state_consumer.incremental_assign(&assign)?;
        }
        Ok(())
    }

    /// Asks the broker for the current ends of the state topics of `partitions` (one
    /// ListOffsets request, on a blocking thread): the "latest" offset of a state partition
    /// now is its end, so everything acknowledged before now is below it, and
    /// [`catch_up_state`](Self::catch_up_state) reads up to it.
    fn ask_state_ends(&self, partitions: &BTreeSet<i32>) -> Result<EndsAnswer> {
        let mut query = TopicPartitionList::new();
        for &partition in partitions {
            for topic in StateTopic::ALL {
                query.add_partition_offset(self.state_topic_name(topic), partition, Offset::End)?;
            }
        }
        let client = self.state_ends.clone();
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
    async fn catch_up_state(
        &mut self,
        ends: TopicPartitionList,
        partitions: &BTreeSet<i32>,
    ) -> Result<()> {
        let mut targets = Vec::new();
        for element in ends.elements() {
            if !partitions.contains(&element.partition()) {
                continue;
            }
            let topic = self.state_topic(element.topic());
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
        let mut deadline = Instant::now() + self.config.state_sync_timeout;
        loop {
            let behind = targets
                .iter()
                .find(|(key, high)| self.positions.get(key).copied().unwrap_or(0) < *high);
            let Some(((_, partition), _)) = behind else {
                self.state_loaded.store(true, Ordering::Relaxed);
                return Ok(());
            };
            if Instant::now() > deadline && self.broker_down() {
                // An outage is waited out; only a broker that answers yet does not hand over
                // the state is an error.
                deadline = Instant::now() + self.config.state_sync_timeout;
            } else if Instant::now() > deadline {
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
                None => self.step_over_control_records(),
            }
        }
    }

    /// Whether the broker fails to answer a metadata request for a reason that is an outage.
    fn broker_down(&self) -> bool {
        let client = &self.state_ends;
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
        if self.config.transactional_id.is_none() {
            return;
        }
        let Ok(read) = self.state_consumer.position() else {
            return;
        };
        for element in read.elements() {
            if let Offset::Offset(next) = element.offset() {
                let key = (self.state_topic(element.topic()), element.partition());
                let position = self.positions.entry(key).or_insert(0);
                *position = (*position).max(next);
            }
        }
    }

    async fn apply_state(&mut self, message: &OwnedMessage) -> Result<()> {
        let topic = self.state_topic(message.topic());
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
        metrics::counter!(m::STATE_RECORDS, "topic" => topic.label()).increment(1);
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
        let Some(bytes) = message.payload() else {
            let state = self.state_mut(partition);
            match topic {
                StateTopic::Consents => state.apply_consent(&key, None),
                StateTopic::Subscriptions => state.apply_subscription(&key, None),
                StateTopic::CarePlans => state.apply_care_plan(&key, None),
                StateTopic::AlertState => state.apply_track(&key, None),
            }
            return Ok(());
        };
        let applied = match topic {
            StateTopic::Consents => self
                .decode_state::<Consent>(bytes, Consent::validate)
                .await
                .map(|c| self.state_mut(partition).apply_consent(&key, Some(c))),
            StateTopic::Subscriptions => self
                .decode_state::<Subscription>(bytes, Subscription::validate)
                .await
                .map(|s| self.state_mut(partition).apply_subscription(&key, Some(s))),
            StateTopic::CarePlans => self
                .decode_state::<CarePlan>(bytes, CarePlan::validate)
                .await
                .map(|p| self.state_mut(partition).apply_care_plan(&key, Some(p))),
            // The parser's message could quote a value (an identifier): a fixed detail.
            StateTopic::AlertState => serde_json::from_slice::<Track>(bytes)
                .map_err(|_| DeadLetter {
                    reason: "undecodable",
                    detail: "an alert-state record this router cannot read".into(),
                })
                .map(|t| self.apply_track_record(partition, &key, t)),
        };
        match applied {
            Ok(()) => Ok(()),
            Err(dl) => self.dead_letter(message, dl.reason, dl.detail).await,
        }
    }

    /// Decodes and validates a state record; a bad one is a dead letter, never state.
    async fn decode_state<T: AvroRecord>(
        &self,
        bytes: &[u8],
        validate: impl Fn(&T, Policy) -> std::result::Result<(), dho_schemas::ValidationError>,
    ) -> Result<T, DeadLetter> {
        let value = self.decode::<T>(bytes).await?;
        validate(&value, self.policy).map_err(|e| DeadLetter {
            reason: e.reason.as_str(),
            detail: e.to_string(),
        })?;
        Ok(value)
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
            self.state_mut(partition).apply_track(key, Some(track));
        }
    }

    fn state_mut(&mut self, partition: i32) -> &mut PartitionState {
        self.owned.entry(partition).or_default()
    }

    async fn decode<T: AvroRecord>(&self, bytes: &[u8]) -> Result<T, DeadLetter> {
        self.serde.decode::<T>(bytes).await.map_err(dead_letter_for)
    }

    /// Decodes and checks an event; a measurement into `reading` when there is one (the
    /// previous reading's allocations, reused).
    async fn decode_event(
        &self,
        message: &impl Message,
        is_measurement: bool,
        now: Millis,
        reading: Option<Measurement>,
    ) -> Result<Event, DeadLetter> {
        let Some(bytes) = message.payload() else {
            return Err(DeadLetter {
                reason: "empty",
                detail: "an event record without a value".into(),
            });
        };
        let (event, validation) = if is_measurement {
            let m = match reading {
                Some(mut m) => {
                    self.serde
                        .decode_into(bytes, &mut m)
                        .await
                        .map_err(dead_letter_for)?;
                    m
                }
                None => self.decode::<Measurement>(bytes).await?,
            };
            let check = m.validate(self.policy, now);
            (Event::Measurement(m), check)
        } else {
            let r = self.decode::<SelfReport>(bytes).await?;
            let check = r.validate(self.policy, now);
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
        message: &impl Message,
        is_measurement: bool,
        source: &SourcePosition,
        now: Millis,
        out: &mut BatchOutputs,
    ) -> Result<()> {
        self.counters.events_in[usize::from(!is_measurement)].increment(1);
        let spare = self.spare_reading.take();
        let event = match self.decode_event(message, is_measurement, now, spare).await {
            Ok(event) => event,
            Err(dl) => return self.dead_letter(message, dl.reason, dl.detail).await,
        };
        self.disclose(
            Outgoing::Event(&event),
            event.view(),
            source,
            event.data_controller(),
            now,
            &mut out.outbox,
        )
        .await?;
        if let Event::Measurement(reading) = event {
            self.observe_reading(&reading, source, now, out).await?;
            self.spare_reading = Some(reading);
        }
        Ok(())
    }

    /// Decides who receives `outgoing` (seen as `view`) about its patient now, and produces
    /// one delivery and its disclosure record per grant; counts the rest as withheld.
    async fn disclose(
        &mut self,
        outgoing: Outgoing<'_>,
        view: EventView<'_>,
        source: &SourcePosition,
        data_controller: &OrganisationIdentifier,
        now: Millis,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = loop {
            // The grants borrow the state: no copies of subscriptions or consents. A
            // subscriber seen for the first time needs its topic made first, outside that
            // borrow; then the decision is taken again.
            let this = &*self;
            let state = this
                .owned
                .get(&source.partition)
                .and_then(|s| s.patient(outgoing.patient().key()));
            let decision = decide(state, view, now);
            let new_subscriber = decision
                .grants
                .iter()
                .find(|g| !this.deliver.contains_key(&g.subscription.subscriber_id))
                .map(|g| g.subscription.subscriber_id.clone());
            if let Some(subscriber) = new_subscriber {
                // Ends the decision's borrow of the state (it has a destructor).
                drop(decision);
                if let Err(e) = self.deliver_encoder(&subscriber).await {
                    break Err(e);
                }
                continue;
            }
            for reason in &decision.withheld {
                this.counters.withheld[*reason as usize].increment(1);
            }
            break this
                .produce_grants(
                    &decision.grants,
                    outgoing,
                    source,
                    data_controller,
                    now,
                    &mut scratch,
                    outbox,
                )
                .await;
        };
        self.scratch = scratch;
        result
    }

    /// Produces one delivery and its disclosure record per grant. A minimal delivery carries
    /// no values: a reference for an event, the alert without its reading.
    #[allow(clippy::too_many_arguments)]
    async fn produce_grants(
        &self,
        grants: &[Grant<'_>],
        outgoing: Outgoing<'_>,
        source: &SourcePosition,
        data_controller: &OrganisationIdentifier,
        now: Millis,
        scratch: &mut Scratch,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let category = outgoing.category();
        let patient = outgoing.patient();
        let patient_key = patient.key();
        let partition = partition_for(patient_key.as_bytes(), self.config.kafka.partitions);
        for Grant {
            subscription,
            consent,
        } in grants
        {
            let subscriber = subscription.subscriber_id.as_str();
            let Some(&(ref encoder, topic)) = self.deliver.get(subscriber) else {
                // disclose made every grant's encoder before calling.
                continue;
            };
            let mut id = [0; 36];
            let delivery_id =
                outgoing.delivery_id(source, subscriber, &mut scratch.id_name, &mut id);
            let mut delivery = DeliveryView {
                delivery_id,
                subscriber_id: subscriber,
                subscription_id: &subscription.subscription_id,
                consent_id: &consent.consent_id,
                patient,
                source,
                content_level: subscription.content_level,
                routed_at: now,
                measurement: None,
                self_report: None,
                alert: None,
                reference: None,
            };
            let minimal_alert;
            match (subscription.content_level, outgoing) {
                (ContentLevel::Minimal, Outgoing::Event(e)) => {
                    delivery.reference = Some(e.reference())
                }
                (ContentLevel::Full, Outgoing::Event(Event::Measurement(e))) => {
                    delivery.measurement = Some(e)
                }
                (ContentLevel::Full, Outgoing::Event(Event::SelfReport(e))) => {
                    delivery.self_report = Some(e)
                }
                (ContentLevel::Full, Outgoing::Alert(a)) => delivery.alert = Some(a),
                (ContentLevel::Minimal, Outgoing::Alert(a)) => {
                    minimal_alert = Alert {
                        reading: None,
                        ..a.clone()
                    };
                    delivery.alert = Some(&minimal_alert);
                }
            }
            let key = patient_key.as_bytes();
            outbox.push_with(topic, partition, key, |out| {
                encoder.append_view(&delivery, out)
            })?;
            let record = DisclosureView {
                delivery_id,
                recorded_at: now,
                patient,
                recipient: &subscription.subscriber_org,
                subscriber_id: subscriber,
                subscription_id: &subscription.subscription_id,
                purpose_of_use: &subscription.purpose_of_use,
                decision_reference: &consent.consent_id,
                legal_basis: &consent.legal_basis,
                data_controller,
                category,
                event_id: outgoing.event_id(),
                content_level: subscription.content_level,
                source,
            };
            outbox.push_with(self.audit_topic, partition, key, |out| {
                self.audit.append_view(&record, out)
            })?;
            if outbox.len() >= Outbox::HAND_OVER_AT {
                self.hand_over(outbox).await?;
            }
            self.counters.deliveries[category as usize].increment(1);
        }
        Ok(())
    }

    /// Classifies a reading against the patient's care plan, moves its alert track on and
    /// discloses the alert it raises, if any, through the consent path.
    async fn observe_reading(
        &mut self,
        reading: &Measurement,
        source: &SourcePosition,
        now: Millis,
        out: &mut BatchOutputs,
    ) -> Result<()> {
        let partition = source.partition;
        let Some(patient) = self
            .owned
            .get(&partition)
            .and_then(|s| s.patient(reading.patient.key()))
        else {
            return Ok(());
        };
        if patient.care_plans.is_empty() {
            return Ok(());
        }
        let components: Vec<&str> = reading.components.iter().map(|c| c.code.as_str()).collect();
        let Some(plan) = alerts::plan_for(patient.care_plans.values(), &reading.code, &components)
        else {
            return Ok(());
        };
        let plan = plan.clone();
        let mut track = patient
            .alerts
            .get(&reading.code)
            .cloned()
            .unwrap_or_else(|| Track::new(reading.patient.clone(), reading.code.clone()));
        let alert = match track.observe(reading, source.offset, &plan, now) {
            Observed::Replayed | Observed::Unclassified => return Ok(()),
            Observed::Applied(alert) => alert,
        };
        let key = state_key(&reading.patient, &reading.code);
        self.state_mut(partition)
            .apply_track(&key, Some(track.clone()));
        out.tracks.insert((partition, key), track);
        if let Some(alert) = alert {
            self.raise(
                &alert,
                partition,
                source,
                &reading.data_controller,
                now,
                &mut out.outbox,
            )
            .await?;
        }
        Ok(())
    }

    /// Counts an alert and discloses it to the subscribers entitled to the patient's alerts.
    async fn raise(
        &mut self,
        alert: &Alert,
        partition: i32,
        source: &SourcePosition,
        data_controller: &OrganisationIdentifier,
        now: Millis,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let zone = zone_label(alert.zone);
        let kind = match alert.kind {
            AlertKind::ZoneEntered => "zone_entered",
            AlertKind::Escalated => "escalated",
            AlertKind::Resolved => "resolved",
            AlertKind::NoData => "no_data",
        };
        metrics::counter!(m::ALERTS_RAISED, "zone" => zone, "kind" => kind).increment(1);
        if alert.kind == AlertKind::Resolved {
            metrics::counter!(m::ALERTS_RESOLVED, "zone" => zone).increment(1);
        }
        let view = EventView {
            category: DataCategory::Alert,
            code: Some(&alert.code),
        };
        debug_assert_eq!(partition, source.partition);
        self.disclose(
            Outgoing::Alert(alert),
            view,
            source,
            data_controller,
            now,
            outbox,
        )
        .await
    }

    /// The encoder for a subscriber's topic, creating (or checking) the topic and registering
    /// the subject on first use.
    async fn deliver_encoder(&mut self, subscriber_id: &str) -> Result<()> {
        if self.deliver.contains_key(subscriber_id) {
            return Ok(());
        }
        let topic = self.topics.deliver(subscriber_id);
        let settings = &self.config.kafka;
        let spec = [TopicSpec::output(topic.clone(), settings.partitions, None)];
        let mut outage = Outage::new("a subscriber's topic");
        loop {
            let made = if self.config.create_topics {
                dho_kafka::ensure_topics(settings, &spec).await
            } else {
                // Provisioned by operators: CreateTopics may be denied to the router, or not
                // be served at all (librdkafka's mock cluster has no controller for it, so
                // the admin request would wait out its 60 s timeout). A metadata check is
                // enough.
                dho_kafka::check_topics(settings, &spec).await
            };
            match made {
                Ok(()) => break,
                Err(dho_kafka::Error::Kafka(e)) => tokio::time::sleep(outage.failed(e)?).await,
                Err(e) => return Err(e.into()),
            }
        }
        let encoder = self.serde.register::<Delivery>(&topic).await?;
        let topic = self.outputs.topic(&topic)?;
        self.deliver
            .insert(subscriber_id.to_string(), (encoder, topic));
        Ok(())
    }

    /// Hands the records in `outbox` to librdkafka (see `Outputs::flush`).
    async fn hand_over(&self, outbox: &mut Outbox) -> Result<()> {
        self.outputs
            .flush(outbox)
            .await
            .map_err(Error::NotAcknowledged)
    }

    /// Parks a record in the dead-letter topic with its original key and bytes, and waits
    /// for the acknowledgement (dead letters are rare; simplicity wins over batching).
    async fn dead_letter(
        &self,
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
        let topic = self.topics.deadletter();
        let output = Output {
            topic: &topic,
            partition: None,
            key: message.key(),
            payload: message.payload(),
            headers: Some(headers),
        };
        let acks = Acks::new();
        crate::outputs::send(self.outputs.producer(), output, &acks)
            .await
            .map_err(Error::NotAcknowledged)?;
        await_acks(&acks).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids written into a buffer are the ids of the contract: UUID v5 of the names below.
    #[test]
    fn delivery_ids_are_uuid_v5_of_position_and_subscriber() {
        let source = SourcePosition {
            topic: "dho.measurements".into(),
            partition: 2,
            offset: 1_234_567,
        };
        let v5 =
            |name: &str| uuid::Uuid::new_v5(&DELIVERY_ID_NAMESPACE, name.as_bytes()).to_string();
        assert_eq!(
            delivery_id(&source, "gp"),
            v5("dho.measurements/2/1234567/gp")
        );
        let mut name = String::from("left over");
        let mut out = [0; 36];
        assert_eq!(
            delivery_id_into(&source, "gp", &mut out),
            v5("dho.measurements/2/1234567/gp")
        );
        for n in [0, 7, 10, -1, -10, i64::MAX, i64::MIN, 1_000_000_000_000] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
        }
        let far = SourcePosition {
            topic: "t".into(),
            partition: i32::MAX,
            offset: i64::MAX,
        };
        assert_eq!(
            delivery_id(&far, "s"),
            v5(&format!("t/{}/{}/s", i32::MAX, i64::MAX))
        );
        assert_eq!(
            alert_delivery_id_into("a-1", "home", &mut name, &mut out),
            v5("alert/a-1/home")
        );
        // Every length around SHA-1's 64-byte blocks and its padding boundary.
        for len in 0..200 {
            let name: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            assert_eq!(
                uuid_v5(name.as_bytes()).to_string(),
                v5(&name),
                "length {len}"
            );
        }
    }
}
