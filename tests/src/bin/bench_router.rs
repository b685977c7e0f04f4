//! Router benchmark: figures, not assertions. Run in release mode:
//!   cargo run --release -p dho-tests --bin bench_router
//! It measures, in one run and on the same broker, in this order:
//! 1. throughput and CPU per event of a bare consume→produce pass-through with the same
//!    client settings, and of the router (consent, subscription, delivery and audit);
//! 2. end-to-end latency p50/p99 of both at a fixed offered rate;
//! 3. the routing decision in-process (decisions/s per core), against a bare state lookup;
//! 4. router state memory per patient (1 M patients), last, as it leaves gigabytes behind.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use dho_kafka::{AvroSerde, KafkaSettings, TopicSpec};
use dho_routing_core::decision::{EventView, decide};
use dho_routing_core::state::PartitionState;
use dho_schemas::model::*;
use dho_schemas::partition::partition_for;
use dho_schemas::topics::state_key;
use dho_schemas::{codes, fixtures};
use dho_tests::Stack;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const PATIENTS: u64 = 200;
/// Long enough that one-time costs (group join, first state load) amortise.
const EVENTS: usize = 240_000;
const LATENCY_RATE: u64 = 1_000;
/// Short rounds, many of them: the development broker lists a partition's whole log for
/// every read, so its CPU grows with the round (at 1,000 readings a second: 40% of a core
/// 2 s in, a full core from 12 s on), and late in a long round the latency measured was
/// the broker's saturation, not the contender's.
const LATENCY_SECONDS: u64 = 5;
/// Offered before the measured seconds and not measured: the router makes a subscriber's
/// topic and registers its schema at its first delivery (about 100 ms, once per subscriber
/// and start), which is not a latency at a steady rate.
const LATENCY_WARMUP_SECONDS: u64 = 1;

/// CPU seconds this process used (user + system), from /proc (clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    process_cpu_seconds("self")
}

/// CPU seconds process `pid` ("self" for this one) used, user + system.
fn process_cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// With `BENCH_PERF_CTL=<fifo>` (`perf record --control=fifo:<fifo> -D -1`), the profile
/// covers the drains only, not the preload and set-up around them.
fn perf_control(command: &str) {
    if let Some(fifo) = std::env::var_os("BENCH_PERF_CTL") {
        std::fs::write(fifo, format!("{command}\n")).expect("perf control fifo");
    }
}

/// CPU seconds per thread name (user + system) of this process, for `BENCH_THREADS=1`.
fn cpu_by_thread() -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
            *by_name.entry(name).or_default() += (user + system) / 100.0;
        }
    }
    by_name
}

/// The running broker's process id, for its CPU time in [`Mark`]s (0: none).
static BROKER_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A moment in a drain: when, how many inputs had been passed on by then, and the CPU this
/// process and the broker had used.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    events: usize,
    cpu: f64,
    broker_cpu: f64,
}

impl Mark {
    fn now(events: usize) -> Self {
        let broker = BROKER_PID.load(std::sync::atomic::Ordering::Relaxed);
        Self {
            at: Instant::now(),
            events,
            cpu: cpu_seconds(),
            broker_cpu: process_cpu_seconds(&broker.to_string()),
        }
    }
}

/// One drain of the backlog by one contender.
#[derive(Debug, Clone, Copy)]
struct Drain {
    /// Events/s over the whole drain, group join included.
    rate: f64,
    /// Events/s from the first output on.
    steady: f64,
    /// CPU µs per event over the whole drain.
    cpu: f64,
    /// CPU µs per event from the first output on.
    steady_cpu: f64,
    /// The broker's CPU µs per event, and the share of one core it used, from the first
    /// output on: is the broker the limit?
    broker_cpu: f64,
    broker_busy: f64,
}

/// A count from the environment, if set and a number.
fn env_count(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}

fn rss_bytes() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<f64>().ok())
        .unwrap_or(0.0)
        * 4096.0
}

fn patient_state(state: &mut PartitionState, i: u64) -> PatientIdentifier {
    let p = fixtures::patient(i);
    let mut consent = fixtures::consent(&p, "c", &[fixtures::gp(), fixtures::home_care()]);
    consent.provisions[1].kind = ProvisionKind::Deny;
    state.apply_consent(&state_key(&p, "c"), Some(consent));
    for (name, org) in [("gp", fixtures::gp()), ("home", fixtures::home_care())] {
        let s = fixtures::subscription(&p, name, &org);
        state.apply_subscription(&state_key(&p, &s.subscription_id), Some(s));
    }
    p
}

fn bench_decision() {
    let mut state = PartitionState::default();
    let keys: Vec<String> = (0..10_000)
        .map(|i| patient_state(&mut state, i).value)
        .collect();
    let view = EventView {
        category: DataCategory::Measurement,
        code: Some(codes::SPO2),
    };
    let now = now_millis();
    let n = 5_000_000;
    let started = Instant::now();
    let mut found = 0usize;
    for i in 0..n {
        found += black_box(state.patient(&keys[i % keys.len()])).is_some() as usize;
    }
    let lookup = n as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut granted = 0usize;
    for i in 0..n {
        granted += decide(state.patient(&keys[i % keys.len()]), black_box(view), now)
            .grants
            .len();
    }
    let decided = n as f64 / started.elapsed().as_secs_f64();
    assert_eq!(
        (found, granted),
        (n, n),
        "each patient: one subscriber granted, one denied"
    );
    println!(
        "decision (in-process, one core): {decided:>12.0} decisions/s   baseline state lookup: {lookup:>12.0} lookups/s"
    );
}

fn bench_memory() {
    let patients = 1_000_000;
    let before = rss_bytes();
    let mut state = PartitionState::default();
    for i in 0..patients {
        patient_state(&mut state, i);
    }
    let after = rss_bytes();
    let per = (after - before) / patients as f64;
    println!(
        "state memory: {} patients (1 consent with 2 provisions, 2 subscriptions each): {:.0} MiB, {per:.0} bytes/patient",
        state.patients(),
        (after - before) / 1048576.0
    );
}

/// An encoder for readings (their schema registered) and a producer with `linger_ms`.
async fn measurement_writer(
    settings: &KafkaSettings,
    linger_ms: &str,
) -> (dho_kafka::Encoder<Measurement>, FutureProducer) {
    let serde = AvroSerde::new(&settings.schema_registry_url);
    let encoder = serde
        .register::<Measurement>(&settings.topics().measurements())
        .await
        .unwrap();
    let producer: FutureProducer = settings
        .client_config(&[("linger.ms", linger_ms)])
        .unwrap()
        .create()
        .unwrap();
    (encoder, producer)
}

/// Writes `count` readings (received_time = send time) as fast as the producer takes them.
async fn preload(settings: &KafkaSettings, count: usize) {
    preload_mixed(settings, count, false).await;
}

/// `count` readings; with `malformed`, each followed by a record that is not Avro (same
/// patient key and partition), which the router dead-letters.
async fn preload_mixed(settings: &KafkaSettings, count: usize, malformed: bool) {
    let (encoder, producer) = measurement_writer(settings, "5").await;
    let patients: Vec<PatientIdentifier> = (0..PATIENTS).map(fixtures::patient).collect();
    let mut pending = Vec::with_capacity(count);
    let topic = settings.topics().measurements();
    let records = if malformed { count * 2 } else { count };
    // BENCH_UNNAMED=1: readings without an Observation.identifier, so the router keeps no
    // delivery record for them (the cost of retraction, by difference).
    let unnamed = std::env::var_os("BENCH_UNNAMED").is_some();
    for i in 0..records {
        let p = &patients[(if malformed { i / 2 } else { i }) % patients.len()];
        let bytes = if malformed && i % 2 == 1 {
            b"not avro at all".to_vec()
        } else {
            let mut reading = fixtures::spo2(p, 95.0, now_millis() - 60_000);
            if unnamed {
                reading.source_id = None;
            }
            encoder.encode(&reading).unwrap()
        };
        let partition = partition_for(p.key().as_bytes(), settings.partitions);
        let record = FutureRecord::to(&topic)
            .key(p.key())
            .payload(&bytes)
            .partition(partition);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        if pending.len() == 5000 {
            for r in futures_join(std::mem::take(&mut pending)).await {
                r.unwrap().unwrap();
            }
        }
    }
    for r in futures_join(pending).await {
        r.unwrap().unwrap();
    }
}

async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(futures.len());
    for f in futures {
        out.push(f.await);
    }
    out
}

/// The baseline: consume the ingest topic and copy every record to one output topic, with
/// the router's own client settings, batches, acknowledgement wait and commit (with no
/// `output`: consume and commit only, the rate at which the broker hands records out).
struct PassThrough {
    consumer: StreamConsumer,
    producer: FutureProducer,
    topic: String,
    output: Option<String>,
}

impl PassThrough {
    /// Its clients made, subscribed and the output topic's metadata fetched before any clock
    /// starts, as `Router::connect` does for the router.
    async fn new(settings: &KafkaSettings, group: &str, output: Option<&str>) -> Self {
        let consumer: StreamConsumer = settings
            .client_config_tuned(
                &[
                    ("group.id", group),
                    ("enable.auto.commit", "false"),
                    ("enable.auto.offset.store", "false"),
                    ("auto.offset.reset", "earliest"),
                    ("isolation.level", "read_committed"),
                ],
                // The router's event-consumer tuning.
                dho_kafka::FETCH_PROMPTLY,
            )
            .unwrap()
            .create()
            .unwrap();
        let topic = settings.topics().measurements();
        consumer.subscribe(&[&topic]).unwrap();
        let producer = router_like_producer(settings);
        if let Some(output) = output {
            let client = producer.clone();
            let output = output.to_string();
            tokio::task::spawn_blocking(move || {
                client
                    .client()
                    .fetch_metadata(Some(&output), Duration::from_secs(10))
                    .unwrap();
            })
            .await
            .unwrap();
        }
        Self {
            consumer,
            producer,
            topic,
            output: output.map(str::to_string),
        }
    }

    /// Copies until `stop_after` records are done; returns when its first outputs were
    /// acknowledged.
    async fn run(&self, stop_after: usize) -> Mark {
        let consumer = &self.consumer;
        let mut done = 0;
        let mut first_output = None;
        while done < stop_after {
            // Filled as the router fills its batches: what is already fetched without a timer,
            // then up to 2 ms for more; records borrowed from the consumer, not copied.
            let mut batch = vec![consumer.recv().await.unwrap()];
            while batch.len() < 500 {
                let next = match futures::FutureExt::now_or_never(consumer.recv()) {
                    Some(next) => next,
                    None => {
                        match tokio::time::timeout(Duration::from_millis(2), consumer.recv()).await
                        {
                            Ok(next) => next,
                            Err(_) => break,
                        }
                    }
                };
                match next {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let mut pending = vec![];
            let mut next: BTreeMap<i32, i64> = BTreeMap::new();
            for m in &batch {
                if let Some(output) = &self.output {
                    let record = FutureRecord::to(output)
                        .key(m.key().unwrap())
                        .payload(m.payload().unwrap())
                        .partition(m.partition());
                    pending.push(
                        self.producer
                            .send_result(record)
                            .map_err(|(e, _)| e)
                            .unwrap(),
                    );
                }
                next.insert(m.partition(), m.offset() + 1);
            }
            for r in futures_join(pending).await {
                r.unwrap().unwrap();
            }
            first_output.get_or_insert_with(|| Mark::now(done + batch.len()));
            let mut offsets = TopicPartitionList::new();
            for (p, o) in next {
                offsets
                    .add_partition_offset(&self.topic, p, Offset::Offset(o))
                    .unwrap();
            }
            consumer.commit(&offsets, CommitMode::Async).unwrap();
            done += batch.len();
        }
        first_output.unwrap_or_else(|| Mark::now(done))
    }
}

/// A producer with the router's producer settings (`output_producer` in `router/src/pipeline/commit.rs`).
fn router_like_producer(settings: &KafkaSettings) -> FutureProducer {
    settings
        .client_config(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "2"),
        ])
        .unwrap()
        .create()
        .unwrap()
}

/// Another ceiling: the broker taking the router's output volume, two records per event
/// (a delivery and an audit record of about their size), produced with the router's
/// producer settings in batches of 500 events with two batches in flight, as the router
/// does, and nothing consumed. Returns when the first batch was acknowledged.
async fn produce_only(settings: &KafkaSettings, output: &str, events: usize) -> Mark {
    let producer = router_like_producer(settings);
    let keys: Vec<String> = (0..PATIENTS)
        .map(|i| fixtures::patient(i).key().to_string())
        .collect();
    let payload = vec![0x42u8; 330];
    let mut in_flight = std::collections::VecDeque::new();
    let mut first_output = None;
    let mut done = 0;
    for start in (0..events).step_by(500) {
        let mut batch = Vec::with_capacity(1000);
        for i in start..(start + 500).min(events) {
            let key = &keys[i % keys.len()];
            let partition = partition_for(key.as_bytes(), settings.partitions);
            for _ in 0..2 {
                let record = FutureRecord::to(output)
                    .key(key)
                    .payload(&payload)
                    .partition(partition);
                batch.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
            }
        }
        in_flight.push_back((batch.len() / 2, batch));
        if in_flight.len() == 2 {
            let (count, oldest) = in_flight.pop_front().unwrap();
            for r in futures_join(oldest).await {
                r.unwrap().unwrap();
            }
            done += count;
            first_output.get_or_insert_with(|| Mark::now(done));
        }
    }
    for (_, batch) in in_flight {
        for r in futures_join(batch).await {
            r.unwrap().unwrap();
        }
    }
    first_output.unwrap_or_else(|| Mark::now(0))
}

/// Reads `topic` from its end and records, in ms, each reading's end-to-end latency (now -
/// received_time) and its part up to the contender's handing it to its producer (the
/// output record's timestamp - received_time).
/// It fetches as the SDK's subscriber does (it once asked every 5 ms, which no subscriber
/// does).
async fn latency_probe(
    settings: KafkaSettings,
    topic: String,
    expect: usize,
    delivery: bool,
) -> Latencies {
    let consumer: StreamConsumer = settings
        .client_config_tuned(
            &[
                ("group.id", &format!("probe-{topic}")),
                ("auto.offset.reset", "latest"),
                ("enable.auto.commit", "false"),
            ],
            dho_kafka::FETCH_PROMPTLY,
        )
        .unwrap()
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let serde = AvroSerde::new(&settings.schema_registry_url);
    let mut latencies = Latencies::default();
    let mut warmup = LATENCY_RATE * LATENCY_WARMUP_SECONDS;
    while latencies.total.len() < expect {
        let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await else {
            break;
        };
        let now = now_millis();
        let sent = if delivery {
            serde
                .decode::<Delivery>(m.payload().unwrap())
                .await
                .unwrap()
                .measurement
                .unwrap()
                .received_time
        } else {
            serde
                .decode::<Measurement>(m.payload().unwrap())
                .await
                .unwrap()
                .received_time
        };
        if warmup > 0 {
            warmup -= 1;
            continue;
        }
        latencies.total.push((now - sent) as f64);
        // Both contenders leave the timestamp to librdkafka, which sets it when the record
        // is produced; the broker keeps it (CreateTime).
        let rdkafka::Timestamp::CreateTime(handed_over) = m.timestamp() else {
            panic!(
                "an output record without its CreateTime: {:?}",
                m.timestamp()
            );
        };
        latencies.handed_over.push((handed_over - sent) as f64);
    }
    latencies.total.sort_by(f64::total_cmp);
    latencies.handed_over.sort_by(f64::total_cmp);
    latencies
}

/// One round's latencies (ms, sorted): end to end, and up to the contender's producer.
#[derive(Default)]
struct Latencies {
    total: Vec<f64>,
    handed_over: Vec<f64>,
}

/// Publishes at a fixed rate, each reading stamped with its send time.
async fn offered_load(settings: &KafkaSettings) {
    let (encoder, producer) = measurement_writer(settings, "0").await;
    let topic = settings.topics().measurements();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / LATENCY_RATE));
    let mut pending = vec![];
    for i in 0..(LATENCY_RATE * (LATENCY_WARMUP_SECONDS + LATENCY_SECONDS)) {
        ticker.tick().await;
        let p = fixtures::patient(i % PATIENTS);
        let mut m = fixtures::spo2(&p, 95.0, now_millis() - 60_000);
        m.received_time = now_millis();
        let bytes = encoder.encode(&m).unwrap();
        let partition = partition_for(p.key().as_bytes(), settings.partitions);
        pending.push(
            producer
                .send_result(
                    FutureRecord::to(&topic)
                        .key(p.key())
                        .payload(&bytes)
                        .partition(partition),
                )
                .map_err(|(e, _)| e)
                .unwrap(),
        );
    }
    for r in futures_join(pending).await {
        r.unwrap().unwrap();
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn fresh_stack() -> Stack {
    // A broker of its own: the benchmark reads the broker's CPU time.
    let mut stack = Stack::start_own_broker(Default::default()).await;
    BROKER_PID.store(
        stack.own_broker().pid().unwrap_or(0),
        std::sync::atomic::Ordering::Relaxed,
    );
    let publisher = stack.publisher().await;
    for i in 0..PATIENTS {
        let p = fixtures::patient(i);
        publisher
            .put_consent(&fixtures::consent(&p, "c", &[fixtures::gp()]))
            .await
            .unwrap();
        publisher
            .put_subscription(&fixtures::subscription(&p, "gp", &fixtures::gp()))
            .await
            .unwrap();
    }
    stack
}

/// Creates the topic the pass-through copies to, co-partitioned with the hub's; its name.
async fn copy_topic(stack: &Stack) -> String {
    let output = format!("{}.copy", stack.settings.topic_prefix);
    ensure_output(stack, &output).await;
    output
}

async fn ensure_output(stack: &Stack, topic: &str) {
    let spec = TopicSpec::output(topic.to_string(), stack.settings.partitions, None);
    dho_kafka::ensure_topics(&stack.settings, &[spec])
        .await
        .unwrap();
}

/// Returns when its first outputs were acknowledged (as the pass-through's mark), once all
/// `events` are finished, found by reading the router's own count of finished records every
/// millisecond: no broker requests whose CPU would count as the router's, and no end found
/// late. The router is still running: its stop (a last synchronous commit, leaving the
/// group) is no part of the drain, as the pass-through's clients are dropped after it.
async fn run_router_until(router: &dho_tests::RunningRouter, events: usize) -> Mark {
    let mut first_output = None;
    loop {
        let finished = router.finished() as usize;
        if finished > 0 {
            first_output.get_or_insert_with(|| Mark::now(finished));
        }
        if finished >= events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    first_output.unwrap_or_else(|| Mark::now(0))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "== router benchmark ({} cores) ==",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // BENCH_DECISION_ONLY=1: the in-process decision figure alone, in a fresh process.
    if std::env::var_os("BENCH_DECISION_ONLY").is_some() {
        bench_decision();
        return;
    }
    // BENCH_FLOOD_ONLY=1: good readings alone against the same interleaved with as many
    // malformed records.
    if std::env::var_os("BENCH_FLOOD_ONLY").is_some() {
        bench_flood(env_count("BENCH_ROUNDS").unwrap_or(3)).await;
        return;
    }
    // BENCH_PROFILE=1: the router's drain alone (for `perf record`), nothing else.
    let profiling = std::env::var_os("BENCH_PROFILE").is_some();
    let rounds = env_count("BENCH_ROUNDS").unwrap_or(if profiling { 1 } else { 5 });
    // BENCH_LATENCY_ONLY=1: the latency rounds alone.
    if std::env::var_os("BENCH_LATENCY_ONLY").is_none() {
        bench_drains(rounds, profiling).await;
        if profiling {
            return;
        }
    }
    // Latency rounds are short (see LATENCY_SECONDS), so there are more of them.
    let latency_rounds = env_count("BENCH_LATENCY_ROUNDS").unwrap_or(rounds * 2);
    bench_latency(latency_rounds).await;
    // The in-process figures come last: the memory figure leaves gigabytes in this process
    // for the kernel to reclaim, and drains measured after it were slower and noisier (the
    // router more than the pass-through). BENCH_PIPELINE_ONLY=1 skips them.
    if std::env::var_os("BENCH_PIPELINE_ONLY").is_none() {
        bench_decision();
        bench_memory();
    }
}

/// Dead letters at the speed of good records: the router drains `FLOOD` good readings,
/// and the same interleaved with as many malformed records (each dead-lettered), on fresh
/// stacks in alternating rounds. Reported: each drain's time from the router's start of
/// work to its last finished record, the first output's delay, and the ratio of medians.
async fn bench_flood(rounds: usize) {
    const FLOOD: usize = 10_000;
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 1..=rounds {
        for (name, malformed) in [("good only", false), ("with a flood", true)] {
            let stack = fresh_stack().await;
            preload_mixed(&stack.settings, FLOOD, malformed).await;
            let records = if malformed { FLOOD * 2 } else { FLOOD };
            let router = stack.spawn_router("bench").await;
            let start = Instant::now();
            let first = run_router_until(&router, records).await;
            let seconds = start.elapsed().as_secs_f64();
            let first_after = first.at.duration_since(start).as_secs_f64();
            router.stop().await;
            let dead =
                dho_tests::read_topic_sizes(&stack.settings, &stack.settings.topics().deadletter());
            println!(
                "round {round} {name:>12}: {records} records ({dead} dead-lettered) in {seconds:.2} s, first output after {first_after:.2} s"
            );
            times.entry(name).or_default().push(seconds);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let good = median(times.get_mut("good only").unwrap());
    let flood = median(times.get_mut("with a flood").unwrap());
    println!(
        "flood: {FLOOD} good readings alone {good:.2} s, interleaved with {FLOOD} malformed {flood:.2} s (medians): {:.2}x (aim: within 2x)",
        flood / good
    );
}

/// Throughput: the same preloaded backlog drained by each contender on its own stack, in
/// alternating rounds (one drain's CPU figure swings by tens of percent with scheduling on
/// two cores; the medians are compared).
async fn bench_drains(rounds: usize, profiling: bool) {
    let mut drains: BTreeMap<&str, Vec<Drain>> = BTreeMap::new();
    // "consume-only" and "produce-only" are no contenders: the broker's rates of handing
    // records out and of taking the router's output volume, the ceilings.
    let contenders: &[&str] = if profiling {
        &["router"]
    } else {
        &["consume-only", "produce-only", "pass-through", "router"]
    };
    for round in 1..=rounds {
        for &contender in contenders {
            let stack = fresh_stack().await;
            preload(&stack.settings, EVENTS).await;
            let output = copy_topic(&stack).await;
            // Each contender's clients are made and subscribed before the clock starts: the
            // router connects (topics, schemas, its group subscription), the pass-through
            // likewise.
            let (router, copier) = match contender {
                "router" => (Some(stack.spawn_router("bench").await), None),
                "produce-only" => (None, None),
                _ => {
                    let output = (contender == "pass-through").then_some(output.as_str());
                    let copier = PassThrough::new(&stack.settings, "bench", output).await;
                    (None, Some(copier))
                }
            };
            perf_control("enable");
            let threads = cpu_by_thread();
            let start = Mark::now(0);
            let first = match (&router, &copier) {
                (Some(router), _) => run_router_until(router, EVENTS).await,
                (None, Some(copier)) => copier.run(EVENTS).await,
                (None, None) => produce_only(&stack.settings, &output, EVENTS).await,
            };
            let end = Mark::now(EVENTS);
            perf_control("disable");
            let threads_after = cpu_by_thread();
            if let Some(router) = router {
                let stopping = Instant::now();
                let stats = router.stop().await;
                println!(
                    "      router: {} batches, {:.0} events per batch; its stop took {:.2} s",
                    stats.batches,
                    stats.events as f64 / stats.batches.max(1) as f64,
                    stopping.elapsed().as_secs_f64(),
                );
            }
            if std::env::var_os("BENCH_THREADS").is_some() {
                // Threads that ended during the drain are missing here (their CPU is in `cpu`).
                for (name, after) in threads_after {
                    let used = after - threads.get(&name).copied().unwrap_or(0.0);
                    if used > 0.0 {
                        println!(
                            "      {name:>20}: {:.2} µs/event",
                            used * 1e6 / EVENTS as f64
                        );
                    }
                }
            }
            // Joining the group (and, for the router, the first state load) takes a varying
            // share of a short drain; the figures from the first output on are the steady ones.
            let secs = (end.at - start.at).as_secs_f64();
            let steady_events = (end.events - first.events) as f64;
            let drain = Drain {
                rate: EVENTS as f64 / secs,
                steady: steady_events / (end.at - first.at).as_secs_f64(),
                cpu: (end.cpu - start.cpu) * 1e6 / EVENTS as f64,
                steady_cpu: (end.cpu - first.cpu) * 1e6 / steady_events,
                broker_cpu: (end.broker_cpu - first.broker_cpu) * 1e6 / steady_events,
                broker_busy: (end.broker_cpu - first.broker_cpu)
                    / (end.at - first.at).as_secs_f64(),
            };
            println!(
                "round {round} {contender:>12}: {EVENTS} events in {secs:.2} s = {:>6.0} events/s, CPU {:.1} µs/event (this process); first output after {:.2} s, then {:>6.0} events/s at {:.1} µs/event; broker {:.1} µs/event, {:.0}% of a core",
                drain.rate,
                drain.cpu,
                (first.at - start.at).as_secs_f64(),
                drain.steady,
                drain.steady_cpu,
                drain.broker_cpu,
                drain.broker_busy * 100.0,
            );
            drains.entry(contender).or_default().push(drain);
        }
    }
    if profiling {
        return;
    }
    let figure =
        |contender: &str, f: fn(&Drain) -> f64| median(drains[contender].iter().map(f).collect());
    for contender in ["consume-only", "produce-only", "pass-through", "router"] {
        println!(
            "median of {rounds} {contender:>12}: {:>6.0} events/s whole, {:>6.0} steady; CPU {:.2} µs/event whole, {:.2} steady; broker {:.1} µs/event, {:.0}% of a core",
            figure(contender, |d| d.rate),
            figure(contender, |d| d.steady),
            figure(contender, |d| d.cpu),
            figure(contender, |d| d.steady_cpu),
            figure(contender, |d| d.broker_cpu),
            figure(contender, |d| d.broker_busy) * 100.0,
        );
    }
    let ratio = |f: fn(&Drain) -> f64| figure("router", f) / figure("pass-through", f);
    println!(
        "router/pass-through (medians): throughput ratio {:.2} (steady {:.2}), CPU ratio {:.2} (steady {:.2})",
        ratio(|d| d.rate),
        ratio(|d| d.steady),
        ratio(|d| d.cpu),
        ratio(|d| d.steady_cpu),
    );
}

/// Latency at a fixed offered rate, in alternating rounds too (where a reading lands in the
/// broker's and the clients' polling cycles moves a round's p99 by several ms). Reported
/// as the medians of the rounds' percentiles and as the percentiles of all rounds' readings.
async fn bench_latency(rounds: usize) {
    let mut percentiles: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut pooled: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 1..=rounds {
        for contender in ["pass-through", "router"] {
            let (latencies, load) = latency_round(contender).await;
            let total = &latencies.total;
            let (p50, p99) = (percentile(total, 0.5), percentile(total, 0.99));
            println!(
                "round {round} {contender:>12}: {LATENCY_RATE} events/s offered for {LATENCY_SECONDS} s after {LATENCY_WARMUP_SECONDS} s, {} measured: latency p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms (to its producer: p50 {:.1} ms, p99 {:.1} ms); broker {:.0}% of a core, this process {:.0}%",
                total.len(),
                total.last().copied().unwrap_or(f64::NAN),
                percentile(&latencies.handed_over, 0.5),
                percentile(&latencies.handed_over, 0.99),
                load.broker_busy * 100.0,
                load.busy * 100.0,
            );
            let entry = percentiles.entry(contender).or_default();
            entry.0.push(p50);
            entry.1.push(p99);
            pooled.entry(contender).or_default().extend(latencies.total);
        }
    }
    for (contender, (p50, p99)) in percentiles {
        let mut all = pooled.remove(contender).unwrap_or_default();
        all.sort_by(f64::total_cmp);
        println!(
            "median of {rounds} {contender:>12}: latency p50 {:.1} ms, p99 {:.1} ms; all {} readings: p50 {:.1} ms, p99 {:.1} ms",
            median(p50),
            median(p99),
            all.len(),
            percentile(&all, 0.5),
            percentile(&all, 0.99),
        );
    }
}

/// One contender's latencies at the offered rate, on a fresh stack, and the CPU used
/// meanwhile.
async fn latency_round(contender: &str) -> (Latencies, Load) {
    let stack = fresh_stack().await;
    let output = copy_topic(&stack).await;
    let expect = (LATENCY_RATE * LATENCY_SECONDS) as usize;
    let (probe_topic, delivery) = match contender {
        "pass-through" => (output.clone(), false),
        _ => (stack.settings.topics().deliver("gp"), true),
    };
    ensure_output(&stack, &probe_topic).await;
    let probe = tokio::spawn(latency_probe(
        stack.settings.clone(),
        probe_topic,
        expect,
        delivery,
    ));
    let worker = match contender {
        "pass-through" => {
            let settings = stack.settings.clone();
            let output = output.clone();
            tokio::spawn(async move {
                let offered = (LATENCY_RATE * (LATENCY_WARMUP_SECONDS + LATENCY_SECONDS)) as usize;
                let copier = PassThrough::new(&settings, "latency", Some(&output)).await;
                copier.run(offered).await;
            })
        }
        _ => {
            let router = stack.spawn_router("latency").await;
            tokio::spawn(async move {
                let offered = LATENCY_RATE * (LATENCY_WARMUP_SECONDS + LATENCY_SECONDS);
                let deadline = Instant::now() + Duration::from_secs(60);
                while router.finished() < offered {
                    assert!(
                        Instant::now() < deadline,
                        "the router finished {} of {offered} readings in a minute",
                        router.finished()
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                router.stop().await;
            })
        }
    };
    tokio::time::sleep(Duration::from_secs(2)).await; // group joined, probe positioned
    let start = Mark::now(0);
    offered_load(&stack.settings).await;
    let end = Mark::now(0);
    let latencies = probe.await.unwrap();
    worker.await.unwrap();
    let secs = (end.at - start.at).as_secs_f64();
    let load = Load {
        broker_busy: (end.broker_cpu - start.broker_cpu) / secs,
        busy: (end.cpu - start.cpu) / secs,
    };
    (latencies, load)
}

/// The shares of a core used while the load was offered: by the broker, and by this process
/// (the offered load, the probe and the contender).
struct Load {
    broker_busy: f64,
    busy: f64,
}
