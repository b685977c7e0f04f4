//! `dho-ingest`: the ingest gateway. Configuration layers: defaults, then the TOML file
//! (`--config`, see `config/ingest.example.toml`), then `DHO_<KEY>` environment, then
//! flags (`--set key=value` for any key but the credential lists, which are file-only).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use dho_gateway::{Gateway, GatewayConfig, install_metrics};
use dho_kafka::layers;
use dho_kafka::service::{KafkaArgs, init_logging, shutdown_signal};

#[derive(Debug, Parser)]
#[command(about = "The DHO hub's ingest gateway (FHIR Bundles, JSON, consent, subscriptions)")]
struct Args {
    /// TOML configuration file (credentials live there).
    #[arg(long, env = "DHO_CONFIG")]
    config: PathBuf,
    /// Listen address (overrides the file); port 0 picks a free port.
    #[arg(long, env = "DHO_LISTEN")]
    listen: Option<SocketAddr>,
    /// Any config key but the credential lists, e.g. `--set max_in_flight=5000`
    /// (repeatable; over the file and the environment).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Log as JSON lines (production) instead of human-readable text.
    #[arg(long, env = "DHO_LOG_JSON")]
    log_json: bool,
}

fn load(args: &Args) -> anyhow::Result<GatewayConfig> {
    let mut config: GatewayConfig = layers::load(
        Some(&args.config),
        toml::Table::new(),
        &layers::environment(),
        &args.set,
    )?;
    if let Some(v) = args.listen {
        config.listen = v;
    }
    args.kafka.apply(&mut config.kafka);
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_json);
    let config = load(&args)?;
    let metrics = install_metrics().context("installing the metrics recorder")?;
    let gateway = Gateway::connect(config, Some(metrics))
        .await
        .context("starting the gateway")?;
    let listener = gateway.bind().await.context("binding the listen address")?;
    // The bound address on stdout (logs go to stderr), for supervisors and tests that
    // asked for port 0.
    println!("listening on {}", listener.local_addr()?);
    gateway
        .serve(listener, shutdown_signal())
        .await
        .context("the gateway stopped with an error")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_unknown_keys_are_refused() {
        let text = include_str!("../../config/ingest.example.toml");
        let config: GatewayConfig = toml::from_str(text).unwrap();
        assert_eq!(config.platforms.len(), 1);
        assert_eq!(config.care_organisations[0].subscriber_ids.len(), 1);
        let typo = text.replace("max_bundle_entries", "max_bundle_entires");
        let err = toml::from_str::<GatewayConfig>(&typo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_bundle_entires"), "{err}");
        dho_gateway::Credentials::from_config(&config).unwrap();
    }
}
