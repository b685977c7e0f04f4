//! What every hub service binary shares (feature `service`): the Kafka override flags,
//! logging set-up and the graceful-shutdown signal. Kept behind a feature so libraries
//! built on this crate (the consumer SDK) do not pull in a CLI parser.

use crate::KafkaSettings;

/// Flags (and `DHO_*` variables) that override a config file's `[kafka]` section.
/// Global, so a command line may give them after a subcommand too.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (overrides the file).
    #[arg(long, global = true, env = "DHO_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: Option<String>,
    /// Schema registry URL (overrides the file).
    #[arg(long, global = true, env = "DHO_SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
    /// Topic prefix (overrides the file).
    #[arg(long, global = true, env = "DHO_TOPIC_PREFIX")]
    pub topic_prefix: Option<String>,
    /// Partitions of the ingest and state topics (overrides the file).
    #[arg(long, global = true, env = "DHO_PARTITIONS")]
    pub partitions: Option<i32>,
}

impl KafkaArgs {
    /// Applies the flags that were given on top of `settings`.
    pub fn apply(&self, settings: &mut KafkaSettings) {
        if let Some(v) = &self.bootstrap_servers {
            settings.bootstrap_servers = v.clone();
        }
        if let Some(v) = &self.schema_registry_url {
            settings.schema_registry_url = v.clone();
        }
        if let Some(v) = &self.topic_prefix {
            settings.topic_prefix = v.clone();
        }
        if let Some(v) = self.partitions {
            settings.partitions = v;
        }
    }
}

/// Structured logs on stderr (stdout stays for a program's own output): JSON lines in
/// production, human-readable otherwise; `RUST_LOG` filters, `info` by default.
pub fn init_logging(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only on a terminal: a log file or a collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on Ctrl-C or SIGTERM (what orchestrators send), for a graceful stop.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_given_flags_override_the_file() {
        let mut settings = KafkaSettings::new("file:9092", "http://file:8081");
        let args = KafkaArgs {
            topic_prefix: Some("x".into()),
            partitions: Some(3),
            ..KafkaArgs::default()
        };
        args.apply(&mut settings);
        assert_eq!(settings.bootstrap_servers, "file:9092");
        assert_eq!(
            (settings.topic_prefix.as_str(), settings.partitions),
            ("x", 3)
        );
    }
}
