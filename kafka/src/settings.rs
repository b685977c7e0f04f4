use std::collections::BTreeMap;
use std::path::PathBuf;

use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::{Error, Result};

/// Where the hub's Kafka cluster and schema registry are, shared by every service's config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list of Kafka brokers.
    pub bootstrap_servers: String,
    /// Base URL of the Confluent-compatible schema registry, e.g. `http://localhost:8081`.
    pub schema_registry_url: String,
    /// Prefix of every topic name (`<prefix>.measurements`, ...).
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// Partition count of every ingest and state topic; they must all be equal, because the
    /// router joins them per partition.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// The service's SASL principal on the broker: its mechanism (`SCRAM-SHA-256` or
    /// `SCRAM-SHA-512`). Set with `sasl_username`; the connection is `SASL_SSL` unless
    /// `librdkafka` sets `security.protocol` (the development broker's `SASL_PLAINTEXT`).
    #[serde(default)]
    pub sasl_mechanism: Option<String>,
    /// The SASL principal's user name (not a secret).
    #[serde(default)]
    pub sasl_username: Option<String>,
    /// A file holding the SASL password (its first line); read when a client is made, never
    /// logged.
    #[serde(default)]
    pub sasl_password_file: Option<PathBuf>,
    /// The name of an environment variable holding the SASL password, instead of a file.
    #[serde(default)]
    pub sasl_password_env: Option<String>,
    /// Extra librdkafka properties (security.protocol, ssl.*, client.id, ...), passed
    /// through. Keys the hub sets itself for its guarantees, and the SASL keys above, are
    /// refused.
    #[serde(default)]
    pub librdkafka: BTreeMap<String, String>,
}

/// librdkafka properties the `sasl_*` keys set; the pass-through may not set them too, or
/// a password could end up in a config file in the clear.
const SASL_PROPERTIES: [&str; 3] = ["sasl.mechanisms", "sasl.username", "sasl.password"];

/// Consumer tuning for records that should move on at once (the router's events, a
/// subscriber's deliveries), for [`KafkaSettings::client_config_tuned`].
pub const FETCH_PROMPTLY: &[(&str, &str)] = &[
    // Kafka answers a parked Fetch as soon as a record arrives, whatever this is; a broker
    // that polls its log instead (the development broker halves the remaining wait between
    // looks) would hold a record for up to half of librdkafka's default 500 ms. 50 ms bounds
    // that at a few idle Fetches a second.
    ("fetch.wait.max.ms", "50"),
    // librdkafka stops fetching while its queue holds `queued.min.messages` (100,000, counted
    // over all partitions) and looks again after this. Its default, 1 s, outlasts such a
    // backlog at the router's pace: in a drain the queue ran dry for a quarter of a second
    // in every second.
    ("fetch.queue.backoff.ms", "50"),
];

fn default_prefix() -> String {
    "dho".into()
}

fn default_partitions() -> i32 {
    6
}

impl KafkaSettings {
    pub fn new(
        bootstrap_servers: impl Into<String>,
        schema_registry_url: impl Into<String>,
    ) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            schema_registry_url: schema_registry_url.into(),
            topic_prefix: default_prefix(),
            partitions: default_partitions(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_file: None,
            sasl_password_env: None,
            librdkafka: BTreeMap::new(),
        }
    }

    /// The SASL principal's librdkafka properties, with its password read from its file
    /// or variable; none without `sasl_username`. Errors name the file or variable, never
    /// what it holds.
    fn sasl_properties(&self) -> Result<Vec<(&'static str, String)>> {
        let Some(username) = &self.sasl_username else {
            return Ok(Vec::new());
        };
        let mechanism = self.sasl_mechanism.as_deref().unwrap_or("SCRAM-SHA-512");
        let password = match (&self.sasl_password_file, &self.sasl_password_env) {
            (Some(file), None) => std::fs::read_to_string(file)
                .map_err(|e| Error::Config(format!("sasl_password_file {}: {e}", file.display())))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                Error::Config(format!(
                    "sasl_password_env: the environment variable {var} is unset or not UTF-8"
                ))
            })?,
            _ => {
                return Err(Error::Config(
                    "sasl_username needs exactly one of sasl_password_file and sasl_password_env"
                        .into(),
                ));
            }
        };
        if password.is_empty() {
            return Err(Error::Config(format!(
                "the SASL password of {username} is empty"
            )));
        }
        let mut properties = vec![
            ("sasl.mechanisms", mechanism.to_string()),
            ("sasl.username", username.clone()),
            ("sasl.password", password),
        ];
        if !self.librdkafka.contains_key("security.protocol") {
            properties.push(("security.protocol", "SASL_SSL".into()));
        }
        Ok(properties)
    }

    pub fn topics(&self) -> dho_schemas::TopicNames {
        dho_schemas::TopicNames::new(&self.topic_prefix)
    }

    /// A librdkafka config: bootstrap servers, the service's own settings (`own`, which carry
    /// its guarantees), then the pass-through, which may not override any of `own`.
    pub fn client_config(&self, own: &[(&str, &str)]) -> Result<ClientConfig> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        // librdkafka logs go through the `log` facade at warning level and above only.
        config.set("log_level", "4");
        for (key, value) in own {
            config.set(*key, *value);
        }
        for (key, value) in self.sasl_properties()? {
            config.set(key, value);
        }
        for (key, value) in &self.librdkafka {
            if key == "bootstrap.servers"
                || own.iter().any(|(k, _)| k == key)
                || SASL_PROPERTIES.contains(&key.as_str())
            {
                return Err(Error::ConflictingOption { key: key.clone() });
            }
            config.set(key, value);
        }
        Ok(config)
    }

    /// [`client_config`](Self::client_config) with `tuning` added: settings for speed, not for
    /// guarantees, which the pass-through may override (and `own` always does).
    pub fn client_config_tuned(
        &self,
        own: &[(&str, &str)],
        tuning: &[(&str, &str)],
    ) -> Result<ClientConfig> {
        let mut config = self.client_config(own)?;
        for (key, value) in tuning {
            let set_elsewhere =
                self.librdkafka.contains_key(*key) || own.iter().any(|(k, _)| k == key);
            if !set_elsewhere {
                config.set(*key, *value);
            }
        }
        Ok(config)
    }

    /// Checks what can be checked without a network.
    pub fn validate(&self) -> Result<()> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(Error::Config("bootstrap_servers is empty".into()));
        }
        if !(self.schema_registry_url.starts_with("http://")
            || self.schema_registry_url.starts_with("https://"))
        {
            return Err(Error::Config(format!(
                "schema_registry_url must be an http(s) URL, got '{}'",
                self.schema_registry_url
            )));
        }
        let sasl_set = self.sasl_mechanism.is_some()
            || self.sasl_password_file.is_some()
            || self.sasl_password_env.is_some();
        if sasl_set && self.sasl_username.is_none() {
            return Err(Error::Config(
                "sasl_mechanism, sasl_password_file and sasl_password_env need sasl_username"
                    .into(),
            ));
        }
        if let Some(mechanism) = &self.sasl_mechanism
            && !["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"].contains(&mechanism.as_str())
        {
            return Err(Error::Config(format!(
                "sasl_mechanism '{mechanism}' is not SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN"
            )));
        }
        // The password itself is read when a client is made (it may be mounted later than
        // the config is checked); here only that one source is named.
        if self.sasl_username.is_some()
            && self.sasl_password_file.is_some() == self.sasl_password_env.is_some()
        {
            return Err(Error::Config(
                "sasl_username needs exactly one of sasl_password_file and sasl_password_env"
                    .into(),
            ));
        }
        if self.partitions < 1 {
            return Err(Error::Config("partitions must be at least 1".into()));
        }
        if self.topic_prefix.is_empty()
            || !self
                .topic_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(Error::Config(format!(
                "topic_prefix '{}' must be letters, digits, '.', '_' or '-'",
                self.topic_prefix
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_through_may_not_override_the_hubs_own_settings() {
        let mut s = KafkaSettings::new("localhost:9092", "http://localhost:8081");
        s.librdkafka
            .insert("security.protocol".into(), "SASL_SSL".into());
        let cfg = s.client_config(&[("enable.idempotence", "true")]).unwrap();
        assert_eq!(cfg.get("security.protocol"), Some("SASL_SSL"));

        s.librdkafka
            .insert("enable.idempotence".into(), "false".into());
        let err = s
            .client_config(&[("enable.idempotence", "true")])
            .unwrap_err();
        assert!(err.to_string().contains("enable.idempotence"), "{err}");
    }

    #[test]
    fn pass_through_may_override_tuning_but_not_guarantees() {
        let mut s = KafkaSettings::new("localhost:9092", "http://localhost:8081");
        let own = [("isolation.level", "read_committed")];
        let cfg = s.client_config_tuned(&own, FETCH_PROMPTLY).unwrap();
        assert_eq!(cfg.get("fetch.queue.backoff.ms"), Some("50"));
        assert_eq!(cfg.get("fetch.wait.max.ms"), Some("50"));

        s.librdkafka.insert("fetch.wait.max.ms".into(), "10".into());
        let cfg = s.client_config_tuned(&own, FETCH_PROMPTLY).unwrap();
        assert_eq!(cfg.get("fetch.wait.max.ms"), Some("10"));
        assert_eq!(cfg.get("fetch.queue.backoff.ms"), Some("50"));

        let cfg = s
            .client_config_tuned(&[("fetch.queue.backoff.ms", "5")], FETCH_PROMPTLY)
            .unwrap();
        assert_eq!(cfg.get("fetch.queue.backoff.ms"), Some("5"), "own wins");

        s.librdkafka
            .insert("isolation.level".into(), "read_uncommitted".into());
        let err = s.client_config_tuned(&own, FETCH_PROMPTLY).unwrap_err();
        assert!(err.to_string().contains("isolation.level"), "{err}");
    }

    /// Production clusters use TLS and SASL: librdkafka must be built with them, or it
    /// refuses the settings when the client is made.
    #[test]
    fn tls_and_sasl_settings_are_accepted() {
        use rdkafka::producer::BaseProducer;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "not-a-real-secret\n").unwrap();
        let mut s = KafkaSettings::new("localhost:9092", "http://localhost:8081");
        s.sasl_username = Some("router".into());
        s.sasl_password_file = Some(file);
        s.validate().unwrap();
        let config = s.client_config(&[]).unwrap();
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.password"), Some("not-a-real-secret"));
        let made = config.create::<BaseProducer>();
        assert!(made.is_ok(), "{:?}", made.err());
    }

    #[test]
    fn a_sasl_password_comes_from_its_variable_and_errors_never_show_it() {
        let mut s = KafkaSettings::new("localhost:9092", "http://localhost:8081");
        s.sasl_username = Some("gateway".into());
        s.sasl_mechanism = Some("SCRAM-SHA-256".into());
        s.sasl_password_env = Some("DHO_TEST_SASL_PASSWORD_SURELY_UNSET".into());
        s.validate().unwrap();
        let unset = s.client_config(&[]).unwrap_err().to_string();
        assert!(
            unset.contains("DHO_TEST_SASL_PASSWORD_SURELY_UNSET"),
            "{unset}"
        );
        s.sasl_password_env = None;
        s.sasl_password_file = Some("/nonexistent/password".into());
        let missing = s.client_config(&[]).unwrap_err().to_string();
        assert!(missing.contains("/nonexistent/password"), "{missing}");
        s.sasl_password_env = Some("PATH".into());
        let both = s.validate().unwrap_err().to_string();
        assert!(both.contains("exactly one"), "{both}");
        s.sasl_password_file = None;
        let config = s.client_config(&[]).unwrap();
        assert_eq!(config.get("sasl.mechanisms"), Some("SCRAM-SHA-256"));
        s.sasl_mechanism = Some("GSSAPI".into());
        let mechanism = s.validate().unwrap_err().to_string();
        assert!(mechanism.contains("GSSAPI"), "{mechanism}");
        s.sasl_mechanism = None;
        s.librdkafka
            .insert("sasl.password".into(), "in-the-clear".into());
        let passed = s.client_config(&[]).unwrap_err().to_string();
        assert!(passed.contains("sasl.password") && !passed.contains("in-the-clear"));
        let mut no_user = KafkaSettings::new("b:1", "http://r");
        no_user.sasl_password_env = Some("PATH".into());
        let lone = no_user.validate().unwrap_err().to_string();
        assert!(lone.contains("need sasl_username"), "{lone}");
    }

    #[test]
    fn bad_settings_are_named() {
        let mut s = KafkaSettings::new("", "http://x");
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("bootstrap_servers")
        );
        s.bootstrap_servers = "b:1".into();
        s.schema_registry_url = "x".into();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("schema_registry_url")
        );
        s.schema_registry_url = "http://x".into();
        s.topic_prefix = "a b".into();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("topic_prefix")
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = toml_like(
            r#"{"bootstrap_servers":"b","schema_registry_url":"http://r","partitons":3}"#,
        );
        assert!(err.contains("partitons"), "{err}");
    }

    fn toml_like(json: &str) -> String {
        serde_json::from_str::<KafkaSettings>(json)
            .unwrap_err()
            .to_string()
    }
}
