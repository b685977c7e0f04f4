//! A device platform re-sending a reading (the same source id, after a timeout on its
//! side or a gateway killed before it answered) gets the original acknowledgement, and the
//! reading is on the ingest topic once: the router's delivery ids come from source
//! positions, so a second record would reach every subscriber twice. Through the native
//! JSON form and FHIR Bundles, one after the other and at the same time, and across a
//! SIGKILL and restart of `dho-ingest` (the program). A different reading, and the same
//! source id with other content (a correction), are still published.

use std::collections::BTreeMap;

use dho_schemas::fhir::observation_from_measurement;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::ingest::{
    Answer, Http, PLATFORM_TOKEN, gateway_config, spawn_ingest, start_gateway,
};
use dho_tests::{Stack, read_decoded};
use serde_json::{Value, json};

fn spo2(seed: u64, value: f64) -> Measurement {
    fixtures::spo2(&fixtures::patient(seed), value, now_millis() - 60_000)
}

/// Where an answer says the record is: (event id, partition, offset).
fn receipt(a: &Answer) -> (String, i64, i64) {
    assert_eq!(a.status, 201, "{}", a.json);
    (
        a.json["event_id"].as_str().unwrap().to_string(),
        a.json["partition"].as_i64().unwrap(),
        a.json["offset"].as_i64().unwrap(),
    )
}

fn bundle(entries: &[(&str, Value)]) -> Value {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(url, resource)| {
            json!({"fullUrl": url, "resource": resource,
                   "request": {"method": "POST", "url": "Observation"}})
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "batch", "entry": entries})
}

/// The `201` entries' locations of a batch-response.
fn locations(a: &Answer) -> Vec<String> {
    assert_eq!(a.status, 200, "{}", a.json);
    a.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let status = e["response"]["status"].as_str().unwrap_or_default();
            assert!(status.starts_with("201"), "{e}");
            e["response"]["location"].as_str().unwrap().to_string()
        })
        .collect()
}

/// How many records of each event id the measurements topic holds.
async fn stored(stack: &Stack) -> BTreeMap<String, usize> {
    let topic = stack.settings.topics().measurements();
    let mut count = BTreeMap::new();
    for m in read_decoded::<Measurement>(&stack.settings, &topic).await {
        *count.entry(m.event_id).or_default() += 1;
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_resend_a_resent_reading_is_answered_with_the_original_and_stored_once() {
    let stack = Stack::start().await;
    let gw = start_gateway(gateway_config(&stack.settings)).await;
    let http = Http::new(gw.url());

    // Native JSON: the same reading twice, one after the other.
    let a = serde_json::to_value(spo2(1, 95.0)).unwrap();
    let first = receipt(&http.post("/measurements", Some(PLATFORM_TOKEN), &a).await);
    let again = receipt(&http.post("/measurements", Some(PLATFORM_TOKEN), &a).await);
    assert_eq!(again, first, "the original acknowledgement");

    // ... and at the same time: one waits for the other.
    let b = serde_json::to_value(spo2(2, 96.0)).unwrap();
    let (b1, b2) = tokio::join!(
        http.post("/measurements", Some(PLATFORM_TOKEN), &b),
        http.post("/measurements", Some(PLATFORM_TOKEN), &b)
    );
    assert_eq!(receipt(&b1), receipt(&b2));

    // FHIR: a bundle sent again, and one that holds the same Observation twice.
    let c = observation_from_measurement(&spo2(3, 97.0));
    let one = locations(
        &http
            .post(
                "/fhir/Bundle",
                Some(PLATFORM_TOKEN),
                &bundle(&[("urn:uuid:c", c.clone())]),
            )
            .await,
    );
    let twice = locations(
        &http
            .post(
                "/fhir/Bundle",
                Some(PLATFORM_TOKEN),
                &bundle(&[("urn:uuid:c1", c.clone()), ("urn:uuid:c2", c)]),
            )
            .await,
    );
    assert_eq!(twice, vec![one[0].clone(), one[0].clone()]);
    let c_id = one[0].rsplit('/').next().unwrap().to_string();

    // A different reading is published; so is the same source id with another value (a
    // correction), under the same event id.
    let d = receipt(
        &http
            .post(
                "/measurements",
                Some(PLATFORM_TOKEN),
                &serde_json::to_value(spo2(4, 93.0)).unwrap(),
            )
            .await,
    );
    assert_ne!(d.0, first.0);
    let mut corrected = a.clone();
    corrected["value"]["value"] = 94.0.into();
    let e = receipt(
        &http
            .post("/measurements", Some(PLATFORM_TOKEN), &corrected)
            .await,
    );
    assert_eq!(e.0, first.0);
    assert_ne!((e.1, e.2), (first.1, first.2), "a record of its own");

    let expected: BTreeMap<String, usize> = [
        (first.0.clone(), 2),
        (receipt(&b1).0, 1),
        (c_id, 1),
        (d.0, 1),
    ]
    .into();
    assert_eq!(stored(&stack).await, expected);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_resend_a_reading_resent_after_a_sigkill_and_restart_is_stored_once() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ingest.log");
    let config = gateway_config(&stack.settings);

    let (mut child, url) = spawn_ingest(&config, dir.path(), &log).await;
    let a = serde_json::to_value(spo2(11, 95.0)).unwrap();
    let c = observation_from_measurement(&spo2(12, 96.0));
    let first = receipt(
        &Http::new(&url)
            .post("/measurements", Some(PLATFORM_TOKEN), &a)
            .await,
    );
    let one = locations(
        &Http::new(&url)
            .post(
                "/fhir/Bundle",
                Some(PLATFORM_TOKEN),
                &bundle(&[("urn:uuid:c", c.clone())]),
            )
            .await,
    );
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    // A new process, no memory of its own: it reads back what was published.
    let (_child, url) = spawn_ingest(&config, dir.path(), &log).await;
    let http = Http::new(url);
    let again = receipt(&http.post("/measurements", Some(PLATFORM_TOKEN), &a).await);
    assert_eq!(
        again, first,
        "the original acknowledgement, after the restart"
    );
    let twice = locations(
        &http
            .post(
                "/fhir/Bundle",
                Some(PLATFORM_TOKEN),
                &bundle(&[("urn:uuid:c", c)]),
            )
            .await,
    );
    assert_eq!(twice, one);
    let other = receipt(
        &http
            .post(
                "/measurements",
                Some(PLATFORM_TOKEN),
                &serde_json::to_value(spo2(13, 97.0)).unwrap(),
            )
            .await,
    );

    let c_id = one[0].rsplit('/').next().unwrap().to_string();
    let expected: BTreeMap<String, usize> = [(first.0, 1), (c_id, 1), (other.0, 1)].into();
    assert_eq!(stored(&stack).await, expected);
}
