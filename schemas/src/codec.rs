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
    CarePlanChange
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
}

impl RecordView for DeliveryView<'_> {
    type Record = Delivery;

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        // Self-reports and alerts are rare on this path: apache-avro writes them.
        if self.self_report.is_some() || self.alert.is_some() || !*DIRECT_LAYOUT_MATCHES {
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
    (SchemaKind::Delivery, 889947812267039254),
    (SchemaKind::DisclosureRecord, 4506977600737736652),
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
mod direct {
    use super::{DeliveryView, DisclosureView, MAX_ALLOCATION_BYTES, ReferenceView};
    use crate::model::*;

    /// Reads what apache-avro reads, the same way (varints of at most 10 bytes, blocks with
    /// negative counts, the same length limit, UTF-8 checked); `None` on anything else.
    pub(super) struct Reader<'a> {
        pub(super) bytes: &'a [u8],
    }

    impl<'a> Reader<'a> {
        fn byte(&mut self) -> Option<u8> {
            let (&byte, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            Some(byte)
        }

        fn long(&mut self) -> Option<i64> {
            let mut n = 0u64;
            for shift in 0..10 {
                let byte = self.byte()?;
                n |= u64::from(byte & 0x7f) << (shift * 7);
                if byte >> 7 == 0 {
                    return Some(if n & 1 == 0 {
                        (n >> 1) as i64
                    } else {
                        !(n >> 1) as i64
                    });
                }
            }
            None
        }

        /// A string, borrowed from the body.
        fn str(&mut self) -> Option<&'a str> {
            let len = usize::try_from(self.long()?).ok()?;
            if len > MAX_ALLOCATION_BYTES || len > self.bytes.len() {
                return None;
            }
            let (text, rest) = self.bytes.split_at(len);
            self.bytes = rest;
            std::str::from_utf8(text).ok()
        }

        /// Reads into `out`, reusing its allocation.
        fn string(&mut self, out: &mut String) -> Option<()> {
            let text = self.str()?;
            out.clear();
            out.push_str(text);
            Some(())
        }

        fn double(&mut self) -> Option<f64> {
            let (bytes, rest) = self.bytes.split_first_chunk::<8>()?;
            self.bytes = rest;
            Some(f64::from_le_bytes(*bytes))
        }

        fn symbol<T: Copy>(&mut self, symbols: &[T]) -> Option<T> {
            symbols.get(usize::try_from(self.long()?).ok()?).copied()
        }

        /// A `["null", T]` union.
        fn nullable<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
            match self.long()? {
                0 => Some(None),
                1 => read(self).map(Some),
                _ => None,
            }
        }

        /// A `["null", T]` union read into `out`, reusing a value already there.
        fn nullable_into<T>(
            &mut self,
            out: &mut Option<T>,
            blank: impl FnOnce() -> T,
            read: impl FnOnce(&mut Self, &mut T) -> Option<()>,
        ) -> Option<()> {
            match self.long()? {
                0 => *out = None,
                1 => read(self, out.get_or_insert_with(blank))?,
                _ => return None,
            }
            Some(())
        }

        fn opt_string(&mut self, out: &mut Option<String>) -> Option<()> {
            self.nullable_into(out, String::new, Self::string)
        }

        fn patient(&mut self, out: &mut PatientIdentifier) -> Option<()> {
            out.system = self.symbol(&[
                PatientIdSystem::Fnr,
                PatientIdSystem::Dnr,
                PatientIdSystem::Fhn,
            ])?;
            self.string(&mut out.value)
        }

        fn organisation(&mut self, out: &mut OrganisationIdentifier) -> Option<()> {
            out.system = self.symbol(&[OrgIdSystem::Orgnr, OrgIdSystem::Resh])?;
            self.string(&mut out.value)?;
            self.opt_string(&mut out.name)
        }

        fn quantity(&mut self, out: &mut Quantity) -> Option<()> {
            out.value = self.double()?;
            self.string(&mut out.unit)
        }

        fn component(&mut self, out: &mut Component) -> Option<()> {
            self.string(&mut out.code)?;
            self.opt_string(&mut out.snomed_code)?;
            self.quantity(&mut out.value)
        }

        /// An array's items into `out`, reusing the items already there: blocks of a count
        /// (negative: followed by the block's size in bytes), ended by a zero count.
        fn array<T>(
            &mut self,
            out: &mut Vec<T>,
            blank: impl Fn() -> T,
            read: impl Fn(&mut Self, &mut T) -> Option<()>,
        ) -> Option<()> {
            let mut len = 0;
            loop {
                let count = self.long()?;
                if count == 0 {
                    out.truncate(len);
                    return Some(());
                }
                if count < 0 {
                    self.long()?;
                }
                for _ in 0..count.unsigned_abs() {
                    if len == out.len() {
                        out.push(blank());
                    }
                    read(self, &mut out[len])?;
                    len += 1;
                }
            }
        }

        /// Reads a measurement into `out`, reusing its strings and components (after a
        /// `None`, `out` holds a mix of old and new values: overwrite it).
        pub(super) fn measurement(&mut self, out: &mut Measurement) -> Option<()> {
            self.string(&mut out.event_id)?;
            self.opt_string(&mut out.source_id)?;
            self.patient(&mut out.patient)?;
            self.organisation(&mut out.source.platform)?;
            self.opt_string(&mut out.source.device_id)?;
            self.opt_string(&mut out.source.device_type)?;
            self.organisation(&mut out.data_controller)?;
            self.string(&mut out.code)?;
            self.opt_string(&mut out.snomed_code)?;
            self.nullable_into(&mut out.value, blank_quantity, Self::quantity)?;
            self.array(&mut out.components, blank_component, Self::component)?;
            out.effective_time = self.long()?;
            out.received_time = self.long()?;
            out.severity = self.nullable(|r| {
                r.symbol(&[
                    VkpSeverity::NotReported,
                    VkpSeverity::Normal,
                    VkpSeverity::Moderate,
                    VkpSeverity::Severe,
                    VkpSeverity::Critical,
                ])
            })?;
            out.triage = self.nullable(|r| {
                r.symbol(&[
                    TriageColour::Red,
                    TriageColour::Orange,
                    TriageColour::Yellow,
                    TriageColour::Green,
                    TriageColour::Blue,
                    TriageColour::Black,
                    TriageColour::NotReported,
                ])
            })?;
            self.opt_string(&mut out.status)?;
            out.effective_end = self.nullable(Self::long)?;
            self.opt_string(&mut out.effective_precision)?;
            out.value_coding = self.nullable(|r| {
                let mut c = Coding {
                    system: String::new(),
                    code: String::new(),
                    display: None,
                };
                r.string(&mut c.system)?;
                r.string(&mut c.code)?;
                r.opt_string(&mut c.display)?;
                Some(c)
            })?;
            Some(())
        }
    }

    fn blank_quantity() -> Quantity {
        Quantity {
            value: 0.0,
            unit: String::new(),
        }
    }

    fn blank_component() -> Component {
        Component {
            code: String::new(),
            snomed_code: None,
            value: blank_quantity(),
        }
    }

    fn blank_organisation() -> OrganisationIdentifier {
        OrganisationIdentifier {
            system: OrgIdSystem::Orgnr,
            value: String::new(),
            name: None,
        }
    }

    /// A measurement to read into (no allocation until something is read).
    pub(super) fn blank_measurement() -> Measurement {
        Measurement {
            event_id: String::new(),
            source_id: None,
            patient: PatientIdentifier {
                system: PatientIdSystem::Fnr,
                value: String::new(),
            },
            source: Source {
                platform: blank_organisation(),
                device_id: None,
                device_type: None,
            },
            data_controller: blank_organisation(),
            code: String::new(),
            snomed_code: None,
            value: None,
            components: Vec::new(),
            effective_time: 0,
            received_time: 0,
            severity: None,
            triage: None,
            status: None,
            effective_end: None,
            effective_precision: None,
            value_coding: None,
        }
    }

    fn long(out: &mut Vec<u8>, value: i64) {
        let mut n = ((value << 1) ^ (value >> 63)) as u64;
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    fn string(out: &mut Vec<u8>, value: &str) {
        long(out, value.len() as i64);
        out.extend_from_slice(value.as_bytes());
    }

    /// A `["null", T]` union: branch 0 (zig-zag 0) or branch 1 (zig-zag 2) and the value.
    fn nullable<T>(out: &mut Vec<u8>, value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
        match value {
            None => out.push(0),
            Some(value) => {
                out.push(2);
                write(out, value);
            }
        }
    }

    fn opt_string(out: &mut Vec<u8>, value: Option<&str>) {
        nullable(out, value, string);
    }

    fn patient(out: &mut Vec<u8>, p: &PatientIdentifier) {
        long(out, p.system as i64);
        string(out, &p.value);
    }

    fn organisation(out: &mut Vec<u8>, o: &OrganisationIdentifier) {
        long(out, o.system as i64);
        string(out, &o.value);
        opt_string(out, o.name.as_deref());
    }

    fn quantity(out: &mut Vec<u8>, q: &Quantity) {
        out.extend_from_slice(&q.value.to_le_bytes());
        string(out, &q.unit);
    }

    fn position(out: &mut Vec<u8>, s: &SourcePosition) {
        string(out, &s.topic);
        long(out, i64::from(s.partition));
        long(out, s.offset);
    }

    fn measurement(out: &mut Vec<u8>, m: &Measurement) {
        string(out, &m.event_id);
        opt_string(out, m.source_id.as_deref());
        patient(out, &m.patient);
        organisation(out, &m.source.platform);
        opt_string(out, m.source.device_id.as_deref());
        opt_string(out, m.source.device_type.as_deref());
        organisation(out, &m.data_controller);
        string(out, &m.code);
        opt_string(out, m.snomed_code.as_deref());
        nullable(out, m.value.as_ref(), quantity);
        if !m.components.is_empty() {
            long(out, m.components.len() as i64);
            for c in &m.components {
                string(out, &c.code);
                opt_string(out, c.snomed_code.as_deref());
                quantity(out, &c.value);
            }
        }
        out.push(0);
        long(out, m.effective_time);
        long(out, m.received_time);
        nullable(out, m.severity, |out, s| long(out, s as i64));
        nullable(out, m.triage, |out, t| long(out, t as i64));
        opt_string(out, m.status.as_deref());
        nullable(out, m.effective_end, long);
        opt_string(out, m.effective_precision.as_deref());
        nullable(out, m.value_coding.as_ref(), |out, c| {
            string(out, &c.system);
            string(out, &c.code);
            opt_string(out, c.display.as_deref());
        });
    }

    fn reference(out: &mut Vec<u8>, r: ReferenceView<'_>) {
        string(out, r.event_id);
        long(out, r.category as i64);
        opt_string(out, r.code);
        long(out, r.effective_time);
    }

    /// A delivery carrying a measurement or a reference (the caller routes the rest to
    /// apache-avro).
    pub(super) fn delivery(d: &DeliveryView<'_>, out: &mut Vec<u8>) {
        debug_assert!(d.self_report.is_none() && d.alert.is_none());
        out.reserve(128 + d.measurement.map_or(0, |_| 256));
        string(out, d.delivery_id);
        string(out, d.subscriber_id);
        string(out, d.subscription_id);
        string(out, d.consent_id);
        patient(out, d.patient);
        position(out, d.source);
        long(out, d.content_level as i64);
        long(out, d.routed_at);
        nullable(out, d.measurement, measurement);
        out.push(0); // self_report
        out.push(0); // alert
        nullable(out, d.reference, reference);
    }

    pub(super) fn disclosure(r: &DisclosureView<'_>, out: &mut Vec<u8>) {
        out.reserve(256);
        string(out, r.delivery_id);
        long(out, r.recorded_at);
        patient(out, r.patient);
        organisation(out, r.recipient);
        string(out, r.subscriber_id);
        string(out, r.subscription_id);
        string(out, r.purpose_of_use);
        string(out, r.decision_reference);
        string(out, r.legal_basis);
        organisation(out, r.data_controller);
        long(out, r.category as i64);
        string(out, r.event_id);
        long(out, r.content_level as i64);
        position(out, r.source);
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
        let plan = fixtures::care_plan(&fixtures::patient(1));
        let plan_change = |action, plan| CarePlanChange {
            change_id: "y".into(),
            plan_id: format!("{}.kols", fixtures::home_care().value),
            patient: fixtures::patient(1),
            action,
            plan,
            changed_by: fixtures::home_care(),
            principal: "bergen-home-care".into(),
            channel: "gateway".into(),
            changed_at: 1_700_000_000_000,
        };
        round_trip(plan_change(CarePlanAction::Recorded, Some(plan)));
        round_trip(plan_change(CarePlanAction::Deleted, None));
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

    fn delivery_view(d: &Delivery) -> (DeliveryView<'_>, Option<ReferenceView<'_>>) {
        let reference = d.reference.as_ref().map(|r| ReferenceView {
            event_id: &r.event_id,
            category: r.category,
            code: r.code.as_deref(),
            effective_time: r.effective_time,
        });
        let view = DeliveryView {
            delivery_id: &d.delivery_id,
            subscriber_id: &d.subscriber_id,
            subscription_id: &d.subscription_id,
            consent_id: &d.consent_id,
            patient: &d.patient,
            source: &d.source,
            content_level: d.content_level,
            routed_at: d.routed_at,
            measurement: d.measurement.as_ref(),
            self_report: d.self_report.as_ref(),
            alert: d.alert.as_ref(),
            reference,
        };
        (view, reference)
    }

    /// The view's bytes (direct writer, or apache-avro for the payloads it leaves to it)
    /// equal apache-avro's bytes of the owned record, and decode back to it.
    fn same_bytes_as_owned(d: &Delivery) {
        let (view, _) = delivery_view(d);
        let mut direct = Vec::new();
        view.encode_into(&mut direct).unwrap();
        assert_eq!(direct, encode(d).unwrap(), "delivery bytes differ");
        assert_eq!(&decode::<Delivery>(&direct).unwrap(), d);
        let mut via_serde = Vec::new();
        encode_ser(SchemaKind::Delivery, &view, &mut via_serde).unwrap();
        assert_eq!(via_serde, direct);

        let r = fixtures::disclosure_of(d);
        let view = DisclosureView {
            delivery_id: &r.delivery_id,
            recorded_at: r.recorded_at,
            patient: &r.patient,
            recipient: &r.recipient,
            subscriber_id: &r.subscriber_id,
            subscription_id: &r.subscription_id,
            purpose_of_use: &r.purpose_of_use,
            decision_reference: &r.decision_reference,
            legal_basis: &r.legal_basis,
            data_controller: &r.data_controller,
            category: r.category,
            event_id: &r.event_id,
            content_level: r.content_level,
            source: &r.source,
        };
        let mut direct = Vec::new();
        view.encode_into(&mut direct).unwrap();
        assert_eq!(direct, encode(&r).unwrap(), "disclosure bytes differ");
        let mut via_serde = Vec::new();
        encode_ser(SchemaKind::DisclosureRecord, &view, &mut via_serde).unwrap();
        assert_eq!(via_serde, direct);
    }

    #[test]
    fn the_direct_writer_knows_the_current_schemas() {
        for (kind, hash) in DIRECT_LAYOUT {
            assert_eq!(
                fnv1a(&kind.schema().canonical_form()),
                hash,
                "{kind:?} changed: update codec::direct to it, then its hash"
            );
        }
        assert!(*DIRECT_LAYOUT_MATCHES);
    }

    #[test]
    fn direct_bytes_equal_apache_avro_bytes() {
        let at = 1_700_000_000_000;
        let mut measurements = vec![
            fixtures::spo2(&fixtures::patient(1), 93.0, at),
            fixtures::blood_pressure(&fixtures::patient(2), 150.0, 95.0, at),
        ];
        // Every enum symbol, absent optionals, other identifier systems, odd numbers.
        let severities = [
            VkpSeverity::NotReported,
            VkpSeverity::Normal,
            VkpSeverity::Moderate,
            VkpSeverity::Severe,
            VkpSeverity::Critical,
        ];
        let triages = [
            TriageColour::Red,
            TriageColour::Orange,
            TriageColour::Yellow,
            TriageColour::Green,
            TriageColour::Blue,
            TriageColour::Black,
            TriageColour::NotReported,
        ];
        for (i, triage) in triages.into_iter().enumerate() {
            let mut m = fixtures::spo2(&fixtures::patient(3 + i as u64), -0.0, -5);
            m.triage = Some(triage);
            m.severity = Some(severities[i % severities.len()]);
            m.source_id = None;
            m.snomed_code = None;
            m.source.device_id = None;
            m.source.device_type = Some("æøå ✓".into());
            m.source.platform.name = None;
            m.data_controller.system = OrgIdSystem::Resh;
            m.patient.system = [PatientIdSystem::Dnr, PatientIdSystem::Fhn][i % 2];
            m.value = (i % 2 == 0).then(|| Quantity {
                value: f64::MAX,
                unit: String::new(),
            });
            m.received_time = i64::MAX - 10 - i as i64;
            m.effective_time = i64::MIN + i as i64;
            measurements.push(m);
        }
        let mut many = fixtures::blood_pressure(&fixtures::patient(9), 1.0, 2.0, at);
        many.components = (0..200).flat_map(|_| many.components.clone()).collect();
        measurements.push(many);

        for m in &measurements {
            let mut d = fixtures::delivery_of(m);
            same_bytes_as_owned(&d);
            d.source.offset = i64::MAX;
            d.source.partition = i32::MAX;
            d.routed_at = -1;
            d.delivery_id = "x".repeat(300);
            same_bytes_as_owned(&d);
            // MINIMAL: a reference instead of the values, with and without a code.
            d.measurement = None;
            d.content_level = ContentLevel::Minimal;
            for code in [Some(m.code.clone()), None] {
                d.reference = Some(EventReference {
                    event_id: m.event_id.clone(),
                    category: DataCategory::Measurement,
                    code,
                    effective_time: m.effective_time,
                });
                same_bytes_as_owned(&d);
            }
        }
        // Self-reports and alerts keep apache-avro's path.
        let mut d = fixtures::delivery_of(&measurements[0]);
        d.measurement = None;
        d.self_report = Some(fixtures::self_report(&fixtures::patient(1), at));
        same_bytes_as_owned(&d);
        d.self_report = None;
        for category in [DataCategory::SelfReport, DataCategory::Alert] {
            d.reference = Some(EventReference {
                event_id: "e".into(),
                category,
                code: Some("cat".into()),
                effective_time: at,
            });
            same_bytes_as_owned(&d);
        }
        d.reference = None;
        d.alert = Some(Alert {
            alert_id: "a-1".into(),
            patient: fixtures::patient(1),
            kind: AlertKind::Escalated,
            zone: Zone::Red,
            severity: VkpSeverity::Severe,
            code: measurements[1].code.clone(),
            plan_id: "p".into(),
            plan_version: 3,
            triggering_event_id: Some("e".into()),
            reading: Some(measurements[1].clone()),
            raised_at: at,
        });
        same_bytes_as_owned(&d);
    }

    /// Whenever the hand-written reader accepts a body, apache-avro accepts it too and reads
    /// the same value (compared by its bytes, so NaN payloads count); when it declines,
    /// `decode` gives apache-avro's answer.
    fn direct_reads_as_apache_avro(body: &[u8]) -> bool {
        let avro = decode_avro::<Measurement>(body);
        match Measurement::decode_direct(body) {
            Some(direct) => {
                let avro = avro.expect("apache-avro accepts what the direct reader accepts");
                assert_eq!(encode(&direct).unwrap(), encode(&avro).unwrap());
                true
            }
            None => {
                assert_eq!(
                    decode::<Measurement>(body).map_err(|e| e.to_string()),
                    avro.map_err(|e| e.to_string())
                );
                false
            }
        }
    }

    #[test]
    fn the_direct_reader_reads_what_apache_avro_reads() {
        let at = 1_700_000_000_000;
        let mut m = fixtures::blood_pressure(&fixtures::patient(2), 150.0, 95.0, at);
        assert!(direct_reads_as_apache_avro(&encode(&m).unwrap()));
        m.triage = Some(TriageColour::NotReported);
        m.severity = Some(VkpSeverity::Critical);
        m.patient.system = PatientIdSystem::Fhn;
        m.data_controller.system = OrgIdSystem::Resh;
        m.data_controller.name = None;
        m.value = Some(Quantity {
            value: f64::NAN,
            unit: "æ".into(),
        });
        m.effective_time = i64::MIN;
        m.received_time = i64::MAX;
        assert!(direct_reads_as_apache_avro(&encode(&m).unwrap()));
        let spo2 = fixtures::spo2(&fixtures::patient(1), 93.0, at);
        let body = encode(&spo2).unwrap();
        assert!(direct_reads_as_apache_avro(&body));
        assert_eq!(Measurement::decode_direct(&body), Some(spo2.clone()));

        // Components in two blocks, the second with a negative count and a byte size (what
        // other writers may do): the same reading.
        let bp = fixtures::blood_pressure(&fixtures::patient(3), 120.0, 80.0, at);
        let one_block = encode(&bp).unwrap();
        let mut single = bp.clone();
        single.components.truncate(1);
        let head_len = encode(&Measurement {
            components: vec![],
            ..bp.clone()
        })
        .unwrap()
        .len();
        // Locate the array by encoding with one component and comparing.
        let one = encode(&single).unwrap();
        let start = one
            .iter()
            .zip(&one_block)
            .position(|(a, b)| a != b)
            .unwrap();
        let mut item = Vec::new();
        let second = &bp.components[1];
        item.push(2 * second.code.len() as u8);
        item.extend_from_slice(second.code.as_bytes());
        item.push(2);
        let snomed = second.snomed_code.as_deref().unwrap();
        item.push(2 * snomed.len() as u8);
        item.extend_from_slice(snomed.as_bytes());
        item.extend_from_slice(&second.value.value.to_le_bytes());
        item.push(2 * second.value.unit.len() as u8);
        item.extend_from_slice(second.value.unit.as_bytes());
        assert!(item.len() < 64);
        // one: [.. count=1 (2), item0, 0, tail]; make it [.. 1, item0, -1 (1), size, item1, 0, tail]
        let end_of_first = one.len() - (head_len - start) + 1;
        let mut blocks = one[..end_of_first - 1].to_vec();
        blocks.push(1); // zig-zag -1
        blocks.push(2 * item.len() as u8);
        blocks.extend_from_slice(&item);
        blocks.extend_from_slice(&one[end_of_first - 1..]);
        assert!(direct_reads_as_apache_avro(&blocks));
        assert_eq!(decode::<Measurement>(&blocks).unwrap(), bp);

        // Every truncation and every single-byte change of a valid body.
        for body in [&body, &one_block] {
            for len in 0..body.len() {
                direct_reads_as_apache_avro(&body[..len]);
            }
            for i in 0..body.len() {
                for byte in [0x00, 0x01, 0x02, 0x7f, 0x80, 0xff, body[i] ^ 0x01] {
                    let mut changed = body.clone();
                    changed[i] = byte;
                    direct_reads_as_apache_avro(&changed);
                }
            }
        }
    }

    /// A reading decoded into a value reused from readings of other shapes (more or fewer
    /// components, optional fields present or absent, a rejected body in between) is the
    /// reading.
    #[test]
    fn decoding_into_a_reused_reading_gives_the_reading() {
        let at = 1_700_000_000_000;
        let bp = fixtures::blood_pressure(&fixtures::patient(1), 150.0, 95.0, at);
        let spo2 = fixtures::spo2(&fixtures::patient(22), 91.0, at + 1);
        let mut bare = bp.clone();
        bare.source_id = None;
        bare.snomed_code = None;
        bare.source.device_id = None;
        bare.source.device_type = None;
        bare.data_controller.name = None;
        bare.components[0].snomed_code = None;
        bare.components.truncate(1);
        bare.severity = Some(VkpSeverity::Severe);
        let mut three = bp.clone();
        three.components.push(bp.components[0].clone());
        three.value = Some(Quantity {
            value: 7.5,
            unit: "mmol/L".into(),
        });
        let mut into = spo2.clone();
        for reading in [&bp, &spo2, &bare, &three, &bp, &bare, &spo2, &three, &spo2] {
            let body = encode(reading).unwrap();
            decode_into(&body, &mut into).unwrap();
            assert_eq!(&into, reading);
            // A rejected body leaves an unspecified value; the next reading overwrites it.
            assert!(decode_into(&body[..body.len() - 3], &mut into).is_err());
        }
    }

    proptest! {
        #[test]
        fn measurements_round_trip(value in 50.0f64..100.0, at in 1i64..4_000_000_000_000, seed in 0u64..10_000) {
            round_trip(fixtures::spo2(&fixtures::patient(seed), value, at));
        }

        #[test]
        fn direct_bytes_equal_apache_avro_bytes_for_any_reading(
            value in proptest::num::f64::ANY,
            at in any::<i64>(),
            offset in any::<i64>(),
            seed in 0u64..10_000,
            text in ".{0,40}",
            bp in any::<bool>(),
        ) {
            let p = fixtures::patient(seed);
            let mut m = if bp {
                fixtures::blood_pressure(&p, value, -value, at)
            } else {
                fixtures::spo2(&p, value, at)
            };
            m.code = text.clone();
            let mut d = fixtures::delivery_of(&m);
            d.source.offset = offset;
            d.subscriber_id = text;
            let (view, _) = delivery_view(&d);
            let mut direct = Vec::new();
            view.encode_into(&mut direct).unwrap();
            prop_assert_eq!(direct, encode(&d).unwrap());
        }

        #[test]
        fn the_direct_reader_agrees_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            direct_reads_as_apache_avro(&bytes);
        }

        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode::<Measurement>(&bytes);
            let _ = decode::<Delivery>(&bytes);
            let _ = decode::<Consent>(&bytes);
        }
    }
}
