//! Durability: the state is rebuilt from the topic after a restart.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::common::{Env, avro_record};

const A_INT: &str = r#"{"name":"a","type":"int"}"#;
const B_DEFAULT: &str = r#"{"name":"b","type":"string","default":""}"#;

#[tokio::test]
async fn ids_versions_configs_and_deletes_survive_a_restart() {
    let env = Env::start().await;
    let v1 = avro_record(A_INT);
    let v2 = avro_record(&format!("{A_INT},{B_DEFAULT}"));
    let gone = avro_record(r#"{"name":"gone","type":"long"}"#);
    assert_eq!(env.register("a-value", &v1).await, 1);
    assert_eq!(env.register("a-value", &v2).await, 2);
    assert_eq!(env.register("b-value", &v1).await, 1);
    assert_eq!(env.register("c-value", &gone).await, 3);
    env.put(
        "/config/a-value",
        json!({ "compatibility": "FULL_TRANSITIVE" }),
    )
    .await
    .ok();
    env.put("/config", json!({ "compatibility": "FORWARD" }))
        .await
        .ok();
    env.put("/mode/b-value", json!({ "mode": "READONLY" }))
        .await
        .ok();
    env.delete("/subjects/a-value/versions/1").await.ok();
    env.delete("/subjects/c-value").await.ok();
    env.delete("/subjects/c-value?permanent=true").await.ok();

    let paths = [
        "/subjects",
        "/subjects?deleted=true",
        "/subjects/a-value/versions",
        "/subjects/a-value/versions?deleted=true",
        "/subjects/a-value/versions/latest",
        "/subjects/a-value/versions/1?deleted=true",
        "/subjects/b-value/versions/1",
        "/schemas/ids/1",
        "/schemas/ids/2",
        "/schemas/ids/1/versions?deleted=true",
        "/config",
        "/config/a-value",
        "/mode/b-value",
    ];
    let mut before = Vec::new();
    for path in paths {
        before.push(env.get(path).await.ok().clone());
    }
    env.get("/schemas/ids/3").await.error(40403);

    let env = env.restart().await;
    for (path, expected) in paths.iter().zip(&before) {
        assert_eq!(env.get(path).await.ok(), expected, "{path} after restart");
    }
    env.get("/schemas/ids/3").await.error(40403);
    env.get("/subjects/c-value/versions?deleted=true")
        .await
        .error(40401);
    // Re-registering known schemas changes nothing; a new one gets max + 1 (3 was used).
    assert_eq!(env.register("a-value", &v2).await, 2);
    let v3 = avro_record(&format!(
        r#"{A_INT},{B_DEFAULT},{{"name":"c","type":"long","default":0}}"#
    ));
    assert_eq!(env.register("a-value", &v3).await, 4);
    assert_eq!(
        env.get("/subjects/a-value/versions?deleted=true")
            .await
            .ok(),
        &json!([1, 2, 3])
    );
    // The subject config still applies: a FULL_TRANSITIVE breaking change is refused.
    env.post(
        "/subjects/a-value/versions",
        json!({ "schema": avro_record(B_DEFAULT) }),
    )
    .await
    .error(409);

    // A second restart sees the writes made after the first one.
    let env = env.restart().await;
    assert_eq!(
        env.get("/subjects/a-value/versions/latest").await.ok()["id"],
        4
    );
    assert_eq!(
        env.register("d-value", &avro_record(r#"{"name":"d","type":"int"}"#))
            .await,
        5
    );
}

#[tokio::test]
async fn the_topic_holds_confluent_records() {
    let env = Env::start().await;
    env.register("t-value", &avro_record(A_INT)).await;
    env.put("/config/t-value", json!({ "compatibility": "FULL" }))
        .await
        .ok();
    env.delete("/subjects/t-value").await.ok();

    let bootstrap = env.broker.bootstrap_servers();
    let topic = env.topic.clone();
    let records = tokio::task::spawn_blocking(move || read_topic(&bootstrap, &topic))
        .await
        .unwrap();
    let (partitions, records) = records;
    assert_eq!(partitions, 1, "the schemas topic has one partition");
    let keys: Vec<Value> = records
        .iter()
        .map(|(k, _)| serde_json::from_str(k).unwrap())
        .collect();
    assert_eq!(
        keys[0],
        json!({"keytype": "SCHEMA", "subject": "t-value", "version": 1, "magic": 1})
    );
    let first: Value = serde_json::from_str(records[0].1.as_deref().unwrap()).unwrap();
    assert_eq!(first["id"], 1);
    assert_eq!(first["deleted"], false);
    assert!(keys.contains(&json!({"keytype": "CONFIG", "subject": "t-value", "magic": 0})));
    assert!(keys.contains(&json!({"keytype": "DELETE_SUBJECT", "subject": "t-value", "magic": 0})));
    let soft_deleted = records
        .iter()
        .rev()
        .find(|(k, _)| k.contains("\"SCHEMA\""))
        .and_then(|(_, v)| v.as_deref())
        .map(|v| serde_json::from_str::<Value>(v).unwrap())
        .unwrap();
    assert_eq!(soft_deleted["deleted"], true);
}

/// Reads every record of `topic` as (key, value) strings; also returns the partition count.
fn read_topic(bootstrap: &str, topic: &str) -> (usize, Vec<(String, Option<String>)>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (records.len() as i64) < high {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out reading {topic}"
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
            let value = message
                .payload()
                .map(|v| String::from_utf8(v.to_vec()).unwrap());
            records.push((key, value));
        }
    }
    (partitions, records)
}
