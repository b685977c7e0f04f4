//! A home-care service that writes every measurement delivered to it into a local SQLite
//! journal, and survives being killed (even with SIGKILL) and restarted without losing or
//! duplicating a row.
//!
//! How: the journal row and the delivery id are written in one SQLite transaction (the
//! SDK's recommended pattern), into the same file the SDK's duplicate store reads. A
//! delivery whose transaction committed is dropped by the SDK when it comes again (after a
//! crash before the offset commit, or re-sent by a replaying router); one whose
//! transaction did not commit left nothing behind and is handled again.
//!
//! ```sh
//! cargo run -p dho-consumer --example home_care_journal -- \
//!     --bootstrap-servers localhost:9092 --schema-registry-url http://localhost:8081 \
//!     --subscriber-id bergen-home-care --db journal.db
//! ```
//! Every option also reads from the environment (`DHO_BOOTSTRAP_SERVERS`, ...).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Parser;
use dho_consumer::rusqlite::{Connection, params};
use dho_consumer::{Received, SqliteStore, Subscriber, SubscriberConfig};
use dho_schemas::model::{Payload, now_millis};

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
    /// This service's subscriber id.
    #[arg(long, env = "DHO_SUBSCRIBER_ID", default_value = "bergen-home-care")]
    subscriber_id: String,
    /// Partition count, if the subscriber topic does not exist yet.
    #[arg(long, env = "DHO_PARTITIONS", default_value_t = 6)]
    partitions: i32,
    /// The journal's SQLite file.
    #[arg(long, env = "DHO_JOURNAL_DB", default_value = "home-care-journal.db")]
    db: PathBuf,
    /// librdkafka pass-through, `key=value` (repeatable): TLS, SASL, timeouts.
    #[arg(long = "librdkafka", value_parser = key_value)]
    librdkafka: Vec<(String, String)>,
    /// Serve the SDK's Prometheus metrics (`dho_consumer_*`), `/healthz` and `/readyz` here;
    /// none if unset. The compose stack scrapes it for the dashboard's subscriber panels.
    #[arg(long, env = "DHO_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// The SDK records through the `metrics` facade; the application chooses the exporter. This
/// one serves `/metrics`, `/healthz` and `/readyz` the way the hub's services do
/// (latencies as histograms, so Prometheus can aggregate quantiles over instances).
async fn serve_operations(
    addr: std::net::SocketAddr,
    readiness: dho_telemetry::Readiness,
) -> anyhow::Result<()> {
    let metrics = dho_telemetry::install_recorder()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("serving metrics on {addr}"))?;
    tokio::spawn(dho_telemetry::server::serve(
        listener,
        Some(metrics),
        readiness,
        std::future::pending(),
    ));
    Ok(())
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got '{s}'"))
}

/// The journal. `delivery_id` is unique: the database itself refuses a second row.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY,
    delivery_id TEXT NOT NULL UNIQUE,
    patient TEXT NOT NULL,
    event_id TEXT NOT NULL,
    code TEXT NOT NULL,
    value REAL,
    unit TEXT,
    effective_time INTEGER NOT NULL,
    journaled_at INTEGER NOT NULL
)";

fn open_journal(path: &PathBuf) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(SCHEMA)?;
    SqliteStore::create_table(&conn)?;
    Ok(conn)
}

/// Writes one delivery: the row (for a measurement) and the delivery id, atomically.
fn journal(conn: &mut Connection, received: &Received) -> anyhow::Result<()> {
    let delivery = &received.delivery;
    let tx = conn.transaction()?;
    if !SqliteStore::mark_handled(&tx, &delivery.delivery_id)? {
        // Already journaled by an earlier run; the SDK's store normally catches this first.
        return Ok(());
    }
    if let Some(Payload::Measurement(m)) = delivery.payload() {
        tx.execute(
            "INSERT INTO journal (delivery_id, patient, event_id, code, value, unit, \
             effective_time, journaled_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                delivery.delivery_id,
                m.patient.key(),
                m.event_id,
                m.code,
                m.value.as_ref().map(|q| q.value),
                m.value.as_ref().map(|q| q.unit.as_str()),
                m.effective_time,
                now_millis(),
            ],
        )?;
        println!(
            "journaled {} for {} (partition {} offset {})",
            m.code,
            m.patient.log_tag(),
            received.partition,
            received.offset
        );
    }
    tx.commit()?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
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
    // Ready once connected to Kafka and the registry.
    let readiness = dho_telemetry::Readiness::new();
    let connected = readiness.check("kafka");
    if let Some(addr) = args.metrics_listen {
        serve_operations(addr, readiness).await?;
    }
    let conn = Arc::new(Mutex::new(open_journal(&args.db)?));
    let mut config = SubscriberConfig::builder(
        args.bootstrap_servers,
        args.schema_registry_url,
        args.subscriber_id,
    )
    .topic_prefix(args.topic_prefix)
    .partitions(args.partitions)
    // The SDK's store reads the ids the journal transaction records, in the same file.
    .dedup_sqlite(&args.db);
    for (key, value) in args.librdkafka {
        config = config.librdkafka(key, value);
    }
    let subscriber = Subscriber::connect(config).await?;
    connected.store(true, std::sync::atomic::Ordering::Relaxed);
    println!("ready");
    subscriber
        .run(
            |received| {
                let conn = Arc::clone(&conn);
                async move {
                    let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
                    journal(&mut conn, &received)
                }
            },
            shutdown_signal(),
        )
        .await
        .context("the subscriber stopped")?;
    Ok(())
}
