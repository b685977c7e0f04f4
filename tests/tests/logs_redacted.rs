//! The demo's traffic through the whole hub with every log at `RUST_LOG=debug` in JSON (the
//! production format): `dho-ingest` and `dho-router` as the programs they are, with
//! `--log-json`; the broker, registry and the consumer SDK of two care services in this
//! process, logging JSON too. The demo's fleet (seed and size) publishes through the gateway
//! with a platform token, care organisations record consents and subscriptions with theirs,
//! some requests are refused (a wrong token, a malformed patient number, another
//! organisation's subscription). Afterwards no log line holds a patient number of the run,
//! anything shaped like a fødselsnummer or D-nummer (11 digits), or a token.
//!
//! The scanner itself is unit-tested with planted lines (`dho_tests::logscan`), so this test
//! can fail.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dho_consumer::{Subscriber, SubscriberConfig, SubscriptionClient, SubscriptionRequest};
use dho_gateway::fhir_consent;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_simulator::{Fleet, GatewayClient, SimOptions, Sink, run};
use dho_tests::ingest::{
    GP, GP_TOKEN, HOME, HOME_TOKEN, Http, OTHER_PLATFORM_TOKEN, PLATFORM_TOKEN, PORTAL_TOKEN,
    gateway_config, spawn_ingest_with,
};
use dho_tests::logscan::Scanner;
use dho_tests::{RouterProcess, Stack};
use tokio::sync::watch;

/// The demo's fleet: `dho-demo`'s default seed and size.
const SEED: u64 = 2026;
const PATIENTS: usize = 50;
const GROUP: &str = "router-logs";
const WRONG_TOKEN: &str = "a-wrong-token-that-must-never-be-logged-0123456789";

/// This process's log lines, as JSON.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demo_traffic_logged_as_json_at_debug_shows_no_identifier_and_no_token() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(captured.clone())
        .init();

    let stack = Stack::start().await;
    let dir = std::env::temp_dir().join(format!("dho-logs-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ingest_log, router_log) = (dir.join("ingest.log"), dir.join("router.log"));
    let (mut ingest, url) = spawn_ingest_with(
        &gateway_config(&stack.settings),
        &dir,
        &ingest_log,
        &["--log-json"],
        "debug",
    )
    .await;
    let router = RouterProcess::start(&stack, GROUP, &["--log-json"], "debug", &router_log).await;
    let http = Http::new(url.clone());

    // Consents and subscriptions as in the demo, through the gateway with the care
    // organisations' tokens: home care in full, the GP as references only (MINIMAL).
    let fleet = Fleet::new(SEED, PATIENTS);
    let patients: Vec<PatientIdentifier> = fleet.patients().iter().map(|p| p.id.clone()).collect();
    let home = SubscriptionClient::new(&url, HOME_TOKEN).unwrap();
    let gp = SubscriptionClient::new(&url, GP_TOKEN).unwrap();
    for patient in &patients {
        let consent = fhir_consent(
            "dho-sharing",
            patient,
            ProvisionKind::Permit,
            true,
            &[fixtures::home_care(), fixtures::gp()],
        );
        let a = http
            .post("/fhir/Consent", Some(PORTAL_TOKEN), &consent)
            .await;
        assert_eq!(a.status, 201, "{}", a.json);
        home.create(&SubscriptionRequest::new(HOME, patient.clone()).name("demo"))
            .await
            .unwrap();
        gp.create(
            &SubscriptionRequest::new(GP, patient.clone())
                .name("demo")
                .content_level(ContentLevel::Minimal),
        )
        .await
        .unwrap();
    }

    // Refusals, each a chance to log what it must not.
    let reading = serde_json::to_value(fixtures::spo2(&patients[0], 95.0, now_millis())).unwrap();
    let a = http
        .post("/measurements", Some(WRONG_TOKEN), &reading)
        .await;
    assert_eq!(a.status, 401);
    let a = http
        .post("/measurements", Some(OTHER_PLATFORM_TOKEN), &reading)
        .await;
    assert_eq!(a.status, 403, "another platform's data controller");
    let mut bad = reading.clone();
    let number = patients[1].value.clone();
    let wrong_check_digit = format!(
        "{}{}",
        &number[..10],
        (number.as_bytes()[10] - b'0' + 1) % 10
    );
    bad["patient"]["value"] = wrong_check_digit.clone().into();
    let a = http.post("/measurements", Some(PLATFORM_TOKEN), &bad).await;
    assert_eq!(a.status, 422, "{}", a.json);
    assert!(
        home.create(&SubscriptionRequest::new(GP, patients[2].clone()).name("x"))
            .await
            .is_err(),
        "another organisation's subscriber id is refused"
    );

    // Two care services receive through the SDK in this process.
    let (stop, stopped) = watch::channel(false);
    let mut services = vec![];
    let mut counts = vec![];
    for subscriber in [HOME, GP] {
        let count = Arc::new(AtomicUsize::new(0));
        counts.push(count.clone());
        let sdk = Subscriber::connect(
            SubscriberConfig::new(stack.settings.clone(), subscriber)
                .group_id(format!("logs-{subscriber}")),
        )
        .await
        .unwrap();
        let mut stopped = stopped.clone();
        services.push(tokio::spawn(sdk.run(
            move |_received| {
                count.fetch_add(1, Ordering::SeqCst);
                async { Ok::<(), std::convert::Infallible>(()) }
            },
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        )));
    }

    // The demo's readings: the native JSON form, then FHIR Bundles with late and malformed
    // submissions (a wrong check digit among them).
    let mut accepted = 0;
    for fhir in [false, true] {
        let client = GatewayClient::new(url.clone(), PLATFORM_TOKEN);
        let (client, fleet) = if fhir {
            let options = SimOptions {
                late_fraction: 0.2,
                late_max_hours: 8,
                malformed_fraction: 0.2,
            };
            (client.fhir(), Fleet::with_options(SEED, PATIENTS, options))
        } else {
            (client, Fleet::new(SEED, PATIENTS))
        };
        let stats = run(
            fleet,
            Sink::Gateway(client),
            40.0,
            Duration::from_secs(3),
            8,
        )
        .await;
        assert_eq!(stats.failed, 0, "{stats:?}");
        assert_eq!(stats.malformed_accepted, 0, "{stats:?}");
        accepted += stats.accepted as usize;
    }
    assert!(accepted >= 150, "{accepted}");

    // Every accepted reading reaches both services (everyone consents to both).
    let deadline = Instant::now() + Duration::from_secs(90);
    while counts.iter().any(|c| c.load(Ordering::SeqCst) < accepted) {
        assert!(
            Instant::now() < deadline,
            "deliveries: home {}, gp {}, of {accepted}",
            counts[0].load(Ordering::SeqCst),
            counts[1].load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    stop.send(true).unwrap();
    for service in services {
        service.await.unwrap().unwrap();
    }
    router.terminate().await;
    let pid = ingest.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::time::timeout(Duration::from_secs(30), ingest.wait())
        .await
        .expect("dho-ingest stops on SIGTERM")
        .unwrap();
    assert!(exit.success(), "dho-ingest exited with {exit}");

    let logs = [
        ("dho-ingest", std::fs::read_to_string(&ingest_log).unwrap()),
        ("dho-router", std::fs::read_to_string(&router_log).unwrap()),
        (
            "this process (SDK, broker, registry)",
            String::from_utf8(captured.0.lock().unwrap().clone()).unwrap(),
        ),
    ];

    // JSON at debug level really is what was logged, and the interesting paths ran.
    let mut debug_lines = 0;
    for (source, text) in &logs {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "{source} logged nothing");
        for line in &lines {
            let json: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{source}: not a JSON line ({e}): {line}"));
            if json["level"] == "DEBUG" {
                debug_lines += 1;
            }
        }
        eprintln!("{source}: {} JSON lines", lines.len());
    }
    assert!(debug_lines > 0, "RUST_LOG=debug produced no debug line");
    assert!(logs[0].1.contains("request refused by authentication"));
    assert!(logs[0].1.contains("consent recorded"));
    assert!(logs[1].1.contains("router connected"));
    assert!(logs[2].1.contains("subscriber connected"));

    let scanner = Scanner::new()
        .identifiers(patients.iter().map(|p| p.value.clone()))
        .identifiers([wrong_check_digit])
        .secrets([
            PLATFORM_TOKEN,
            OTHER_PLATFORM_TOKEN,
            HOME_TOKEN,
            GP_TOKEN,
            WRONG_TOKEN,
        ]);
    let mut leaks = vec![];
    for (source, text) in &logs {
        for (what, line) in scanner.scan(text) {
            leaks.push(format!("{source}: {what}: {line}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "{} log lines leak:\n{}",
        leaks.len(),
        leaks
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
