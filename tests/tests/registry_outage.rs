//! A schema registry that does not answer is an outage the router waits out, never bad
//! input: a record it cannot decode yet is not dead-lettered, nothing behind it is routed
//! or committed meanwhile, `/readyz` says what it waits for, and a router started during
//! the outage comes up when the registry does.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use dho_schemas::avro::SchemaKind;
use dho_schemas::model::*;
use dho_schemas::partition::partition_for;
use dho_schemas::topics::{state_key, value_subject};
use dho_schemas::{fixtures, wire};
use dho_tests::scenario::{
    Published, assert_exactly_entitled, stream, two_subscribers, wait_all_routed,
};
use dho_tests::{PARTITIONS, RouterProcess, Stack, read_decoded, read_topic};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

const PATIENTS: u64 = 4;

async fn start_router(stack: &Stack, group: &str, log: &std::path::Path) -> RouterProcess {
    RouterProcess::start(stack, group, &[], "warn", log).await
}

/// Waits until `/readyz` answers 503 naming `check`.
async fn wait_not_ready(router: &RouterProcess, check: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = router.get("/readyz").await;
        if status == 503 && body.contains(check) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never named {check}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The event ids `subscriber` received.
async fn received(stack: &Stack, subscriber: &str) -> BTreeSet<String> {
    let topic = stack.settings.topics().deliver(subscriber);
    let deliveries: Vec<Delivery> = read_decoded(&stack.settings, &topic).await;
    deliveries
        .into_iter()
        .filter_map(|d| d.measurement.map(|m| m.event_id))
        .collect()
}

fn ids(published: &[Published], patient: Option<u64>) -> BTreeSet<String> {
    published
        .iter()
        .filter(|p| patient.is_none_or(|n| p.patient == n))
        .map(|p| p.event_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_started_while_the_registry_is_down_waits_and_routes_when_it_is_back() {
    let mut stack = Stack::start().await;
    let publisher = stack.publisher().await;
    two_subscribers(&publisher, PATIENTS).await;
    stack.stop_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("router.log");
    let mut router = start_router(&stack, "registry-down-at-start", &log).await;
    // Readings published meanwhile (the publisher has its schema ids already).
    let published = stream(publisher.clone(), PATIENTS, 8, Duration::ZERO).await;
    wait_not_ready(&router, "kafka").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        router.child.try_wait().unwrap().is_none(),
        "the router waits for the registry instead of exiting: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    stack.start_registry().await;
    router.wait_ok("/readyz", Duration::from_secs(60)).await;
    wait_all_routed(&stack.settings, "registry-down-at-start", &published).await;
    router.terminate().await;
    assert_eq!(received(&stack, "home").await, ids(&published, None));
}

/// Record by record across a registry kill and a router restart: readings keep coming
/// while the registry is down, the router is SIGKILLed meanwhile and started again before
/// the registry is back (so it waits to connect, not ready). Once the registry answers,
/// every reading is delivered to exactly its entitled subscribers, once after
/// de-duplication; none is dead-lettered and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_and_restarted_during_a_registry_outage_loses_no_record() {
    let mut stack = Stack::start().await;
    let publisher = stack.publisher().await;
    two_subscribers(&publisher, PATIENTS).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("router.log");
    let group = "registry-kill-restart";
    let router = start_router(&stack, group, &log).await;
    let before = stream(publisher.clone(), PATIENTS, 12, Duration::ZERO).await;
    wait_all_routed(&stack.settings, group, &before).await;

    stack.stop_registry().await;
    let traffic = tokio::spawn(stream(
        publisher.clone(),
        PATIENTS,
        60,
        Duration::from_millis(20),
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    router.signal("KILL");
    let mut restarted = start_router(&stack, group, &log).await;
    let during = traffic.await.unwrap();
    wait_not_ready(&restarted, "kafka").await;
    assert!(
        restarted.child.try_wait().unwrap().is_none(),
        "the restarted router waits for the registry: {}",
        std::fs::read_to_string(&log).unwrap()
    );

    stack.start_registry().await;
    restarted.wait_ok("/readyz", Duration::from_secs(60)).await;
    let all: Vec<Published> = before.into_iter().chain(during).collect();
    wait_all_routed(&stack.settings, group, &all).await;
    restarted.terminate().await;
    assert!(
        read_topic(&stack.settings, &stack.settings.topics().deadletter()).is_empty(),
        "no good record was dead-lettered"
    );
    let repeats = assert_exactly_entitled(&stack.settings, &all).await;
    eprintln!(
        "{} readings, each delivered to exactly its entitled subscribers; {repeats} repeats \
         (the killed instance's uncommitted batch) dropped by delivery id",
        all.len()
    );
}

/// The hub's Consent schema with an optional field added: a compatible new version the
/// router has not seen, so it must ask the registry for it.
fn consent_v2() -> String {
    let mut schema: serde_json::Value =
        serde_json::from_str(SchemaKind::Consent.schema_text()).unwrap();
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "note", "type": ["null", "string"], "default": null}));
    schema.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_the_router_cannot_decode_yet_waits_for_the_registry_and_then_applies() {
    let mut stack = Stack::start().await;
    let publisher = stack.publisher().await;
    // Home care and, for even patients, the GP: patient 0 permits both.
    two_subscribers(&publisher, PATIENTS).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("router.log");
    let group = "registry-outage";
    let router = start_router(&stack, group, &log).await;
    let before = stream(publisher.clone(), PATIENTS, 8, Duration::ZERO).await;
    wait_all_routed(&stack.settings, group, &before).await;
    router.wait_ok("/readyz", Duration::from_secs(60)).await;
    let home_before = read_topic(&stack.settings, &stack.settings.topics().deliver("home")).len();

    // Patient 0 withdraws the GP's access, written with a schema version the router has
    // not cached (registered now, while the registry is up).
    let topics = stack.settings.topics();
    let sr = SrSettings::new(stack.settings.schema_registry_url.clone());
    let v2_text = consent_v2();
    let supplied = SuppliedSchema::new(
        Some("no.dho.v1.Consent".into()),
        SchemaType::Avro,
        v2_text.clone(),
    );
    let v2_id = post_schema(&sr, value_subject(&topics.consents()), supplied)
        .await
        .expect("an optional field is a compatible change")
        .id;
    let v2 = Schema::parse_str(&v2_text).unwrap();
    let patient = fixtures::patient(0);
    let withdrawal = fixtures::consent(&patient, "c", &[fixtures::home_care()]);
    let mut record = apache_avro::to_value(&withdrawal).unwrap();
    let Value::Record(fields) = &mut record else {
        panic!("a Consent is an Avro record")
    };
    fields.push(("note".into(), Value::Union(0, Box::new(Value::Null))));
    let body = GenericDatumWriter::builder(&v2)
        .build()
        .unwrap()
        .write_value_to_vec(record.resolve(&v2).unwrap())
        .unwrap();

    stack.stop_registry().await;
    let raw: FutureProducer = stack.settings.client_config(&[]).unwrap().create().unwrap();
    let key = state_key(&patient, "c");
    let framed = wire::frame(v2_id, &body);
    let consents_topic = topics.consents();
    let consent = FutureRecord::<str, [u8]>::to(&consents_topic)
        .key(key.as_str())
        .partition(partition_for(patient.key().as_bytes(), PARTITIONS))
        .payload(framed.as_slice());
    raw.send(consent, Duration::from_secs(10)).await.unwrap();
    let during = stream(publisher.clone(), PATIENTS, 8, Duration::ZERO).await;
    let body = wait_not_ready(&router, "schema_registry").await;
    eprintln!("/readyz during the outage: {body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        read_topic(&stack.settings, &topics.deadletter()).is_empty(),
        "nothing is dead-lettered while the registry is down"
    );
    // (Counted, not decoded: decoding a delivery needs the registry too.)
    assert_eq!(
        read_topic(&stack.settings, &topics.deliver("home")).len(),
        home_before,
        "nothing behind the waiting record is routed"
    );

    stack.start_registry().await;
    router.wait_ok("/readyz", Duration::from_secs(60)).await;
    wait_all_routed(&stack.settings, group, &during).await;
    let (_, metrics) = router.get("/metrics").await;
    router.terminate().await;

    assert!(
        read_topic(&stack.settings, &topics.deadletter()).is_empty(),
        "no good record was dead-lettered"
    );
    let gp = received(&stack, "gp").await;
    assert!(
        gp.is_disjoint(&ids(&during, Some(0))),
        "the withdrawal applies to every later reading of the patient"
    );
    assert!(
        gp.is_superset(&ids(&before, Some(0))),
        "before it, the GP received them"
    );
    assert!(
        gp.is_superset(&ids(&during, Some(2))),
        "other patients are untouched"
    );
    let mut all = ids(&before, None);
    all.extend(ids(&during, None));
    assert_eq!(
        received(&stack, "home").await,
        all,
        "home care: every reading"
    );
    let waits = metrics
        .lines()
        .find(|l| l.starts_with("dho_router_registry_waits_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(waits > 0.0, "the wait was counted: {metrics}");
}
