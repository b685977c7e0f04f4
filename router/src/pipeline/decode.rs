//! Decoding what the router reads: events, and the records of the state topics. A record
//! that does not decode, or decodes to something invalid, becomes a [`DeadLetter`] for the
//! caller to park, never an event or state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dho_kafka::AvroSerde;
use dho_kafka::outage::Outage;
use dho_routing_core::decision::EventView;
use dho_schemas::Policy;
use dho_schemas::codec::{AvroRecord, ReferenceView};
use dho_schemas::model::*;
use rdkafka::message::Message;

use super::dead_letters::DeadLetter;
use crate::events::{EventsRead, RegistryWaited};
use dho_telemetry::{InternalEvent, RegisteredEvent};

/// An ingest event, decoded.
#[derive(Debug, Clone)]
pub(super) enum Event {
    Measurement(Measurement),
    SelfReport(SelfReport),
}

impl Event {
    pub(super) fn patient(&self) -> &PatientIdentifier {
        match self {
            Event::Measurement(e) => &e.patient,
            Event::SelfReport(e) => &e.patient,
        }
    }
    pub(super) fn view(&self) -> EventView<'_> {
        match self {
            Event::Measurement(e) => EventView {
                category: DataCategory::Measurement,
                code: Some(&e.code),
            },
            Event::SelfReport(e) => EventView {
                category: DataCategory::SelfReport,
                code: Some(&e.questionnaire_id),
            },
        }
    }
    pub(super) fn event_id(&self) -> &str {
        match self {
            Event::Measurement(e) => &e.event_id,
            Event::SelfReport(e) => &e.event_id,
        }
    }
    /// What a minimal delivery carries instead of the values.
    pub(super) fn reference(&self) -> ReferenceView<'_> {
        let view = self.view();
        let effective_time = match self {
            Event::Measurement(e) => e.effective_time,
            Event::SelfReport(e) => e.authored_time,
        };
        ReferenceView {
            event_id: self.event_id(),
            category: view.category,
            code: view.code,
            effective_time,
        }
    }
    pub(super) fn data_controller(&self) -> &OrganisationIdentifier {
        match self {
            Event::Measurement(e) => &e.data_controller,
            Event::SelfReport(e) => &e.data_controller,
        }
    }
}

/// The dead letter for a record that did not decode.
fn dead_letter_for(e: dho_kafka::Error) -> DeadLetter {
    DeadLetter {
        reason: match &e {
            dho_kafka::Error::UnknownSchema { .. } => "unknown_schema",
            dho_kafka::Error::WrongSchema { .. } => "wrong_schema",
            _ => "undecodable",
        },
        detail: e.to_string(),
    }
}

/// Decodes with the registry's schemas and validates under the router's identifier policy.
#[derive(Debug, Clone)]
pub(super) struct Decoder {
    serde: AvroSerde,
    policy: Policy,
    /// Cleared while a record waits for the schema registry (a `/readyz` check).
    registry_reachable: Arc<AtomicBool>,
    /// The input and state topics' partition count: a record's partition is checked
    /// against its patient's.
    partitions: i32,
}

impl Decoder {
    pub(super) fn new(serde: AvroSerde, policy: Policy, partitions: i32) -> Self {
        Self {
            serde,
            policy,
            registry_reachable: Arc::new(AtomicBool::new(true)),
            partitions,
        }
    }

    /// The partition of the patient whose key is `patient_key`.
    pub(super) fn partition_of(&self, patient_key: &str) -> i32 {
        dho_schemas::partition::partition_for(patient_key.as_bytes(), self.partitions)
    }

    /// A record on another partition than its patient's is read by an instance that does
    /// not hold that patient's state (and the patient's own partition never sees it): it
    /// would be withheld as unsubscribed, or a state change would apply nowhere. A client
    /// with another partitioner than Java's murmur2 writes such records.
    fn check_partition(&self, patient_key: &str, partition: i32) -> Result<(), DeadLetter> {
        let expected =
            dho_schemas::partition::partition_for(patient_key.as_bytes(), self.partitions);
        if partition == expected {
            return Ok(());
        }
        Err(DeadLetter {
            reason: "wrong_partition",
            detail: format!(
                "written to partition {partition}, but its patient's partition is {expected} \
                 of {} (Java's murmur2 of the patient key; librdkafka: partitioner = \
                 murmur2_random)",
                self.partitions
            ),
        })
    }

    /// Set while records decode; cleared while one waits for the schema registry.
    pub(super) fn registry_reachable(&self) -> Arc<AtomicBool> {
        self.registry_reachable.clone()
    }

    /// After a failed decode: waits and returns None if the schema registry did not
    /// answer (the caller tries again), else the record's dead letter. A record that needs
    /// a schema the router has not cached yet is not bad input while the registry is down:
    /// dead-lettering it would drop a good reading, or a withdrawal with the old permit
    /// left in force. So it waits, nothing behind it is routed or committed meanwhile, and
    /// `/readyz` says why.
    async fn failed(&self, e: dho_kafka::Error, outage: &mut Option<Outage>) -> Option<DeadLetter> {
        if !e.is_retriable() {
            self.decoded(outage);
            return Some(dead_letter_for(e));
        }
        self.registry_reachable.store(false, Ordering::Relaxed);
        RegistryWaited.emit();
        let pause = outage
            .get_or_insert_with(|| Outage::new("the schema registry, to decode"))
            .pause_after(&e);
        tokio::time::sleep(pause).await;
        None
    }

    /// The registry answered again (if it had not).
    fn decoded(&self, outage: &Option<Outage>) {
        if outage.is_some() {
            self.registry_reachable.store(true, Ordering::Relaxed);
        }
    }

    /// Decodes and validates a state record filed under `key`; a bad one is a dead letter,
    /// never state. The key decides the partition, and the partition which instance
    /// applies the record: a body naming another patient than the key is refused.
    pub(super) async fn decode_state<T: AvroRecord>(
        &self,
        bytes: &[u8],
        key: &str,
        partition: i32,
        validate: impl Fn(&T, Policy) -> std::result::Result<(), dho_schemas::ValidationError>,
        patient: impl Fn(&T) -> &PatientIdentifier,
    ) -> Result<T, DeadLetter> {
        let value = self.decode::<T>(bytes).await?;
        validate(&value, self.policy).map_err(|e| DeadLetter {
            reason: e.reason.as_str(),
            detail: e.to_string(),
        })?;
        if dho_schemas::topics::patient_key(key) != patient(&value).key() {
            return Err(DeadLetter {
                reason: "key_mismatch",
                detail: "the record key is not the patient the record names".into(),
            });
        }
        self.check_partition(dho_schemas::topics::patient_key(key), partition)?;
        Ok(value)
    }

    async fn decode<T: AvroRecord>(&self, bytes: &[u8]) -> Result<T, DeadLetter> {
        let mut outage = None;
        loop {
            match self.serde.decode::<T>(bytes).await {
                Ok(value) => {
                    self.decoded(&outage);
                    return Ok(value);
                }
                Err(e) => {
                    if let Some(dead) = self.failed(e, &mut outage).await {
                        return Err(dead);
                    }
                }
            }
        }
    }

    /// Decodes and checks an event; a measurement into `reading` when there is one (the
    /// previous reading's allocations, reused).
    async fn decode_event(
        &self,
        message: &impl Message,
        is_measurement: bool,
        now: Millis,
        reading: Option<Measurement>,
    ) -> Result<Event, DeadLetter> {
        let Some(bytes) = message.payload() else {
            return Err(DeadLetter {
                reason: "empty",
                detail: "an event record without a value".into(),
            });
        };
        let (event, validation) = if is_measurement {
            let m = match reading {
                Some(mut m) => {
                    let mut outage = None;
                    loop {
                        match self.serde.decode_into(bytes, &mut m).await {
                            Ok(()) => break self.decoded(&outage),
                            Err(e) => {
                                if let Some(dead) = self.failed(e, &mut outage).await {
                                    return Err(dead);
                                }
                            }
                        }
                    }
                    m
                }
                None => self.decode::<Measurement>(bytes).await?,
            };
            let check = m.validate(self.policy, now);
            (Event::Measurement(m), check)
        } else {
            let r = self.decode::<SelfReport>(bytes).await?;
            let check = r.validate(self.policy, now);
            (Event::SelfReport(r), check)
        };
        validation.map_err(|e| DeadLetter {
            reason: e.reason.as_str(),
            detail: e.to_string(),
        })?;
        // The key decides the partition, and the partition decides which state applies:
        // a key that is not the patient would route against another patient's consent.
        if message.key() != Some(event.patient().key().as_bytes()) {
            return Err(DeadLetter {
                reason: "key_mismatch",
                detail: "the record key is not the event's patient".into(),
            });
        }
        self.check_partition(event.patient().key(), message.partition())?;
        Ok(event)
    }
}

/// Events as the batch reads them: each counted in, a measurement decoded into the last
/// routed reading's allocations.
#[derive(Debug)]
pub(super) struct EventDecoder {
    decoder: Decoder,
    events_read: EventsRead,
    /// The last reading routed: the next one is decoded into its allocations.
    spare_reading: Option<Measurement>,
}

impl EventDecoder {
    pub(super) fn new(decoder: Decoder) -> Self {
        Self {
            decoder,
            events_read: EventsRead::register(),
            spare_reading: None,
        }
    }

    /// Counts an event in and decodes it.
    pub(super) async fn event(
        &mut self,
        message: &impl Message,
        is_measurement: bool,
        now: Millis,
    ) -> Result<Event, DeadLetter> {
        self.events_read.emit(is_measurement);
        let spare = self.spare_reading.take();
        self.decoder
            .decode_event(message, is_measurement, now, spare)
            .await
    }

    /// See [`Decoder::registry_reachable`].
    pub(super) fn registry_reachable(&self) -> Arc<AtomicBool> {
        self.decoder.registry_reachable()
    }

    /// Keeps a routed reading's allocations for the next one.
    pub(super) fn reuse(&mut self, reading: Measurement) {
        self.spare_reading = Some(reading);
    }
}
