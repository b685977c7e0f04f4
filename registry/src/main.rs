//! `dho-registry`: run the Confluent-compatible schema registry against a Kafka cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use dho_registry::{DEFAULT_TOPIC, RegistryConfig};

/// A Confluent-compatible schema registry that stores schemas in a compacted Kafka topic.
#[derive(Debug, Parser)]
#[command(name = "dho-registry", version)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "DHO_REGISTRY_BOOTSTRAP_SERVERS")]
    bootstrap_servers: String,
    /// HTTP listen address.
    #[arg(long, env = "DHO_REGISTRY_LISTEN", default_value = dho_registry::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The compacted, single-partition schemas topic.
    #[arg(long, env = "DHO_REGISTRY_TOPIC", default_value = DEFAULT_TOPIC)]
    topic: String,
    /// Replication factor when the registry creates the topic.
    #[arg(long, env = "DHO_REGISTRY_REPLICATION_FACTOR", default_value_t = 1)]
    replication_factor: i32,
    /// Broker timeout in seconds (topic creation, start-up replay, each write).
    #[arg(long, env = "DHO_REGISTRY_KAFKA_TIMEOUT_SECS", default_value_t = 30)]
    kafka_timeout_secs: u64,
    /// Extra librdkafka option as key=value (repeatable; comma-separated in the env var).
    #[arg(
        long = "kafka-option",
        env = "DHO_REGISTRY_KAFKA_OPTIONS",
        value_delimiter = ','
    )]
    kafka_options: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();

    let mut kafka_options = BTreeMap::new();
    for option in &args.kafka_options {
        let Some((key, value)) = option.split_once('=') else {
            bail!("--kafka-option must be key=value, got {option:?}");
        };
        kafka_options.insert(key.trim().to_string(), value.trim().to_string());
    }
    let config = RegistryConfig {
        bootstrap_servers: args.bootstrap_servers,
        listen: args.listen,
        topic: args.topic,
        replication_factor: args.replication_factor,
        kafka_timeout: Duration::from_secs(args.kafka_timeout_secs),
        kafka_options,
    };

    let registry = dho_registry::start(config)
        .await
        .context("starting the schema registry")?;
    println!("schema registry listening on {}", registry.url());

    shutdown_signal().await;
    tracing::info!("shutting down");
    registry
        .shutdown()
        .await
        .context("stopping the schema registry")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
