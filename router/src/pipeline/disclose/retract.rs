//! Readings the platform named (`Observation.identifier`, so the event id is derived from
//! it): what was delivered of each is recorded (`dho_routing_core::delivered`), so a later
//! reading with the same event id is judged by it. A re-send is withheld; a retraction or
//! correction goes to exactly the subscribers who received the original, resting on the
//! subscription and consent the original rested on, and retracts the alerts it raised.

use dho_routing_core::alerts::Track;
use dho_routing_core::decision::decide;
use dho_routing_core::delivered::{
    DeliveryRecord, Judged, Recipient, TrackBefore, change_level, judge, record_key,
    tracks_after_retraction,
};
use dho_schemas::codec::{DeliveryView, DisclosureView, ReferenceView};
use dho_schemas::model::*;
use dho_schemas::partition::partition_for;
use dho_schemas::topics::state_key;
use dho_telemetry::RegisteredEvent;

use super::super::commit::BatchOutputs;
use super::super::decode::Event;
use super::super::error::{Result, hand_over};
use super::super::ids::delivery_id_into;
use super::super::migrate;
use super::super::state_sync::StateSync;
use super::{Disclosed, Disclosure, Outgoing, TrackMoved};
use crate::events::NotNewReason;
use crate::outputs::{Outbox, Outputs};

/// What a replacing delivery carries.
#[derive(Debug, Clone, Copy)]
enum Content<'a> {
    Measurement(&'a Measurement),
    Reference(ReferenceView<'a>),
    Alert(&'a Alert),
}

/// What a replacing delivery replaces, and where the change came from.
#[derive(Debug, Clone, Copy)]
struct Change<'a> {
    reading: &'a Measurement,
    source: &'a SourcePosition,
    now: Millis,
}

impl Disclosure {
    /// Routes a named reading (`event` is a measurement with a source id): judged by the
    /// record of its event id, then routed and recorded, withheld as not new, or sent as a
    /// retraction or correction to those who received the original.
    pub(in crate::pipeline) async fn route_named(
        &mut self,
        event: &Event,
        state: &mut StateSync,
        outputs: &mut Outputs,
        source: &SourcePosition,
        now: Millis,
        out: &mut BatchOutputs,
    ) -> Result<()> {
        let Event::Measurement(reading) = event else {
            return Ok(());
        };
        let record = state
            .partition(source.partition)
            .and_then(|s| s.delivered(reading.patient.key(), &reading.event_id))
            .cloned();
        match judge(record.as_ref(), reading, source.offset) {
            Judged::Resent => self.counters.not_new.emit(NotNewReason::Resent),
            Judged::NothingToRetract => self.counters.not_new.emit(NotNewReason::NothingToRetract),
            Judged::ChangeReplayed => {}
            Judged::Route => {
                self.route_and_record(event, reading, record, state, outputs, source, now, out)
                    .await?
            }
            Judged::Change => {
                let record = record.expect("judged a change only with a record");
                let change = Change {
                    reading,
                    source,
                    now,
                };
                self.change(event, change, record, state, outputs, out)
                    .await?
            }
        }
        Ok(())
    }

    /// Routes a named reading as any other, and records who received it and what it did to
    /// its alert track. A replay of the very record adds to the record made the first time.
    #[allow(clippy::too_many_arguments)]
    async fn route_and_record(
        &mut self,
        event: &Event,
        reading: &Measurement,
        record: Option<DeliveryRecord>,
        state: &mut StateSync,
        outputs: &mut Outputs,
        source: &SourcePosition,
        now: Millis,
        out: &mut BatchOutputs,
    ) -> Result<()> {
        let what = Disclosed {
            outgoing: Outgoing::Event(event),
            view: event.view(),
            source,
            data_controller: event.data_controller(),
        };
        let mut recipients = vec![];
        self.disclose(
            what,
            state,
            outputs,
            now,
            &mut out.outbox,
            Some(&mut recipients),
        )
        .await?;
        let moved = self
            .observe_reading(state, outputs, reading, source, now, out)
            .await?;
        let record = match record {
            Some(mut first) => {
                for recipient in recipients {
                    if !first
                        .recipients
                        .iter()
                        .any(|r| r.delivery_id == recipient.delivery_id)
                    {
                        first.recipients.push(recipient);
                    }
                }
                first
            }
            None => {
                let mut record = DeliveryRecord {
                    offset: source.offset,
                    code: reading.code.clone(),
                    recipients,
                    alerts: vec![],
                    track_before: None,
                    tracks_before: vec![],
                    status: reading.status().to_string(),
                    changes: vec![],
                };
                note_moved(&mut record, moved);
                record
            }
        };
        keep(state, out, source.partition, reading, record);
        Ok(())
    }

    /// A retraction or correction: one replacing delivery per recipient of the original and
    /// of each alert it raised (those are retracted), the alert track put back, then a
    /// correction's values classified as a reading of their own.
    async fn change(
        &mut self,
        event: &Event,
        change: Change<'_>,
        mut record: DeliveryRecord,
        state: &mut StateSync,
        outputs: &mut Outputs,
        out: &mut BatchOutputs,
    ) -> Result<()> {
        let Change {
            reading, source, ..
        } = change;
        let partition = source.partition;
        let patient_key = reading.patient.key();
        // A correction's new values only to a recipient entitled to them now.
        let entitled: Vec<String> = if reading.status() == RETRACTED {
            vec![]
        } else {
            let patient = state
                .partition(partition)
                .and_then(|s| s.patient(patient_key));
            decide(patient, event.view(), change.now)
                .grants
                .iter()
                .map(|g| g.subscription.subscriber_id.clone())
                .collect()
        };
        let subscribers = record
            .recipients
            .iter()
            .chain(record.alerts.iter().flat_map(|a| &a.recipients));
        for recipient in subscribers {
            if !self.deliver.contains_key(&recipient.subscriber_id) {
                self.deliver_encoder(&recipient.subscriber_id, outputs)
                    .await?;
            }
        }
        for recipient in &mut record.recipients {
            let level = change_level(
                recipient,
                reading,
                entitled.contains(&recipient.subscriber_id),
            );
            let content = match level {
                ContentLevel::Full => Content::Measurement(reading),
                ContentLevel::Minimal => Content::Reference(event.reference()),
            };
            let mut id = [0; 36];
            let delivery_id = delivery_id_into(source, &recipient.subscriber_id, &mut id);
            let replaces = Replaces {
                delivery_id: recipient.delivery_id.clone(),
                event_id: reading.event_id.clone(),
                status: reading.status().to_string(),
            };
            self.produce_replacing(
                recipient,
                delivery_id,
                content,
                level,
                &replaces,
                change,
                outputs,
                &mut out.outbox,
            )
            .await?;
            // A later change replaces this delivery.
            recipient.delivery_id = delivery_id.to_string();
        }
        for raised in &record.alerts {
            for recipient in &raised.recipients {
                let mut id = [0; 36];
                let name = format!("{}|{}", recipient.subscriber_id, raised.alert.alert_id);
                let delivery_id = delivery_id_into(source, &name, &mut id);
                let replaces = Replaces {
                    delivery_id: recipient.delivery_id.clone(),
                    event_id: raised.alert.alert_id.clone(),
                    status: RETRACTED.to_string(),
                };
                let content = Content::Alert(&raised.alert);
                let level = recipient.content_level;
                self.produce_replacing(
                    recipient,
                    delivery_id,
                    content,
                    level,
                    &replaces,
                    change,
                    outputs,
                    &mut out.outbox,
                )
                .await?;
            }
        }
        record.alerts.clear();
        // Tracks from before plans per organisation get their owner first.
        migrate::legacy_tracks(state, partition, out);
        let restored = state
            .partition(partition)
            .and_then(|s| s.patient(patient_key))
            .map(|p| tracks_after_retraction(&p.alerts, &record, &reading.event_id))
            .unwrap_or_default();
        for track in restored {
            put_track(state, out, partition, &reading.patient, track);
        }
        if reading.status() != RETRACTED {
            let moved = self
                .observe_reading(state, outputs, reading, source, change.now, out)
                .await?;
            note_moved(&mut record, moved);
        }
        record.status = reading.status().to_string();
        record.changes.push(source.offset);
        keep(state, out, partition, reading, record);
        Ok(())
    }

    /// One replacing delivery to a recorded recipient and its disclosure record, resting on
    /// the subscription and consent the replaced delivery rested on.
    #[allow(clippy::too_many_arguments)]
    async fn produce_replacing(
        &self,
        to: &Recipient,
        delivery_id: &str,
        content: Content<'_>,
        level: ContentLevel,
        replaces: &Replaces,
        change: Change<'_>,
        outputs: &Outputs,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let Some(&(ref encoder, topic)) = self.deliver.get(&to.subscriber_id) else {
            // change made every recipient's encoder before calling.
            return Ok(());
        };
        let reading = change.reading;
        let patient = &reading.patient;
        let mut delivery = DeliveryView {
            delivery_id,
            subscriber_id: &to.subscriber_id,
            subscription_id: &to.subscription_id,
            consent_id: &to.consent_id,
            patient,
            source: change.source,
            content_level: level,
            routed_at: change.now,
            measurement: None,
            self_report: None,
            alert: None,
            reference: None,
            replaces: Some(replaces),
            // The replaced delivery carried them: the care system keeps its replacement
            // from the same professionals (ARCHITECTURE, who enforces what).
            professional_denies: &[],
            sharing_ended: None,
        };
        let category = match content {
            Content::Measurement(m) => {
                delivery.measurement = Some(m);
                DataCategory::Measurement
            }
            Content::Reference(r) => {
                delivery.reference = Some(r);
                DataCategory::Measurement
            }
            Content::Alert(a) => {
                delivery.alert = Some(a);
                DataCategory::Alert
            }
        };
        let key = patient.key().as_bytes();
        let partition = partition_for(key, self.settings.partitions);
        outbox.push_with(topic, partition, key, |out| {
            encoder.append_view(&delivery, out)
        })?;
        let record = DisclosureView {
            delivery_id,
            recorded_at: change.now,
            patient,
            recipient: &to.subscriber_org,
            subscriber_id: &to.subscriber_id,
            subscription_id: &to.subscription_id,
            purpose_of_use: &to.purpose_of_use,
            decision_reference: &to.consent_id,
            legal_basis: &to.legal_basis,
            data_controller: &reading.data_controller,
            category,
            event_id: &replaces.event_id,
            content_level: level,
            source: change.source,
            replaces: Some(&replaces.delivery_id),
        };
        outbox.push_with(self.audit_topic, partition, key, |out| {
            self.audit.append_view(&record, out)
        })?;
        if outbox.len() >= Outbox::HAND_OVER_AT {
            hand_over(outputs, outbox).await?;
        }
        self.counters.delivered.emit(category);
        Ok(())
    }
}

/// Keeps a reading's delivery record: in memory now, on the alert-state topic once the
/// batch is acknowledged.
fn keep(
    state: &mut StateSync,
    out: &mut BatchOutputs,
    partition: i32,
    reading: &Measurement,
    record: DeliveryRecord,
) {
    let key = record_key(&reading.patient, &reading.event_id);
    state
        .partition_mut(partition)
        .apply_delivered(&key, Some(record.clone()));
    out.delivered.insert((partition, key), record);
}

/// Notes in a delivery record what the reading did to each owner's alert track: the track
/// before it (replacing what an earlier version of the reading noted for that owner) and
/// the alert it raised.
fn note_moved(record: &mut DeliveryRecord, moved: Vec<TrackMoved>) {
    for m in moved {
        record
            .tracks_before
            .retain(|b| !b.owner.same_entity(&m.owner));
        record.tracks_before.push(TrackBefore {
            owner: m.owner,
            track: m.before,
        });
        record.alerts.extend(m.alert);
        // Superseded by the owners' own: a record from before plans per organisation.
        record.track_before = None;
    }
}

/// Puts an alert track back: in memory now, on the alert-state topic with the batch.
fn put_track(
    state: &mut StateSync,
    out: &mut BatchOutputs,
    partition: i32,
    patient: &PatientIdentifier,
    track: Track,
) {
    let key = state_key(patient, &track.id());
    state
        .partition_mut(partition)
        .apply_track(&key, Some(track.clone()));
    out.tracks.insert((partition, key), Some(track));
}
