//! The gateway killed between accepting and answering: `dho-ingest` runs as the program it
//! is, many platforms' workers send bundles concurrently, and it gets SIGKILL mid-stream.
//! Every entry answered `201` is on Kafka (a 2xx is sent only after the broker
//! acknowledged). Its log never shows a token or a patient number. Restarted, it serves
//! again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dho_schemas::fhir::observation_from_measurement;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::ingest::{Http, PLATFORM_TOKEN, gateway_config, spawn_ingest};
use dho_tests::{Stack, read_decoded};
use serde_json::json;
use tokio::sync::Mutex;

const WORKERS: u64 = 12;
const PER_BUNDLE: u64 = 5;
/// Entries answered 201 before the kill.
const KILL_AFTER: usize = 150;

fn bundle(worker: u64, round: u64) -> serde_json::Value {
    let entries: Vec<_> = (0..PER_BUNDLE)
        .map(|i| {
            let patient = fixtures::patient(worker * 1000 + (round * PER_BUNDLE + i) % 40);
            let m = fixtures::spo2(&patient, 95.0, now_millis() - 30_000);
            json!({"fullUrl": format!("urn:uuid:{worker}-{round}-{i}"),
                   "resource": observation_from_measurement(&m),
                   "request": {"method": "POST", "url": "Observation"}})
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "batch", "entry": entries})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_every_entry_answered_201_survives_a_sigkill_of_the_gateway() {
    let stack = Stack::start().await;
    let dir = std::env::temp_dir().join(format!("dho-ingest-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("ingest.log");
    let config = gateway_config(&stack.settings);
    let (mut child, url) = spawn_ingest(&config, &dir, &log).await;
    let http = Http::new(url);

    // Some refusals first, so the log has had the chance to leak a token or number.
    let wrong = http
        .post(
            "/fhir/Bundle",
            Some("a-wrong-token-that-must-not-be-logged"),
            &bundle(99, 0),
        )
        .await;
    assert_eq!(wrong.status, 401);
    let bad = fixtures::spo2(&fixtures::patient(7), 0.9, now_millis());
    let refused = http
        .post(
            "/measurements",
            Some(PLATFORM_TOKEN),
            &serde_json::to_value(&bad).unwrap(),
        )
        .await;
    assert_eq!(refused.status, 422);

    let answered = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let (http, answered, count) = (http.clone(), answered.clone(), count.clone());
        workers.spawn(async move {
            let mut unanswered = 0;
            for round in 0.. {
                let body = bundle(worker, round);
                match http
                    .send(
                        reqwest::Method::POST,
                        "/fhir/Bundle",
                        Some(PLATFORM_TOKEN),
                        Some(&body),
                    )
                    .await
                {
                    Ok(a) if a.status == 200 => {
                        for entry in a.json["entry"].as_array().unwrap() {
                            let status = entry["response"]["status"].as_str().unwrap();
                            assert!(status.starts_with("201"), "{entry}");
                            let location = entry["response"]["location"].as_str().unwrap();
                            let id = location.rsplit('/').next().unwrap().to_string();
                            answered.lock().await.insert(id);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Ok(a) => panic!("unexpected answer {}: {}", a.status, a.json),
                    // The gateway is gone: this bundle went unanswered.
                    Err(_) => {
                        unanswered += 1;
                        break;
                    }
                }
            }
            unanswered
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while count.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "the gateway answered too few entries"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    let mut unanswered = 0;
    while let Some(result) = workers.join_next().await {
        unanswered += result.unwrap();
    }
    assert_eq!(
        unanswered, WORKERS,
        "every worker lost its last request to the kill"
    );

    let answered = answered.lock().await.clone();
    assert!(answered.len() >= KILL_AFTER);
    let stored: BTreeSet<String> =
        read_decoded::<Measurement>(&stack.settings, &stack.settings.topics().measurements())
            .await
            .into_iter()
            .map(|m| m.event_id)
            .collect();
    let missing: Vec<_> = answered.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} of {} entries answered 201 are not on Kafka",
        missing.len(),
        answered.len()
    );

    // The log shows neither tokens nor patient numbers.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("request refused by authentication"), "{text}");
    for secret in [PLATFORM_TOKEN, "a-wrong-token-that-must-not-be-logged"] {
        assert!(!text.contains(secret), "the log shows a token");
    }
    for seed in [7, 0, 1, 1000, 1001] {
        assert!(
            !text.contains(&fixtures::patient(seed).value),
            "the log shows a patient"
        );
    }

    // Restarted, it serves again.
    let (_child, url) = spawn_ingest(&config, &dir, &dir.join("ingest-2.log")).await;
    let again = Http::new(url)
        .post("/fhir", Some(PLATFORM_TOKEN), &bundle(0, 1_000))
        .await;
    assert_eq!(again.status, 200);
    assert!(
        again.json["entry"][0]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("201")
    );
}
