//! The consumer SDK against the real broker: a failing handler is retried and the delivery
//! handled exactly once, with the offset committed only after the handler succeeded; a
//! handler that never succeeds stops `run` under the Stop policy with nothing committed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dho_consumer::{Action, Error, FailurePolicy, Subscriber, SubscriberConfig};
use dho_tests::Stack;
use dho_tests::sdk::{DeliveryWriter, committed, measurement_delivery};

const SUBSCRIBER: &str = "gp";

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_a_failing_handler_is_retried_and_the_delivery_handled_once_then_committed() {
    let stack = Stack::start().await;
    let settings = stack.settings.clone();
    let topic = settings.topics().deliver(SUBSCRIBER);
    let writer = DeliveryWriter::new(&settings, SUBSCRIBER).await;
    let first = measurement_delivery(&settings, SUBSCRIBER, 1, 0);
    let written = writer.send(&first).await;

    let config = SubscriberConfig::new(settings.clone(), SUBSCRIBER)
        .group_id("sdk-retry")
        .retries(1000, Duration::from_millis(50));
    let subscriber = Subscriber::connect(config).await.unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let healthy = Arc::new(AtomicBool::new(false));
    let handled: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn({
        let (calls, healthy, handled) = (calls.clone(), healthy.clone(), handled.clone());
        subscriber.run(
            move |received| {
                calls.fetch_add(1, Ordering::SeqCst);
                let ok = healthy.load(Ordering::SeqCst);
                if ok {
                    *handled
                        .lock()
                        .unwrap()
                        .entry(received.delivery.delivery_id.clone())
                        .or_default() += 1;
                }
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err("the journal database is down")
                    }
                }
            },
            async {
                let _ = stopped.await;
            },
        )
    });

    // While the handler fails, the offset stays uncommitted.
    eventually("the handler failed three times", || {
        calls.load(Ordering::SeqCst) >= 3
    })
    .await;
    let group_offsets = committed(&settings, "sdk-retry", &topic);
    assert_eq!(
        group_offsets[written.partition as usize], None,
        "nothing committed while the handler fails"
    );
    assert!(handled.lock().unwrap().is_empty());

    // The dependency recovers: the delivery is handled once, then committed.
    healthy.store(true, Ordering::SeqCst);
    eventually("the delivery's offset is committed", || {
        committed(&settings, "sdk-retry", &topic)[written.partition as usize]
            == Some(written.offset + 1)
    })
    .await;
    assert_eq!(handled.lock().unwrap().get(&first.delivery_id), Some(&1));
    let failed_calls = calls.load(Ordering::SeqCst) - 1;
    assert!(failed_calls >= 3);

    // A replaying router re-sends it (same id, new offset) with a new one: only the new
    // one reaches the handler, and the duplicate is committed too.
    let again = writer.send(&first).await;
    let second = measurement_delivery(&settings, SUBSCRIBER, 1, 1);
    let after = writer.send(&second).await;
    eventually("the second delivery is handled and committed", || {
        committed(&settings, "sdk-retry", &topic)[after.partition as usize]
            == Some(after.offset + 1)
    })
    .await;
    assert!(after.offset > again.offset, "same patient, same partition");
    let handled = handled.lock().unwrap().clone();
    assert_eq!(handled.len(), 2, "{handled:?}");
    assert!(handled.values().all(|&n| n == 1), "each once: {handled:?}");
    assert_eq!(calls.load(Ordering::SeqCst), failed_calls + 2);

    let _ = stop.send(());
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_under_the_stop_policy_a_handler_that_keeps_failing_stops_run_uncommitted() {
    let stack = Stack::start().await;
    let settings = stack.settings.clone();
    let topic = settings.topics().deliver(SUBSCRIBER);
    let writer = DeliveryWriter::new(&settings, SUBSCRIBER).await;
    let delivery = measurement_delivery(&settings, SUBSCRIBER, 2, 0);
    let written = writer.send(&delivery).await;

    let config = SubscriberConfig::new(settings.clone(), SUBSCRIBER)
        .group_id("sdk-stop")
        .retries(3, Duration::from_millis(10))
        .failure_policy(FailurePolicy::Stop);
    let subscriber = Subscriber::connect(config.clone()).await.unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let error = tokio::time::timeout(
        Duration::from_secs(60),
        subscriber.run(
            move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Err("downstream refused") }
            },
            std::future::pending(),
        ),
    )
    .await
    .expect("run stops")
    .unwrap_err();
    match &error {
        Error::HandlerFailed {
            delivery_id,
            attempts,
            detail,
        } => {
            assert_eq!(delivery_id, &delivery.delivery_id);
            assert_eq!(*attempts, 3);
            assert!(detail.contains("downstream refused"));
        }
        other => panic!("expected HandlerFailed, got {other}"),
    }
    assert_eq!(error.action(), Action::Retry);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        committed(&settings, "sdk-stop", &topic)[written.partition as usize],
        None
    );

    // Run again: the same delivery comes back, because it was never committed.
    let mut subscriber = Subscriber::connect(config).await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(60), subscriber.next())
        .await
        .expect("the delivery comes again")
        .unwrap();
    assert_eq!(received.delivery.delivery_id, delivery.delivery_id);
}

/// Handles whatever arrives within `quiet`, committing each; returns the delivery ids.
async fn handle_all(subscriber: &mut Subscriber, quiet: Duration) -> Vec<String> {
    let mut ids = vec![];
    while let Ok(received) = tokio::time::timeout(quiet, subscriber.next()).await {
        let received = received.unwrap();
        subscriber.commit(&received).unwrap();
        ids.push(received.delivery.delivery_id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_the_default_store_drops_a_replayed_delivery_after_the_subscriber_restarted() {
    let stack = Stack::start().await;
    let settings = stack.settings.clone();
    let writer = DeliveryWriter::new(&settings, SUBSCRIBER).await;
    let first = measurement_delivery(&settings, SUBSCRIBER, 4, 0);
    let second = measurement_delivery(&settings, SUBSCRIBER, 4, 1);
    writer.send(&first).await;

    // The default: a SQLite file of the group's own in the state directory.
    let durable = SubscriberConfig::new(settings.clone(), SUBSCRIBER)
        .group_id(format!("sdk-durable-{}", uuid::Uuid::new_v4()));
    let file = durable.default_dedup_path();
    assert!(file.starts_with(dho_consumer::default_state_dir()));
    let in_memory = SubscriberConfig::new(settings.clone(), SUBSCRIBER)
        .group_id("sdk-memory")
        .dedup_in_memory(100_000);
    for config in [&durable, &in_memory] {
        let mut subscriber = Subscriber::connect(config.clone()).await.unwrap();
        let got = handle_all(&mut subscriber, Duration::from_secs(5)).await;
        assert_eq!(got, vec![first.delivery_id.clone()]);
    }

    // Both subscribers are gone; the router crashes and replays the first delivery (same
    // id, new offset) before routing the second.
    writer.send(&first).await;
    writer.send(&second).await;
    let mut subscriber = Subscriber::connect(durable).await.unwrap();
    assert_eq!(
        handle_all(&mut subscriber, Duration::from_secs(5)).await,
        vec![second.delivery_id.clone()],
        "the durable store remembers across the restart"
    );
    // The in-memory window forgot: this is what the durable store is for.
    let mut subscriber = Subscriber::connect(in_memory).await.unwrap();
    assert_eq!(
        handle_all(&mut subscriber, Duration::from_secs(5)).await,
        vec![first.delivery_id.clone(), second.delivery_id.clone()],
    );
    assert!(file.exists(), "the store is the file named");
    remove_store(&file);
}

fn remove_store(file: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = file.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
}

/// The default store forgets ids handled longer ago than the delivery topic keeps records:
/// such a delivery can no longer be read again, and the file must not grow without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_the_default_store_forgets_ids_older_than_the_delivery_topics_retention() {
    let stack = Stack::start().await;
    let settings = stack.settings.clone();
    let topic = settings.topics().deliver(SUBSCRIBER);
    // The topic keeps records for one minute.
    let spec = dho_kafka::TopicSpec::output(topic, settings.partitions, Some(60_000));
    dho_kafka::ensure_topics(&settings, &[spec]).await.unwrap();
    let writer = DeliveryWriter::new(&settings, SUBSCRIBER).await;
    let old = measurement_delivery(&settings, SUBSCRIBER, 5, 0);
    let recent = measurement_delivery(&settings, SUBSCRIBER, 5, 1);
    let config = SubscriberConfig::new(settings.clone(), SUBSCRIBER)
        .group_id(format!("sdk-pruned-{}", uuid::Uuid::new_v4()));
    let file = config.default_dedup_path();
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    {
        // Handled two minutes and ten seconds ago, respectively.
        let db = dho_consumer::rusqlite::Connection::open(&file).unwrap();
        dho_consumer::SqliteStore::create_table(&db).unwrap();
        let now = dho_schemas::model::now_millis();
        for (id, ago) in [(&old.delivery_id, 120_000), (&recent.delivery_id, 10_000)] {
            db.execute(
                "INSERT INTO dho_handled_deliveries VALUES (?1, ?2)",
                dho_consumer::rusqlite::params![id, now - ago],
            )
            .unwrap();
        }
    }
    writer.send(&old).await;
    writer.send(&recent).await;
    let mut subscriber = Subscriber::connect(config).await.unwrap();
    assert_eq!(
        handle_all(&mut subscriber, Duration::from_secs(5)).await,
        vec![old.delivery_id.clone()],
        "the id older than the retention was forgotten, the recent one still drops its repeat"
    );
    remove_store(&file);
}
