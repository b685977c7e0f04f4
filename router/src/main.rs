//! `dho-router`: the routing service. Configuration layers: defaults, then the TOML file
//! (`--config`), then `DHO_<KEY>` environment variables, then flags (`--set key=value` for
//! any key; see `dho_kafka::layers`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::Parser;
use dho_kafka::layers;
use dho_kafka::service::{KafkaArgs, init_logging, shutdown_signal};
use dho_router::{Router, RouterConfig};
use dho_telemetry::{Readiness, install_recorder, server};

#[derive(Debug, Parser)]
#[command(about = "The DHO hub's consent-first router")]
struct Args {
    /// TOML configuration file (see config/router.example.toml).
    #[arg(long, env = "DHO_CONFIG")]
    config: Option<PathBuf>,
    /// Any config key, e.g. `--set allow_synthetic_identifiers=false` (repeatable; over the
    /// file and the environment).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Consumer group of the router instances (overrides the file).
    #[arg(long, env = "DHO_GROUP_ID")]
    group_id: Option<String>,
    /// Serve `/metrics`, `/healthz` and `/readyz` here (overrides the file); port 0 picks a
    /// free port, printed on stdout.
    #[arg(long, env = "DHO_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Log as JSON lines (production) instead of human-readable text.
    #[arg(long, env = "DHO_LOG_JSON")]
    log_json: bool,
}

fn load(args: &Args) -> anyhow::Result<RouterConfig> {
    let mut config: RouterConfig = layers::load(
        args.config.as_deref(),
        layers::local_base(),
        &layers::environment(),
        &args.set,
    )?;
    args.kafka.apply(&mut config.kafka);
    if let Some(v) = &args.group_id {
        config.group_id = v.clone();
    }
    if let Some(v) = args.metrics_listen {
        config.metrics_listen = Some(v);
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_json);
    let config = load(&args)?;
    // The operations endpoints come up first: /healthz answers while the router connects,
    // /readyz only once it is connected (broker and registry reached) and its state loaded.
    let readiness = Readiness::new();
    let connected = readiness.check("kafka");
    if let Some(addr) = config.metrics_listen {
        let metrics = install_recorder()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("serving metrics on {addr}"))?;
        // The bound address on stdout (logs go to stderr), for supervisors and tests that
        // asked for port 0.
        println!("operations endpoints on http://{}", listener.local_addr()?);
        tokio::spawn(server::serve(
            listener,
            Some(metrics),
            readiness.clone(),
            std::future::pending(),
        ));
    }
    // Listening for SIGTERM from now on: an orchestrator may stop an instance that is
    // still waiting for the broker or the registry, and it should exit 0, not die of it.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(());
    });
    let mut stopped = std::pin::pin!(async move {
        let _ = stopped.await;
    });
    let router = tokio::select! {
        router = Router::connect(config) => router.context("connecting the router")?,
        _ = &mut stopped => {
            tracing::info!("stopped before it connected");
            return Ok(());
        }
    };
    readiness.watch("state", router.state_loaded());
    readiness.watch("schema_registry", router.registry_reachable());
    connected.store(true, Ordering::Relaxed);
    router
        .run(stopped)
        .await
        .context("routing stopped with an error")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_unknown_keys_are_refused() {
        let text = include_str!("../../config/router.example.toml");
        let config: RouterConfig = toml::from_str(text).unwrap();
        assert_eq!(config.kafka.partitions, 6);
        let typo = text.replace("max_batch", "max_bacth");
        let err = toml::from_str::<RouterConfig>(&typo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_bacth"), "{err}");
    }
}
