//! What one caller can hold of the gateway: a body must arrive within `body_timeout` (a
//! client that stalls mid-body gets 408 and frees its task), open connections are capped
//! (the next one waits until one closes), and a state change's body is capped far below a
//! Bundle's.

use std::time::Duration;

use dho_tests::Stack;
use dho_tests::ingest::{HOME_TOKEN, Http, PLATFORM_TOKEN, gateway_config, start_gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends the head of a POST with `content_length` and then `body` (perhaps less).
async fn post_raw(
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
    content_length: usize,
    body: &[u8],
) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream
}

/// The status line's code of the response on `stream`, waiting up to `within`.
async fn status(stream: &mut TcpStream, within: Duration) -> Option<u16> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(within, stream.read(&mut buf))
        .await
        .ok()?
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split(' ').nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_a_body_that_stalls_gets_408_within_the_body_timeout() {
    let stack = Stack::start().await;
    let mut config = gateway_config(&stack.settings);
    config.body_timeout = Duration::from_secs(1);
    let gw = start_gateway(config).await;
    let mut stalled = post_raw(
        gw.addr,
        "/measurements",
        PLATFORM_TOKEN,
        100,
        b"{\"patient\"",
    )
    .await;
    let code = status(&mut stalled, Duration::from_secs(30)).await;
    assert_eq!(code, Some(408), "a stalled body is answered, not held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_connections_beyond_the_cap_wait_until_one_closes() {
    let stack = Stack::start().await;
    let mut config = gateway_config(&stack.settings);
    config.max_connections = 2;
    let gw = start_gateway(config).await;
    // Two idle clients hold both places; connections are accepted in the order they came.
    let first = TcpStream::connect(gw.addr).await.unwrap();
    let second = TcpStream::connect(gw.addr).await.unwrap();
    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        status(&mut third, Duration::from_secs(2)).await,
        None,
        "a third connection is served while two are open"
    );
    drop(first);
    assert_eq!(status(&mut third, Duration::from_secs(30)).await, Some(200));
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_a_state_change_body_is_capped_below_a_bundles() {
    let stack = Stack::start().await;
    let config = gateway_config(&stack.settings);
    let (state_limit, bundle_limit) = (config.max_state_body_bytes, config.max_body_bytes);
    assert!(state_limit * 4 < bundle_limit);
    let gw = start_gateway(config).await;
    let http = Http::new(gw.url());
    let big = serde_json::json!({"resourceType": "Consent", "note": "x".repeat(state_limit)});
    let consent = http.post("/fhir/Consent", Some(HOME_TOKEN), &big).await;
    assert_eq!(consent.status, 413, "{}", consent.json);
    let mut bundle = big.clone();
    bundle["resourceType"] = "Bundle".into();
    let readings = http
        .post("/fhir/Bundle", Some(PLATFORM_TOKEN), &bundle)
        .await;
    assert_ne!(
        readings.status, 413,
        "a Bundle of that size is read: {}",
        readings.json
    );
}
