//! Identifiers from the synthetic test populations are refused unless a deployment says
//! otherwise: a gateway and a router configured with nothing about them refuse a synthetic
//! patient's reading (422 naming the reason; a dead letter naming it), while the same
//! reading passes where the configuration allows it, as the demo's and the tests' do.

use dho_gateway::GatewayConfig;
use dho_router::RouterConfig;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_schemas::topics::headers;
use dho_tests::ingest::{Http, PLATFORM_TOKEN, gateway_config, start_gateway};
use dho_tests::scenario::{consent, subscribe};
use dho_tests::{Stack, read_topic, wait_routed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_identifiers_are_refused_unless_the_configuration_allows_them() {
    let stack = Stack::start().await;
    let defaults = GatewayConfig::new(stack.settings.clone());
    assert!(!defaults.allow_synthetic_identifiers);
    assert!(!RouterConfig::new(stack.settings.clone()).allow_synthetic_identifiers);

    let patient = fixtures::patient(3);
    let reading =
        serde_json::to_value(fixtures::spo2(&patient, 95.0, now_millis() - 60_000)).unwrap();
    // The test credentials, with the default about synthetic identities.
    let mut refusing = gateway_config(&stack.settings);
    refusing.allow_synthetic_identifiers = defaults.allow_synthetic_identifiers;
    let gateway = start_gateway(refusing).await;
    let refused = Http::new(gateway.url())
        .post("/measurements", Some(PLATFORM_TOKEN), &reading)
        .await;
    assert_eq!(refused.status, 422, "{}", refused.json);
    assert!(
        refused.json.to_string().contains("synthetic_identifier"),
        "{}",
        refused.json
    );
    let allowing = start_gateway(gateway_config(&stack.settings)).await;
    let accepted = Http::new(allowing.url())
        .post("/measurements", Some(PLATFORM_TOKEN), &reading)
        .await;
    assert_eq!(accepted.status, 201, "{}", accepted.json);

    // A platform writing to Kafka directly meets the router's refusal.
    let publisher = stack.publisher().await;
    consent(&publisher, &patient, "c-gp", &[fixtures::gp()]).await;
    subscribe(&publisher, &patient, &[("gp", fixtures::gp())]).await;
    let receipt = publisher
        .publish_measurement(&fixtures::spo2(&patient, 96.0, now_millis() - 60_000))
        .await
        .unwrap();
    let mut config = stack.router_config("router-defaults");
    config.allow_synthetic_identifiers =
        RouterConfig::new(stack.settings.clone()).allow_synthetic_identifiers;
    let router = stack.spawn_router_with(config).await;
    wait_routed(
        &stack.settings,
        "router-defaults",
        &receipt.topic,
        receipt.partition,
        receipt.offset,
    )
    .await;
    router.stop().await;
    assert!(read_topic(&stack.settings, &stack.settings.topics().deliver("gp")).is_empty());
    let reasons: Vec<String> = read_topic(&stack.settings, &stack.settings.topics().deadletter())
        .into_iter()
        .map(|r| r.headers[headers::REASON].clone())
        .collect();
    assert!(
        reasons.iter().all(|r| r == "synthetic_identifier") && !reasons.is_empty(),
        "{reasons:?}"
    );
}
