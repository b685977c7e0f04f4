//! Exactly-once mode (`transactional_id`) on Apache Kafka, where transactions are real:
//! markers, `read_committed` readers, transactional offsets, producer fencing and
//! consumer-group-metadata fencing (KIP-447). The injected protocol failures that a real
//! broker cannot produce on demand stay in `router_exactly_once.rs` (librdkafka's mock).
//!
//! A SIGKILL or a failed commit between a batch's produce and its commit (a window of a
//! few milliseconds) is injected inside the router (`DHO_ROUTER_FAULT`, see
//! `router/src/fault.rs`), so those tests land in it every time.
//!
//! Every test reads the outputs twice: as a `read_committed` subscriber sees them, and as
//! `read_uncommitted` (every record written, aborted ones included). The difference is
//! exactly the records of aborted transactions, and each of them must have been committed
//! once later, by the instance that routed its batch again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use dho_kafka::KafkaSettings;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::scenario::{Published, stream, two_subscribers, wait_all_routed};
use dho_tests::{RouterProcess, Stack, read_topic};

const PATIENTS: u64 = 6;
const SUBSCRIBERS: [&str; 3] = ["gp", "home", "lung"];

/// Patients, consents (home care for all, the GP for even patients), subscriptions of the
/// GP, home care and the lung clinic (permitted by no consent), and a care plan each, so
/// every reading moves an alert track.
async fn patients(stack: &Stack) -> dho_publisher::Publisher {
    let publisher = stack.publisher().await;
    two_subscribers(&publisher, PATIENTS).await;
    for i in 0..PATIENTS {
        let p = fixtures::patient(i);
        let s = fixtures::subscription(&p, "lung", &fixtures::lung_clinic());
        publisher.put_subscription(&s).await.unwrap();
        publisher
            .put_care_plan(&fixtures::care_plan(&p))
            .await
            .unwrap();
    }
    publisher
}

/// A router config file: exactly-once with `transactional_id`, small batches (so a run is
/// many transactions) and a short session (so a dead instance's partitions move on fast).
fn config_file(dir: &tempfile::TempDir, name: &str, transactional_id: &str) -> PathBuf {
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "transactional_id = \"{transactional_id}\"\n\
             max_batch = 10\n\
             session_timeout = 2\n\
             [kafka]\n\
             bootstrap_servers = \"unused\"\n\
             schema_registry_url = \"http://unused\"\n"
        ),
    )
    .unwrap();
    path
}

async fn start(
    stack: &Stack,
    group: &str,
    config: &std::path::Path,
    log: &std::path::Path,
) -> RouterProcess {
    let config = config.display().to_string();
    RouterProcess::start(stack, group, &["--config", &config], "warn", log).await
}

/// [`start`] with `fault` injected (see `router/src/fault.rs`).
async fn start_faulty(
    stack: &Stack,
    group: &str,
    config: &std::path::Path,
    log: &std::path::Path,
    fault: &str,
) -> RouterProcess {
    let config = config.display().to_string();
    let env = [("DHO_ROUTER_FAULT", fault)];
    RouterProcess::start_with_env(stack, group, &["--config", &config], &env, "warn", log).await
}

/// (partition, offset) -> (key, value).
type View = BTreeMap<(i32, i64), (String, Vec<u8>)>;

/// What a reader with `isolation` sees of `topic`.
fn view(settings: &KafkaSettings, topic: &str, isolation: &str) -> View {
    let mut reader = settings.clone();
    reader
        .librdkafka
        .insert("isolation.level".into(), isolation.into());
    read_topic(&reader, topic)
        .into_iter()
        .map(|r| {
            let record = (r.key.unwrap_or_default(), r.value.unwrap_or_default());
            ((r.partition, r.offset), record)
        })
        .collect()
}

/// Both views of a topic, and the records only the uncommitted one has (aborted).
struct Views {
    committed: View,
    aborted: View,
}

fn views(settings: &KafkaSettings, topic: &str) -> Views {
    let committed = view(settings, topic, "read_committed");
    let mut aborted = view(settings, topic, "read_uncommitted");
    aborted.retain(|position, _| !committed.contains_key(position));
    Views { committed, aborted }
}

async fn decode<T: dho_schemas::codec::AvroRecord>(
    serde: &dho_kafka::AvroSerde,
    bytes: &[u8],
) -> T {
    serde.decode(bytes).await.unwrap()
}

/// The committed outputs, checked: every delivery id once (no batch's outputs committed
/// twice), exactly the entitled readings per subscriber, the lung clinic nothing, alerts
/// only to entitled subscribers, one audit record per delivery. Returns the delivery ids
/// of the aborted records, and how many there were.
async fn check_outputs(
    settings: &KafkaSettings,
    published: &[Published],
) -> (usize, BTreeSet<String>) {
    let topics = settings.topics();
    // One serde: it keeps the schemas it has looked up.
    let serde = dho_kafka::AvroSerde::new(&settings.schema_registry_url);
    let even = |patient: &PatientIdentifier| {
        (0..PATIENTS)
            .find(|&i| fixtures::patient(i).value == patient.value)
            .expect("a test patient")
            % 2
            == 0
    };
    let mut committed_ids = BTreeSet::new();
    let mut aborted_ids = BTreeSet::new();
    let mut aborted = 0;
    for subscriber in SUBSCRIBERS {
        let v = views(settings, &topics.deliver(subscriber));
        let mut readings = BTreeSet::new();
        for (_, bytes) in v.committed.values() {
            let d: Delivery = decode(&serde, bytes).await;
            assert!(
                committed_ids.insert(d.delivery_id.clone()),
                "{subscriber}: delivery {} committed twice: a committed batch was routed again",
                d.delivery_id
            );
            assert_ne!(
                subscriber, "lung",
                "a subscriber without consent received a record"
            );
            assert!(
                subscriber == "home" || even(&d.patient),
                "{subscriber} received a record of a patient who did not consent to it"
            );
            if let Some(m) = d.measurement {
                readings.insert(m.event_id);
            }
        }
        let want: BTreeSet<String> = published
            .iter()
            .filter(|p| subscriber == "home" || (subscriber == "gp" && p.patient % 2 == 0))
            .map(|p| p.event_id.clone())
            .collect();
        assert_eq!(
            readings, want,
            "{subscriber}: exactly the entitled readings, each once"
        );
        for (_, bytes) in v.aborted.values() {
            let d: Delivery = decode(&serde, bytes).await;
            aborted_ids.insert(d.delivery_id);
            aborted += 1;
        }
    }
    let audit = views(settings, &topics.audit());
    let mut audited = BTreeSet::new();
    for (_, bytes) in audit.committed.values() {
        let r: DisclosureRecord = decode(&serde, bytes).await;
        assert!(
            audited.insert(r.delivery_id),
            "an audit record committed twice"
        );
    }
    assert_eq!(
        audited, committed_ids,
        "audit = deliveries, in the committed view"
    );
    // The aborted batches were routed again, with the same ids, and committed then.
    assert!(
        aborted_ids.is_subset(&committed_ids),
        "a delivery of an aborted batch was never committed"
    );
    (aborted, aborted_ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_draining_a_restart_resumes_from_committed_offsets_and_commits_each_delivery_once()
 {
    let stack = Stack::start().await;
    let publisher = patients(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, "router", "eos-killed");
    let log = dir.path().join("router.log");
    let group = "eos-killed";
    // A backlog: the router is inside one transaction after another while it drains it.
    let published = stream(publisher.clone(), PATIENTS, 600, Duration::ZERO).await;
    let mut router = start(&stack, group, &config, &log).await;
    // SIGKILL while it drains the backlog: inside a transaction nearly all the time (one is
    // begun before each batch's state sync and ends with its commit).
    for lead in [1500, 900, 1200, 700] {
        tokio::time::sleep(Duration::from_millis(lead)).await;
        router.signal("KILL");
        router.child.wait().await.unwrap();
        // Same transactional id: the new instance's InitProducerId aborts the open one.
        router = start(&stack, group, &config, &log).await;
    }
    wait_all_routed(&stack.settings, group, &published).await;
    router.terminate().await;

    let (aborted, aborted_ids) = check_outputs(&stack.settings, &published).await;
    // Alert tracks are written in their batch's transaction: the committed ones end where
    // the committed routing ended, at each patient's last reading.
    let tracks = views(&stack.settings, &stack.settings.topics().alert_state());
    let mut last_track: BTreeMap<&str, i64> = BTreeMap::new();
    for (key, bytes) in tracks.committed.values() {
        if dho_routing_core::delivered::event_id_of_key(key).is_some()
            || dho_routing_core::sharing::is_snapshot_key(key)
        {
            // A delivery record or a sharing snapshot, beside the tracks on the router's
            // own topic.
            continue;
        }
        let track: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        last_track.insert(key, track["applied_through"].as_i64().unwrap());
    }
    let mut last_reading: BTreeMap<String, i64> = BTreeMap::new();
    for p in &published {
        last_reading.insert(
            fixtures::patient(p.patient).key().to_string(),
            p.receipt.offset,
        );
    }
    for (patient, offset) in &last_reading {
        let through = last_track
            .iter()
            .find(|(key, _)| key.starts_with(&format!("{patient}|")))
            .map(|(_, through)| *through);
        assert_eq!(
            through,
            Some(*offset),
            "the committed alert track ends at the patient's last reading"
        );
    }
    eprintln!(
        "{} readings; {aborted} aborted delivery records ({} ids), all committed once later; \
         {} aborted track writes",
        published.len(),
        aborted_ids.len(),
        tracks.aborted.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_with_the_same_transactional_id_fences_the_first() {
    let stack = Stack::start().await;
    let publisher = patients(&stack).await;
    let group = "eos-fenced";
    let mut config = stack.router_config(group);
    config.transactional_id = Some("eos-fenced".into());
    config.max_batch = 10;
    let first = dho_router::Router::connect(config.clone())
        .await
        .expect("the first instance connects");
    let first = tokio::spawn(first.run(std::future::pending()));
    let traffic = tokio::spawn(stream(
        publisher.clone(),
        PATIENTS,
        200,
        Duration::from_millis(4),
    ));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!first.is_finished(), "the first instance routes");
    // The second instance's InitProducerId bumps the epoch: the first is a zombie now.
    let second = stack.spawn_router_with(config).await;
    let outcome = tokio::time::timeout(Duration::from_secs(60), first)
        .await
        .expect("the fenced instance stops")
        .unwrap();
    let failure = match outcome {
        Err(e @ (dho_router::Error::Transaction(_) | dho_router::Error::ProducerFatal { .. })) => {
            e.to_string().to_lowercase()
        }
        other => panic!("the fenced instance went on or failed otherwise: {other:?}"),
    };
    assert!(
        failure.contains("fenced") || failure.contains("epoch"),
        "the first instance stopped because it was fenced: {failure}"
    );
    let published = traffic.await.unwrap();
    wait_all_routed(&stack.settings, group, &published).await;
    second.stop().await;
    check_outputs(&stack.settings, &published).await;
}

/// The router's line for a batch aborted because the group moved on (see `BatchRewound`).
const REWOUND: &str = "the group moved on during the batch";

/// The router's line for a batch fetched after its session ran out (see `BatchAbandoned`).
const ABANDONED: &str = "the batch is left to its partitions' next owner";

/// A log filter that keeps the router's `BatchRewound` line, and warnings.
const REWIND_LOG: &str = "warn,dho_router::events=info";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_left_behind_by_a_rebalance_cannot_commit_its_batch() {
    let stack = Stack::start().await;
    let publisher = patients(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    let group = "eos-zombie";
    let config_a = config_file(&dir, "a", "eos-zombie-a");
    let config_b = config_file(&dir, "b", "eos-zombie-b");
    let log_a = dir.path().join("a.log");
    let log_b = dir.path().join("b.log");
    let published = stream(publisher.clone(), PATIENTS, 600, Duration::ZERO).await;
    let args_a = ["--config", &*config_a.to_string_lossy()];
    let a = RouterProcess::start(&stack, group, &args_a, REWIND_LOG, &log_a).await;
    // Freeze A while it drains the backlog, inside a batch's transaction.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.signal("STOP");
    // B joins; A's session (2 s) runs out and B is given every partition, A's included, and
    // routes A's uncommitted batch again.
    let b = start(&stack, group, &config_b, &log_b).await;
    wait_all_routed(&stack.settings, group, &published).await;
    // A wakes with its old group generation: its TxnOffsetCommit is refused, so it cannot
    // commit the batch it held (or, frozen before the batch took the group's metadata, it
    // leaves the batch alone). It aborts it and goes on: it rejoins as a new member.
    a.signal("CONT");
    let woke = std::time::Instant::now();
    let gave_up = |log: String| log.contains(REWOUND) || log.contains(ABANDONED);
    while !gave_up(std::fs::read_to_string(&log_a).unwrap()) {
        assert!(
            woke.elapsed() < Duration::from_secs(60),
            "the zombie did not abort its batch: {}",
            std::fs::read_to_string(&log_a).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.terminate().await;
    b.terminate().await;
    let (aborted, _) = check_outputs(&stack.settings, &published).await;
    eprintln!("{aborted} aborted delivery records, none of them visible to read_committed");
}

/// Cooperative assignment in exactly-once mode: a member joining or leaving bumps the
/// group's generation while the others keep their partitions and go on routing, so the
/// coordinator refuses the offsets of a batch in flight then. The instance aborts that
/// batch and routes it again from its first records, instead of stopping; each delivery
/// is committed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_and_leaving_during_traffic_abort_and_route_again_instead_of_stopping() {
    let stack = Stack::start().await;
    let publisher = patients(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    let group = "eos-scale";
    let config_a = config_file(&dir, "a", "eos-scale-a");
    let config_b = config_file(&dir, "b", "eos-scale-b");
    let log_a = dir.path().join("a.log");
    let log_b = dir.path().join("b.log");
    let args_a = ["--config", &*config_a.to_string_lossy()];
    let a = RouterProcess::start(&stack, group, &args_a, REWIND_LOG, &log_a).await;
    let traffic = tokio::spawn(stream(
        publisher.clone(),
        PATIENTS,
        600,
        Duration::from_millis(3),
    ));
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let b = start(&stack, group, &config_b, &log_b).await;
        b.wait_ok("/readyz", Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_millis(900)).await;
        b.terminate().await;
    }
    let published = traffic.await.unwrap();
    wait_all_routed(&stack.settings, group, &published).await;
    // Still running: terminate asserts it exits 0 on SIGTERM.
    a.terminate().await;
    let rewound = std::fs::read_to_string(&log_a)
        .unwrap()
        .matches(REWOUND)
        .count();
    let (aborted, _) = check_outputs(&stack.settings, &published).await;
    eprintln!(
        "{} readings; the first instance routed {rewound} batches again after the group moved \
         on; {aborted} aborted delivery records, none visible to read_committed",
        published.len()
    );
}

/// Waits until the router's log says the fault was injected.
async fn wait_for_fault(log: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("fault injected") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the router never reached the injected fault: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_producing_and_committing_a_batch_stays_invisible_and_is_routed_again_once()
{
    let stack = Stack::start().await;
    let publisher = patients(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, "router", "eos-held");
    let log = dir.path().join("router.log");
    let group = "eos-held";
    let published = stream(publisher.clone(), PATIENTS, 200, Duration::ZERO).await;
    // The third batch's outputs are produced and acknowledged, then its transaction is held
    // open: the router is SIGKILLed exactly between producing and committing.
    let held = start_faulty(&stack, group, &config, &log, "hold-before-commit@3").await;
    wait_for_fault(&log).await;
    held.signal("KILL");
    // Same transactional id: the new instance's InitProducerId aborts the held transaction.
    let router = start(&stack, group, &config, &log).await;
    wait_all_routed(&stack.settings, group, &published).await;
    router.terminate().await;
    let (aborted, aborted_ids) = check_outputs(&stack.settings, &published).await;
    assert!(
        aborted > 0,
        "the held batch's deliveries were written and then aborted"
    );
    eprintln!(
        "{aborted} aborted delivery records ({} ids), none visible to read_committed, each \
         committed once by the next instance",
        aborted_ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_commit_fails_is_aborted_invisible_and_routed_again_once() {
    let stack = Stack::start().await;
    let publisher = patients(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, "router", "eos-abort");
    let log = dir.path().join("router.log");
    let group = "eos-abort";
    let published = stream(publisher.clone(), PATIENTS, 200, Duration::ZERO).await;
    // The third batch's commit fails: the router aborts its transaction and stops.
    let mut failing = start_faulty(&stack, group, &config, &log, "abort-before-commit@3").await;
    let exit = tokio::time::timeout(Duration::from_secs(90), failing.child.wait())
        .await
        .expect("the router stops after its commit failed")
        .unwrap();
    assert!(!exit.success(), "the router exited with {exit}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("fault injected") && text.contains("transaction"),
        "the router stopped on its failed transaction: {text}"
    );
    let router = start(&stack, group, &config, &log).await;
    wait_all_routed(&stack.settings, group, &published).await;
    router.terminate().await;
    let (aborted, _) = check_outputs(&stack.settings, &published).await;
    assert!(
        aborted > 0,
        "the failed batch's deliveries were written and aborted"
    );
    eprintln!("{aborted} aborted delivery records, none visible to read_committed");
}
