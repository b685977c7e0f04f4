use std::net::SocketAddr;
use std::time::Duration;

use dho_kafka::KafkaSettings;
use serde::Deserialize;

/// The router's configuration (TOML file, then `DHO_*` environment, then flags).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Kafka cluster, schema registry, topic prefix, partitions, librdkafka pass-through.
    pub kafka: KafkaSettings,
    /// Consumer group of all router instances; instances share partitions.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Most events routed in one batch (one commit per batch).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long a batch waits for more events after the last one (seconds). Longer makes
    /// fewer, bigger batches under light load, and every reading that much later. The
    /// state ends are asked for halfway through the wait: a consent change acknowledged in
    /// its second half applies from the next batch.
    #[serde(default = "default_batch_wait", with = "humantime_secs")]
    pub batch_wait: Duration,
    /// How long a batch may wait to catch up state before the router gives up.
    #[serde(default = "default_state_sync_timeout", with = "humantime_secs")]
    pub state_sync_timeout: Duration,
    /// How long a crashed instance keeps its partitions before the group moves them to a
    /// live one. Shorter than librdkafka's 45 s default: readings wait this long at worst.
    #[serde(default = "default_session_timeout", with = "humantime_secs")]
    pub session_timeout: Duration,
    /// Static membership (KIP-345): this instance's `group.instance.id`, stable across its
    /// restarts and unique among the group's instances (a pod's name in a StatefulSet). A
    /// restarted instance then takes its partitions back at once, without a rebalance and
    /// without waiting out `session_timeout`. Two live instances with one id: the broker
    /// fences the older, which stops with an error. Unset: dynamic membership. (A static
    /// member that stops does not leave: its partitions move after `session_timeout`.)
    #[serde(default)]
    pub group_instance_id: Option<String>,
    /// Exactly-once mode: a transactional id, unique and stable per instance. Each batch's
    /// deliveries, audit records, dead letters and input offsets then commit in one Kafka
    /// transaction, for `read_committed` readers. Needs a broker with transactions (Apache
    /// Kafka); unset, the router is effectively-once on any Kafka-API broker.
    /// Tested against librdkafka's mock cluster (`tests/tests/router_exactly_once.rs`): an
    /// offset commit refused because the group moved on aborts the batch and routes it
    /// again; a failed EndTxn stops the router with the batch uncommitted, and a restart
    /// with the same id routes it again with the same delivery ids. The mock
    /// cannot show that aborted records stay hidden or that a restart resumes from the
    /// transactional offsets (see ARCHITECTURE.md); check those on the production broker.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// Create missing topics at start and per new subscriber. Off where topics are
    /// provisioned by operators (the router then only checks they exist).
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Accept identifiers from synthetic test populations (development, tests and the
    /// demo; refused unless set).
    #[serde(default)]
    pub allow_synthetic_identifiers: bool,
    /// How often the no-data timer looks for patients silent past their care plan's
    /// expected interval (seconds).
    #[serde(default = "default_silence_check_interval", with = "humantime_secs")]
    pub silence_check_interval: Duration,
    /// Where `/metrics` is served; none if unset.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
}

fn default_group() -> String {
    "dho-router".into()
}
fn default_max_batch() -> usize {
    500
}
fn default_batch_wait() -> Duration {
    Duration::from_millis(2)
}
fn default_state_sync_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_silence_check_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_true() -> bool {
    true
}

/// Durations in config files as seconds (`state_sync_timeout = 30`).
mod humantime_secs {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        if secs.is_finite() && secs > 0.0 {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(serde::de::Error::custom(
                "a duration in seconds must be positive",
            ))
        }
    }
}

impl RouterConfig {
    pub fn new(kafka: KafkaSettings) -> Self {
        Self {
            kafka,
            group_id: default_group(),
            max_batch: default_max_batch(),
            batch_wait: default_batch_wait(),
            state_sync_timeout: default_state_sync_timeout(),
            session_timeout: default_session_timeout(),
            group_instance_id: None,
            transactional_id: None,
            create_topics: true,
            allow_synthetic_identifiers: false,
            silence_check_interval: default_silence_check_interval(),
            metrics_listen: None,
        }
    }
}
