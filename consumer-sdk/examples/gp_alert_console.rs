//! An alert console for a GP: prints each alert delivered to the practice, one line per
//! alert, with the patient as a keyed pseudonym (the number never reaches the terminal
//! log). Other deliveries are acknowledged without a line.
//!
//! ```sh
//! cargo run -p dho-consumer --example gp_alert_console -- \
//!     --bootstrap-servers localhost:9092 --schema-registry-url http://localhost:8081 \
//!     --subscriber-id sentrum-gp --from earliest
//! ```

use anyhow::Context;
use clap::Parser;
use dho_consumer::{StartFrom, Subscriber, SubscriberConfig};
use dho_schemas::model::Payload;

#[derive(Debug, Parser)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "DHO_BOOTSTRAP_SERVERS", default_value = "localhost:9092")]
    bootstrap_servers: String,
    /// Schema registry URL.
    #[arg(
        long,
        env = "DHO_SCHEMA_REGISTRY_URL",
        default_value = "http://localhost:8081"
    )]
    schema_registry_url: String,
    /// The hub's topic prefix.
    #[arg(long, env = "DHO_TOPIC_PREFIX", default_value = "dho")]
    topic_prefix: String,
    /// This practice's subscriber id.
    #[arg(long, env = "DHO_SUBSCRIBER_ID", default_value = "sentrum-gp")]
    subscriber_id: String,
    /// Partition count, if the subscriber topic does not exist yet.
    #[arg(long, env = "DHO_PARTITIONS", default_value_t = 6)]
    partitions: i32,
    /// Where a first start begins: `earliest`, `latest`, or milliseconds since the epoch.
    #[arg(long, env = "DHO_FROM", default_value = "latest", value_parser = start_from)]
    from: StartFrom,
    /// librdkafka pass-through, `key=value` (repeatable): TLS, SASL, timeouts.
    #[arg(long = "librdkafka", value_parser = key_value)]
    librdkafka: Vec<(String, String)>,
}

fn start_from(s: &str) -> Result<StartFrom, String> {
    match s {
        "earliest" => Ok(StartFrom::Earliest),
        "latest" => Ok(StartFrom::Latest),
        millis => millis
            .parse()
            .map(StartFrom::Timestamp)
            .map_err(|_| format!("expected earliest, latest or epoch millis, got '{s}'")),
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got '{s}'"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = SubscriberConfig::builder(
        args.bootstrap_servers,
        args.schema_registry_url,
        args.subscriber_id,
    )
    .topic_prefix(args.topic_prefix)
    .partitions(args.partitions)
    .start_from(args.from);
    for (key, value) in args.librdkafka {
        config = config.librdkafka(key, value);
    }
    let subscriber = Subscriber::connect(config).await?;
    println!("ready");
    subscriber
        .run(
            |received| async move {
                if let Some(Payload::Alert(alert)) = received.delivery.payload() {
                    let reading = alert
                        .reading
                        .as_ref()
                        .and_then(|m| m.value.as_ref())
                        .map(|q| format!(" reading={}{}", q.value, q.unit))
                        .unwrap_or_default();
                    println!(
                        "ALERT severity={:?} zone={:?} kind={:?} code={} patient={}{reading} alert={}",
                        alert.severity,
                        alert.zone,
                        alert.kind,
                        alert.code,
                        alert.patient.log_tag(),
                        alert.alert_id,
                    );
                }
                // Not a quiet patient: the patient's consent no longer lets this GP see these.
                if let Some(Payload::SharingEnded(ended)) = received.delivery.payload() {
                    println!(
                        "SHARING ENDED categories={:?} patient={} recorded_by={}",
                        ended.categories,
                        received.delivery.patient.log_tag(),
                        ended.recorded_by.as_ref().map_or("-", |o| o.value.as_str()),
                    );
                }
                Ok::<(), std::convert::Infallible>(())
            },
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await
        .context("the subscriber stopped")?;
    Ok(())
}
