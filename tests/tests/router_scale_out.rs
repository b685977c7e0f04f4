//! Two router instances in one consumer group share the partitions. A second instance
//! joins during traffic and the first leaves during traffic: each rebalance hands the
//! partitions, and their consent state, to the other instance with nothing lost, nothing
//! delivered twice after de-duplication, and nothing to an unentitled subscriber.

use std::time::Duration;

use dho_tests::Stack;
use dho_tests::scenario::{assert_exactly_entitled, stream, two_subscribers, wait_all_routed};

const GROUP: &str = "router-scale";
const PATIENTS: u64 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_joining_and_leaving_during_traffic_lose_nothing() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    two_subscribers(&publisher, PATIENTS).await;

    let first = stack.spawn_router(GROUP).await;
    let traffic = tokio::spawn(stream(
        publisher.clone(),
        PATIENTS,
        500,
        Duration::from_millis(5),
    ));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let second = stack.spawn_router(GROUP).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let first = first.stop().await;
    let published = traffic.await.unwrap();
    wait_all_routed(&stack.settings, GROUP, &published).await;
    let second = second.stop().await;
    assert!(
        first.events > 0 && second.events > 0,
        "both instances routed: {first:?} {second:?}"
    );
    let repeats = assert_exactly_entitled(&stack.settings, &published).await;
    eprintln!("the SDK's de-duplication would drop {repeats} repeated deliveries");
}
