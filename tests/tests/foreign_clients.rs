//! The integrator examples in `examples/`, run as the programs they are against the real
//! broker, registry, router and gateway: a Python device platform (confluent-kafka's
//! AvroSerializer with the schema as the registry serves it, `murmur2_random`), the same
//! platform through the gateway's FHIR API, a Java platform (Apache Avro and its own
//! wire-format serde) and a Java subscriber. The hub's own reader checks that exactly the
//! entitled deliveries arrived, and the Java subscriber must have received exactly them.

use std::collections::{BTreeMap, BTreeSet};

use dho_kafka::AvroSerde;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_schemas::partition::partition_for;
use dho_schemas::wire;
use dho_tests::foreign::{Examples, lines_of};
use dho_tests::ingest::{PLATFORM_TOKEN, gateway_config, start_gateway};
use dho_tests::logscan::Scanner;
use dho_tests::scenario::two_subscribers;
use dho_tests::sdk::{committed, high_watermarks};
use dho_tests::{PARTITIONS, Stack, read_decoded, read_topic, wait_routed};

const GROUP: &str = "router";
const PATIENTS: u64 = 6;

/// The patients' numbers as the examples read them: one a line on stdin.
fn patient_lines(patients: impl IntoIterator<Item = u64>) -> String {
    patients
        .into_iter()
        .map(|i| format!("{}\n", fixtures::patient(i).value))
        .collect()
}

/// The event ids in `published <event id> partition=<p> offset=<o>` lines.
fn published_ids(stdout: &str) -> Vec<String> {
    lines_of(stdout, "published")
        .iter()
        .map(|fields| fields[0].to_string())
        .collect()
}

/// Nothing an example printed or logged names a patient or the platform's token.
fn assert_no_leak(examples: &Examples, outputs: &[&str]) {
    let scanner = Scanner::new()
        .identifiers((0..PATIENTS).map(|i| fixtures::patient(i).value))
        .secrets([PLATFORM_TOKEN]);
    // Event and delivery ids are UUIDs, whose hex may hold 11 digits in a row: not a number.
    let text: String = format!("{}\n{}", outputs.join("\n"), examples.all_logs())
        .lines()
        .map(|line| {
            let words = line.split_whitespace().map(|word| {
                let id = word.rsplit('=').next().unwrap_or(word);
                if uuid::Uuid::parse_str(id).is_ok() {
                    "<uuid>"
                } else {
                    word
                }
            });
            words.collect::<Vec<_>>().join(" ") + "\n"
        })
        .collect();
    let leaks = scanner.scan(&text);
    assert!(leaks.is_empty(), "the examples leak: {leaks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_python_serialiser_writes_measurements_from_the_registry_schema_as_served() {
    let examples = Examples::prepared();
    let stack = Stack::start().await;
    // The hub registers its schemas (the publisher does on connect); the example only reads.
    let _publisher = stack.publisher().await;
    let topic = stack.settings.topics().measurements();
    let hub_schema_id = AvroSerde::new(&stack.settings.schema_registry_url)
        .register::<Measurement>(&topic)
        .await
        .unwrap()
        .schema_id();

    let mut platform = examples.python("python-device-platform", "publish_measurements.py");
    platform
        .args(["--bootstrap-servers", &stack.settings.bootstrap_servers])
        .args(["--schema-registry-url", &stack.settings.schema_registry_url])
        .args(["--topic", &topic])
        .args(["--platform-orgnr", &fixtures::platform().value])
        .args(["--readings", "2"]);
    let stdout = examples
        .run(platform, "python-device-platform", &patient_lines(0..4))
        .await;
    let printed: BTreeSet<String> = published_ids(&stdout).into_iter().collect();
    assert_eq!(
        printed.len(),
        8,
        "two readings for each of 4 patients:\n{stdout}"
    );

    let serde = AvroSerde::new(&stack.settings.schema_registry_url);
    let mut seen = BTreeSet::new();
    for record in read_topic(&stack.settings, &topic) {
        let key = record.key.expect("keyed by patient");
        assert_eq!(
            record.partition,
            partition_for(key.as_bytes(), PARTITIONS),
            "murmur2_random puts the patient where the hub's partitioner does"
        );
        let value = record.value.expect("a value");
        let (id, _) = wire::unframe(&value).unwrap();
        assert_eq!(
            id, hub_schema_id,
            "written with the hub's own registered schema"
        );
        let m: Measurement = serde.decode(&value).await.expect("the hub decodes it");
        assert_eq!(m.patient, PatientIdentifier::fnr(key));
        assert_eq!(m.source.platform, fixtures::platform());
        assert_eq!(m.code, "2708-6");
        assert_eq!(m.value.as_ref().map(|q| q.unit.as_str()), Some("%"));
        assert_eq!(m.status.as_deref(), Some("final"));
        seen.insert(m.event_id);
    }
    assert_eq!(seen, printed, "exactly the readings it reported, once each");
    assert_no_leak(&examples, &[&stdout]);
    examples.passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_clients_publish_and_the_java_subscriber_receives_exactly_the_entitled_deliveries()
{
    let examples = Examples::prepared();
    let stack = Stack::start().await;
    let settings = &stack.settings;
    let topics = settings.topics();
    let publisher = stack.publisher().await;
    // Home care is entitled to every patient's readings, the GP to even patients' only.
    two_subscribers(&publisher, PATIENTS).await;
    let router = stack.spawn_router(GROUP).await;
    let gateway = start_gateway(gateway_config(settings)).await;
    let patients = patient_lines(0..PATIENTS);
    let orgnr = fixtures::platform().value;

    let mut direct = examples.python("python-device-platform", "publish_measurements.py");
    direct
        .args(["--bootstrap-servers", &settings.bootstrap_servers])
        .args(["--schema-registry-url", &settings.schema_registry_url])
        .args(["--topic", &topics.measurements()])
        .args(["--platform-orgnr", &orgnr]);
    let mut fhir = examples.python("python-fhir-gateway", "post_observations.py");
    fhir.args(["--gateway-url", &gateway.url()])
        .args(["--platform-orgnr", &orgnr])
        .env("DHO_GATEWAY_TOKEN", PLATFORM_TOKEN);
    let mut java = examples.java("MeasurementPublisher");
    java.args(["--bootstrap-servers", &settings.bootstrap_servers])
        .args(["--schema-registry-url", &settings.schema_registry_url])
        .args(["--topic", &topics.measurements()])
        .args(["--platform-orgnr", &orgnr]);
    let direct_out = examples
        .run(direct, "python-device-platform", &patients)
        .await;
    let fhir_out = examples.run(fhir, "python-fhir-gateway", &patients).await;
    let java_out = examples.run(java, "java-publisher", &patients).await;
    let mut published: Vec<String> = published_ids(&direct_out);
    published.extend(
        lines_of(&fhir_out, "accepted")
            .iter()
            .map(|f| f[0].to_string()),
    );
    published.extend(published_ids(&java_out));
    assert_eq!(
        published.len() as u64,
        3 * PATIENTS,
        "each example published one reading per patient:\n{direct_out}\n{fhir_out}\n{java_out}"
    );

    // Which patient each reading is of, as the hub reads the topic.
    let readings: Vec<Measurement> = read_decoded(settings, &topics.measurements()).await;
    let patient_of: BTreeMap<String, PatientIdentifier> = readings
        .into_iter()
        .map(|m| (m.event_id, m.patient))
        .collect();
    assert_eq!(
        patient_of.keys().cloned().collect::<BTreeSet<_>>(),
        published.iter().cloned().collect(),
        "the topic holds exactly the readings the examples reported"
    );
    for (partition, end) in high_watermarks(settings, &topics.measurements())
        .into_iter()
        .enumerate()
    {
        if end > 0 {
            wait_routed(
                settings,
                GROUP,
                &topics.measurements(),
                partition as i32,
                end - 1,
            )
            .await;
        }
    }

    let even: BTreeSet<PatientIdentifier> =
        (0..PATIENTS).step_by(2).map(fixtures::patient).collect();
    let entitled_gp: BTreeSet<String> = patient_of
        .iter()
        .filter(|(_, p)| even.contains(p))
        .map(|(id, _)| id.clone())
        .collect();
    // Sorted event ids of what a subscriber's topic holds (a duplicate would show twice).
    let delivered = |deliveries: &[Delivery]| -> Vec<String> {
        let mut ids: Vec<String> = deliveries
            .iter()
            .map(|d| d.measurement.as_ref().expect("a reading").event_id.clone())
            .collect();
        ids.sort();
        ids
    };
    let home: Vec<Delivery> = read_decoded(settings, &topics.deliver("home")).await;
    assert_eq!(
        delivered(&home),
        patient_of.keys().cloned().collect::<Vec<_>>(),
        "home care: every reading, once"
    );
    let gp: Vec<Delivery> = read_decoded(settings, &topics.deliver("gp")).await;
    assert_eq!(
        delivered(&gp),
        entitled_gp.iter().cloned().collect::<Vec<_>>(),
        "the GP: the even patients' readings, once"
    );

    // The Java subscriber reads the GP's topic, handles each delivery, commits, and stops
    // after as many as the GP is entitled to.
    let mut subscriber = examples.java("DeliverySubscriber");
    subscriber
        .args(["--bootstrap-servers", &settings.bootstrap_servers])
        .args(["--schema-registry-url", &settings.schema_registry_url])
        .args(["--topic", &topics.deliver("gp")])
        .args(["--group", "java-gp"])
        .args(["--count", &entitled_gp.len().to_string()]);
    let java_sub_out = examples.run(subscriber, "java-subscriber", "").await;
    let received = lines_of(&java_sub_out, "delivery");
    let received_events: BTreeSet<String> = received
        .iter()
        .map(|f| f[1].trim_start_matches("event=").to_string())
        .collect();
    assert_eq!(received.len(), entitled_gp.len(), "{java_sub_out}");
    assert_eq!(
        received_events, entitled_gp,
        "the Java subscriber: exactly the GP's"
    );
    let delivery_ids: BTreeSet<&str> = gp.iter().map(|d| d.delivery_id.as_str()).collect();
    assert_eq!(
        received.iter().map(|f| f[0]).collect::<BTreeSet<_>>(),
        delivery_ids,
        "with the router's delivery ids"
    );
    let commits = committed(settings, "java-gp", &topics.deliver("gp"));
    for (partition, end) in high_watermarks(settings, &topics.deliver("gp"))
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            commits[partition].unwrap_or(0),
            end,
            "the Java subscriber committed what it handled on partition {partition}"
        );
    }

    assert_no_leak(
        &examples,
        &[&direct_out, &fhir_out, &java_out, &java_sub_out],
    );
    drop(gateway);
    router.stop().await;
    examples.passed();
}
