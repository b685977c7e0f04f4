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
    debug_assert!(d.self_report.is_none() && d.alert.is_none() && d.sharing_ended.is_none());
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
    nullable(out, d.replaces, |out, r| {
        string(out, &r.delivery_id);
        string(out, &r.event_id);
        string(out, &r.status);
    });
    // An array: one block of its strings, then the empty block that ends it.
    if !d.professional_denies.is_empty() {
        long(out, d.professional_denies.len() as i64);
        for hpr in d.professional_denies {
            string(out, hpr);
        }
    }
    out.push(0);
    out.push(0); // sharing_ended
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
    opt_string(out, r.replaces);
}
