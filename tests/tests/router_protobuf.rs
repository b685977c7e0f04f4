//! A platform that publishes Protobuf (Confluent Protobuf wire format, schema in the
//! registry) is routed like any other: the subscriber receives the reading as Avro, equal
//! to what was sent.

use dho_schemas::model::*;
use dho_schemas::{fixtures, proto, wire};
use dho_tests::scenario::{consent, subscribe};
use dho_tests::{Stack, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_readings_are_delivered_as_avro() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let topics = stack.settings.topics();
    let patient = fixtures::patient(7);
    consent(&publisher, &patient, "c", &[fixtures::gp()]).await;
    subscribe(&publisher, &patient, &[("gp", fixtures::gp())]).await;

    // A platform whose pipeline speaks Protobuf: the library registers the schema under
    // the record-name subject and frames records in the Confluent Protobuf format.
    let protobuf = stack.publisher().await.with_protobuf().await.unwrap();
    let reading = fixtures::blood_pressure(&patient, 152.0, 96.0, now_millis() - 60_000);
    let receipt = protobuf.publish_measurement(&reading).await.unwrap();
    let raw = dho_tests::read_topic(&stack.settings, &topics.measurements());
    let record = raw
        .iter()
        .find(|r| r.offset == receipt.offset && r.partition == receipt.partition)
        .unwrap();
    let frame =
        wire::unframe_protobuf(record.value.as_deref().unwrap()).expect("Protobuf on the wire");
    assert_eq!(frame.message_index, proto::MEASUREMENT_INDEX);

    let router = stack.spawn_router("router").await;
    let delivered: Vec<Delivery> = wait_for(&stack.settings, &topics.deliver("gp"), 1).await;
    router.stop().await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].measurement.as_ref(), Some(&reading));
}
