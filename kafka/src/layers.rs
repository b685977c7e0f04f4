//! Every config key from every layer (feature `service`): defaults in code, then the TOML
//! file, then `DHO_<KEY>` environment variables, then `--set key=value` flags, for any
//! service's typed config. The keys are the config struct's own serde fields, so a new
//! field is settable everywhere without anyone remembering to add a flag; the README's
//! table of keys is held to [`keys`] by a test.
//!
//! `[kafka]` keys take their leaf name (`kafka.partitions` is `DHO_PARTITIONS`, as the
//! services' long-standing flags already read). Maps and lists of tables (librdkafka
//! pass-through, credentials) are file-only: an environment variable holds one value.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;

/// Why a configuration could not be put together; each names the layer and key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{layer}: {message}")]
    Invalid { layer: String, message: String },
    #[error("--set {given}: expected key=value")]
    NotKeyValue { given: String },
    #[error("{layer}: '{key}' is not a key of this configuration (keys: {known})")]
    UnknownKey {
        layer: String,
        key: String,
        known: String,
    },
    #[error("'{key}' can only be set in the file: {why}")]
    FileOnly { key: String, why: &'static str },
}

/// The keys only a file can set, and why.
pub const FILE_ONLY: &[(&str, &str)] = &[
    (
        "kafka.librdkafka",
        "a map of arbitrary librdkafka properties (dotted names, secrets) under [kafka.librdkafka]",
    ),
    (
        "platforms",
        "a list of credentials (name, orgnr, token hash), one table each",
    ),
    (
        "care_organisations",
        "a list of credentials (name, orgnr, token hash, subscriber ids), one table each",
    ),
    (
        "patient_channels",
        "a list of credentials (name, orgnr, token hash), one table each",
    ),
];

/// The environment variable of a key: `DHO_` and its last part in capitals.
pub fn env_name(key: &str) -> String {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    format!("DHO_{}", leaf.to_ascii_uppercase())
}

/// Every key of `T` (a service config with a `kafka` table of [`crate::KafkaSettings`]):
/// its serde fields, `kafka`'s as `kafka.<field>`.
pub fn keys<T: DeserializeOwned>() -> Vec<String> {
    let mut keys = Vec::new();
    for field in fields::<T>() {
        if *field == "kafka" {
            keys.extend(
                fields::<crate::KafkaSettings>()
                    .iter()
                    .map(|f| format!("kafka.{f}")),
            );
        } else {
            keys.push(field.to_string());
        }
    }
    keys
}

/// The layers above the defaults: the file's table (or `base` without a file), then the
/// environment, then `--set` flags; deserialized into `T` with its own checks (unknown keys
/// refused, defaults for what no layer sets).
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    base: toml::Table,
    env: &BTreeMap<String, String>,
    sets: &[String],
) -> Result<T, LayerError> {
    let (table, file_layer) = match file {
        Some(path) => (read_table(path)?, path.display().to_string()),
        None => (base, "the defaults".to_string()),
    };
    load_table(table, file_layer, env, sets)
}

/// A TOML file as a table.
pub fn read_table(path: &Path) -> Result<toml::Table, LayerError> {
    let text = std::fs::read_to_string(path).map_err(|source| LayerError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str::<toml::Table>(&text).map_err(|e| LayerError::Invalid {
        layer: path.display().to_string(),
        message: e.to_string(),
    })
}

/// [`load`] on a table already read (`file_layer` names it in errors).
pub fn load_table<T: DeserializeOwned>(
    mut table: toml::Table,
    file_layer: String,
    env: &BTreeMap<String, String>,
    sets: &[String],
) -> Result<T, LayerError> {
    let known = keys::<T>();
    let mut given = Vec::new();
    for key in &known {
        if let Some(value) = env.get(&env_name(key)) {
            given.push((key.clone(), value.clone(), format!("${}", env_name(key))));
        }
    }
    for set in sets {
        let (key, value) = set
            .split_once('=')
            .ok_or_else(|| LayerError::NotKeyValue { given: set.clone() })?;
        let key = key.trim();
        if !known.iter().any(|k| k == key) {
            return Err(LayerError::UnknownKey {
                layer: "--set".into(),
                key: key.into(),
                known: known.join(", "),
            });
        }
        given.push((key.to_string(), value.to_string(), format!("--set {key}")));
    }
    for (key, _, _) in &given {
        if let Some((_, why)) = FILE_ONLY.iter().find(|(k, _)| k == key) {
            return Err(LayerError::FileOnly {
                key: key.clone(),
                why,
            });
        }
    }
    // Typed where the text reads as a TOML number or boolean; a key whose typed value does
    // not fit (a group id of digits) is given its text instead.
    let mut strings = Vec::new();
    for (key, value, _) in &given {
        put(&mut table, key, guess(value));
    }
    let layer = match given.last() {
        Some(_) => format!(
            "{file_layer} with {}",
            given
                .iter()
                .map(|(_, _, from)| from.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => file_layer,
    };
    loop {
        let error = match serde_path_to_error::deserialize(table.clone()) {
            Ok(config) => return Ok(config),
            Err(e) => e,
        };
        let path = error.path().to_string();
        let retry = given.iter().rev().find(|(key, value, _)| {
            *key == path && !matches!(guess(value), toml::Value::String(_))
        });
        match retry {
            Some((key, value, _)) if !strings.contains(key) => {
                strings.push(key.clone());
                put(&mut table, key, toml::Value::String(value.clone()));
            }
            _ => {
                let at = if path == "." {
                    String::new()
                } else {
                    format!("'{path}': ")
                };
                return Err(LayerError::Invalid {
                    layer,
                    message: format!("{at}{}", error.into_inner()),
                });
            }
        }
    }
}

/// The base without a file: the development stack's addresses on this machine.
pub fn local_base() -> toml::Table {
    let mut kafka = toml::Table::new();
    kafka.insert("bootstrap_servers".into(), "localhost:9092".into());
    kafka.insert("schema_registry_url".into(), "http://localhost:8081".into());
    let mut base = toml::Table::new();
    base.insert("kafka".into(), toml::Value::Table(kafka));
    base
}

/// `DHO_*` variables as a map (what [`load`] reads).
pub fn environment() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("DHO_"))
        .collect()
}

fn guess(text: &str) -> toml::Value {
    let parsed = toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    match parsed {
        Some(v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_))) => v,
        _ => toml::Value::String(text.to_string()),
    }
}

fn put(table: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        Some((outer, inner)) => {
            let entry = table
                .entry(outer)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(inner_table) = entry {
                put(inner_table, inner, value);
            }
        }
        None => {
            table.insert(key.to_string(), value);
        }
    }
}

/// The field names serde's derive gives a struct: asked of a deserializer that stops there.
fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Fields(std::cell::Cell<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names taken")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &Fields {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.set(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }
    let probe = Fields(std::cell::Cell::new(&[]));
    let _ = T::deserialize(&probe);
    probe.0.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        kafka: crate::KafkaSettings,
        #[serde(default)]
        group_id: Option<String>,
        #[serde(default)]
        allow_synthetic_identifiers: Option<bool>,
        #[serde(default)]
        max_batch: Option<usize>,
    }

    fn base() -> toml::Table {
        toml::from_str(
            "[kafka]\nbootstrap_servers = \"b:9092\"\nschema_registry_url = \"http://r\"",
        )
        .unwrap()
    }

    #[test]
    fn keys_are_the_structs_fields_and_env_names_their_leaves() {
        let keys = keys::<Example>();
        assert!(keys.contains(&"kafka.partitions".to_string()), "{keys:?}");
        assert!(keys.contains(&"allow_synthetic_identifiers".to_string()));
        assert_eq!(env_name("kafka.partitions"), "DHO_PARTITIONS");
    }

    #[test]
    fn the_environment_and_flags_set_any_key_flags_last() {
        let env: BTreeMap<String, String> = [
            ("DHO_ALLOW_SYNTHETIC_IDENTIFIERS", "false"),
            ("DHO_MAX_BATCH", "7"),
            ("DHO_PARTITIONS", "3"),
            ("DHO_GROUP_ID", "123"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let sets = ["max_batch=9".to_string()];
        let c: Example = load(None, base(), &env, &sets).unwrap();
        assert_eq!(c.allow_synthetic_identifiers, Some(false));
        assert_eq!(c.max_batch, Some(9), "the flag wins over the environment");
        assert_eq!(c.kafka.partitions, 3);
        assert_eq!(
            c.group_id.as_deref(),
            Some("123"),
            "digits for a string stay a string"
        );
    }

    #[test]
    fn wrong_keys_and_values_are_named() {
        let none = BTreeMap::new();
        let typo = load::<Example>(None, base(), &none, &["max_bacth=1".into()]).unwrap_err();
        assert!(typo.to_string().contains("max_bacth"), "{typo}");
        let bad = load::<Example>(None, base(), &none, &["max_batch=many".into()]).unwrap_err();
        assert!(bad.to_string().contains("--set max_batch"), "{bad}");
        let map = load::<Example>(None, base(), &none, &["kafka.librdkafka=x".into()]);
        assert!(matches!(map, Err(LayerError::FileOnly { .. })), "{map:?}");
    }
}
