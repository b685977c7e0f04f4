//! `dho-admin redrive` against the real broker and a running router: a reading framed with
//! a schema id the registry does not know yet is dead-lettered (`unknown_schema`); once
//! that schema is registered, a dry run lists it and sends nothing, the redrive sends it
//! back with its original key, value and headers, the router delivers it exactly once
//! (a second redrive sends nothing), and the audit record says who redrove which dead
//! letter.

use std::time::{Duration, Instant};

use dho_kafka::AvroSerde;
use dho_schemas::avro::SchemaKind;
use dho_schemas::partition::partition_for;
use dho_schemas::{fixtures, model::*, topics, wire};
use dho_tests::ingest::{admin_ok, run_admin};
use dho_tests::{Record, Stack, read_topic, wait_for, wait_receipt_routed};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

const GROUP: &str = "router";
const SUBSCRIBER: &str = "gp-redrive";

fn admin(stack: &Stack, args: &[&str]) -> Vec<Value> {
    let output = admin_ok(stack, args);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn summary(lines: &[Value]) -> Value {
    lines.last().unwrap()["summary"].clone()
}

async fn wait_dead_letters(stack: &Stack, count: usize) -> Vec<Record> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let letters = read_topic(&stack.settings, &stack.settings.topics().deadletter());
        if letters.len() >= count {
            return letters;
        }
        assert!(Instant::now() < deadline, "no dead letter came");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The registry's largest schema id so far.
async fn max_schema_id(stack: &Stack, some_id: u32) -> u32 {
    let url = format!(
        "{}/schemas/ids/{some_id}?fetchMaxId=true",
        stack.settings.schema_registry_url
    );
    let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    body["maxId"].as_u64().expect("maxId") as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_redrive_sends_a_dead_letter_back_once_audited_and_it_is_delivered() {
    let stack = Stack::start().await;
    let router = stack.spawn_router(GROUP).await;
    let settings = &stack.settings;
    let topics = settings.topics();
    let patient = fixtures::patient(81);
    let org = fixtures::home_care().value;
    for args in [
        vec![
            "grant",
            "--patient",
            &patient.value,
            "--recipient",
            &org,
            "--recorded-by",
            &org,
        ],
        vec![
            "subscribe",
            "--patient",
            &patient.value,
            "--subscriber",
            SUBSCRIBER,
            "--subscriber-org",
            &org,
        ],
    ] {
        assert!(run_admin(&stack, &args).status.success());
    }

    // A newer platform's schema (one more optional field), not registered yet: its
    // record is framed with the id the registry will give it next.
    let serde = AvroSerde::new(&settings.schema_registry_url);
    let v1 = serde
        .register::<Measurement>(&topics.measurements())
        .await
        .unwrap();
    let next_id = max_schema_id(&stack, v1.schema_id()).await + 1;
    let mut v2: Value = serde_json::from_str(SchemaKind::Measurement.schema_text()).unwrap();
    v2["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "redrive_note", "type": ["null", "string"], "default": null}));
    let m = fixtures::spo2(&patient, 93.0, now_millis() - 10_000);
    let framed_v1 = v1.encode(&m).unwrap();
    let (_, body) = wire::unframe(&framed_v1).unwrap();
    // The v2 body: v1's fields, then the new field's null (union branch 0).
    let mut v2_body = body.to_vec();
    v2_body.push(0);
    let framed = wire::frame(next_id, &v2_body);

    let producer: FutureProducer = settings.client_config(&[]).unwrap().create().unwrap();
    let partition = partition_for(patient.key().as_bytes(), settings.partitions);
    let headers = OwnedHeaders::new().insert(Header {
        key: "x-trace",
        value: Some("trace-81"),
    });
    let topic = topics.measurements();
    producer
        .send(
            FutureRecord::to(&topic)
                .key(patient.key())
                .payload(&framed)
                .partition(partition)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let letters = wait_dead_letters(&stack, 1).await;
    assert_eq!(
        letters[0].headers["dho.deadletter.reason"],
        "unknown_schema"
    );
    assert_eq!(
        letters[0].headers["x-trace"], "trace-81",
        "original headers kept"
    );

    // The schema gets registered: the record is decodable now.
    let subject = topics::value_subject(&topic);
    let registered: Value = reqwest::Client::new()
        .post(format!(
            "{}/subjects/{subject}/versions",
            settings.schema_registry_url
        ))
        .json(&json!({"schema": v2.to_string()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        registered["id"], next_id,
        "the schema got the id the record names"
    );

    // A dry run lists it and sends nothing.
    let listed = admin(
        &stack,
        &["redrive", "--reason", "unknown_schema", "--dry-run"],
    );
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["reason"], "unknown_schema");
    assert_eq!(listed[0]["source"]["topic"], topic.as_str());
    assert_eq!(listed[0]["already_redriven"], false);
    assert!(!listed[0].to_string().contains(&patient.value));
    assert_eq!(summary(&listed)["redriven"], 0);
    assert!(read_topic(settings, &topics.redrive_audit()).is_empty());

    // Another reason selects nothing.
    let other = admin(&stack, &["redrive", "--reason", "empty"]);
    assert_eq!(summary(&other)["selected"], 0);

    let sent = admin(&stack, &["redrive", "--operator", "test-operator"]);
    assert_eq!(summary(&sent)["redriven"], 1, "{sent:?}");
    let deliver = topics.deliver(SUBSCRIBER);
    let deliveries: Vec<Delivery> = wait_for(settings, &deliver, 1).await;
    assert_eq!(
        deliveries[0].measurement.as_ref().unwrap().event_id,
        m.event_id
    );

    // Twice is once.
    let again = admin(&stack, &["redrive"]);
    assert_eq!(summary(&again)["redriven"], 0);
    assert_eq!(summary(&again)["already_redriven"], 1);
    let marker = fixtures::spo2(&patient, 96.0, now_millis() - 5_000);
    let receipt = stack
        .publisher()
        .await
        .publish_measurement(&marker)
        .await
        .unwrap();
    wait_receipt_routed(settings, GROUP, &receipt).await;
    let deliveries: Vec<Delivery> = wait_for(settings, &deliver, 2).await;
    let ids: Vec<_> = deliveries
        .iter()
        .map(|d| d.measurement.as_ref().unwrap().event_id.clone())
        .collect();
    assert_eq!(
        ids,
        vec![m.event_id.clone(), marker.event_id],
        "delivered exactly once"
    );

    // The record went back whole, marked as redriven.
    let back: Vec<Record> = read_topic(settings, &topic)
        .into_iter()
        .filter(|r| r.headers.contains_key("dho.redrive.from"))
        .collect();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].value.as_deref(), Some(framed.as_slice()));
    assert_eq!(back[0].key.as_deref(), Some(patient.key()));
    assert_eq!(back[0].headers["x-trace"], "trace-81");
    assert!(!back[0].headers.contains_key("dho.deadletter.reason"));

    // The audit says who redrove which dead letter, from where, when.
    let audit = read_topic(settings, &topics.redrive_audit());
    assert_eq!(audit.len(), 1);
    let record: Value = serde_json::from_slice(audit[0].value.as_ref().unwrap()).unwrap();
    assert_eq!(record["principal"], "test-operator");
    assert_eq!(record["channel"], "admin-cli");
    assert_eq!(record["reason"], "unknown_schema");
    assert_eq!(record["deadletter"]["offset"], letters[0].offset);
    assert_eq!(record["source"]["topic"], topic.as_str());
    assert!(record["redriven_at"].as_i64().unwrap() > 0);
    router.stop().await;
}
