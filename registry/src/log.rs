//! The records of the `_schemas` topic, encoded as Confluent's Schema Registry does (JSON keys
//! and values), so the topic stays readable by either registry. Key field order is fixed
//! (`keytype`, `subject`, `version`, `magic`): compaction keeps the latest value per exact
//! key bytes.

use serde::{Deserialize, Serialize};

use crate::types::{CompatibilityLevel, Mode, Reference, SchemaType};

/// One registered (subject, version) as stored in the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaValue {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
    pub schema_type: SchemaType,
    pub references: Vec<Reference>,
    /// Soft-deleted.
    pub deleted: bool,
}

/// A decoded record of the schemas topic. `None` values are tombstones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRecord {
    Schema {
        subject: String,
        version: u32,
        value: Option<SchemaValue>,
    },
    /// `subject: None` is the global config.
    Config {
        subject: Option<String>,
        level: Option<CompatibilityLevel>,
    },
    /// `subject: None` is the global mode.
    Mode {
        subject: Option<String>,
        mode: Option<Mode>,
    },
    /// Soft delete of every version up to `version` (order in the log matters).
    DeleteSubject {
        subject: String,
        version: Option<u32>,
    },
    /// NOOP, CLEAR_SUBJECT, CONTEXT and unknown key types: nothing to apply.
    Ignored,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireKey {
    keytype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    #[serde(default)]
    magic: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSchemaValue {
    subject: String,
    version: i64,
    id: i64,
    schema: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<Reference>>,
    #[serde(default)]
    deleted: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireConfigValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default)]
    compatibility_level: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireModeValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireDeleteSubjectValue {
    subject: String,
    version: i64,
}

impl WireKey {
    /// The key of every record but a schema's: no version, magic 0.
    fn unversioned(keytype: &str, subject: Option<String>) -> Self {
        WireKey {
            keytype: keytype.into(),
            subject,
            version: None,
            magic: 0,
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail (string keys, no maps with other keys).
    serde_json::to_vec(value).unwrap_or_default()
}

fn positive_u32(value: i64, what: &str) -> Result<u32, String> {
    u32::try_from(value)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| format!("{what} {value} out of range"))
}

impl LogRecord {
    /// The record's key and value (`None` = tombstone) as written to the topic.
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        match self {
            LogRecord::Schema {
                subject,
                version,
                value,
            } => {
                let key = WireKey {
                    keytype: "SCHEMA".into(),
                    subject: Some(subject.clone()),
                    version: Some(i64::from(*version)),
                    magic: 1,
                };
                let value = value.as_ref().map(|v| {
                    to_json(&WireSchemaValue {
                        subject: v.subject.clone(),
                        version: i64::from(v.version),
                        id: i64::from(v.id),
                        schema: v.schema.clone(),
                        schema_type: (v.schema_type != SchemaType::Avro)
                            .then(|| v.schema_type.as_str().to_string()),
                        references: Some(v.references.clone()),
                        deleted: v.deleted,
                    })
                });
                (to_json(&key), value)
            }
            LogRecord::Config { subject, level } => {
                let key = WireKey::unversioned("CONFIG", subject.clone());
                let value = level.map(|level| {
                    to_json(&WireConfigValue {
                        subject: subject.clone(),
                        compatibility_level: Some(level.as_str().to_string()),
                    })
                });
                (to_json(&key), value)
            }
            LogRecord::Mode { subject, mode } => {
                let key = WireKey::unversioned("MODE", subject.clone());
                let value = mode.map(|mode| {
                    to_json(&WireModeValue {
                        subject: subject.clone(),
                        mode: Some(mode.as_str().to_string()),
                    })
                });
                (to_json(&key), value)
            }
            LogRecord::DeleteSubject { subject, version } => {
                let key = WireKey::unversioned("DELETE_SUBJECT", Some(subject.clone()));
                let value = version.map(|version| {
                    to_json(&WireDeleteSubjectValue {
                        subject: subject.clone(),
                        version: i64::from(version),
                    })
                });
                (to_json(&key), value)
            }
            LogRecord::Ignored => (to_json(&WireKey::unversioned("NOOP", None)), None),
        }
    }

    /// Decodes a record read from the topic. Errors describe a malformed record; the caller
    /// logs and skips it rather than refusing to start.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<LogRecord, String> {
        let key: WireKey =
            serde_json::from_slice(key).map_err(|e| format!("malformed key: {e}"))?;
        // An empty value is treated as a tombstone, as Confluent's store does.
        let value = value.filter(|v| !v.is_empty());
        match key.keytype.as_str() {
            "SCHEMA" => {
                let subject = key.subject.ok_or("SCHEMA key without subject")?;
                let version = positive_u32(key.version.unwrap_or(0), "SCHEMA key version")?;
                let value = match value {
                    None => None,
                    Some(bytes) => {
                        let wire: WireSchemaValue = serde_json::from_slice(bytes)
                            .map_err(|e| format!("malformed SCHEMA value: {e}"))?;
                        let schema_type = SchemaType::parse(wire.schema_type.as_deref())
                            .map_err(|e| e.to_string())?;
                        Some(SchemaValue {
                            subject: subject.clone(),
                            version,
                            id: positive_u32(wire.id, "schema id")?,
                            schema: wire.schema,
                            schema_type,
                            references: wire.references.unwrap_or_default(),
                            deleted: wire.deleted,
                        })
                    }
                };
                Ok(LogRecord::Schema {
                    subject,
                    version,
                    value,
                })
            }
            "CONFIG" => {
                let level = match value {
                    None => None,
                    Some(bytes) => {
                        let wire: WireConfigValue = serde_json::from_slice(bytes)
                            .map_err(|e| format!("malformed CONFIG value: {e}"))?;
                        match wire.compatibility_level {
                            Some(level) => {
                                Some(CompatibilityLevel::parse(&level).map_err(|e| e.to_string())?)
                            }
                            None => None,
                        }
                    }
                };
                Ok(LogRecord::Config {
                    subject: key.subject,
                    level,
                })
            }
            "MODE" => {
                let mode = match value {
                    None => None,
                    Some(bytes) => {
                        let wire: WireModeValue = serde_json::from_slice(bytes)
                            .map_err(|e| format!("malformed MODE value: {e}"))?;
                        match wire.mode {
                            Some(mode) => Some(Mode::parse(&mode).map_err(|e| e.to_string())?),
                            None => None,
                        }
                    }
                };
                Ok(LogRecord::Mode {
                    subject: key.subject,
                    mode,
                })
            }
            "DELETE_SUBJECT" => {
                let subject = key.subject.ok_or("DELETE_SUBJECT key without subject")?;
                let version = match value {
                    None => None,
                    Some(bytes) => {
                        let wire: WireDeleteSubjectValue = serde_json::from_slice(bytes)
                            .map_err(|e| format!("malformed DELETE_SUBJECT value: {e}"))?;
                        Some(positive_u32(wire.version, "DELETE_SUBJECT version")?)
                    }
                };
                Ok(LogRecord::DeleteSubject { subject, version })
            }
            _ => Ok(LogRecord::Ignored),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(record: LogRecord) {
        let (key, value) = record.encode();
        assert_eq!(LogRecord::decode(&key, value.as_deref()).unwrap(), record);
    }

    #[test]
    fn records_round_trip() {
        round_trip(LogRecord::Schema {
            subject: "t-value".into(),
            version: 2,
            value: Some(SchemaValue {
                subject: "t-value".into(),
                version: 2,
                id: 7,
                schema: "\"string\"".into(),
                schema_type: SchemaType::Protobuf,
                references: vec![Reference {
                    name: "a.proto".into(),
                    subject: "a".into(),
                    version: 1,
                }],
                deleted: true,
            }),
        });
        round_trip(LogRecord::Schema {
            subject: "t".into(),
            version: 1,
            value: None,
        });
        round_trip(LogRecord::Config {
            subject: None,
            level: Some(CompatibilityLevel::FullTransitive),
        });
        round_trip(LogRecord::Config {
            subject: Some("s".into()),
            level: None,
        });
        round_trip(LogRecord::Mode {
            subject: Some("s".into()),
            mode: Some(Mode::ReadOnly),
        });
        round_trip(LogRecord::DeleteSubject {
            subject: "s".into(),
            version: Some(3),
        });
    }

    #[test]
    fn keys_are_confluent_shaped() {
        let (key, value) = LogRecord::Schema {
            subject: "t-value".into(),
            version: 2,
            value: Some(SchemaValue {
                subject: "t-value".into(),
                version: 2,
                id: 7,
                schema: "\"string\"".into(),
                schema_type: SchemaType::Avro,
                references: vec![],
                deleted: false,
            }),
        }
        .encode();
        assert_eq!(
            String::from_utf8(key).unwrap(),
            r#"{"keytype":"SCHEMA","subject":"t-value","version":2,"magic":1}"#
        );
        assert_eq!(
            String::from_utf8(value.unwrap()).unwrap(),
            r#"{"subject":"t-value","version":2,"id":7,"schema":"\"string\"","references":[],"deleted":false}"#
        );
        let (key, _) = LogRecord::Config {
            subject: None,
            level: Some(CompatibilityLevel::Full),
        }
        .encode();
        assert_eq!(
            String::from_utf8(key).unwrap(),
            r#"{"keytype":"CONFIG","magic":0}"#
        );
    }

    #[test]
    fn confluent_records_decode() {
        let key = br#"{"keytype":"CONFIG","subject":null,"magic":0}"#;
        let value = br#"{"compatibilityLevel":"FULL","alias":null,"normalize":null}"#;
        assert_eq!(
            LogRecord::decode(key, Some(value)).unwrap(),
            LogRecord::Config {
                subject: None,
                level: Some(CompatibilityLevel::Full)
            }
        );
        assert_eq!(
            LogRecord::decode(br#"{"keytype":"NOOP","magic":0}"#, None).unwrap(),
            LogRecord::Ignored
        );
        assert!(LogRecord::decode(b"not json", None).is_err());
        assert!(
            LogRecord::decode(
                br#"{"keytype":"SCHEMA","subject":"s","version":0,"magic":1}"#,
                None
            )
            .is_err()
        );
    }
}
