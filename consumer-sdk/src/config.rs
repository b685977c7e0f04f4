use std::path::PathBuf;
use std::time::Duration;

use dho_kafka::KafkaSettings;
use dho_schemas::model::Millis;

/// Where a consumer group with no committed offset starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// Everything the topic still holds (the default: nothing is missed).
    #[default]
    Earliest,
    /// Only deliveries that arrive after the subscriber connected.
    Latest,
    /// Backfill: from the first delivery whose broker timestamp is at or after these
    /// milliseconds since the epoch (Kafka's offsets-for-times), on every partition.
    Timestamp(Millis),
}

/// What happens to a delivery the handler still fails after every attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// `run` returns [`Error::HandlerFailed`](crate::Error::HandlerFailed) with the
    /// delivery uncommitted, so it comes again on restart (the default).
    #[default]
    Stop,
    /// Write the original record, with error headers, to the subscriber's own
    /// `<prefix>.deliver.<subscriber_id>.dlq` topic, wait for the acknowledgement, then
    /// commit and go on. Undecodable records are parked the same way.
    Park,
}

/// How delivery ids already handled are remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dedup {
    /// The most recent ids, in memory: catches a replaying router, forgets on restart.
    Memory { window: usize },
    /// A SQLite file (created if missing) that survives restarts of the subscriber: the
    /// default. `path` None: `dho-dedup-<group id>.sqlite` in [`default_state_dir`].
    /// Ids handled longer than `keep` ago are pruned; `keep` None: as long as the broker
    /// keeps the delivery topic's records (its `retention.ms`), since an older delivery
    /// can no longer be read again (never pruned if the topic is kept forever).
    Sqlite {
        path: Option<PathBuf>,
        keep: Option<Duration>,
    },
}

impl Default for Dedup {
    fn default() -> Self {
        Dedup::Sqlite {
            path: None,
            keep: None,
        }
    }
}

/// Where the SDK keeps its files unless told otherwise: `$DHO_STATE_DIR`, else
/// `$XDG_STATE_HOME/dho`, else `~/.local/state/dho` (XDG's default), else `./dho-state`.
pub fn default_state_dir() -> PathBuf {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("DHO_STATE_DIR")
        .or_else(|| var("XDG_STATE_HOME").map(|d| d.join("dho")))
        .or_else(|| var("HOME").map(|d| d.join(".local/state/dho")))
        .unwrap_or_else(|| PathBuf::from("dho-state"))
}

/// How a subscriber connects and behaves. Security settings (TLS, SASL) go in
/// `kafka.librdkafka` (`security.protocol`, `ssl.*`, `sasl.*`).
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    /// Brokers, schema registry, topic prefix, librdkafka pass-through.
    pub kafka: KafkaSettings,
    /// The subscriber id the hub delivers to (`<prefix>.deliver.<subscriber_id>`).
    pub subscriber_id: String,
    /// Consumer group; instances of the same system share it.
    pub group_id: String,
    /// Where a new consumer group starts.
    pub start_from: StartFrom,
    /// How many times the handler is tried per delivery before the failure policy applies.
    pub handler_attempts: u32,
    /// Backoff before the first retry; doubles per attempt up to `max_retry_backoff`.
    pub retry_backoff: Duration,
    /// Upper bound of the retry backoff.
    pub max_retry_backoff: Duration,
    /// What happens after the last failed attempt.
    pub failure_policy: FailurePolicy,
    /// How handled delivery ids are remembered.
    pub dedup: Dedup,
    /// How often librdkafka reports statistics (consumer lag); zero turns them off.
    pub statistics_interval: Duration,
}

impl SubscriberConfig {
    pub fn new(kafka: KafkaSettings, subscriber_id: impl Into<String>) -> Self {
        let subscriber_id = subscriber_id.into();
        Self {
            group_id: format!("dho-subscriber-{subscriber_id}"),
            kafka,
            subscriber_id,
            start_from: StartFrom::default(),
            handler_attempts: 5,
            retry_backoff: Duration::from_millis(200),
            max_retry_backoff: Duration::from_secs(30),
            failure_policy: FailurePolicy::default(),
            dedup: Dedup::default(),
            statistics_interval: Duration::from_secs(10),
        }
    }

    /// A builder-style start: brokers, registry and subscriber id.
    pub fn builder(
        bootstrap_servers: impl Into<String>,
        schema_registry_url: impl Into<String>,
        subscriber_id: impl Into<String>,
    ) -> Self {
        Self::new(
            KafkaSettings::new(bootstrap_servers, schema_registry_url),
            subscriber_id,
        )
    }

    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.kafka.topic_prefix = prefix.into();
        self
    }

    /// Partition count used if the SDK creates the subscriber topic before the router does.
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.kafka.partitions = partitions;
        self
    }

    /// A librdkafka property passed through, e.g. `security.protocol` = `SASL_SSL`.
    pub fn librdkafka(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.kafka.librdkafka.insert(key.into(), value.into());
        self
    }

    pub fn group_id(mut self, group_id: impl Into<String>) -> Self {
        self.group_id = group_id.into();
        self
    }

    pub fn start_from(mut self, start_from: StartFrom) -> Self {
        self.start_from = start_from;
        self
    }

    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    pub fn retries(mut self, attempts: u32, backoff: Duration) -> Self {
        self.handler_attempts = attempts;
        self.retry_backoff = backoff;
        self
    }

    /// Remember handled ids in this SQLite file (the default store, at a path of one's own).
    pub fn dedup_sqlite(mut self, path: impl Into<PathBuf>) -> Self {
        let keep = match self.dedup {
            Dedup::Sqlite { keep, .. } => keep,
            Dedup::Memory { .. } => None,
        };
        self.dedup = Dedup::Sqlite {
            path: Some(path.into()),
            keep,
        };
        self
    }

    /// Remember only the `window` most recent ids, in memory: a restarted subscriber may
    /// hand a delivery it handled before to the application again.
    pub fn dedup_in_memory(mut self, window: usize) -> Self {
        self.dedup = Dedup::Memory { window };
        self
    }

    /// The SQLite file the default duplicate store uses for this configuration's group.
    pub fn default_dedup_path(&self) -> PathBuf {
        let group: String = self
            .group_id
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
                _ => '_',
            })
            .collect();
        default_state_dir().join(format!("dho-dedup-{group}.sqlite"))
    }

    /// The subscriber's delivery topic.
    pub fn topic(&self) -> String {
        self.kafka.topics().deliver(&self.subscriber_id)
    }

    /// The subscriber's own parking topic: `<prefix>.deliver.<subscriber_id>.dlq`.
    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.topic())
    }

    pub(crate) fn validate(&self) -> crate::Result<()> {
        self.kafka.validate()?;
        dho_schemas::validate::subscriber_id(&self.subscriber_id)
            .map_err(|e| crate::Error::Config(e.to_string()))?;
        if self.handler_attempts == 0 {
            return Err(crate::Error::Config(
                "handler_attempts must be at least 1".into(),
            ));
        }
        if self.group_id.is_empty() {
            return Err(crate::Error::Config("group_id is empty".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_checks() {
        let config = SubscriberConfig::builder("b:9092", "http://r", "gp-1").topic_prefix("x");
        assert_eq!(config.topic(), "x.deliver.gp-1");
        assert_eq!(config.dlq_topic(), "x.deliver.gp-1.dlq");
        assert!(config.validate().is_ok());
        let bad = config.clone().retries(0, Duration::ZERO);
        assert_eq!(
            bad.validate().unwrap_err().action(),
            crate::Action::FixConfiguration
        );
        let bad = SubscriberConfig::builder("b:9092", "http://r", "no spaces");
        assert!(bad.validate().is_err());
    }
}
