//! A Confluent-compatible schema registry that stores schemas in a compacted Kafka topic.
//!
//! The development stack, the demo and the tests run this instead of Confluent's registry
//! (which cannot be installed here). It speaks the REST API Confluent's clients use
//! (`schema_registry_converter`, confluent-kafka-python, the Java client) and keeps its data
//! the way Confluent does: JSON records in a compacted, single-partition topic (`_schemas`
//! by default), replayed at start-up, so ids and versions survive restarts.
//!
//! Layout: [`state`] is the pure state machine (registration, lookup, compatibility,
//! deletes, replay), `store` is the Kafka topic, `http` the axum routes.
//!
//! # Guarantees
//! - A write is applied to memory only after the broker acknowledged it (acks=all,
//!   idempotent producer), so an answered request is durable.
//! - Ids are global; the same schema (by canonical form) under another subject reuses its
//!   id; a new schema gets the largest id ever seen + 1.
//!
//! # Known limitations
//! - **Single writer.** The topic is read once at start-up; run one registry per topic.
//! - **Compatibility for PROTOBUF and JSON** schemas only detects a change of schema type;
//!   any other change is accepted. Avro is checked with apache-avro's resolution rules
//!   (a partial match, such as a removed enum symbol, counts as incompatible).
//! - Protobuf schemas are validated by parsing (`.proto` text or a base64
//!   `FileDescriptorProto`); `format=serialized` returns the descriptor without source
//!   info, named `default`. Imports are not resolved when validating.
//! - Schema ids of permanently deleted schemas can be handed out again after the topic has
//!   been compacted and the registry restarted (as with Confluent's own store).
//! - No contexts, no `metadata`/`ruleSet` (accepted and ignored), no GUIDs, no auth.
//! - `normalize` is accepted and has no further effect: identity always uses the canonical
//!   form.

mod canonical;
mod compat;
mod error;
mod http;
pub mod log;
pub mod state;
mod store;
pub mod types;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::ServiceExt as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use error::{Error, Result};
pub use http::CONTENT_TYPE;

/// Where the registry listens unless told otherwise (Confluent's port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
/// The schemas topic unless told otherwise (Confluent's name).
pub const DEFAULT_TOPIC: &str = "_schemas";

/// How to run a registry.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Kafka `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// HTTP listen address; port 0 picks a free port (see [`RunningRegistry::url`]).
    pub listen: SocketAddr,
    /// The compacted, single-partition topic that holds the schemas.
    pub topic: String,
    /// Replication factor used when the registry creates the topic.
    pub replication_factor: i32,
    /// Broker timeout for topic creation, the start-up replay and each write.
    pub kafka_timeout: Duration,
    /// Extra librdkafka options (security, client id, …) for every client. Keys the
    /// registry sets itself (`bootstrap.servers`, `acks`, `enable.idempotence`, …) are refused.
    pub kafka_options: BTreeMap<String, String>,
}

impl RegistryConfig {
    /// Defaults: listen on 127.0.0.1:8081, topic `_schemas`, replication factor 1, 30 s.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            topic: DEFAULT_TOPIC.to_string(),
            replication_factor: 1,
            kafka_timeout: Duration::from_secs(30),
            kafka_options: BTreeMap::new(),
        }
    }

    /// The same configuration with another listen address (e.g. port 0 in tests).
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// The same configuration with another topic.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }
}

/// A registry serving HTTP. Stop it with [`RunningRegistry::shutdown`]; dropping it also
/// asks the server to stop, without waiting.
#[derive(Debug)]
pub struct RunningRegistry {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Creates the topic if needed, replays it, binds the listener and serves.
pub async fn start(config: RegistryConfig) -> Result<RunningRegistry> {
    if config.topic.trim().is_empty() {
        return Err(Error::Config("the schemas topic name is empty".to_string()));
    }
    let (store, state) = store::KafkaStore::open(&config).await?;
    let shared = Arc::new(http::Shared::new(state, store));
    let app = tower::ServiceBuilder::new()
        .map_request(http::normalize_path)
        .service(http::router(shared));

    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, topic = %config.topic, "schema registry listening");
    Ok(RunningRegistry {
        addr,
        stop: Some(stop),
        task: Some(task),
    })
}

impl RunningRegistry {
    /// The base URL clients use, e.g. `http://127.0.0.1:8081`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting requests, lets running ones finish (up to 10 s) and returns.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(Duration::from_secs(10), &mut task).await {
            Ok(Ok(result)) => Ok(result?),
            Ok(Err(join)) => Err(Error::Store(format!("the server task failed: {join}"))),
            Err(_) => {
                // Clients holding idle keep-alive connections must not block shutdown.
                task.abort();
                tracing::warn!("schema registry connections did not close within 10 s");
                Ok(())
            }
        }
    }
}

impl Drop for RunningRegistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
