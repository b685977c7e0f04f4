//! `dho-simulator`: a fleet of synthetic patients offering a fixed rate of readings for a
//! fixed duration, through the ingest gateway (`--gateway`) or straight to Kafka with the
//! publishing library. Prints the totals as one JSON object.
//!
//! With `--enrol-token` (a care organisation's gateway token), `--enrol-orgnr` and
//! `--enrol-subscriber`, it first records for every simulated patient, through the
//! gateway: a consent permitting that organisation, a subscription for the subscriber and
//! the patient's care plan (by that organisation), so the readings are delivered and raise
//! alerts instead of being withheld.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use dho_kafka::KafkaSettings;
use dho_publisher::Publisher;
use dho_schemas::{OrganisationIdentifier, Policy};
use dho_simulator::{Enrolment, Fleet, GatewayClient, SimOptions, Sink, enrol_fleet, run};

#[derive(Debug, Parser)]
#[command(about = "Simulate a fleet of home-monitoring patients")]
struct Args {
    /// Publish through the gateway at this URL (e.g. http://127.0.0.1:8090) instead of Kafka.
    #[arg(long, env = "DHO_GATEWAY_URL")]
    gateway: Option<String>,
    /// Send FHIR Bundles to the gateway instead of the native JSON form.
    #[arg(long)]
    fhir: bool,
    /// The platform's bearer token for the gateway.
    #[arg(long, env = "DHO_GATEWAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A care organisation's gateway token: before streaming, enrol every simulated patient
    /// for it (consent, subscription, care plan through the gateway). Needs --gateway,
    /// --enrol-orgnr and --enrol-subscriber.
    #[arg(long, env = "DHO_ENROL_TOKEN", hide_env_values = true)]
    enrol_token: Option<String>,
    /// The enrolling organisation's number (the one whose token --enrol-token is): the
    /// consents' permitted recipient and the care plans' author.
    #[arg(long, env = "DHO_ENROL_ORGNR")]
    enrol_orgnr: Option<String>,
    /// A patient portal's token (the patients' own channel), to record each patient's
    /// consent with. Without it the enrolling organisation records it, which the gateway
    /// allows only if an operator enrolled it as responsible (`dho-admin enrol`).
    #[arg(long, env = "DHO_CONSENT_TOKEN", hide_env_values = true)]
    consent_token: Option<String>,
    /// The enrolling organisation's subscriber id (delivery topic) to subscribe.
    #[arg(long, env = "DHO_ENROL_SUBSCRIBER")]
    enrol_subscriber: Option<String>,
    /// Kafka bootstrap servers (library mode).
    #[arg(long, env = "DHO_BOOTSTRAP_SERVERS", default_value = "localhost:9092")]
    bootstrap_servers: String,
    /// Schema registry URL (library mode).
    #[arg(
        long,
        env = "DHO_SCHEMA_REGISTRY_URL",
        default_value = "http://localhost:8081"
    )]
    schema_registry_url: String,
    /// Topic prefix (library mode).
    #[arg(long, env = "DHO_TOPIC_PREFIX", default_value = "dho")]
    topic_prefix: String,
    /// Partitions of the ingest and state topics (library mode).
    #[arg(long, env = "DHO_PARTITIONS", default_value_t = 6)]
    partitions: i32,
    /// Patients in the fleet.
    #[arg(long, default_value_t = 50)]
    patients: usize,
    /// Seed: the same seed gives the same patients and readings.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Offered rate, submissions per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// How long to offer it, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Submissions in flight at most.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Fraction of readings synced late (hours back).
    #[arg(long, default_value_t = 0.0)]
    late_fraction: f64,
    /// Fraction of malformed submissions.
    #[arg(long, default_value_t = 0.0)]
    malformed_fraction: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let sink = match &args.gateway {
        Some(url) => {
            let client = GatewayClient::new(
                url,
                args.token
                    .clone()
                    .context("--token is required with --gateway")?,
            );
            Sink::Gateway(if args.fhir { client.fhir() } else { client })
        }
        None => {
            let mut settings =
                KafkaSettings::new(&args.bootstrap_servers, &args.schema_registry_url);
            settings.topic_prefix = args.topic_prefix.clone();
            settings.partitions = args.partitions;
            Sink::Library(
                Publisher::connect(&settings, Policy::SYNTHETIC_ALLOWED)
                    .await
                    .context("connecting the publisher")?,
            )
        }
    };
    let options = SimOptions {
        late_fraction: args.late_fraction,
        malformed_fraction: args.malformed_fraction,
        ..SimOptions::default()
    };
    let fleet = Fleet::with_options(args.seed, args.patients, options);
    let mut enrolled = 0;
    if let Some(token) = &args.enrol_token {
        let url = args
            .gateway
            .as_deref()
            .context("--enrol-token enrols through the gateway: --gateway is required")?;
        let org = OrganisationIdentifier {
            system: dho_schemas::OrgIdSystem::Orgnr,
            value: args
                .enrol_orgnr
                .clone()
                .context("--enrol-orgnr is required with --enrol-token")?,
            name: None,
        };
        dho_schemas::validate::organisation("enrol-orgnr", &org)?;
        let subscriber_id = args
            .enrol_subscriber
            .clone()
            .context("--enrol-subscriber is required with --enrol-token")?;
        dho_schemas::validate::subscriber_id(&subscriber_id)?;
        let consent_by = args
            .consent_token
            .as_deref()
            .map(|token| GatewayClient::new(url, token));
        let enrolment = Enrolment {
            org,
            subscriber_id,
            consent_by,
        };
        enrolled = enrol_fleet(
            &GatewayClient::new(url, token),
            &fleet,
            args.seed,
            &enrolment,
        )
        .await
        .context("enrolling the fleet")?;
        tracing::info!(enrolled, "fleet enrolled");
    } else if args.enrol_orgnr.is_some()
        || args.enrol_subscriber.is_some()
        || args.consent_token.is_some()
    {
        anyhow::bail!("--enrol-orgnr, --enrol-subscriber and --consent-token need --enrol-token");
    }
    let started = std::time::Instant::now();
    let stats = run(
        fleet,
        sink,
        args.rate,
        Duration::from_secs_f64(args.duration),
        args.concurrency,
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "enrolled": enrolled,
            "offered": stats.offered,
            "malformed": stats.malformed,
            "accepted": stats.accepted,
            "rejected": stats.rejected,
            "failed": stats.failed,
            "malformed_accepted": stats.malformed_accepted,
            "late_ticks": stats.late_ticks,
            "seconds": elapsed,
            "accepted_per_second": stats.accepted as f64 / elapsed,
        })
    );
    Ok(())
}
