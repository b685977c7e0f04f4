//! Backpressure instead of unbounded buffering: with the broker gone, a bundle that fills
//! the gateway's in-flight bound stays unanswered (no 2xx without the broker's
//! acknowledgement), `/readyz` reports the gateway saturated, and further requests get
//! `503` with `Retry-After` at once, in each endpoint's language.

use std::time::{Duration, Instant};

use dho_schemas::fhir::observation_from_measurement;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::Stack;
use dho_tests::ingest::{Http, PLATFORM_TOKEN, gateway_config, start_gateway};
use serde_json::json;

fn bundle(n: u64) -> serde_json::Value {
    let entries: Vec<_> = (0..n)
        .map(|i| {
            let m = fixtures::spo2(&fixtures::patient(i), 95.0, now_millis() - 30_000);
            json!({"fullUrl": format!("urn:uuid:{i}"), "resource": observation_from_measurement(&m),
                   "request": {"method": "POST", "url": "Observation"}})
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "batch", "entry": entries})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_a_saturated_gateway_answers_503_with_retry_after_and_never_2xx_unacknowledged() {
    // Its broker is killed: one of its own, not the run's shared one.
    let mut stack = Stack::start_own_broker(Default::default()).await;
    let mut config = gateway_config(&stack.settings);
    config.max_bundle_entries = 5;
    config.max_in_flight = 5;
    config.retry_after = Duration::from_secs(3);
    let gw = start_gateway(config).await;
    let http = Http::new(gw.url());
    assert_eq!(http.get_text("/readyz").await.0, 200);

    stack.own_broker().kill();
    let pending = {
        let http = http.clone();
        tokio::spawn(async move {
            http.post("/fhir/Bundle", Some(PLATFORM_TOKEN), &bundle(5))
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get_text("/readyz").await.0 != 503 {
        assert!(
            Instant::now() < deadline,
            "the gateway never reported saturation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let m =
        serde_json::to_value(fixtures::spo2(&fixtures::patient(9), 95.0, now_millis())).unwrap();
    let native = http.post("/measurements", Some(PLATFORM_TOKEN), &m).await;
    assert_eq!(native.status, 503, "{}", native.json);
    assert_eq!(native.headers["retry-after"], "3");
    assert_eq!(native.json["error"]["reason"], "backpressure");
    let fhir = http.post("/fhir", Some(PLATFORM_TOKEN), &bundle(1)).await;
    assert_eq!(fhir.status, 503);
    assert_eq!(fhir.headers["retry-after"], "3");
    assert_eq!(fhir.json["resourceType"], "OperationOutcome");
    assert_eq!(fhir.json["issue"][0]["code"], "transient");

    // The bundle in flight is still unanswered: the broker has acknowledged nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !pending.is_finished(),
        "answered without an acknowledgement"
    );
    let (_, metrics) = http.get_text("/metrics").await;
    assert!(metrics.contains("outcome=\"unavailable\""), "{metrics}");
    assert!(
        metrics.contains("dho_ingest_in_flight_entries 5"),
        "{metrics}"
    );
    pending.abort();
}
