//! The Park policy: a delivery the handler keeps failing, and a record that is not a
//! delivery at all, go to the subscriber's own `.dlq` topic with their original bytes and
//! error headers; the subscriber commits them and goes on with the rest.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dho_consumer::{FailurePolicy, Subscriber, SubscriberConfig, headers};
use dho_tests::sdk::{DeliveryWriter, committed, high_watermarks, measurement_delivery};
use dho_tests::{Stack, read_topic};

const SUBSCRIBER: &str = "bergen-home-care";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_park_puts_the_failing_delivery_on_the_dlq_with_its_bytes_and_goes_on() {
    let stack = Stack::start().await;
    let settings = stack.settings.clone();
    let topic = settings.topics().deliver(SUBSCRIBER);
    let dlq = format!("{topic}.dlq");
    let writer = DeliveryWriter::new(&settings, SUBSCRIBER).await;
    let good = measurement_delivery(&settings, SUBSCRIBER, 3, 0);
    let poison = measurement_delivery(&settings, SUBSCRIBER, 3, 1);
    let after = measurement_delivery(&settings, SUBSCRIBER, 3, 2);
    writer.send(&good).await;
    let poison_written = writer.send(&poison).await;
    let garbage_key = dho_schemas::fixtures::patient(3);
    let garbage = writer
        .send_raw(garbage_key.key(), b"not a delivery".to_vec())
        .await;
    writer.send(&after).await;

    let config = SubscriberConfig::new(settings.clone(), SUBSCRIBER)
        .group_id("sdk-park")
        .retries(3, Duration::from_millis(10))
        .failure_policy(FailurePolicy::Park);
    let subscriber = Subscriber::connect(config).await.unwrap();
    let handled: Arc<Mutex<Vec<String>>> = Arc::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let poison_id = poison.delivery_id.clone();
    let run = tokio::spawn({
        let handled = handled.clone();
        subscriber.run(
            move |received| {
                let id = received.delivery.delivery_id.clone();
                let fails = id == poison_id;
                if !fails {
                    handled.lock().unwrap().push(id);
                }
                async move {
                    if fails {
                        Err("the care plan references an unknown ward")
                    } else {
                        Ok(())
                    }
                }
            },
            async {
                let _ = stopped.await;
            },
        )
    });

    // Everything is committed: the partition's high watermark is reached.
    let hw = high_watermarks(&settings, &topic);
    let partition = poison_written.partition as usize;
    assert_eq!(
        hw[partition], 4,
        "all four records share the patient's partition"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&settings, "sdk-park", &topic)[partition] != Some(4) {
        assert!(Instant::now() < deadline, "the subscriber did not go on");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        *handled.lock().unwrap(),
        vec![good.delivery_id.clone(), after.delivery_id.clone()],
        "the rest is handled, in order"
    );

    let parked = read_topic(&settings, &dlq);
    assert_eq!(
        parked.len(),
        2,
        "the failing delivery and the undecodable record"
    );
    let failed = parked
        .iter()
        .find(|r| r.headers.get(headers::DELIVERY_ID) == Some(&poison.delivery_id))
        .expect("the failing delivery is parked");
    assert_eq!(failed.value.as_deref(), Some(&poison_written.bytes[..]));
    assert_eq!(failed.key.as_deref(), Some(poison.patient.key()));
    assert_eq!(failed.headers[headers::REASON], "handler_failed");
    assert!(failed.headers[headers::DETAIL].contains("unknown ward"));
    assert_eq!(failed.headers[headers::ATTEMPTS], "3");
    assert_eq!(failed.headers[headers::SOURCE_TOPIC], topic);
    assert_eq!(
        failed.headers[headers::SOURCE_PARTITION],
        poison_written.partition.to_string()
    );
    assert_eq!(
        failed.headers[headers::SOURCE_OFFSET],
        poison_written.offset.to_string()
    );
    assert_eq!(failed.headers[headers::COMPONENT], "consumer-sdk");

    let undecodable = parked
        .iter()
        .find(|r| r.headers[headers::REASON] == "undecodable")
        .expect("the undecodable record is parked");
    assert_eq!(undecodable.value.as_deref(), Some(&b"not a delivery"[..]));
    assert_eq!(
        undecodable.headers[headers::SOURCE_OFFSET],
        garbage.offset.to_string()
    );
    assert!(!undecodable.headers.contains_key(headers::DELIVERY_ID));

    // A replaying router re-sends the parked delivery: it is a duplicate, not parked again.
    writer.send(&poison).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&settings, "sdk-park", &topic)[partition] != Some(5) {
        assert!(Instant::now() < deadline, "the duplicate was not committed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(read_topic(&settings, &dlq).len(), 2);
    let ids: BTreeSet<_> = handled.lock().unwrap().iter().cloned().collect();
    assert!(!ids.contains(&poison.delivery_id));

    let _ = stop.send(());
    run.await.unwrap().unwrap();
}
