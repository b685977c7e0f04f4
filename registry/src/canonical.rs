//! Schema identity: every schema is parsed and reduced to a canonical text, so that
//! whitespace and JSON key order never create a new id, while everything that changes the
//! meaning (field order, `doc`, defaults, aliases, custom properties) does.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use apache_avro::Schema as AvroSchema;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message as _;
use prost_types::FileDescriptorProto;
use serde_json::Value;

use crate::types::{Reference, SchemaType};

/// The file name given to Protobuf schemas parsed from text (Confluent uses the same).
const PROTO_FILE_NAME: &str = "default";

/// A schema that parsed: its identity key and, for Avro, the parsed form used by the
/// compatibility checker (with referenced named types inlined).
#[derive(Debug, Clone)]
pub struct Analysed {
    pub identity: String,
    pub avro: Option<Arc<AvroSchema>>,
}

/// Parses `text` as a schema of `schema_type`. `referenced` holds the texts of the schemas
/// it references (dependencies first), needed to parse Avro named types from other subjects.
/// Errors are human-readable reasons, reported as 42201.
pub fn analyse(
    schema_type: SchemaType,
    text: &str,
    references: &[Reference],
    referenced: &[String],
) -> Result<Analysed, String> {
    // Third-party parsers must not take the server down on hostile input.
    catch_unwind(AssertUnwindSafe(|| {
        analyse_inner(schema_type, text, references, referenced)
    }))
    .unwrap_or_else(|_| Err("the schema parser failed on this input".to_string()))
}

fn analyse_inner(
    schema_type: SchemaType,
    text: &str,
    references: &[Reference],
    referenced: &[String],
) -> Result<Analysed, String> {
    if text.trim().is_empty() {
        return Err("empty schema".to_string());
    }
    let (canonical, avro) = match schema_type {
        SchemaType::Avro => {
            let schema = if referenced.is_empty() {
                AvroSchema::parse_str(text).map_err(|e| e.to_string())?
            } else {
                let (mut schema, schemata) =
                    AvroSchema::parse_str_with_list(text, referenced).map_err(|e| e.to_string())?;
                schema.denormalize(&schemata).map_err(|e| e.to_string())?;
                schema
            };
            let json = serde_json::to_value(&schema).map_err(|e| e.to_string())?;
            (sorted_json(&json), Some(Arc::new(schema)))
        }
        SchemaType::Protobuf => {
            let mut descriptor = protobuf_descriptor(text)?;
            // The file name and source positions do not change what the schema means.
            descriptor.name = None;
            descriptor.source_code_info = None;
            (BASE64.encode(descriptor.encode_to_vec()), None)
        }
        SchemaType::Json => {
            let json: Value =
                serde_json::from_str(text).map_err(|e| format!("invalid JSON schema: {e}"))?;
            if !(json.is_object() || json.is_boolean()) {
                return Err("a JSON schema must be an object or a boolean".to_string());
            }
            (sorted_json(&json), None)
        }
    };
    let references = serde_json::to_string(references).map_err(|e| e.to_string())?;
    Ok(Analysed {
        identity: format!("{schema_type}\n{canonical}\n{references}"),
        avro,
    })
}

/// A Protobuf schema as `.proto` text (Java, Rust clients) or as a base64
/// `FileDescriptorProto` (Python client).
fn protobuf_descriptor(text: &str) -> Result<FileDescriptorProto, String> {
    match protox_parse::parse(PROTO_FILE_NAME, text) {
        Ok(descriptor) => Ok(descriptor),
        Err(parse_error) => decode_base64_descriptor(text).ok_or_else(|| {
            format!("invalid Protobuf schema (neither .proto text nor a base64 FileDescriptorProto): {parse_error}")
        }),
    }
}

fn decode_base64_descriptor(text: &str) -> Option<FileDescriptorProto> {
    let bytes = BASE64.decode(text.trim()).ok()?;
    FileDescriptorProto::decode(bytes.as_slice()).ok()
}

/// The `format=serialized` form of a stored Protobuf schema: a base64 `FileDescriptorProto`.
/// `None` if the text is neither form (then the stored text is served as is).
pub fn protobuf_serialized(text: &str) -> Option<String> {
    catch_unwind(|| match protox_parse::parse(PROTO_FILE_NAME, text) {
        Ok(mut descriptor) => {
            descriptor.source_code_info = None;
            Some(BASE64.encode(descriptor.encode_to_vec()))
        }
        Err(_) => decode_base64_descriptor(text).map(|_| text.trim().to_string()),
    })
    .unwrap_or(None)
}

/// Compact JSON with object keys sorted at every level; arrays keep their order.
pub fn sorted_json(value: &Value) -> String {
    let mut out = String::new();
    write_sorted(value, &mut out);
    out
}

fn write_sorted(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(inner) = map.get(key) {
                    write_sorted(inner, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(t: SchemaType, text: &str) -> String {
        analyse(t, text, &[], &[]).unwrap().identity
    }

    #[test]
    fn avro_identity_ignores_whitespace_and_key_order() {
        let a = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
        let b = r#"{ "fields": [ {"type": "int", "name": "a"} ],
                     "name": "R", "type": "record" }"#;
        assert_eq!(identity(SchemaType::Avro, a), identity(SchemaType::Avro, b));
    }

    #[test]
    fn avro_identity_keeps_field_order_doc_and_defaults() {
        let base = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"int"}]}"#;
        let swapped = r#"{"type":"record","name":"R","fields":[{"name":"b","type":"int"},{"name":"a","type":"int"}]}"#;
        let doc = r#"{"type":"record","name":"R","doc":"x","fields":[{"name":"a","type":"int"},{"name":"b","type":"int"}]}"#;
        let default = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int","default":1},{"name":"b","type":"int"}]}"#;
        let ids: Vec<String> = [base, swapped, doc, default]
            .iter()
            .map(|t| identity(SchemaType::Avro, t))
            .collect();
        for i in 0..ids.len() {
            for j in i + 1..ids.len() {
                assert_ne!(ids[i], ids[j], "{i} vs {j}");
            }
        }
    }

    #[test]
    fn invalid_schemas_are_errors_not_panics() {
        for text in ["", "{", r#"{"type":"record"}"#, "\u{0}", "nonsense"] {
            assert!(
                analyse(SchemaType::Avro, text, &[], &[]).is_err(),
                "{text:?}"
            );
        }
        assert!(analyse(SchemaType::Json, "[1]", &[], &[]).is_err());
        assert!(analyse(SchemaType::Protobuf, "message {", &[], &[]).is_err());
    }

    #[test]
    fn protobuf_text_and_base64_descriptor_have_one_identity() {
        let text = "syntax = \"proto3\";\npackage p;\nmessage M { string a = 1; }\n";
        let serialized = protobuf_serialized(text).unwrap();
        assert_eq!(
            identity(SchemaType::Protobuf, text),
            identity(SchemaType::Protobuf, &serialized)
        );
        let spaced = "syntax = \"proto3\";  package p;\n\n message M {\n string a = 1;\n}";
        assert_eq!(
            identity(SchemaType::Protobuf, text),
            identity(SchemaType::Protobuf, spaced)
        );
        assert_eq!(protobuf_serialized(&serialized).unwrap(), serialized);
    }

    #[test]
    fn sorted_json_sorts_nested_keys() {
        let v: Value = serde_json::from_str(r#"{"b":[{"d":1,"c":"\""}],"a":null}"#).unwrap();
        assert_eq!(sorted_json(&v), r#"{"a":null,"b":[{"c":"\"","d":1}]}"#);
    }
}
