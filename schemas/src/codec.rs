//! Avro binary encoding of the contract's types. The hot path serialises straight from and
//! deserialises straight into the Rust types (apache-avro's schema-aware serde), with no
//! generic value tree; only a record written with another schema version goes through
//! schema resolution.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::avro::SchemaKind;
use crate::error::{Error, Result};
use crate::model::*;

/// A type that travels on a topic as a top-level Avro record.
pub trait AvroRecord: Serialize + DeserializeOwned {
    const KIND: SchemaKind;

    /// Decodes the type's Protobuf form (message index and body of a Confluent Protobuf
    /// record), for the events platforms may publish as Protobuf; `None` for the others.
    fn from_protobuf(_message_index: &[i32], _body: &[u8]) -> Option<Result<Self>> {
        None
    }
}

impl AvroRecord for Measurement {
    const KIND: SchemaKind = SchemaKind::Measurement;

    fn from_protobuf(message_index: &[i32], body: &[u8]) -> Option<Result<Self>> {
        Some(match crate::proto::decode_event(message_index, body) {
            Ok(crate::proto::Event::Measurement(m)) => Ok(m),
            Ok(_) => Err(wrong_message::<Self>(message_index)),
            Err(e) => Err(e),
        })
    }
}

impl AvroRecord for SelfReport {
    const KIND: SchemaKind = SchemaKind::SelfReport;

    fn from_protobuf(message_index: &[i32], body: &[u8]) -> Option<Result<Self>> {
        Some(match crate::proto::decode_event(message_index, body) {
            Ok(crate::proto::Event::SelfReport(r)) => Ok(r),
            Ok(_) => Err(wrong_message::<Self>(message_index)),
            Err(e) => Err(e),
        })
    }
}

fn wrong_message<T: AvroRecord>(message_index: &[i32]) -> Error {
    Error::Decode {
        kind: T::KIND.type_name(),
        detail: format!("the Protobuf message at index {message_index:?} is another event type"),
    }
}

macro_rules! avro_record {
    ($($ty:ident),*) => {$(
        impl AvroRecord for $ty {
            const KIND: SchemaKind = SchemaKind::$ty;
        }
    )*};
}
avro_record!(
    Consent,
    Subscription,
    CarePlan,
    Delivery,
    DisclosureRecord,
    ConsentChange
);

/// A malformed length prefix must not make the decoder allocate gigabytes.
const MAX_ALLOCATION_BYTES: usize = 16 * 1024 * 1024;

struct Codec {
    writer: GenericDatumWriter<'static>,
    reader: GenericDatumReader<'static>,
}

static CODECS: LazyLock<BTreeMap<SchemaKind, Codec>> = LazyLock::new(|| {
    apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
    SchemaKind::ALL
        .iter()
        .map(|&kind| {
            let schema = kind.schema();
            // Built from schemas the tests parse; failure is a build defect.
            let codec = Codec {
                writer: GenericDatumWriter::builder(schema)
                    .build()
                    .expect("writer builds"),
                reader: GenericDatumReader::builder(schema)
                    .build()
                    .expect("reader builds"),
            };
            (kind, codec)
        })
        .collect()
});

fn codec(kind: SchemaKind) -> &'static Codec {
    &CODECS[&kind]
}

/// Appends the Avro body of `value` to `out`.
pub fn encode_into<T: AvroRecord>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    codec(T::KIND)
        .writer
        .write_ser(out, value)
        .map(|_| ())
        .map_err(|e| Error::Encode {
            kind: T::KIND.type_name(),
            detail: e.to_string(),
        })
}

/// The Avro body of `value`.
pub fn encode<T: AvroRecord>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Decodes a body written with this crate's own schema of `T`.
pub fn decode<T: AvroRecord>(body: &[u8]) -> Result<T> {
    let mut reader = body;
    let value = codec(T::KIND)
        .reader
        .read_deser::<T>(&mut reader)
        .map_err(|e| decode_error::<T>(e))?;
    if !reader.is_empty() {
        return Err(Error::TrailingBytes {
            kind: T::KIND.type_name(),
            count: reader.len(),
        });
    }
    Ok(value)
}

/// Decodes a body written with another version of the schema (`writer`), resolving it to
/// this crate's version by Avro's rules (new fields take their defaults, removed ones drop).
pub fn decode_with_writer<T: AvroRecord>(writer: &Schema, body: &[u8]) -> Result<T> {
    let mut reader = body;
    let value = GenericDatumReader::builder(writer)
        .reader_schema(T::KIND.schema())
        .build()
        .and_then(|r| r.read_value(&mut reader))
        .map_err(|e| decode_error::<T>(e))?;
    if !reader.is_empty() {
        return Err(Error::TrailingBytes {
            kind: T::KIND.type_name(),
            count: reader.len(),
        });
    }
    apache_avro::from_value::<T>(&value).map_err(|e| decode_error::<T>(e))
}

fn decode_error<T: AvroRecord>(e: apache_avro::Error) -> Error {
    Error::Decode {
        kind: T::KIND.type_name(),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use proptest::prelude::*;

    fn round_trip<T: AvroRecord + PartialEq + std::fmt::Debug>(value: T) {
        let bytes = encode(&value).unwrap();
        assert_eq!(decode::<T>(&bytes).unwrap(), value);
        // The generic path (what any other Avro reader does) agrees with the fast path.
        let generic = GenericDatumReader::builder(T::KIND.schema())
            .build()
            .unwrap()
            .read_value(&mut &bytes[..])
            .unwrap();
        assert_eq!(apache_avro::from_value::<T>(&generic).unwrap(), value);
    }

    #[test]
    fn every_type_round_trips() {
        let m = fixtures::spo2(&fixtures::patient(1), 93.0, 1_700_000_000_000);
        round_trip(m.clone());
        round_trip(fixtures::blood_pressure(
            &fixtures::patient(2),
            150.0,
            95.0,
            1_700_000_000_000,
        ));
        round_trip(fixtures::self_report(
            &fixtures::patient(3),
            1_700_000_000_000,
        ));
        round_trip(fixtures::consent(
            &fixtures::patient(1),
            "c-1",
            &[fixtures::gp()],
        ));
        round_trip(fixtures::subscription(
            &fixtures::patient(1),
            "gp-1",
            &fixtures::gp(),
        ));
        round_trip(fixtures::care_plan(&fixtures::patient(1)));
        let delivery = fixtures::delivery_of(&m);
        round_trip(delivery.clone());
        round_trip(fixtures::disclosure_of(&delivery));
        let consent = fixtures::consent(&fixtures::patient(1), "c-1", &[fixtures::gp()]);
        let change = |action, consent| ConsentChange {
            change_id: "x".into(),
            consent_id: "c-1".into(),
            patient: fixtures::patient(1),
            action,
            consent,
            changed_by: fixtures::home_care(),
            principal: "bergen-home-care".into(),
            channel: "gateway".into(),
            changed_at: 1_700_000_000_000,
        };
        round_trip(change(ConsentAction::Recorded, Some(consent)));
        round_trip(change(ConsentAction::Deleted, None));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<Measurement>(&[]).is_err());
        assert!(decode::<Measurement>(&[0xff; 40]).is_err());
        let mut bytes = encode(&fixtures::spo2(&fixtures::patient(1), 93.0, 1)).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<Measurement>(&bytes),
            Err(Error::TrailingBytes { .. })
        ));
    }

    #[test]
    fn a_v1_record_reads_as_v2_with_a_new_optional_field_and_back() {
        let v1 = Schema::parse_str(SchemaKind::Measurement.schema_text()).unwrap();
        let mut json: serde_json::Value =
            serde_json::from_str(SchemaKind::Measurement.schema_text()).unwrap();
        json["fields"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!(
                {"name": "note", "type": ["null", "string"], "default": null}
            ));
        let v2 = Schema::parse_str(&json.to_string()).unwrap();
        let m = fixtures::spo2(&fixtures::patient(1), 93.0, 1_700_000_000_000);

        // v2 writer (a newer platform) -> this crate's v1 reader.
        let mut value = apache_avro::to_value(&m).unwrap();
        if let apache_avro::types::Value::Record(fields) = &mut value {
            fields.push((
                "note".into(),
                apache_avro::types::Value::Union(1, Box::new("x".into())),
            ));
        }
        let bytes = GenericDatumWriter::builder(&v2)
            .build()
            .unwrap()
            .write_value_to_vec(value.resolve(&v2).unwrap())
            .unwrap();
        assert_eq!(decode_with_writer::<Measurement>(&v2, &bytes).unwrap(), m);

        // v1 writer (this crate) -> a v2 reader fills the default.
        let bytes = encode(&m).unwrap();
        let read = GenericDatumReader::builder(&v1)
            .reader_schema(&v2)
            .build()
            .unwrap()
            .read_value(&mut &bytes[..])
            .unwrap();
        let apache_avro::types::Value::Record(fields) = read else {
            panic!()
        };
        assert_eq!(
            fields.last().unwrap(),
            &(
                "note".to_string(),
                apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null))
            )
        );
    }

    proptest! {
        #[test]
        fn measurements_round_trip(value in 50.0f64..100.0, at in 1i64..4_000_000_000_000, seed in 0u64..10_000) {
            round_trip(fixtures::spo2(&fixtures::patient(seed), value, at));
        }

        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode::<Measurement>(&bytes);
            let _ = decode::<Delivery>(&bytes);
            let _ = decode::<Consent>(&bytes);
        }
    }
}
