//! Helpers for the ingest gateway's tests: credentials for two device platforms and two
//! care services, a gateway in this process (port 0) or as the `dho-ingest` program, and a
//! small HTTP client that returns status, headers and JSON.

use std::path::PathBuf;
use std::process::Stdio;

use dho_gateway::{
    CareOrganisationCredential, GatewayConfig, PatientChannelCredential, PlatformCredential,
    RunningGateway, hash_token,
};
use dho_kafka::KafkaSettings;
use dho_schemas::OrganisationIdentifier;
use dho_schemas::fixtures;
use dho_schemas::model::Measurement;
use tokio::process::{Child, Command};

/// The test platform's token (publishes as `fixtures::platform()`).
pub const PLATFORM_TOKEN: &str = "test-platform-token-0123456789abcdef0123456789abcdef";
/// A second platform's token (publishes as [`other_platform`]).
pub const OTHER_PLATFORM_TOKEN: &str = "test-other-platform-token-0123456789abcdef0123456789";
/// Home care's token (`fixtures::home_care()`, subscriber `bergen-home-care`).
pub const HOME_TOKEN: &str = "test-home-care-token-0123456789abcdef0123456789abcdef";
/// The GP's token (`fixtures::gp()`, subscriber `sentrum-gp`).
pub const GP_TOKEN: &str = "test-gp-token-0123456789abcdef0123456789abcdef01234567";

/// A patient portal's token: the patients' own channel, which may record any consent
/// change (as [`portal`]).
pub const PORTAL_TOKEN: &str = "test-patient-portal-token-0123456789abcdef0123456789ab";

pub const HOME: &str = "bergen-home-care";
pub const GP: &str = "sentrum-gp";

/// Another device platform with a valid organisation number.
pub fn other_platform() -> OrganisationIdentifier {
    OrganisationIdentifier::orgnr(fixtures::orgnr(93_100_001), "Other platform AS")
}

/// The patient portal's operator (the recorder of the consents it sends).
pub fn portal() -> OrganisationIdentifier {
    OrganisationIdentifier::orgnr(fixtures::orgnr(99_500_001), "Test patient portal")
}

/// A gateway config for `settings` with the five credentials (two platforms, two care
/// organisations, the patient portal), listening on port 0.
pub fn gateway_config(settings: &KafkaSettings) -> GatewayConfig {
    let mut config = GatewayConfig::new(settings.clone());
    config.listen = ([127, 0, 0, 1], 0).into();
    // The tests' patients are synthetic.
    config.allow_synthetic_identifiers = true;
    config.platforms = vec![
        PlatformCredential {
            name: "test-platform".into(),
            orgnr: fixtures::platform().value,
            token_sha256: hash_token(PLATFORM_TOKEN),
        },
        PlatformCredential {
            name: "other-platform".into(),
            orgnr: other_platform().value,
            token_sha256: hash_token(OTHER_PLATFORM_TOKEN),
        },
    ];
    config.care_organisations = vec![
        CareOrganisationCredential {
            name: HOME.into(),
            orgnr: fixtures::home_care().value,
            token_sha256: hash_token(HOME_TOKEN),
            subscriber_ids: vec![HOME.into()],
        },
        CareOrganisationCredential {
            name: GP.into(),
            orgnr: fixtures::gp().value,
            token_sha256: hash_token(GP_TOKEN),
            subscriber_ids: vec![GP.into()],
        },
    ];
    config.patient_channels = vec![PatientChannelCredential {
        name: "test-portal".into(),
        orgnr: portal().value,
        token_sha256: hash_token(PORTAL_TOKEN),
    }];
    config
}

/// A gateway in this process.
pub async fn start_gateway(config: GatewayConfig) -> RunningGateway {
    RunningGateway::start(config)
        .await
        .unwrap_or_else(|e| panic!("the gateway did not start: {e}"))
}

/// The config as the TOML file `dho-ingest` reads.
pub fn config_toml(config: &GatewayConfig) -> String {
    let k = &config.kafka;
    let mut text = format!(
        "listen = \"{}\"\nmax_bundle_entries = {}\nmax_body_bytes = {}\n\
         allow_synthetic_identifiers = {}\n\n[kafka]\n\
         bootstrap_servers = \"{}\"\nschema_registry_url = \"{}\"\ntopic_prefix = \"{}\"\npartitions = {}\n",
        config.listen,
        config.max_bundle_entries,
        config.max_body_bytes,
        config.allow_synthetic_identifiers,
        k.bootstrap_servers,
        k.schema_registry_url,
        k.topic_prefix,
        k.partitions
    );
    for p in &config.platforms {
        text += &format!(
            "\n[[platforms]]\nname = \"{}\"\norgnr = \"{}\"\ntoken_sha256 = \"{}\"\n",
            p.name, p.orgnr, p.token_sha256
        );
    }
    for c in &config.care_organisations {
        text += &format!(
            "\n[[care_organisations]]\nname = \"{}\"\norgnr = \"{}\"\ntoken_sha256 = \"{}\"\nsubscriber_ids = {:?}\n",
            c.name, c.orgnr, c.token_sha256, c.subscriber_ids
        );
    }
    for c in &config.patient_channels {
        text += &format!(
            "\n[[patient_channels]]\nname = \"{}\"\norgnr = \"{}\"\ntoken_sha256 = \"{}\"\n",
            c.name, c.orgnr, c.token_sha256
        );
    }
    text
}

/// The path of one of the publishing side's programs (`dho-ingest`, `dho-admin`,
/// `dho-simulator`), built first.
pub fn program(name: &str) -> PathBuf {
    let package = match name {
        "dho-ingest" => "dho-gateway",
        // dho-admin and dho-simulator are their packages' own programs.
        other => other,
    };
    crate::binary(package, name)
}

/// `dho-admin` (the program) with the stack's Kafka settings and `args`; its output, whether
/// it succeeded or not.
pub fn run_admin(stack: &crate::Stack, args: &[&str]) -> std::process::Output {
    let s = &stack.settings;
    std::process::Command::new(program("dho-admin"))
        .args(["--bootstrap-servers", &s.bootstrap_servers])
        .args(["--schema-registry-url", &s.schema_registry_url])
        .args(["--topic-prefix", &s.topic_prefix])
        .args(["--partitions", &s.partitions.to_string()])
        // The tests' patients are synthetic.
        .arg("--allow-synthetic")
        .args(args)
        .output()
        .expect("dho-admin runs")
}

/// [`run_admin`] that must succeed (its stderr in the panic otherwise).
pub fn admin_ok(stack: &crate::Stack, args: &[&str]) -> std::process::Output {
    let output = run_admin(stack, args);
    assert!(
        output.status.success(),
        "dho-admin {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `dho-admin enrol`: `org` becomes responsible for `patient`'s follow-up, so it may widen
/// the patient's sharing through the gateway.
pub fn enrol(
    stack: &crate::Stack,
    patient: &dho_schemas::PatientIdentifier,
    org: &OrganisationIdentifier,
) {
    admin_ok(
        stack,
        &[
            "enrol",
            "--patient",
            &patient.value,
            "--organisation",
            &org.value,
            "--basis",
            "test: home follow-up",
        ],
    );
}

/// A program's stdout as one JSON value per line (a line that is not JSON panics).
pub fn json_lines(output: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// `dho-ingest` as a child process with `config`; returns it and its address. Its log
/// (stderr) goes to `log`.
pub async fn spawn_ingest(
    config: &GatewayConfig,
    dir: &std::path::Path,
    log: &std::path::Path,
) -> (Child, String) {
    spawn_ingest_with(config, dir, log, &[], "info").await
}

/// [`spawn_ingest`] with `args` added and `RUST_LOG` set to `rust_log`.
pub async fn spawn_ingest_with(
    config: &GatewayConfig,
    dir: &std::path::Path,
    log: &std::path::Path,
    args: &[&str],
    rust_log: &str,
) -> (Child, String) {
    let path = dir.join("ingest.toml");
    std::fs::write(&path, config_toml(config)).unwrap();
    let mut child = Command::new(program("dho-ingest"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("dho-ingest starts");
    let addr = crate::announced(&mut child, "dho-ingest", "listening on ").await;
    (child, format!("http://{addr}"))
}

/// An answer: status, selected headers and the JSON body (Null if none or not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: serde_json::Value,
}

/// A small HTTP client for the gateway.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: base.into(),
        }
    }

    /// Sends `body` (JSON, or raw bytes when `raw`) with `token` (none: no header).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> reqwest::Result<Answer> {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        self.send_bytes(method, path, token, bytes).await
    }

    pub async fn send_bytes(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> reqwest::Result<Answer> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        Ok(Answer {
            status,
            headers,
            json: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        })
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &serde_json::Value) -> Answer {
        self.send(reqwest::Method::POST, path, token, Some(body))
            .await
            .expect("the gateway answers")
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("the gateway answers");
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

/// Publishes `m` through the gateway as the test platform (201) and waits until the router
/// in consumer group `group` has routed it; its event id.
pub async fn publish_routed(
    stack: &crate::Stack,
    http: &Http,
    group: &str,
    m: &Measurement,
) -> String {
    let a = http
        .post(
            "/measurements",
            Some(PLATFORM_TOKEN),
            &serde_json::to_value(m).unwrap(),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.json);
    crate::wait_routed(
        &stack.settings,
        group,
        a.json["topic"].as_str().unwrap(),
        a.json["partition"].as_i64().unwrap() as i32,
        a.json["offset"].as_i64().unwrap(),
    )
    .await;
    a.json["event_id"].as_str().unwrap().to_string()
}
