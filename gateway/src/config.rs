//! The gateway's configuration: one typed struct, unknown keys refused, defaults in code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dho_kafka::KafkaSettings;
use serde::Deserialize;

/// `dho-ingest`'s configuration (TOML file, then `DHO_*` environment, then flags).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Kafka cluster, schema registry, topic prefix, partitions, librdkafka pass-through.
    pub kafka: KafkaSettings,
    /// Where the HTTP API (and `/metrics`, `/healthz`, `/readyz`) is served.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request body accepted on the reading endpoints (Bundle, measurements,
    /// self-reports), in bytes; larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest request body accepted on the state endpoints (Consent, subscriptions, care
    /// plans), in bytes; larger ones get 413. One record each: far smaller than a Bundle.
    #[serde(default = "default_max_state_body_bytes")]
    pub max_state_body_bytes: usize,
    /// Seconds a request body may take to arrive once the handler reads it; a slower one
    /// gets 408. (The wait for the broker's acknowledgement is not limited by it.)
    #[serde(default = "default_body_timeout", with = "secs")]
    pub body_timeout: Duration,
    /// Seconds a client may take to send a request's head (request line and headers); a
    /// connection that trickles them is closed. Also bounds an idle kept-alive connection's
    /// wait for its next request.
    #[serde(default = "default_header_read_timeout", with = "secs")]
    pub header_read_timeout: Duration,
    /// Most connections open at once; further ones wait to be accepted until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// TLS: the certificate chain (PEM). With `tls_key_file`, the API is served over TLS
    /// only; without both, in the clear (behind a TLS-terminating proxy).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// TLS: the certificate's private key (PEM; a file only the gateway can read).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Most entries in one FHIR Bundle; more get 413 for the whole bundle.
    #[serde(default = "default_max_bundle_entries")]
    pub max_bundle_entries: usize,
    /// Most entries being published at once over all requests. A request that would go
    /// beyond it gets 503 with `Retry-After` instead of queueing without bound. At least
    /// `max_bundle_entries`, so every accepted bundle can eventually go through.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Seconds a client is told to wait (`Retry-After`) when the gateway is saturated.
    #[serde(default = "default_retry_after", with = "secs")]
    pub retry_after: Duration,
    /// Most readings remembered to recognise re-sends (the oldest are forgotten first;
    /// 0 turns recognition off). A reading re-sent with the same source id and content is
    /// answered with the original acknowledgement instead of being published again.
    #[serde(default = "default_resend_memory")]
    pub resend_memory: usize,
    /// Seconds after its acknowledgement that a reading's re-send is still recognised.
    #[serde(default = "default_resend_window", with = "secs")]
    pub resend_window: Duration,
    /// Accept identifiers from synthetic test populations (development, tests and the
    /// demo; refused unless set).
    #[serde(default)]
    pub allow_synthetic_identifiers: bool,
    /// Device platforms allowed to publish readings and self-reports.
    #[serde(default)]
    pub platforms: Vec<PlatformCredential>,
    /// Care organisations allowed to record consent and care plans and manage their own
    /// subscriptions.
    #[serde(default)]
    pub care_organisations: Vec<CareOrganisationCredential>,
    /// Patient portals' integrations, recording consent on behalf of the patient (the
    /// patient's own channel: may widen sharing, see ARCHITECTURE.md).
    #[serde(default)]
    pub patient_channels: Vec<PatientChannelCredential>,
    /// Most consent changes one care organisation's credential may ask for per minute
    /// (refused or not); more get 429 with `Retry-After`. A stolen credential then cannot
    /// rewrite many patients' consent before someone notices.
    #[serde(default = "default_consent_changes_per_minute")]
    pub consent_changes_per_minute: u32,
    /// The same for a patient channel's credential: a portal records consent for every
    /// patient who uses it, so its budget is larger.
    #[serde(default = "default_patient_channel_consent_changes_per_minute")]
    pub patient_channel_consent_changes_per_minute: u32,
}

/// A patient portal's credential: it records consent on behalf of the patient who signed
/// in to the portal (the portal authenticates the patient; the hub trusts the portal).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientChannelCredential {
    /// A name for operators (shown in logs and audit records; never the token).
    pub name: String,
    /// The portal operator's organisation number: the recorder of its consents.
    pub orgnr: String,
    /// Hex SHA-256 of the portal's bearer token.
    pub token_sha256: String,
}

/// A device platform's credential. The platform publishes only as itself: its
/// organisation number is the data controller and source platform of everything it sends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformCredential {
    /// A name for operators (shown in logs and audit records; never the token).
    pub name: String,
    /// The platform's organisation number (9 digits, valid check digit).
    pub orgnr: String,
    /// Hex SHA-256 of the platform's bearer token (`dho-admin token` makes a pair).
    pub token_sha256: String,
}

/// A care organisation's credential: a municipality, GP office or hospital clinic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CareOrganisationCredential {
    /// A name for operators (shown in logs and audit records; never the token).
    pub name: String,
    /// The organisation's number (9 digits, valid check digit): the recorder of its
    /// consents and the subscriber organisation of its subscriptions.
    pub orgnr: String,
    /// Hex SHA-256 of the organisation's bearer token.
    pub token_sha256: String,
    /// The subscriber ids (delivery topics) this organisation owns and may manage.
    #[serde(default)]
    pub subscriber_ids: Vec<String>,
}

fn default_consent_changes_per_minute() -> u32 {
    30
}
fn default_patient_channel_consent_changes_per_minute() -> u32 {
    6000
}
fn default_listen() -> SocketAddr {
    ([127, 0, 0, 1], 8090).into()
}
fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_max_state_body_bytes() -> usize {
    64 * 1024
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_bundle_entries() -> usize {
    500
}
fn default_max_in_flight() -> usize {
    20_000
}
fn default_retry_after() -> Duration {
    Duration::from_secs(1)
}
fn default_resend_memory() -> usize {
    100_000
}
fn default_resend_window() -> Duration {
    Duration::from_secs(600)
}

/// Durations in config files as whole seconds (`retry_after = 1`).
mod secs {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?.max(1)))
    }
}

impl GatewayConfig {
    /// Defaults, no credentials: nobody may do anything until some are added.
    pub fn new(kafka: KafkaSettings) -> Self {
        Self {
            kafka,
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            max_state_body_bytes: default_max_state_body_bytes(),
            body_timeout: default_body_timeout(),
            header_read_timeout: default_header_read_timeout(),
            max_connections: default_max_connections(),
            tls_cert_file: None,
            tls_key_file: None,
            max_bundle_entries: default_max_bundle_entries(),
            max_in_flight: default_max_in_flight(),
            retry_after: default_retry_after(),
            resend_memory: default_resend_memory(),
            resend_window: default_resend_window(),
            allow_synthetic_identifiers: false,
            platforms: vec![],
            care_organisations: vec![],
            patient_channels: vec![],
            consent_changes_per_minute: default_consent_changes_per_minute(),
            patient_channel_consent_changes_per_minute:
                default_patient_channel_consent_changes_per_minute(),
        }
    }
}
