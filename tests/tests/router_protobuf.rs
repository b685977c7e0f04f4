//! A platform that publishes Protobuf (Confluent Protobuf wire format, schema in the
//! registry) is routed like any other: the subscriber receives the reading as Avro, equal
//! to what was sent.

use std::time::Duration;

use dho_schemas::model::*;
use dho_schemas::partition::partition_for;
use dho_schemas::{fixtures, proto, wire};
use dho_tests::scenario::{consent, subscribe};
use dho_tests::{PARTITIONS, Stack, wait_for};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_readings_are_delivered_as_avro() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let topics = stack.settings.topics();
    let patient = fixtures::patient(7);
    consent(&publisher, &patient, "c", &[fixtures::gp()]).await;
    subscribe(&publisher, &patient, &[("gp", fixtures::gp())]).await;

    // The topic's own subject holds the Avro schema at FULL_TRANSITIVE (a type change is
    // refused), so a Protobuf publisher registers under the record-name subject.
    let response: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{}/subjects/dho.v1.Measurement/versions",
            stack.settings.schema_registry_url
        ))
        .json(&serde_json::json!({"schemaType": "PROTOBUF", "schema": proto::PROTO_FILE}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema_id = response["id"].as_u64().unwrap() as u32;

    let reading = fixtures::blood_pressure(&patient, 152.0, 96.0, now_millis() - 60_000);
    let framed = wire::frame_protobuf(
        schema_id,
        proto::MEASUREMENT_INDEX,
        &proto::encode_measurement(&reading),
    );
    let raw: FutureProducer = stack.settings.client_config(&[]).unwrap().create().unwrap();
    let partition = partition_for(patient.key().as_bytes(), PARTITIONS);
    raw.send(
        FutureRecord::to(&topics.measurements())
            .key(patient.key())
            .payload(&framed)
            .partition(partition),
        Duration::from_secs(10),
    )
    .await
    .unwrap();

    let router = stack.spawn_router("router").await;
    let delivered: Vec<Delivery> = wait_for(&stack.settings, &topics.deliver("gp"), 1).await;
    router.stop().await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].measurement.as_ref(), Some(&reading));
}
