//! The ingest gateway: an HTTP service through which device platforms hand readings and
//! self-reports to the hub (FHIR R4 Bundles shaped like VKP's, or the native JSON form),
//! and care organisations record consent and care plans and manage their own subscriptions.
//!
//! Every `2xx` is sent only after the broker acknowledged the record (the [`Publisher`]
//! is idempotent with `acks=all`), so an acknowledged reading is never lost; a gateway
//! killed between accepting and answering leaves the client without an answer, and the
//! client retries. A retried reading with a source id (the platform's own id of it) gets
//! the same event id, derived from platform, kind and source id, and within `resend_window` the
//! gateway answers it with the original acknowledgement instead of publishing it again
//! (`resent.rs`: the router's delivery ids come from source positions, so a second record
//! would reach subscribers twice).
//!
//! Endpoints (see `routes.rs` and `routes/`, one module per endpoint group):
//! - `POST /fhir` and `POST /fhir/Bundle`: a `batch` (VKP) or `collection` (PMD) Bundle →
//!   HTTP 200 with a `batch-response` Bundle, one entry per input entry in order.
//! - `POST /measurements`, `POST /selfreports`: one record in the native JSON form.
//! - `POST /fhir/Consent`: a Consent, by care organisations and the patient's own channel
//!   (a patient portal), under the rule of `consent_authority.rs`: widening sharing is the
//!   patient's or a responsible organisation's; any other organisation may only narrow its
//!   own access. Refused changes get 403, audited on `<prefix>.audit.refusals` like every
//!   403; more than `consent_changes_per_minute` per credential get 429.
//! - `POST /subscriptions`, `PUT|DELETE /subscriptions/{id}`: a care service's own
//!   (ids are `<subscriber_id>.<name>`; `DELETE` takes `{"patient": …}` as its body, since a
//!   patient number never belongs in a URL).
//! - `POST /careplans`, `PUT|DELETE /careplans/{id}`: a patient's self-management plan
//!   (`CarePlan`, native JSON), by care organisations only, as themselves (`updated_by` is
//!   the caller; ids are `<orgnr>.<name>`, so only the owner replaces or deletes a plan;
//!   `DELETE` takes `{"patient": …}` as its body). Every change is audited first on
//!   `<prefix>.audit.careplans`, as consent changes are on `<prefix>.audit.consents`.
//!
//! Who may call a route is in its handler's signature: its first argument is the role's
//! extractor (`routes/roles.rs`: a device platform or a care organisation), which checks
//! the token and the role from the request's head, before the body is read.
//!
//! Refusals: `401` (no or unknown token, with `WWW-Authenticate: Bearer`), `403` (wrong
//! role, another platform's data controller, another care service's subscription, another
//! organisation's care plan), `400` (malformed JSON or shape), `413` (body or bundle too
//! large), `422` (a rule broken, naming the field),
//! `503` with `Retry-After` (saturated, or the broker did not acknowledge). FHIR endpoints
//! answer with an OperationOutcome naming the element (`expression`) and the rule.
//! - `GET /healthz`, `/readyz`, `/metrics`.

mod auth;
pub mod config;
mod consent_authority;
mod event_id;
pub mod events;
mod limits;
pub mod openapi;
mod rate_limit;
mod resent;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use dho_schemas::Policy;
use dho_telemetry::server::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use auth::{AuthFailure, Credentials, Principal, hash_token, new_token};
pub use config::{
    CareOrganisationCredential, GatewayConfig, PatientChannelCredential, PlatformCredential,
};
pub use dho_schemas::fhir::consent::{CATEGORY_SYSTEM, consent_from_fhir, fhir_consent};
pub use routes::{is_own_care_plan_id, is_own_subscription_id};

use dho_publisher::Publisher;

/// Errors starting or running the gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is wrong: fix it.
    #[error("invalid gateway configuration: {0}")]
    Config(String),
    /// Kafka or the schema registry could not be reached or set up: retry later.
    #[error(transparent)]
    Publish(#[from] dho_publisher::Error),
    /// The listener could not be bound or the server failed.
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Most refusal audit records in flight at once.
const MAX_REFUSAL_AUDITS: usize = 1024;

/// A configured gateway, ready to serve.
#[derive(Clone, Debug)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    config: GatewayConfig,
    credentials: Credentials,
    publisher: Publisher,
    policy: Policy,
    /// Permits for entries being published: the gateway's own bound on buffering.
    in_flight: Arc<Semaphore>,
    /// Readings published recently, to answer their re-sends without publishing again.
    recent: resent::Recent,
    metrics: Option<PrometheusHandle>,
    /// Set when the API is served over TLS.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Consent changes to one patient are judged and written one at a time.
    consent_locks: consent_authority::ConsentLocks,
    /// Consent changes per credential and minute.
    consent_rate: rate_limit::RateLimit,
    /// Refusal audit records being written at once (see `routes/steps.rs`).
    refusal_audits: Arc<Semaphore>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.config.listen)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Checks the config and credentials and connects the publisher (creating topics and
    /// registering schemas). `metrics` renders `/metrics`; see [`install_metrics`].
    pub async fn connect(config: GatewayConfig, metrics: Option<PrometheusHandle>) -> Result<Self> {
        if config.max_in_flight < config.max_bundle_entries {
            return Err(Error::Config(
                "max_in_flight must be at least max_bundle_entries".into(),
            ));
        }
        if config.max_bundle_entries == 0 || config.max_body_bytes == 0 {
            return Err(Error::Config(
                "max_bundle_entries and max_body_bytes must be positive".into(),
            ));
        }
        let credentials = Credentials::from_config(&config)?;
        // Checked before anything connects: a wrong path is a configuration error.
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => {
                Some(limits::tls_acceptor(cert, key).map_err(Error::Config)?)
            }
            (None, None) => None,
            _ => {
                return Err(Error::Config(
                    "tls_cert_file and tls_key_file go together: set both or neither".into(),
                ));
            }
        };
        let policy = Policy {
            allow_synthetic: config.allow_synthetic_identifiers,
        };
        let publisher = Publisher::connect(&config.kafka, policy).await?;
        let recent = resent::Recent::new(&config.kafka, config.resend_memory, config.resend_window);
        let remembered = recent
            .warm_up(&config.kafka)
            .await
            .map_err(dho_publisher::Error::from)?;
        tracing::info!(
            remembered,
            "recent readings read back, to recognise their re-sends"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
                recent,
                config,
                credentials,
                publisher,
                policy,
                metrics,
                tls,
                consent_locks: Default::default(),
                consent_rate: Default::default(),
                refusal_audits: Arc::new(Semaphore::new(MAX_REFUSAL_AUDITS)),
            }),
        })
    }

    /// The axum application (for embedding, or tests with `tower::ServiceExt`).
    pub fn app(&self) -> axum::Router {
        routes::app(self.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then flushes the producer.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "ingest gateway listening");
        let listener = limits::GatewayListener::new(
            listener,
            self.inner.config.max_connections,
            self.inner.tls.clone(),
        )?;
        let header_read_timeout = self.inner.config.header_read_timeout;
        limits::serve(listener, self.app(), header_read_timeout, shutdown).await;
        self.inner
            .publisher
            .flush(std::time::Duration::from_secs(10))?;
        Ok(())
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> Result<TcpListener> {
        Ok(TcpListener::bind(self.inner.config.listen).await?)
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }
}

/// A gateway serving in the background (tests, embedding); stops when dropped or stopped.
#[derive(Debug)]
pub struct RunningGateway {
    pub addr: SocketAddr,
    scheme: &'static str,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl RunningGateway {
    /// Connects and serves on `config.listen` (port 0 picks a free port).
    pub async fn start(config: GatewayConfig) -> Result<Self> {
        let gateway = Gateway::connect(config, install_metrics().ok()).await?;
        let listener = gateway.bind().await?;
        let addr = listener.local_addr()?;
        let scheme = if gateway.inner.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(listener, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            scheme,
            stop: Some(stop),
            task,
        })
    }

    /// `http://<addr>`, or `https://<addr>` when served over TLS.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Graceful stop: in-flight requests finish, the producer is flushed.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?
    }
}

/// Installs the process-wide Prometheus recorder once and returns its handle (later calls
/// return the same one). Fails if another recorder was installed first.
pub fn install_metrics() -> Result<PrometheusHandle> {
    dho_telemetry::install_recorder().map_err(|e| Error::Config(e.to_string()))
}
