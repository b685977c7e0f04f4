//! Two router instances in one consumer group share the partitions. A second instance
//! joins during traffic and the first leaves during traffic: each rebalance hands the
//! partitions, and their consent state, to the other instance with nothing lost, nothing
//! delivered twice after de-duplication, and nothing to an unentitled subscriber.

use std::time::Duration;

use dho_tests::scenario::{assert_exactly_entitled, stream, two_subscribers, wait_all_routed};
use dho_tests::{PARTITIONS, Stack};

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

/// An instance that loses its partitions and gets some back keeps what it fetches after
/// they came back: those records are its own again and its consumer position has moved
/// past them, so dropping them would skip them for good (the batch lost after a broker
/// restart took this path). While readings trickle in, the first instance waits in its
/// consumer when a second one joins or leaves, and that one wait serves the revocation, the
/// new assignment and the first record after it. The second instance joins and leaves four
/// times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_handed_back_while_waiting_for_a_record_lose_none_of_their_records() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    two_subscribers(&publisher, PATIENTS).await;
    let group = "router-handed-back";
    let first = stack.spawn_router(group).await;
    let traffic = tokio::spawn(stream(
        publisher.clone(),
        PATIENTS,
        2500,
        Duration::from_millis(2),
    ));
    let mut second_routed = 0;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let second = stack.spawn_router(group).await;
        // Until the group has handed it partitions (and so taken them from the first).
        let joined = std::time::Instant::now();
        while second.finished() == 0 && joined.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        second_routed += second.stop().await.events;
    }
    let published = traffic.await.unwrap();
    wait_all_routed(&stack.settings, group, &published).await;
    let first = first.stop().await;
    assert!(
        first.events > 0 && second_routed > 0,
        "both instances routed: {first:?}, the second {second_routed} events"
    );
    let repeats = assert_exactly_entitled(&stack.settings, &published).await;
    eprintln!("the SDK's de-duplication would drop {repeats} repeated deliveries");
}

/// Static membership: an instance killed and restarted with the same `group_instance_id`
/// takes its partitions back at once. Its session here is two minutes: without static
/// membership the group would wait that long for the dead member before a restarted one
/// could route (the wait below gives up after one), and with it nothing waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarted_takes_its_partitions_back_without_waiting_out_its_session() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    two_subscribers(&publisher, PATIENTS).await;
    let dir = tempfile::tempdir().unwrap();
    let group = "router-static";
    let args = [
        "--set",
        "group_instance_id=router-static-0",
        "--set",
        "session_timeout=120",
    ];
    let (first_log, restarted_log) = (
        dir.path().join("first.log"),
        dir.path().join("restarted.log"),
    );
    let first = dho_tests::RouterProcess::start(&stack, group, &args, "warn", &first_log).await;
    let before = stream(publisher.clone(), PATIENTS, 24, Duration::ZERO).await;
    wait_all_routed(&stack.settings, group, &before).await;
    first.signal("KILL");
    let restarted =
        dho_tests::RouterProcess::start(&stack, group, &args, "warn", &restarted_log).await;
    let after = stream(publisher.clone(), PATIENTS, 24, Duration::ZERO).await;
    wait_all_routed(&stack.settings, group, &after).await;
    restarted.terminate().await;
    let all: Vec<_> = before.into_iter().chain(after).collect();
    assert_exactly_entitled(&stack.settings, &all).await;
}

/// Cooperative assignment: a rebalance moves only the partitions that change owner. The
/// first instance loads each partition's state once. A second joins and takes some of
/// them: the first keeps the rest, their state and their routing, without loading them
/// again (eager assignment revoked and reloaded every partition on every rebalance). When
/// the second leaves, only its partitions move back and are loaded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_reloads_only_the_partitions_that_move() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    two_subscribers(&publisher, PATIENTS).await;
    let group = "router-incremental";
    let first = stack.spawn_router(group).await;
    let before = stream(publisher.clone(), PATIENTS, 48, Duration::ZERO).await;
    wait_all_routed(&stack.settings, group, &before).await;

    let traffic = tokio::spawn(stream(
        publisher.clone(),
        PATIENTS,
        400,
        Duration::from_millis(5),
    ));
    let second = stack.spawn_router(group).await;
    let joined = std::time::Instant::now();
    while second.finished() == 0 {
        assert!(
            joined.elapsed() < Duration::from_secs(30),
            "the second instance was given no partition with traffic within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = traffic.await.unwrap();
    wait_all_routed(&stack.settings, group, &during).await;
    let second = second.stop().await;
    let after = stream(publisher.clone(), PATIENTS, 48, Duration::ZERO).await;
    wait_all_routed(&stack.settings, group, &after).await;
    let first = first.stop().await;

    let moved = second.partitions_loaded;
    assert!(
        (1..PARTITIONS as u64).contains(&moved),
        "the second instance loaded {moved} partitions, of {PARTITIONS}: {second:?}"
    );
    assert_eq!(
        first.partitions_loaded,
        PARTITIONS as u64 + moved,
        "the first instance loads every partition once, and again only the {moved} that came \
         back to it: {first:?}"
    );
    let all: Vec<_> = before.into_iter().chain(during).chain(after).collect();
    assert_exactly_entitled(&stack.settings, &all).await;
}

/// Two live instances given one `group_instance_id` (a misconfiguration): the broker fences
/// the older one, which stops with an error saying so instead of waiting for ever (or
/// routing on, under traffic), and the newer one routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_instances_with_one_group_instance_id_fence_the_older_which_stops_saying_why() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    two_subscribers(&publisher, PATIENTS).await;
    let dir = tempfile::tempdir().unwrap();
    let group = "router-static-duplicate";
    let args = ["--set", "group_instance_id=router-duplicate"];
    let (older_log, newer_log) = (dir.path().join("older.log"), dir.path().join("newer.log"));
    let mut older = dho_tests::RouterProcess::start(&stack, group, &args, "warn", &older_log).await;
    older.wait_ok("/readyz", Duration::from_secs(60)).await;
    // Busy when fenced: librdkafka reports the fatal error once, to whichever read is first.
    let traffic = tokio::spawn(stream(
        publisher.clone(),
        PATIENTS,
        300,
        Duration::from_millis(5),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let newer = dho_tests::RouterProcess::start(&stack, group, &args, "warn", &newer_log).await;
    let exit = tokio::time::timeout(Duration::from_secs(60), older.child.wait())
        .await
        .expect("the fenced instance stops instead of waiting for ever")
        .unwrap();
    assert!(!exit.success(), "the fenced instance exited with {exit}");
    let log = std::fs::read_to_string(&older_log).unwrap();
    assert!(
        log.contains("group_instance_id"),
        "the fenced instance says why: {log}"
    );
    let published = traffic.await.unwrap();
    wait_all_routed(&stack.settings, group, &published).await;
    newer.terminate().await;
    assert_exactly_entitled(&stack.settings, &published).await;
}
