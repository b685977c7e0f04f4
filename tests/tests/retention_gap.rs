//! Retention gaps are outcomes: when a group's committed offset is below the log start
//! (retention deleted records it never read), the router and the SDK record the gap, with
//! its partition and offsets, count it and log it, instead of starting at the log start
//! without a word. Retention is played by DeleteRecords, which moves the log start as
//! retention does.

use std::time::Duration;

use dho_consumer::{Subscriber, SubscriberConfig};
use dho_kafka::KafkaSettings;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::scenario::{consent, subscribe};
use dho_tests::{RouterProcess, Stack, read_topic, wait_routed};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// Commits `next` for `group` on one partition, as a member of the group that had read
/// up to there and then stopped.
fn commit_for(settings: &KafkaSettings, group: &str, topic: &str, partition: i32, next: i64) {
    let consumer: BaseConsumer = settings
        .client_config(&[("group.id", group), ("enable.auto.commit", "false")])
        .unwrap()
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(next))
        .unwrap();
    consumer.assign(&list).unwrap();
    consumer.commit(&list, CommitMode::Sync).unwrap();
}

/// Deletes the records of one partition before `before`, as retention would.
async fn delete_before(settings: &KafkaSettings, topic: &str, partition: i32, before: i64) {
    let admin: AdminClient<DefaultClientContext> =
        settings.client_config(&[]).unwrap().create().unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(before))
        .unwrap();
    let result = admin
        .delete_records(
            &list,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .unwrap();
    let element = &result.elements()[0];
    assert_eq!(element.error(), Ok(()), "records deleted");
    assert_eq!(
        element.offset(),
        Offset::Offset(before),
        "the new log start"
    );
}

/// The value of the metric line that starts with `name` (labels ignored), 0 if absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_retention_deleted_before_the_router_read_them_are_a_counted_logged_gap() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let topics = stack.settings.topics();
    let patient = fixtures::patient(4);
    consent(&publisher, &patient, "c-gp", &[fixtures::gp()]).await;
    subscribe(&publisher, &patient, &[("gp", fixtures::gp())]).await;
    let at = now_millis() - 60_000;
    let mut published = vec![];
    for i in 0..10 {
        let m = fixtures::spo2(&patient, 90.0 + f64::from(i), at);
        let receipt = publisher.publish_measurement(&m).await.unwrap();
        published.push((m.event_id, receipt));
    }
    let partition = published[0].1.partition;
    let first = published[0].1.offset;
    let group = "router-gap";
    // The group had read nothing of them; retention then took the first six.
    commit_for(
        &stack.settings,
        group,
        &topics.measurements(),
        partition,
        first,
    );
    delete_before(
        &stack.settings,
        &topics.measurements(),
        partition,
        first + 6,
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("router.log");
    let router = RouterProcess::start(&stack, group, &[], "warn", &log).await;
    let last = &published.last().unwrap().1;
    wait_routed(
        &stack.settings,
        group,
        &last.topic,
        last.partition,
        last.offset,
    )
    .await;
    let metrics = router.wait_ok("/metrics", Duration::from_secs(10)).await;
    router.terminate().await;

    let delivered: Vec<Delivery> =
        dho_tests::read_decoded(&stack.settings, &topics.deliver("gp")).await;
    let ids: Vec<&str> = delivered
        .iter()
        .map(|d| d.measurement.as_ref().unwrap().event_id.as_str())
        .collect();
    let kept: Vec<&str> = published[6..].iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, kept, "what retention left is routed");
    assert_eq!(metric(&metrics, "dho_router_retention_gaps_total"), 1.0);
    assert_eq!(
        metric(&metrics, "dho_router_retention_lost_records_total"),
        6.0
    );
    let log = std::fs::read_to_string(&log).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("retention gap"))
        .unwrap_or_else(|| panic!("no retention-gap line in the router's log:\n{log}"));
    for field in [
        format!("partition={partition}"),
        format!("first_offset={first}"),
        format!("last_offset={}", first + 5),
        "records=6".to_string(),
    ] {
        assert!(line.contains(&field), "{field} in: {line}");
    }
    assert!(!line.contains(&patient.value), "no identifier in: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_retention_deleted_before_the_subscriber_read_them_are_a_counted_gap() {
    let recorder = dho_telemetry::install_recorder().unwrap();
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let topics = stack.settings.topics();
    let patient = fixtures::patient(4);
    consent(&publisher, &patient, "c-gp", &[fixtures::gp()]).await;
    subscribe(&publisher, &patient, &[("gp", fixtures::gp())]).await;
    let at = now_millis() - 60_000;
    let mut last = None;
    for i in 0..6 {
        let m = fixtures::spo2(&patient, 90.0 + f64::from(i), at);
        last = Some(publisher.publish_measurement(&m).await.unwrap());
    }
    let router = stack.spawn_router("router").await;
    let last = last.unwrap();
    wait_routed(
        &stack.settings,
        "router",
        &last.topic,
        last.partition,
        last.offset,
    )
    .await;
    router.stop().await;
    let delivered = read_topic(&stack.settings, &topics.deliver("gp"));
    assert_eq!(delivered.len(), 6);
    let (partition, first) = (delivered[0].partition, delivered[0].offset);

    let group = "sdk-gap";
    commit_for(
        &stack.settings,
        group,
        &topics.deliver("gp"),
        partition,
        first,
    );
    delete_before(&stack.settings, &topics.deliver("gp"), partition, first + 4).await;
    let mut subscriber =
        Subscriber::connect(SubscriberConfig::new(stack.settings.clone(), "gp").group_id(group))
            .await
            .unwrap();
    let received = tokio::time::timeout(Duration::from_secs(60), subscriber.next())
        .await
        .expect("a delivery retention left")
        .unwrap();
    assert_eq!(
        received.offset,
        first + 4,
        "the first delivery retention left"
    );
    let metrics = recorder.render();
    assert_eq!(metric(&metrics, "dho_consumer_retention_gaps_total"), 1.0);
    assert_eq!(
        metric(&metrics, "dho_consumer_retention_lost_records_total"),
        4.0
    );
}
