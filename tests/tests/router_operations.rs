//! `dho-router`, run as the program it is with `--metrics-listen`, serves its operations
//! endpoints: `/healthz` at once, `/readyz` 200 once it is connected and has loaded the state
//! of its partitions (503 naming what is missing before), and `/metrics` with the router's
//! names after traffic, including the librdkafka statistics gauges.

use std::time::Duration;

use dho_schemas::model::now_millis;
use dho_telemetry::names::router as names;
use dho_tests::scenario::{stream, two_subscribers, wait_all_routed};
use dho_tests::{RouterProcess, Stack};

const GROUP: &str = "router-ops";
const PATIENTS: u64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_healthz_readyz_and_metrics() {
    let stack = Stack::start().await;
    let dir = std::env::temp_dir().join(format!("dho-router-ops-{}", now_millis()));
    std::fs::create_dir_all(&dir).unwrap();
    let router = RouterProcess::start(&stack, GROUP, &[], "info", &dir.join("router.log")).await;

    // Alive from the start, whether or not it is ready.
    assert_eq!(router.get("/healthz").await, (200, "ok".into()));
    let (status, body) = router.get("/readyz").await;
    match status {
        200 => assert_eq!(body, "ready"),
        503 => assert!(
            body == "not ready: kafka" || body == "not ready: state",
            "503 names the checks not ready: {body}"
        ),
        other => panic!("/readyz answered {other}: {body}"),
    }

    let publisher = stack.publisher().await;
    two_subscribers(&publisher, PATIENTS).await;
    let published = stream(publisher, PATIENTS, 30, Duration::from_millis(5)).await;
    wait_all_routed(&stack.settings, GROUP, &published).await;
    assert_eq!(
        router.wait_ok("/readyz", Duration::from_secs(30)).await,
        "ready"
    );
    assert_eq!(router.get("/healthz").await, (200, "ok".into()));

    // Counters after traffic; the statistics gauges once librdkafka has reported (5 s).
    let measurements = stack.settings.topics().measurements();
    let lag = format!(
        r#"{}{{group="{GROUP}",topic="{measurements}"}}"#,
        names::CONSUMER_LAG
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (status, text) = router.get("/metrics").await;
        assert_eq!(status, 200);
        let complete = text.contains(&lag)
            && text.contains(names::PRODUCER_QUEUE_DEPTH)
            && text.contains(&format!(r#"{}{{client="producer"}}"#, names::BROKER_RTT));
        if complete || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for name in [
        names::EVENTS_IN,
        names::DELIVERIES,
        names::BATCHES,
        names::ROUTING_LATENCY,
        names::OWNED_PARTITIONS,
        names::CONSUMER_LAG,
        names::BROKER_RTT,
        names::PRODUCER_QUEUE_DEPTH,
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    assert!(
        text.contains(&format!(
            r#"{}{{category="measurement"}} {}"#,
            names::DELIVERIES,
            // Home care for everyone, the GP for even patients: 30 readings, 6 patients.
            30 + 15
        )),
        "{text}"
    );
    assert!(
        text.contains(&lag),
        "lag per group and topic missing:\n{text}"
    );
    assert!(
        text.contains(&format!("{}_bucket", names::ROUTING_LATENCY)),
        "latencies are histograms:\n{text}"
    );
    assert!(
        text.contains(&format!("# HELP {}", names::DELIVERIES)),
        "{text}"
    );

    router.terminate().await;
}

/// Ready means ready without traffic: an idle router is ready once it has joined the group
/// and loaded its partitions' state, not at its first record or its first no-data check
/// (an hour away here). Both for the first instance and for one that joins it: the
/// second's assignment comes after a rebalance, well after its loop started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_router_is_ready_once_its_partitions_state_is_loaded() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    two_subscribers(&publisher, PATIENTS).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.toml");
    let s = &stack.settings;
    std::fs::write(
        &config,
        format!(
            "silence_check_interval = 3600\n[kafka]\nbootstrap_servers = \"{}\"\n\
             schema_registry_url = \"{}\"\n",
            s.bootstrap_servers, s.schema_registry_url
        ),
    )
    .unwrap();
    let mut routers = vec![];
    for instance in ["first", "second"] {
        let router = RouterProcess::start(
            &stack,
            "router-idle",
            &["--config", config.to_str().unwrap()],
            "warn",
            &dir.path().join(format!("{instance}.log")),
        )
        .await;
        // Joining takes a few seconds (a rebalance for the second); the no-data check
        // that used to make an idle instance ready comes after an hour.
        router.wait_ok("/readyz", Duration::from_secs(45)).await;
        routers.push(router);
    }
    for router in routers {
        router.terminate().await;
    }
}
