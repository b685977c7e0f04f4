//! Co-partitioning rests on every writer agreeing where a patient's records go: the hub's
//! own murmur2 (used for explicit partitions) must match librdkafka's `murmur2_random`,
//! which matches Java's default partitioner.

use std::time::Duration;

use dho_schemas::fixtures;
use dho_schemas::partition::partition_for;
use dho_tests::Stack;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_murmur2_agrees_with_the_hubs_partitioning() {
    let stack = Stack::start().await;
    let topic = format!("{}.partitioning", stack.settings.topic_prefix);
    let partitions = 7;
    dho_kafka::ensure_topics(
        &stack.settings,
        &[dho_kafka::TopicSpec::output(
            topic.clone(),
            partitions,
            None,
        )],
    )
    .await
    .unwrap();
    let producer: FutureProducer = stack
        .settings
        .client_config(&[("partitioner", "murmur2_random")])
        .unwrap()
        .create()
        .unwrap();
    for seed in 0..200 {
        let key = fixtures::patient(seed).value;
        let partition = producer
            .send(
                FutureRecord::to(&topic).key(&key).payload("x"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(
            partition.partition,
            partition_for(key.as_bytes(), partitions),
            "key #{seed}"
        );
    }
}
