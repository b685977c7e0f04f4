//! Backfill: a newly connected system starting from a point in time receives exactly the
//! deliveries written after it, and a restarted one resumes where it committed.

use std::collections::BTreeSet;
use std::time::Duration;

use dho_consumer::{StartFrom, Subscriber, SubscriberConfig};
use dho_schemas::model::now_millis;
use dho_tests::Stack;
use dho_tests::sdk::{DeliveryWriter, measurement_delivery};

const SUBSCRIBER: &str = "lung-clinic";

/// Receives until nothing more arrives for `quiet`, committing each delivery.
async fn drain(subscriber: &mut Subscriber, quiet: Duration) -> Vec<String> {
    let mut ids = vec![];
    while let Ok(received) = tokio::time::timeout(quiet, subscriber.next()).await {
        let received = received.unwrap();
        subscriber.commit(&received).unwrap();
        ids.push(received.delivery.delivery_id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_backfill_from_a_timestamp_returns_exactly_the_deliveries_after_it() {
    let stack = Stack::start().await;
    let settings = stack.settings.clone();
    let writer = DeliveryWriter::new(&settings, SUBSCRIBER).await;
    // Several patients, so every partition has records before and after the time.
    let mut offset = 0;
    let mut batch = |n: i64| {
        let out: Vec<_> = (0..n)
            .map(|i| measurement_delivery(&settings, SUBSCRIBER, (i % 6) as u64 + 1, offset + i))
            .collect();
        offset += n;
        out
    };
    let before = batch(12);
    let after = batch(12);
    let later = batch(4);
    for d in &before {
        writer.send(d).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let from = now_millis();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for d in &after {
        writer.send(d).await;
    }

    let config = SubscriberConfig::new(settings.clone(), SUBSCRIBER)
        .group_id("sdk-backfill")
        .start_from(StartFrom::Timestamp(from));
    let mut subscriber = Subscriber::connect(config.clone()).await.unwrap();
    let got = drain(&mut subscriber, Duration::from_secs(8)).await;
    let expected: BTreeSet<_> = after.iter().map(|d| d.delivery_id.clone()).collect();
    assert_eq!(got.len(), after.len(), "each once: {got:?}");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected);
    drop(subscriber);

    // The group now has offsets: a restart resumes there, it does not backfill again.
    for d in &later {
        writer.send(d).await;
    }
    let mut subscriber = Subscriber::connect(config).await.unwrap();
    let got: BTreeSet<_> = drain(&mut subscriber, Duration::from_secs(8))
        .await
        .into_iter()
        .collect();
    let expected: BTreeSet<_> = later.iter().map(|d| d.delivery_id.clone()).collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_latest_skips_what_was_there_and_earliest_reads_everything() {
    let stack = Stack::start().await;
    let settings = stack.settings.clone();
    let writer = DeliveryWriter::new(&settings, SUBSCRIBER).await;
    let old = measurement_delivery(&settings, SUBSCRIBER, 1, 0);
    writer.send(&old).await;

    let mut latest = Subscriber::connect(
        SubscriberConfig::new(settings.clone(), SUBSCRIBER)
            .group_id("sdk-latest")
            .start_from(StartFrom::Latest),
    )
    .await
    .unwrap();
    // Nothing old comes; the group has its (end) position once it is assigned.
    assert!(drain(&mut latest, Duration::from_secs(5)).await.is_empty());
    let new = measurement_delivery(&settings, SUBSCRIBER, 1, 1);
    writer.send(&new).await;
    assert_eq!(
        drain(&mut latest, Duration::from_secs(5)).await,
        vec![new.delivery_id.clone()]
    );

    let mut earliest = Subscriber::connect(
        SubscriberConfig::new(settings.clone(), SUBSCRIBER).group_id("sdk-earliest"),
    )
    .await
    .unwrap();
    assert_eq!(
        drain(&mut earliest, Duration::from_secs(5)).await,
        vec![old.delivery_id, new.delivery_id]
    );
}
