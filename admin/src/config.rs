//! `dho-admin`'s configuration: where the hub is and which identities it accepts. Layered
//! like every service's (`dho_kafka::layers`): `--config` (any service's TOML: only its
//! `[kafka]` table and `allow_synthetic_identifiers` are read), then `DHO_<KEY>`, then
//! flags.

use std::collections::BTreeMap;
use std::path::Path;

use dho_kafka::KafkaSettings;
use dho_kafka::layers::{self, LayerError};
use serde::Deserialize;

/// The admin's keys (the README's table lists them with the services').
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Kafka cluster, schema registry, topic prefix, partitions, librdkafka pass-through.
    pub kafka: KafkaSettings,
    /// Accept identifiers from synthetic test populations (development, tests and the
    /// demo; refused unless set).
    #[serde(default)]
    pub allow_synthetic_identifiers: bool,
}

/// The keys the admin takes from a service's file; the rest belongs to the service.
const FROM_A_SERVICE_FILE: &[&str] = &["kafka", "allow_synthetic_identifiers"];

pub fn load(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
    sets: &[String],
) -> Result<AdminConfig, LayerError> {
    let (table, name) = match file {
        Some(path) => {
            let mut table = layers::read_table(path)?;
            table.retain(|key, _| FROM_A_SERVICE_FILE.contains(&key));
            (table, path.display().to_string())
        }
        None => (layers::local_base(), "the defaults".to_string()),
    };
    layers::load_table(table, name, env, sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routers_file_gives_its_kafka_table_and_the_environment_the_rest() {
        let dir = std::env::temp_dir().join(format!("dho-admin-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("router.toml");
        std::fs::write(&path, include_str!("../../config/router.example.toml")).unwrap();
        let env = [("DHO_ALLOW_SYNTHETIC_IDENTIFIERS", "false")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = load(Some(&path), &env, &["kafka.topic_prefix=x".into()]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!config.allow_synthetic_identifiers);
        assert_eq!(config.kafka.topic_prefix, "x");
        assert_eq!(config.kafka.partitions, 6);
    }
}
