//! The gateway's authentication and authorisation matrix against the real broker: no
//! token, a wrong token, a platform publishing as another platform, a care organisation
//! publishing readings, a device platform recording consent or touching subscriptions,
//! and a care service touching another's subscription are all refused (401 or 403) and
//! counted, and none of them leaves a record on Kafka. The allowed counterparts succeed.
//! The token and the role are checked before the body is read: a request whose body never
//! arrives (or would be larger than the gateway takes) is still refused at once.

use dho_gateway::fhir_consent;
use dho_schemas::fhir::observation_from_measurement;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::ingest::{
    GP, GP_TOKEN, HOME, HOME_TOKEN, Http, OTHER_PLATFORM_TOKEN, PLATFORM_TOKEN, PORTAL_TOKEN,
    gateway_config, other_platform, start_gateway,
};
use dho_tests::{Stack, read_topic_sizes};
use reqwest::Method;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn reading(seed: u64) -> Measurement {
    fixtures::spo2(&fixtures::patient(seed), 95.0, now_millis() - 60_000)
}

fn subscription(subscriber: &str, id: &str, org: &OrganisationIdentifier) -> Value {
    let mut s = serde_json::to_value(fixtures::subscription(
        &fixtures::patient(1),
        subscriber,
        org,
    ))
    .unwrap();
    s["subscription_id"] = id.into();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_every_wrong_credential_is_refused_counted_and_stores_nothing() {
    let stack = Stack::start().await;
    let gw = start_gateway(gateway_config(&stack.settings)).await;
    let http = Http::new(gw.url());
    let topics = stack.settings.topics();
    let m = serde_json::to_value(reading(1)).unwrap();
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [{
        "fullUrl": "urn:uuid:1", "resource": observation_from_measurement(&reading(2)),
        "request": {"method": "POST", "url": "Observation"}}]});
    let consent = fhir_consent(
        "c-1",
        &fixtures::patient(1),
        ProvisionKind::Permit,
        true,
        &[fixtures::home_care()],
    );
    let home_sub = subscription(HOME, "bergen-home-care.p1", &fixtures::home_care());

    // (method, path, token, body, expected status)
    let refused: Vec<(Method, &str, Option<&str>, Value, u16)> = vec![
        // No token and a wrong token, on every kind of endpoint.
        (Method::POST, "/measurements", None, m.clone(), 401),
        (Method::POST, "/fhir/Bundle", None, bundle.clone(), 401),
        (Method::POST, "/fhir/Consent", None, consent.clone(), 401),
        (Method::POST, "/subscriptions", None, home_sub.clone(), 401),
        (
            Method::POST,
            "/measurements",
            Some("not-a-token"),
            m.clone(),
            401,
        ),
        (
            Method::POST,
            "/fhir/Bundle",
            Some("not-a-token"),
            bundle.clone(),
            401,
        ),
        (
            Method::POST,
            "/fhir/Consent",
            Some("not-a-token"),
            consent.clone(),
            401,
        ),
        // A valid platform publishing as another platform.
        (
            Method::POST,
            "/measurements",
            Some(OTHER_PLATFORM_TOKEN),
            m.clone(),
            403,
        ),
        // A care organisation publishing readings.
        (
            Method::POST,
            "/measurements",
            Some(HOME_TOKEN),
            m.clone(),
            403,
        ),
        (
            Method::POST,
            "/fhir/Bundle",
            Some(HOME_TOKEN),
            bundle.clone(),
            403,
        ),
        // A device platform recording consent or touching subscriptions.
        (
            Method::POST,
            "/fhir/Consent",
            Some(PLATFORM_TOKEN),
            consent.clone(),
            403,
        ),
        (
            Method::POST,
            "/subscriptions",
            Some(PLATFORM_TOKEN),
            home_sub.clone(),
            403,
        ),
        (
            Method::DELETE,
            "/subscriptions/bergen-home-care.p1",
            Some(PLATFORM_TOKEN),
            json!({"patient": fixtures::patient(1)}),
            403,
        ),
        // A care service touching another's subscriptions: by subscriber id, by id
        // prefix, by organisation, and deleting.
        (
            Method::POST,
            "/subscriptions",
            Some(GP_TOKEN),
            subscription(HOME, "bergen-home-care.x", &fixtures::gp()),
            403,
        ),
        (
            Method::PUT,
            "/subscriptions/bergen-home-care.p1",
            Some(GP_TOKEN),
            subscription(GP, "bergen-home-care.p1", &fixtures::gp()),
            403,
        ),
        (
            Method::POST,
            "/subscriptions",
            Some(GP_TOKEN),
            subscription(GP, "sentrum-gp.x", &fixtures::home_care()),
            403,
        ),
        (
            Method::DELETE,
            "/subscriptions/bergen-home-care.p1",
            Some(GP_TOKEN),
            json!({"patient": fixtures::patient(1)}),
            403,
        ),
    ];
    for (method, path, token, body, expected) in &refused {
        let a = http
            .send(method.clone(), path, *token, Some(body))
            .await
            .unwrap();
        assert_eq!(
            a.status, *expected,
            "{method} {path} with {token:?}: {}",
            a.json
        );
        if *expected == 401 {
            assert_eq!(a.headers["www-authenticate"], "Bearer");
        }
        if path.starts_with("/fhir") {
            assert_eq!(a.json["resourceType"], "OperationOutcome", "{path}");
        }
        let text = a.json.to_string();
        for token in [PLATFORM_TOKEN, OTHER_PLATFORM_TOKEN, HOME_TOKEN, GP_TOKEN] {
            assert!(!text.contains(token));
        }
    }
    for topic in [
        topics.measurements(),
        topics.consents(),
        topics.subscriptions(),
        topics.consent_audit(),
    ] {
        assert_eq!(read_topic_sizes(&stack.settings, &topic), 0, "{topic}");
    }
    // A FHIR entry naming another platform as data controller is refused alone (403).
    let mut foreign = reading(3);
    foreign.data_controller = other_platform();
    let fb = json!({"resourceType": "Bundle", "type": "batch", "entry": [{
        "fullUrl": "urn:uuid:f", "resource": observation_from_measurement(&foreign),
        "request": {"method": "POST", "url": "Observation"}}]});
    let f = http.post("/fhir", Some(PLATFORM_TOKEN), &fb).await;
    assert_eq!(f.status, 200);
    assert_eq!(f.json["entry"][0]["response"]["status"], "403 Forbidden");
    assert_eq!(read_topic_sizes(&stack.settings, &topics.measurements()), 0);

    // The allowed counterparts.
    let ok: Vec<(Method, &str, &str, Value, u16)> = vec![
        (
            Method::POST,
            "/measurements",
            PLATFORM_TOKEN,
            m.clone(),
            201,
        ),
        (
            Method::POST,
            "/fhir/Consent",
            PORTAL_TOKEN,
            consent.clone(),
            201,
        ),
        (
            Method::POST,
            "/subscriptions",
            HOME_TOKEN,
            home_sub.clone(),
            201,
        ),
        (
            Method::PUT,
            "/subscriptions/sentrum-gp.p1",
            GP_TOKEN,
            subscription(GP, "sentrum-gp.p1", &fixtures::gp()),
            201,
        ),
        (
            Method::DELETE,
            "/subscriptions/bergen-home-care.p1",
            HOME_TOKEN,
            json!({"patient": fixtures::patient(1)}),
            204,
        ),
    ];
    for (method, path, token, body, expected) in &ok {
        let a = http
            .send(method.clone(), path, Some(token), Some(body))
            .await
            .unwrap();
        assert_eq!(a.status, *expected, "{method} {path}: {}", a.json);
    }
    let mut other = serde_json::to_value(reading(4)).unwrap();
    other["data_controller"] = serde_json::to_value(other_platform()).unwrap();
    other["source"]["platform"] = serde_json::to_value(other_platform()).unwrap();
    let o = http
        .post("/measurements", Some(OTHER_PLATFORM_TOKEN), &other)
        .await;
    assert_eq!(o.status, 201, "a platform publishing as itself: {}", o.json);
    assert_eq!(read_topic_sizes(&stack.settings, &topics.measurements()), 2);
    assert_eq!(read_topic_sizes(&stack.settings, &topics.consents()), 1);
    // Created, created, deleted (a tombstone).
    assert_eq!(
        read_topic_sizes(&stack.settings, &topics.subscriptions()),
        3
    );

    let (_, metrics) = http.get_text("/metrics").await;
    for needle in [
        "dho_ingest_auth_failures_total",
        "reason=\"missing_token\"",
        "reason=\"unknown_token\"",
        "reason=\"cross_platform\"",
        "reason=\"wrong_role\"",
        "reason=\"not_owner\"",
        "outcome=\"unauthorized\"",
        "outcome=\"forbidden\"",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    for token in [PLATFORM_TOKEN, OTHER_PLATFORM_TOKEN, HOME_TOKEN, GP_TOKEN] {
        assert!(!metrics.contains(token));
    }
    gw.stop().await.unwrap();
}

/// Sends a request's head declaring a body of `declared` bytes, then only 1 KiB of it, and
/// keeps the connection open without sending more: the gateway can answer only if it does
/// not wait for the body. Returns the answer's head (lowercase), read within 10 s.
async fn answer_to_a_stalled_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    declared: usize,
) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n"
    );
    if let Some(token) = token {
        head += &format!("authorization: Bearer {token}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b' '; 1024]).await.unwrap();
    let mut answer = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer while the body was outstanding"))
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_the_token_and_role_are_checked_before_the_body_is_read() {
    let stack = Stack::start().await;
    let config = gateway_config(&stack.settings);
    let limit = config.max_body_bytes;
    let gw = start_gateway(config).await;
    // (method, path, token, declared body length, expected status): a body within the
    // limit that never arrives, and one declared 16 times larger than the limit (401 or
    // 403, not 413: the body is not looked at).
    let cases: Vec<(&str, &str, Option<&str>, usize, u16)> = vec![
        ("POST", "/measurements", None, 512 * 1024, 401),
        ("POST", "/fhir/Bundle", Some("not-a-token"), 512 * 1024, 401),
        ("POST", "/fhir/Consent", None, 16 * limit, 401),
        (
            "PUT",
            "/careplans/x.y",
            Some("not-a-token"),
            16 * limit,
            401,
        ),
        ("DELETE", "/subscriptions/x.y", None, 512 * 1024, 401),
        ("POST", "/measurements", Some(HOME_TOKEN), 16 * limit, 403),
        (
            "PUT",
            "/careplans/x.y",
            Some(PLATFORM_TOKEN),
            512 * 1024,
            403,
        ),
    ];
    for (method, path, token, declared, expected) in cases {
        let answer = answer_to_a_stalled_body(gw.addr, method, path, token, declared).await;
        assert!(
            answer.starts_with(&format!("http/1.1 {expected} ")),
            "{method} {path} with {declared} bytes declared: {answer}"
        );
        if expected == 401 {
            assert!(answer.contains("www-authenticate: bearer"), "{answer}");
        }
    }
    let topics = stack.settings.topics();
    assert_eq!(read_topic_sizes(&stack.settings, &topics.measurements()), 0);
    gw.stop().await.unwrap();
}
