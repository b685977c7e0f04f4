//! What a hub service in the compose file is configured with: its config file, the Kafka
//! settings it ends up with, where it serves `/metrics`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dho_gateway::GatewayConfig;
use dho_kafka::KafkaSettings;
use dho_router::RouterConfig;
use serde::de::DeserializeOwned;

use super::compose::{Yaml, env_of, host_path};
use super::read;

/// The config file a service's program reads (`DHO_CONFIG`), on the host.
pub fn config_file(name: &str, service: &Yaml) -> Option<PathBuf> {
    let path = env_of(service).get("DHO_CONFIG")?.clone();
    let host = host_path(service, &path)
        .unwrap_or_else(|| panic!("{name}: DHO_CONFIG={path} is not mounted from the repo"));
    assert!(host.is_file(), "{name}: {} does not exist", host.display());
    Some(host)
}

/// A TOML file as `T` (the programs' configs refuse unknown keys).
pub fn toml_file<T: DeserializeOwned>(path: &Path) -> T {
    toml::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn router_config(path: &Path) -> RouterConfig {
    toml_file(path)
}

pub fn gateway_config_file(path: &Path) -> GatewayConfig {
    toml_file(path)
}

/// The Kafka settings a service ends up with: its config file's `[kafka]`, then the
/// `DHO_*` overrides its environment sets (the order the programs apply them).
pub fn kafka_of(name: &str, service: &Yaml) -> Option<KafkaSettings> {
    let env = env_of(service);
    let mut settings = match config_file(name, service) {
        Some(path) => {
            let table: toml::Table = toml_file(&path);
            table
                .get("kafka")
                .cloned()
                .unwrap_or_else(|| panic!("{name}: {} has no [kafka]", path.display()))
                .try_into::<KafkaSettings>()
                .unwrap_or_else(|e| panic!("{name}: [kafka] in {}: {e}", path.display()))
        }
        None => {
            let bootstrap = env.get("DHO_BOOTSTRAP_SERVERS")?;
            let registry = env.get("DHO_SCHEMA_REGISTRY_URL").unwrap_or_else(|| {
                panic!("{name}: DHO_BOOTSTRAP_SERVERS without DHO_SCHEMA_REGISTRY_URL")
            });
            KafkaSettings::new(bootstrap, registry)
        }
    };
    if let Some(v) = env.get("DHO_BOOTSTRAP_SERVERS") {
        settings.bootstrap_servers = v.clone();
    }
    if let Some(v) = env.get("DHO_SCHEMA_REGISTRY_URL") {
        settings.schema_registry_url = v.clone();
    }
    if let Some(v) = env.get("DHO_TOPIC_PREFIX") {
        settings.topic_prefix = v.clone();
    }
    if let Some(v) = env.get("DHO_PARTITIONS") {
        settings.partitions = v.parse().unwrap();
    }
    settings.validate().unwrap();
    Some(settings)
}

/// Where a service serves `/metrics`: `DHO_METRICS_LISTEN`, else the router's
/// `metrics_listen`, else the gateway's API address (it serves `/metrics` there).
pub fn metrics_addr(name: &str, service: &Yaml, program: &str) -> Option<SocketAddr> {
    let env = env_of(service);
    if let Some(addr) = env.get("DHO_METRICS_LISTEN") {
        return Some(addr.parse().unwrap());
    }
    match program {
        "dho-router" => router_config(&config_file(name, service)?).metrics_listen,
        "dho-ingest" => Some(match env.get("DHO_LISTEN") {
            Some(addr) => addr.parse().unwrap(),
            None => gateway_config_file(&config_file(name, service)?).listen,
        }),
        _ => None,
    }
}
