//! What one caller can hold of the gateway: a request's head must arrive within
//! `header_read_timeout` (a client trickling its headers is cut off and frees its
//! connection's place), a body within `body_timeout` (a client that stalls mid-body gets 408
//! and frees its task), open connections are capped (the next one waits until one closes),
//! and a state change's body is capped far below a Bundle's.

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

/// Slowloris: one header byte every 200 ms, never the blank line that ends the head. With a
/// one-second `header_read_timeout` the gateway ends the connection long before the 20 s
/// of trickle are through; with the one place it held free again, a prompt client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_a_client_trickling_its_headers_is_cut_off() {
    let stack = Stack::start().await;
    let mut config = gateway_config(&stack.settings);
    config.header_read_timeout = Duration::from_secs(1);
    config.max_connections = 1;
    let gw = start_gateway(config).await;
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Trickle: {}",
        "a".repeat(60)
    );
    let mut answered = None;
    for byte in head.bytes() {
        if slow.write_all(&[byte]).await.is_err() {
            answered = Some("the write failed: the connection is closed".to_string());
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
            Err(_) => continue, // still reading our head
            Ok(Ok(0)) => answered = Some("closed".into()),
            Ok(Ok(n)) => answered = Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Ok(Err(e)) => answered = Some(format!("read error: {e}")),
        }
        break;
    }
    let answered = answered.unwrap_or_else(|| {
        panic!(
            "a head trickled over {} s was still being read",
            head.len() / 5
        )
    });
    assert!(
        !answered.contains(" 200 "),
        "an unfinished head was served: {answered}"
    );
    let mut prompt = TcpStream::connect(gw.addr).await.unwrap();
    prompt
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        status(&mut prompt, Duration::from_secs(30)).await,
        Some(200)
    );
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

/// The gateway over real TLS (rustls), configured by file: a client that trusts the
/// certificate publishes a reading; a request in the clear gets no answer; and a client
/// that opens a connection and never handshakes holds up no one else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_the_gateway_serves_over_tls_and_a_stalled_handshake_blocks_no_one() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".into()])
            .unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.key_pair.serialize_pem()).unwrap();
    let mut config = gateway_config(&stack.settings);
    config.tls_cert_file = Some(cert_file);
    config.tls_key_file = Some(key_file);
    let gw = start_gateway(config).await;
    assert!(gw.url().starts_with("https://"), "{}", gw.url());

    // Connected and silent: its handshake never starts.
    let _stalled = TcpStream::connect(gw.addr).await.unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        // Well inside the gateway's 10 s handshake limit: a handshake that waited behind
        // the stalled one would take that long.
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let reading = serde_json::to_value(dho_schemas::fixtures::spo2(
        &dho_schemas::fixtures::patient(1),
        95.0,
        dho_schemas::model::now_millis() - 60_000,
    ))
    .unwrap();
    let answer = client
        .post(format!("{}/measurements", gw.url()))
        .bearer_auth(PLATFORM_TOKEN)
        .json(&reading)
        .send()
        .await
        .expect("a TLS client is answered while another stalls its handshake");
    assert_eq!(answer.status().as_u16(), 201, "{:?}", answer.text().await);

    // The same port in the clear: no HTTP answer.
    let mut clear = TcpStream::connect(gw.addr).await.unwrap();
    clear
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    assert_ne!(
        status(&mut clear, Duration::from_secs(15)).await,
        Some(200),
        "served in the clear on the TLS port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_tls_needs_both_files_and_names_a_missing_one() {
    let stack = Stack::start().await;
    let mut config = gateway_config(&stack.settings);
    config.tls_cert_file = Some("/nonexistent/cert.pem".into());
    let half = dho_gateway::RunningGateway::start(config.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(half.contains("set both or neither"), "{half}");
    config.tls_key_file = Some("/nonexistent/key.pem".into());
    let missing = dho_gateway::RunningGateway::start(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("tls_cert_file /nonexistent/cert.pem"),
        "{missing}"
    );
}
