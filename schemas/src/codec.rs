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

    /// Decodes a body written with this crate's own schema without apache-avro, where a
    /// hand-written reader exists; `None` leaves the body (and any error) to apache-avro.
    fn decode_direct(_body: &[u8]) -> Option<Self> {
        None
    }

    /// [`decode_direct`](Self::decode_direct) into `into`, reusing its allocations where
    /// the reader can; `false` leaves the body to apache-avro (and `into` to be overwritten).
    fn decode_direct_into(body: &[u8], into: &mut Self) -> bool {
        match Self::decode_direct(body) {
            Some(value) => {
                *into = value;
                true
            }
            None => false,
        }
    }
}

impl AvroRecord for Measurement {
    const KIND: SchemaKind = SchemaKind::Measurement;

    /// The router decodes every reading: read by hand (a rejected body goes to apache-avro,
    /// which gives its own error).
    fn decode_direct(body: &[u8]) -> Option<Self> {
        let mut value = direct::blank_measurement();
        Self::decode_direct_into(body, &mut value).then_some(value)
    }

    /// Reused by the router for every reading: no allocation once its strings are grown.
    fn decode_direct_into(body: &[u8], into: &mut Self) -> bool {
        if !*DIRECT_LAYOUT_MATCHES {
            return false;
        }
        let mut reader = direct::Reader { bytes: body };
        reader.measurement(into).is_some() && reader.bytes.is_empty()
    }

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
    ConsentChange,
    CarePlanChange,
    SubscriptionChange,
    Enrolment,
    EnrolmentChange,
    AccessRefusal
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
    if let Some(value) = T::decode_direct(body) {
        return Ok(value);
    }
    decode_avro(body)
}

/// [`decode`] into `into`, reusing its allocations where a hand-written reader exists. On
/// an error `into` holds an unspecified (valid) value.
pub fn decode_into<T: AvroRecord>(body: &[u8], into: &mut T) -> Result<()> {
    if !T::decode_direct_into(body, into) {
        *into = decode_avro(body)?;
    }
    Ok(())
}

/// [`decode`] by apache-avro's schema-aware serde.
fn decode_avro<T: AvroRecord>(body: &[u8]) -> Result<T> {
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

/// A borrowed form of a top-level record: encodes to exactly the bytes of the owned record
/// it describes, without building (and cloning into) one. The router encodes its outputs
/// this way, once per delivery.
pub trait RecordView {
    /// The record type whose schema (and registered id) these bytes are written with.
    type Record: AvroRecord;

    /// Appends the Avro body to `out`.
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()>;
}

/// A [`Delivery`] over borrowed parts.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename = "Delivery")]
pub struct DeliveryView<'a> {
    pub delivery_id: &'a str,
    pub subscriber_id: &'a str,
    pub subscription_id: &'a str,
    pub consent_id: &'a str,
    pub patient: &'a PatientIdentifier,
    pub source: &'a SourcePosition,
    pub content_level: ContentLevel,
    pub routed_at: Millis,
    pub measurement: Option<&'a Measurement>,
    pub self_report: Option<&'a SelfReport>,
    pub alert: Option<&'a Alert>,
    pub reference: Option<ReferenceView<'a>>,
    pub replaces: Option<&'a Replaces>,
    pub professional_denies: &'a [&'a str],
    pub sharing_ended: Option<&'a SharingEnded>,
}

/// An [`EventReference`] over borrowed parts.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename = "EventReference")]
pub struct ReferenceView<'a> {
    pub event_id: &'a str,
    pub category: DataCategory,
    pub code: Option<&'a str>,
    pub effective_time: Millis,
}

/// A [`DisclosureRecord`] over borrowed parts.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename = "DisclosureRecord")]
pub struct DisclosureView<'a> {
    pub delivery_id: &'a str,
    pub recorded_at: Millis,
    pub patient: &'a PatientIdentifier,
    pub recipient: &'a OrganisationIdentifier,
    pub subscriber_id: &'a str,
    pub subscription_id: &'a str,
    pub purpose_of_use: &'a str,
    pub decision_reference: &'a str,
    pub legal_basis: &'a str,
    pub data_controller: &'a OrganisationIdentifier,
    pub category: DataCategory,
    pub event_id: &'a str,
    pub content_level: ContentLevel,
    pub source: &'a SourcePosition,
    pub replaces: Option<&'a str>,
}

impl RecordView for DeliveryView<'_> {
    type Record = Delivery;

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        // Self-reports, alerts and sharing-ended notices are rare on this path: apache-avro
        // writes them.
        let rare = self.self_report.is_some() || self.alert.is_some();
        if rare || self.sharing_ended.is_some() || !*DIRECT_LAYOUT_MATCHES {
            return encode_ser(SchemaKind::Delivery, self, out);
        }
        direct::delivery(self, out);
        Ok(())
    }
}

impl RecordView for DisclosureView<'_> {
    type Record = DisclosureRecord;

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        if !*DIRECT_LAYOUT_MATCHES {
            return encode_ser(SchemaKind::DisclosureRecord, self, out);
        }
        direct::disclosure(self, out);
        Ok(())
    }
}

fn encode_ser<V: Serialize>(kind: SchemaKind, value: &V, out: &mut Vec<u8>) -> Result<()> {
    codec(kind)
        .writer
        .write_ser(out, value)
        .map(|_| ())
        .map_err(|e| Error::Encode {
            kind: kind.type_name(),
            detail: e.to_string(),
        })
}

/// FNV-1a of the parsing canonical forms of the schemas [`direct`] writes by hand. A schema
/// change turns the direct writer off (apache-avro writes instead, so bytes stay right),
/// and `the_direct_writer_knows_the_current_schemas` fails until it is brought up to date.
const DIRECT_LAYOUT: [(SchemaKind, u64); 3] = [
    (SchemaKind::Measurement, 11427369249552935175),
    (SchemaKind::Delivery, 14031569292926465913),
    (SchemaKind::DisclosureRecord, 12806639653847731752),
];

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

static DIRECT_LAYOUT_MATCHES: LazyLock<bool> = LazyLock::new(|| {
    DIRECT_LAYOUT
        .iter()
        .all(|&(kind, hash)| fnv1a(&kind.schema().canonical_form()) == hash)
});

/// Avro binary written by hand for the router's per-delivery records, field by field in
/// schema order (checked by [`DIRECT_LAYOUT`]; tests compare every byte with apache-avro's),
/// and read by hand for measurements. Enum indices are the symbols' positions, which the
/// Rust enums declare in the same order.
mod direct;

#[cfg(test)]
mod tests;
