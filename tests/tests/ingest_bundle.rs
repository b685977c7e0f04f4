//! The gateway's FHIR and JSON intake against the real broker: a bundle with valid and
//! invalid entries stores exactly the valid ones and answers each entry, in order; the
//! native JSON form gets the gateway's event id and receive time; malformed, oversized and
//! wrong-type requests get clear 4xx answers; operations endpoints answer.

use std::collections::BTreeSet;

use dho_gateway::RunningGateway;
use dho_schemas::fhir::{observation_from_measurement, questionnaire_response_from_self_report};
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::ingest::{
    HOME_TOKEN, Http, PLATFORM_TOKEN, gateway_config, other_platform, start_gateway,
};
use dho_tests::{Stack, read_decoded, read_topic_sizes};
use serde_json::{Value, json};

fn entry(full_url: &str, resource: Value) -> Value {
    json!({"fullUrl": full_url, "resource": resource,
           "request": {"method": "POST", "url": resource["resourceType"]}})
}

fn bundle(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "batch", "entry": entries})
}

fn spo2(seed: u64, value: f64) -> Measurement {
    fixtures::spo2(&fixtures::patient(seed), value, now_millis() - 60_000)
}

fn status(entry: &Value) -> &str {
    entry["response"]["status"].as_str().unwrap_or_default()
}

fn expression(entry: &Value) -> &str {
    entry["response"]["outcome"]["issue"][0]["expression"][0]
        .as_str()
        .unwrap_or_default()
}

/// The event id of a `201` entry, from its location (`Observation/<event id>`).
fn event_id(entry: &Value) -> String {
    let location = entry["response"]["location"].as_str().unwrap();
    location.rsplit('/').next().unwrap().to_string()
}

async fn gateway(stack: &Stack) -> (RunningGateway, Http) {
    let mut config = gateway_config(&stack.settings);
    config.max_body_bytes = 256 * 1024;
    config.max_bundle_entries = 20;
    let gw = start_gateway(config).await;
    let http = Http::new(gw.url());
    (gw, http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_a_mixed_bundle_stores_exactly_the_valid_entries_and_answers_each_in_order() {
    let stack = Stack::start().await;
    let (gw, http) = gateway(&stack).await;

    let good_obs = observation_from_measurement(&spo2(1, 94.0));
    let good_qr = questionnaire_response_from_self_report(&fixtures::self_report(
        &fixtures::patient(2),
        now_millis() - 60_000,
    ));
    let mut bad_patient = observation_from_measurement(&spo2(3, 95.0));
    let number = bad_patient["subject"]["identifier"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let mut broken = number.clone();
    let last = broken.pop().unwrap().to_digit(10).unwrap();
    broken.push(char::from_digit((last + 1) % 10, 10).unwrap());
    bad_patient["subject"]["identifier"]["value"] = broken.clone().into();
    let mut no_status = observation_from_measurement(&spo2(4, 96.0));
    no_status.as_object_mut().unwrap().remove("status");
    let mut foreign = spo2(5, 97.0);
    foreign.data_controller = other_platform();
    let foreign = observation_from_measurement(&foreign);
    let good_obs_2 = observation_from_measurement(&spo2(6, 92.0));
    let patient_resource = json!({"resourceType": "Patient", "id": "p"});

    let entries = vec![
        entry("urn:uuid:e0", good_obs.clone()),
        entry("urn:uuid:e1", bad_patient),
        entry("urn:uuid:e2", good_qr),
        entry("urn:uuid:e3", no_status),
        json!({"resource": good_obs.clone(), "request": {"method": "POST"}}),
        entry("urn:uuid:e0", good_obs.clone()),
        entry("urn:uuid:e6", patient_resource),
        entry("urn:uuid:e7", foreign),
        json!({"fullUrl": "urn:uuid:e8", "resource": good_obs.clone()}),
        entry("urn:uuid:e9", good_obs_2),
    ];
    let answer = http
        .post("/fhir/Bundle", Some(PLATFORM_TOKEN), &bundle(entries))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    assert_eq!(answer.json["resourceType"], "Bundle");
    assert_eq!(answer.json["type"], "batch-response");
    let out = answer.json["entry"].as_array().unwrap();
    let expected: [(&str, &str); 10] = [
        ("201", ""),
        ("422", "Observation.subject.identifier.value"),
        ("201", ""),
        ("422", "Observation.status"),
        ("422", "Bundle.entry[4].fullUrl"),
        ("400", "Bundle.entry[5].fullUrl"),
        ("422", "Patient"),
        ("403", "Observation.performer"),
        ("422", "Bundle.entry[8].request.method"),
        ("201", ""),
    ];
    assert_eq!(out.len(), expected.len());
    for (i, (entry, (code, location))) in out.iter().zip(expected).enumerate() {
        assert!(
            status(entry).starts_with(code),
            "entry {i}: {} (expected {code}): {entry}",
            status(entry)
        );
        if code != "201" {
            assert_eq!(expression(entry), location, "entry {i}: {entry}");
            assert_eq!(
                entry["response"]["outcome"]["resourceType"], "OperationOutcome",
                "entry {i}"
            );
        }
        match i {
            4 => assert!(entry.get("fullUrl").is_none()),
            5 => assert_eq!(entry["fullUrl"], "urn:uuid:e0"),
            _ => assert_eq!(entry["fullUrl"], format!("urn:uuid:e{i}"), "entry {i}"),
        }
    }
    // Nothing in the answer repeats the broken patient number.
    assert!(!answer.json.to_string().contains(&broken));

    let measurements: Vec<Measurement> =
        read_decoded(&stack.settings, &stack.settings.topics().measurements()).await;
    let stored: BTreeSet<_> = measurements.iter().map(|m| m.event_id.clone()).collect();
    let answered: BTreeSet<_> = [event_id(&out[0]), event_id(&out[9])].into();
    assert_eq!(
        stored, answered,
        "exactly the valid Observations are on Kafka"
    );
    for m in &measurements {
        assert!(m.source.platform.same_entity(&fixtures::platform()));
        assert!(m.received_time >= m.effective_time);
    }
    let reports: Vec<SelfReport> =
        read_decoded(&stack.settings, &stack.settings.topics().selfreports()).await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].event_id, event_id(&out[2]));
    assert!(
        out[2]["response"]["location"]
            .as_str()
            .unwrap()
            .starts_with("QuestionnaireResponse/")
    );

    // The same Observation sent again (a retry after a lost answer) gets the same event id.
    let again = http
        .post(
            "/fhir",
            Some(PLATFORM_TOKEN),
            &bundle(vec![entry("urn:uuid:r", good_obs)]),
        )
        .await;
    assert_eq!(event_id(&again.json["entry"][0]), event_id(&out[0]));

    // A PMD collection bundle is accepted too (no request element needed).
    let collection = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:c0", "resource": observation_from_measurement(&spo2(7, 93.0))}
    ]});
    let c = http.post("/fhir", Some(PLATFORM_TOKEN), &collection).await;
    assert_eq!(c.status, 200);
    assert!(status(&c.json["entry"][0]).starts_with("201"), "{}", c.json);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_native_json_gets_gateway_ids_and_bad_requests_get_clear_4xx() {
    let stack = Stack::start().await;
    let (gw, http) = gateway(&stack).await;
    let topic = stack.settings.topics().measurements();

    // Native JSON: the gateway assigns event id and receive time; the data controller and
    // source platform may be left out (they are the caller).
    let mut body = serde_json::to_value(spo2(10, 95.0)).unwrap();
    body["event_id"] = "chosen-by-sender".into();
    body["received_time"] = 0.into();
    body.as_object_mut().unwrap().remove("data_controller");
    body["source"].as_object_mut().unwrap().remove("platform");
    let a = http
        .post("/measurements", Some(PLATFORM_TOKEN), &body)
        .await;
    assert_eq!(a.status, 201, "{}", a.json);
    let id = a.json["event_id"].as_str().unwrap().to_string();
    assert_ne!(id, "chosen-by-sender");
    assert_eq!(
        a.headers["location"].to_str().unwrap(),
        format!("/measurements/{id}")
    );
    let stored: Vec<Measurement> = read_decoded(&stack.settings, &topic).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_id, id);
    assert!(stored[0].received_time > 0);
    assert!(stored[0].data_controller.same_entity(&fixtures::platform()));
    assert_eq!(a.json["offset"], 0);

    let report = serde_json::to_value(fixtures::self_report(
        &fixtures::patient(11),
        now_millis() - 1_000,
    ))
    .unwrap();
    let r = http
        .post("/selfreports", Some(PLATFORM_TOKEN), &report)
        .await;
    assert_eq!(r.status, 201, "{}", r.json);

    // A rule broken: 422 naming the field and the reason.
    let mut fraction = serde_json::to_value(spo2(12, 95.0)).unwrap();
    fraction["value"]["value"] = 0.95.into();
    let bad = http
        .post("/measurements", Some(PLATFORM_TOKEN), &fraction)
        .await;
    assert_eq!(bad.status, 422, "{}", bad.json);
    assert_eq!(bad.json["error"]["field"], "value.value");
    assert_eq!(bad.json["error"]["reason"], "implausible");

    // The wrong shape: 400 with the path.
    let mut shape = serde_json::to_value(spo2(13, 95.0)).unwrap();
    shape["effective_time"] = "yesterday".into();
    let s = http
        .post("/measurements", Some(PLATFORM_TOKEN), &shape)
        .await;
    assert_eq!(s.status, 400, "{}", s.json);
    assert_eq!(s.json["error"]["field"], "effective_time");

    // Malformed JSON, on both forms.
    for path in ["/measurements", "/fhir/Bundle"] {
        let m = http
            .send_bytes(
                reqwest::Method::POST,
                path,
                Some(PLATFORM_TOKEN),
                Some(b"{\"resourceType\": ".to_vec()),
            )
            .await
            .unwrap();
        assert_eq!(m.status, 400, "{path}");
    }
    // FHIR endpoints answer with an OperationOutcome.
    let not_bundle = http
        .post(
            "/fhir",
            Some(PLATFORM_TOKEN),
            &observation_from_measurement(&spo2(14, 95.0)),
        )
        .await;
    assert_eq!(not_bundle.status, 400);
    assert_eq!(not_bundle.json["resourceType"], "OperationOutcome");
    assert_eq!(not_bundle.json["issue"][0]["expression"][0], "resourceType");
    let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": []});
    let t = http.post("/fhir", Some(PLATFORM_TOKEN), &transaction).await;
    assert_eq!(t.status, 400);
    assert_eq!(t.json["issue"][0]["expression"][0], "Bundle.type");

    // Limits: too many entries, too large a body.
    let many: Vec<Value> = (0..21)
        .map(|i| {
            entry(
                &format!("urn:uuid:m{i}"),
                observation_from_measurement(&spo2(20 + i, 95.0)),
            )
        })
        .collect();
    let too_many = http
        .post("/fhir", Some(PLATFORM_TOKEN), &bundle(many))
        .await;
    assert_eq!(too_many.status, 413, "{}", too_many.json);
    assert_eq!(too_many.json["resourceType"], "OperationOutcome");
    let mut huge = bundle(vec![]);
    huge["padding"] = "x".repeat(300 * 1024).into();
    let too_large = http.post("/fhir", Some(PLATFORM_TOKEN), &huge).await;
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.json["resourceType"], "OperationOutcome");

    // None of the refused requests reached Kafka.
    assert_eq!(read_topic_sizes(&stack.settings, &topic), 1);

    // Operations endpoints.
    assert_eq!(http.get_text("/healthz").await.0, 200);
    assert_eq!(http.get_text("/readyz").await.0, 200);
    let (code, metrics) = http.get_text("/metrics").await;
    assert_eq!(code, 200);
    for name in [
        "dho_ingest_requests_total",
        "dho_ingest_entries_total",
        "dho_ingest_publish_latency_seconds_bucket",
        "dho_ingest_producer_queue_depth",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    assert!(metrics.contains("outcome=\"too_large\""));
    for secret in [PLATFORM_TOKEN, HOME_TOKEN, &fixtures::patient(10).value] {
        assert!(!metrics.contains(secret));
    }
    gw.stop().await.unwrap();
}
