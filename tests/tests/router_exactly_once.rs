//! Exactly-once mode (`transactional_id`): per batch, the router's deliveries, audit records,
//! dead letters (including those of the state sync: a malformed consent is among the input)
//! and input offsets commit in one Kafka transaction. The development broker refuses
//! transactions, so the router runs against librdkafka's mock cluster, which runs the
//! transaction protocol (InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn,
//! TxnOffsetCommit, EndTxn) and lets the test make its steps fail. The schema registry stays
//! on the development broker (its `_schemas` topic needs a real one).
//!
//! What the mock cannot show, and how the test copes:
//! - it accepts TxnOffsetCommit but does not store it, so OffsetFetch never sees the
//!   router's offsets and every new instance re-reads its input from the start: progress
//!   is watched on the outputs;
//! - it writes no transaction markers and lists no aborted transactions in Fetch, so a
//!   `read_committed` reader still sees the records of aborted transactions: the outcome is
//!   checked after the SDK's de-duplication by delivery id (ids are deterministic), and the
//!   records of each failed batch are located and shown to be written again, with the same
//!   ids, by the instance that completes the stream.
//!
//! On Apache Kafka the aborted records would stay invisible to `read_committed` readers and
//! a restart would resume from the committed offsets; the protocol steps, and the router's
//! reaction to each failure, are what this test pins down.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use dho_kafka::{AvroSerde, Encoder, KafkaSettings};
use dho_router::{Router, RouterConfig, RunStats};
use dho_schemas::codec::AvroRecord;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_schemas::partition::partition_for;
use dho_schemas::topics::{headers, state_key};
use dho_tests::scenario::{Published, assert_exactly_entitled};
use dho_tests::{PARTITIONS, Stack};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaError};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};

const PATIENTS: u64 = 6;
const GROUP: &str = "router-eos";
const TRANSACTIONAL_ID: &str = "router-eos-1";
/// Small batches: a run is several transactions.
const MAX_BATCH: usize = 8;
/// Subscribed to every patient, permitted by no consent: must never receive anything.
const UNENTITLED: &str = "lung";
const SUBSCRIBERS: [&str; 3] = ["gp", "home", UNENTITLED];

type Mock = MockCluster<'static, DefaultProducerContext>;

/// Writes straight to the mock (the publisher would create topics, and the mock has no
/// CreateTopics).
struct Writer {
    producer: FutureProducer,
    topics: dho_schemas::TopicNames,
    measurements: Encoder<Measurement>,
}

impl Writer {
    async fn send(&self, topic: &str, patient: &PatientIdentifier, key: &str, bytes: &[u8]) -> i64 {
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(bytes)
            .partition(partition_for(patient.key().as_bytes(), PARTITIONS));
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("the mock acknowledges")
            .offset
    }

    /// Consent to home care for everyone and to the GP for even patients; subscriptions of
    /// the GP, home care and the unentitled subscriber to every patient.
    /// Returns the offset of a malformed consent record written after them.
    async fn state(&self, serde: &AvroSerde) -> i64 {
        let topics = &self.topics;
        let consents = serde.register::<Consent>(&topics.consents()).await.unwrap();
        let subscriptions = serde
            .register::<Subscription>(&topics.subscriptions())
            .await
            .unwrap();
        for i in 0..PATIENTS {
            let p = fixtures::patient(i);
            let mut permitted = vec![fixtures::home_care()];
            if i % 2 == 0 {
                permitted.push(fixtures::gp());
            }
            let c = fixtures::consent(&p, "c", &permitted);
            let bytes = consents.encode(&c).unwrap();
            self.send(&topics.consents(), &p, &state_key(&p, "c"), &bytes)
                .await;
            for (name, org) in [
                ("gp", fixtures::gp()),
                ("home", fixtures::home_care()),
                (UNENTITLED, fixtures::lung_clinic()),
            ] {
                let s = fixtures::subscription(&p, name, &org);
                let bytes = subscriptions.encode(&s).unwrap();
                let key = state_key(&p, &s.subscription_id);
                self.send(&topics.subscriptions(), &p, &key, &bytes).await;
            }
        }
        // A state record that does not decode: dead-lettered while the state is caught up,
        // which in exactly-once mode must happen inside the batch's transaction. Of a
        // patient without readings: it holds its patient's deliveries (fails closed).
        let p = fixtures::patient(PATIENTS);
        self.send(&topics.consents(), &p, &state_key(&p, "bad"), b"not avro")
            .await
    }

    /// Readings numbered `range`, round-robin over the patients.
    async fn readings(&self, range: std::ops::Range<u64>, published: &mut Vec<Published>) {
        for n in range {
            let patient = n % PATIENTS;
            let m = fixtures::spo2(
                &fixtures::patient(patient),
                90.0 + (n % 10) as f64,
                now_millis() - 60_000,
            );
            let topic = self.topics.measurements();
            let bytes = self.measurements.encode(&m).unwrap();
            let offset = self.send(&topic, &m.patient, m.patient.key(), &bytes).await;
            published.push(Published {
                patient,
                event_id: m.event_id,
                receipt: dho_publisher::Receipt {
                    partition: partition_for(m.patient.key().as_bytes(), PARTITIONS),
                    topic,
                    offset,
                },
            });
        }
    }
}

fn provision(mock: &Mock, settings: &KafkaSettings) {
    for spec in dho_kafka::hub_topics(settings) {
        mock.create_topic(&spec.name, spec.partitions, 1).unwrap();
    }
    for subscriber in SUBSCRIBERS {
        mock.create_topic(&settings.topics().deliver(subscriber), PARTITIONS, 1)
            .unwrap();
    }
}

fn router_config(settings: &KafkaSettings) -> RouterConfig {
    let mut config = RouterConfig::new(settings.clone());
    config.group_id = GROUP.into();
    config.allow_synthetic_identifiers = true;
    config.transactional_id = Some(TRANSACTIONAL_ID.into());
    config.max_batch = MAX_BATCH;
    // The mock has no CreateTopics: topics are provisioned, the router only checks them.
    config.create_topics = false;
    config
}

/// Runs a router until the injected failure stops it, and returns the failure.
async fn run_until_failure(settings: &KafkaSettings) -> dho_router::Error {
    let router = Router::connect(router_config(settings))
        .await
        .expect("router connects");
    let outcome = tokio::time::timeout(Duration::from_secs(90), router.run(std::future::pending()))
        .await
        .expect("the router stops on a failed transaction instead of going on");
    match outcome {
        Err(e) => e,
        Ok(stats) => panic!("the router ended without an error: {stats:?}"),
    }
}

/// The librdkafka error behind a failed transaction.
fn transaction_error(error: &dho_router::Error) -> &RDKafkaError {
    match error {
        dho_router::Error::Transaction(KafkaError::Transaction(e)) => e,
        other => panic!("expected a failed transaction, got: {other}"),
    }
}

/// Every record of `topic` with its position, read (read_committed) off the async workers,
/// since the harness's reader blocks.
async fn read<T: AvroRecord>(reader: &KafkaSettings, topic: &str) -> Vec<(i32, i64, T)> {
    let (settings, name) = (reader.clone(), topic.to_string());
    let records = tokio::task::spawn_blocking(move || dho_tests::read_topic(&settings, &name))
        .await
        .unwrap();
    let serde = AvroSerde::new(&reader.schema_registry_url);
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let value = serde
            .decode::<T>(&record.value.expect("a value"))
            .await
            .unwrap();
        out.push((record.partition, record.offset, value));
    }
    out
}

/// The end of every output partition: where the next run's records start.
type Marks = BTreeMap<(String, i32), i64>;

fn output_topics(settings: &KafkaSettings) -> Vec<String> {
    let topics = settings.topics();
    let mut out: Vec<String> = SUBSCRIBERS.iter().map(|s| topics.deliver(s)).collect();
    out.push(topics.audit());
    out
}

async fn marks(settings: &KafkaSettings) -> Marks {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        let mut marks = Marks::new();
        for topic in output_topics(&settings) {
            let ends = dho_tests::sdk::high_watermarks(&settings, &topic);
            for (partition, end) in ends.into_iter().enumerate() {
                marks.insert((topic.clone(), partition as i32), end);
            }
        }
        marks
    })
    .await
    .unwrap()
}

/// What the outputs hold between two marks (`to` = None: up to now).
#[derive(Debug, Default)]
struct Window {
    /// (event id, subscriber) of each delivery record, repeats included.
    deliveries: Vec<(String, String)>,
    delivery_ids: Vec<String>,
    audit_ids: Vec<String>,
}

async fn window(reader: &KafkaSettings, from: &Marks, to: Option<&Marks>) -> Window {
    let inside = |topic: &str, partition: i32, offset: i64| {
        let key = (topic.to_string(), partition);
        offset >= from.get(&key).copied().unwrap_or(0) && to.is_none_or(|to| offset < to[&key])
    };
    let topics = reader.topics();
    let mut out = Window::default();
    for subscriber in SUBSCRIBERS {
        let topic = topics.deliver(subscriber);
        for (partition, offset, d) in read::<Delivery>(reader, &topic).await {
            if inside(&topic, partition, offset) {
                let event = d.measurement.expect("full content").event_id;
                out.deliveries.push((event, subscriber.to_string()));
                out.delivery_ids.push(d.delivery_id);
            }
        }
    }
    let audit = topics.audit();
    for (partition, offset, r) in read::<DisclosureRecord>(reader, &audit).await {
        if inside(&audit, partition, offset) {
            out.audit_ids.push(r.delivery_id);
        }
    }
    out
}

/// Entitled (event id, subscriber) pairs: home care for everyone, the GP for even patients.
fn entitled(published: &[Published]) -> BTreeSet<(String, String)> {
    let mut want = BTreeSet::new();
    for p in published {
        want.insert((p.event_id.clone(), "home".to_string()));
        if p.patient % 2 == 0 {
            want.insert((p.event_id.clone(), "gp".to_string()));
        }
    }
    want
}

/// Routes until the outputs written from `from` on hold every delivery in `want`, then
/// stops gracefully.
async fn route_until(
    settings: &KafkaSettings,
    reader: &KafkaSettings,
    from: &Marks,
    want: &BTreeSet<(String, String)>,
) -> RunStats {
    let router = Router::connect(router_config(settings))
        .await
        .expect("router connects");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(router.run(async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got: BTreeSet<(String, String)> = window(reader, from, None)
            .await
            .deliveries
            .into_iter()
            .collect();
        if want.is_subset(&got) {
            break;
        }
        assert!(
            !task.is_finished(),
            "the router stopped early: {:?}",
            task.await
        );
        assert!(
            Instant::now() < deadline,
            "only {} of {} deliveries arrived",
            want.intersection(&got).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(());
    task.await
        .expect("router task")
        .expect("router ran without error")
}

/// The offsets `group` has committed on `topic`, as OffsetFetch returns them.
fn committed(settings: &KafkaSettings, group: &str, topic: &str) -> Vec<Offset> {
    dho_tests::sdk::committed_offsets(settings, group, topic)
        .into_iter()
        .map(|offset| offset.expect("OffsetFetch answers for every partition asked"))
        .collect()
}

/// A plain (non-transactional) commit by another group, read back: the mock stores these,
/// so an offset missing for the router's group was never committed outside a transaction.
fn plain_commit_is_stored(settings: &KafkaSettings, topic: &str) {
    let group = "eos-control";
    let consumer: BaseConsumer = settings
        .client_config(&[("group.id", group), ("enable.auto.commit", "false")])
        .unwrap()
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Offset(1))
        .unwrap();
    consumer.commit(&list, CommitMode::Sync).unwrap();
    assert_eq!(
        committed(settings, group, topic)[0],
        Offset::Offset(1),
        "the mock stores plain offset commits"
    );
}

/// Arms `error` for the next `api` request, runs an instance until it fails, and returns
/// the failure and what its failed batch wrote.
async fn fail_once(
    mock: &Mock,
    settings: &KafkaSettings,
    reader: &KafkaSettings,
    api: RDKafkaApiKey,
    error: RDKafkaRespErr,
) -> (dho_router::Error, Window) {
    let before = marks(settings).await;
    // A new instance first loads its partitions' state, in a transaction of its own that
    // holds the malformed consent's dead letter: its EndTxn goes through, the batch's fails.
    let errors: &[RDKafkaRespErr] = if api == RDKafkaApiKey::EndTxn {
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR, error]
    } else {
        &[error]
    };
    mock.request_errors(api, errors);
    let failed = run_until_failure(settings).await;
    mock.clear_request_errors(api);
    let after = marks(settings).await;
    let batch = window(reader, &before, Some(&after)).await;
    // The failure came after the batch's outputs were acknowledged, inside its transaction:
    // its deliveries and their audit records were written (the mock leaves them visible).
    assert!(
        !batch.deliveries.is_empty(),
        "the failed batch wrote no deliveries before failing: {failed}"
    );
    assert_eq!(
        sorted(&batch.audit_ids),
        sorted(&batch.delivery_ids),
        "the failed batch's audit records are its deliveries"
    );
    (failed, batch)
}

fn sorted(ids: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = ids.iter().map(String::as_str).collect();
    out.sort_unstable();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_batch_is_one_transaction_and_a_failed_one_is_routed_again() {
    let stack = Stack::start().await; // the schema registry, on the development broker
    let mock: Mock = MockCluster::new(3).unwrap();
    let mut settings = stack.settings.clone();
    settings.bootstrap_servers = mock.bootstrap_servers();
    // Readers of the outputs see committed transactions only. (The router's own clients
    // set their isolation level themselves and refuse it as a pass-through.)
    let mut reader = settings.clone();
    reader
        .librdkafka
        .insert("isolation.level".into(), "read_committed".into());
    let topics = settings.topics();
    provision(&mock, &settings);

    let serde = AvroSerde::new(&settings.schema_registry_url);
    let writer = Writer {
        producer: settings.client_config(&[]).unwrap().create().unwrap(),
        measurements: serde
            .register::<Measurement>(&topics.measurements())
            .await
            .unwrap(),
        topics: topics.clone(),
    };
    let bad_consent = writer.state(&serde).await;
    let mut published = vec![];
    writer.readings(0..40, &mut published).await;

    // Phase 1: every batch routed in a transaction that carries its input offsets.
    let start = marks(&settings).await;
    let stats = route_until(&settings, &reader, &start, &entitled(&published)).await;
    assert_eq!(stats.events, 40, "{stats:?}");
    assert!(stats.batches >= 40 / MAX_BATCH as u64, "{stats:?}");
    let clean = window(&reader, &start, None).await;
    assert_eq!(
        clean.deliveries.iter().cloned().collect::<BTreeSet<_>>(),
        entitled(&published),
        "exactly the entitled deliveries"
    );
    assert_eq!(
        clean.deliveries.len(),
        entitled(&published).len(),
        "no repeats"
    );
    assert_eq!(
        sorted(&clean.audit_ids),
        sorted(&clean.delivery_ids),
        "audit = deliveries"
    );
    // The offsets went only into the transactions (TxnOffsetCommit, which the mock accepts
    // but does not store), never through a plain commit (which it stores).
    plain_commit_is_stored(&settings, &topics.measurements());
    assert_eq!(
        committed(&settings, GROUP, &topics.measurements()),
        vec![Offset::Invalid; PARTITIONS as usize],
        "the router committed input offsets outside its transactions"
    );

    // Phase 2: the offsets are part of the transaction. The group coordinator refuses them
    // (the group moved on during the batch, as a cooperative rebalance does): the
    // transaction is aborted, and the same instance routes the batch again from its first
    // records, with the same ids, instead of stopping.
    let before = marks(&settings).await;
    mock.request_errors(
        RDKafkaApiKey::TxnOffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION],
    );
    let stats = route_until(&settings, &reader, &before, &entitled(&published)).await;
    mock.clear_request_errors(RDKafkaApiKey::TxnOffsetCommit);
    assert_eq!(stats.batches_rewound, 1, "{stats:?}");
    let rewound = window(&reader, &before, None).await;
    let unique: BTreeSet<&str> = rewound.delivery_ids.iter().map(String::as_str).collect();
    assert!(
        rewound.delivery_ids.len() > unique.len(),
        "the refused batch's deliveries were written again with the same ids"
    );

    // Phase 3: new readings, and the coordinator cannot commit the transaction (the
    // producer id expired): the router aborts it and stops rather than go on.
    let phase_one = published.len();
    writer.readings(40..60, &mut published).await;
    let (failed, commit_refused) = fail_once(
        &mock,
        &settings,
        &reader,
        RDKafkaApiKey::EndTxn,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID,
    )
    .await;
    let e = transaction_error(&failed);
    assert_eq!(e.code(), RDKafkaErrorCode::UnknownProducerId, "{failed}");
    assert!(e.txn_requires_abort(), "{failed}");

    // Phase 4: EndTxn fails fatally, so the producer cannot even abort; the router stops,
    // and the next instance's init_transactions (same transactional id) fences it and
    // aborts the open transaction.
    let (failed, fatal) = fail_once(
        &mock,
        &settings,
        &reader,
        RDKafkaApiKey::EndTxn,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_TXN_STATE,
    )
    .await;
    let e = transaction_error(&failed);
    assert_eq!(
        e.code(),
        RDKafkaErrorCode::InvalidTransactionalState,
        "{failed}"
    );
    assert!(e.is_fatal(), "{failed}");

    // Phase 5: a restarted instance with the same transactional id completes the stream:
    // it writes again every delivery of the failed batches (same ids) and delivers the
    // readings that no committed batch carried.
    let restart = marks(&settings).await;
    let mut want = entitled(&published[phase_one..]);
    for batch in [&commit_refused, &fatal] {
        want.extend(batch.deliveries.iter().cloned());
    }
    let stats = route_until(&settings, &reader, &restart, &want).await;
    assert!(stats.batches > 0, "{stats:?}");
    let replayed = window(&reader, &restart, None).await;
    let replayed_ids: BTreeSet<&str> = replayed.delivery_ids.iter().map(String::as_str).collect();
    for batch in [&commit_refused, &fatal] {
        for id in &batch.delivery_ids {
            assert!(
                replayed_ids.contains(id.as_str()),
                "a delivery of a failed batch was not written again with its id"
            );
        }
    }

    // The whole stream, as a subscriber sees it: every entitled delivery once after
    // de-duplication by delivery id, in order per patient; the GP nothing of odd patients.
    let repeats = assert_exactly_entitled(&reader, &published).await;
    assert!(
        repeats > 0,
        "the failed batches' records were written again"
    );
    let all = window(&reader, &Marks::new(), None).await;
    assert!(
        all.deliveries.iter().all(|(_, s)| s != UNENTITLED),
        "a subscriber without consent received a record"
    );
    // Audit equals deliveries: an audit record for every delivery record written.
    assert_eq!(
        sorted(&all.audit_ids),
        sorted(&all.delivery_ids),
        "audit = deliveries"
    );
    let dead = {
        let (s, t) = (reader.clone(), topics.deadletter());
        tokio::task::spawn_blocking(move || dho_tests::read_topic(&s, &t))
            .await
            .unwrap()
    };
    // Only the malformed consent is dead-lettered (once per instance that read the state
    // from the start), with its source named.
    assert!(
        !dead.is_empty(),
        "the malformed consent was not dead-lettered"
    );
    for record in &dead {
        let header = |name: &str| record.headers.get(name).map(String::as_str);
        assert_eq!(
            header(headers::SOURCE_TOPIC),
            Some(topics.consents().as_str())
        );
        assert_eq!(
            header(headers::SOURCE_OFFSET),
            Some(bad_consent.to_string().as_str())
        );
        assert_eq!(record.value.as_deref(), Some(&b"not avro"[..]));
    }
    eprintln!(
        "{} readings; {} delivery records, {repeats} repeats dropped by delivery id",
        published.len(),
        all.deliveries.len()
    );
}
