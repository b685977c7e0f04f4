//! Disclosure: the decision for an event or an alert, then one delivery and its disclosure
//! record per grant (consent first, default deny: see `dho_routing_core::decision`); and the
//! alerts a reading raises against the patient's care plan, which go the same way;
//! (`retract`) the retraction or correction of a delivered reading, to those who received it;
//! and (`sharing_ended`) the notice to a subscriber whose deliveries a consent change ended.

mod retract;
mod sharing_ended;

pub(super) use sharing_ended::Notice;

use std::collections::HashMap;

use dho_kafka::outage::Outage;
use dho_kafka::{AvroSerde, Encoder, KafkaSettings, TopicSpec};
use dho_routing_core::alerts::{Observed, Track};
use dho_routing_core::decision::{EventView, Grant, decide};
use dho_routing_core::delivered::{RaisedAlert, Recipient};
use dho_routing_core::tracks::{plans_by_owner, track_id};
use dho_schemas::TopicNames;
use dho_schemas::codec::{DeliveryView, DisclosureView};
use dho_schemas::model::*;
use dho_schemas::partition::partition_for;
use dho_schemas::topics::state_key;

use super::commit::BatchOutputs;
use super::decode::Event;
use super::error::{Result, hand_over};
use super::ids::{alert_delivery_id_into, delivery_id_into};
use super::migrate;
use super::state_sync::StateSync;
use crate::config::RouterConfig;
use crate::events::{AlertRaised, Delivered, EventsWithheld, NotNew};
use crate::outputs::{Outbox, Outputs, TopicId};
use dho_telemetry::{InternalEvent, RegisteredEvent};

/// What a delivery discloses: an ingest event, or an alert about the patient.
#[derive(Debug, Clone, Copy)]
pub(super) enum Outgoing<'a> {
    Event(&'a Event),
    Alert(&'a Alert),
}

impl Outgoing<'_> {
    fn category(self) -> DataCategory {
        match self {
            Outgoing::Event(e) => e.view().category,
            Outgoing::Alert(_) => DataCategory::Alert,
        }
    }

    fn patient(&self) -> &PatientIdentifier {
        match self {
            Outgoing::Event(e) => e.patient(),
            Outgoing::Alert(a) => &a.patient,
        }
    }

    /// The audit record's event id: the event's, or the alert's.
    fn event_id(&self) -> &str {
        match self {
            Outgoing::Event(e) => e.event_id(),
            Outgoing::Alert(a) => &a.alert_id,
        }
    }

    /// The id of the delivery to `subscriber_id`, written into `out`.
    fn delivery_id<'b>(
        self,
        source: &SourcePosition,
        subscriber_id: &str,
        name: &mut String,
        out: &'b mut [u8; 36],
    ) -> &'b str {
        match self {
            Outgoing::Event(_) => delivery_id_into(source, subscriber_id, out),
            Outgoing::Alert(a) => alert_delivery_id_into(&a.alert_id, subscriber_id, name, out),
        }
    }
}

/// What is disclosed, and where it came from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Disclosed<'a> {
    pub(super) outgoing: Outgoing<'a>,
    /// How the decision sees it.
    pub(super) view: EventView<'a>,
    pub(super) source: &'a SourcePosition,
    pub(super) data_controller: &'a OrganisationIdentifier,
}

/// What a reading did to one of its alert tracks (one plan owner's): the track before it,
/// and the alert it raised with who received it.
#[derive(Debug)]
pub(super) struct TrackMoved {
    pub(super) owner: OrganisationIdentifier,
    pub(super) before: Option<Track>,
    pub(super) alert: Option<RaisedAlert>,
}

/// Scratch space the router reuses for every delivery.
#[derive(Debug, Default)]
struct Scratch {
    /// The name a delivery id is made from.
    id_name: String,
}

/// The per-delivery events, registered once (so the metrics recorder must be installed
/// before the router connects).
#[derive(Debug)]
struct Counters {
    withheld: EventsWithheld,
    delivered: Delivered,
    not_new: NotNew,
}

impl Counters {
    fn new() -> Self {
        Self {
            withheld: EventsWithheld::register(),
            delivered: Delivered::register(),
            not_new: NotNew::register(),
        }
    }
}

/// The encoders and topics of the router's deliveries and disclosure records.
pub(super) struct Disclosure {
    audit: Encoder<DisclosureRecord>,
    /// The audit topic, in the router's `Outputs`.
    audit_topic: TopicId,
    /// Per subscriber: the encoder and the topic of its deliveries.
    deliver: HashMap<String, (Encoder<Delivery>, TopicId)>,
    counters: Counters,
    /// Scratch space reused for every delivery.
    scratch: Scratch,
    /// Where subscribers' topics are made, and how many partitions they get.
    settings: KafkaSettings,
    topics: TopicNames,
    /// Off where operators provision topics: a subscriber's topic is then only checked.
    create_topics: bool,
    serde: AvroSerde,
}

impl std::fmt::Debug for Disclosure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disclosure")
            .field("subscribers", &self.deliver.len())
            .finish_non_exhaustive()
    }
}

impl Disclosure {
    pub(super) fn new(
        config: &RouterConfig,
        serde: AvroSerde,
        audit: Encoder<DisclosureRecord>,
        audit_topic: TopicId,
    ) -> Self {
        Self {
            audit,
            audit_topic,
            deliver: HashMap::new(),
            counters: Counters::new(),
            scratch: Scratch::default(),
            settings: config.kafka.clone(),
            topics: config.kafka.topics(),
            create_topics: config.create_topics,
            serde,
        }
    }

    /// Decides who receives `what` about its patient now, and produces one delivery and its
    /// disclosure record per grant; counts the rest as withheld. Each recipient is added to
    /// `recipients`, if given (the delivery record of a named reading).
    pub(super) async fn disclose(
        &mut self,
        what: Disclosed<'_>,
        state: &StateSync,
        outputs: &mut Outputs,
        now: Millis,
        outbox: &mut Outbox,
        recipients: Option<&mut Vec<Recipient>>,
    ) -> Result<()> {
        // The grants borrow the state: no copies of subscriptions or consents.
        let patient = state
            .partition(what.source.partition)
            .and_then(|s| s.patient(what.outgoing.patient().key()));
        let decision = decide(patient, what.view, now);
        // A subscriber seen for the first time needs its topic made first.
        for grant in &decision.grants {
            let subscriber = &grant.subscription.subscriber_id;
            if !self.deliver.contains_key(subscriber) {
                self.deliver_encoder(subscriber, outputs).await?;
            }
        }
        for reason in &decision.withheld {
            self.counters.withheld.emit(*reason);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self
            .produce_grants(
                &decision.grants,
                &what,
                outputs,
                now,
                &mut scratch,
                outbox,
                recipients,
            )
            .await;
        self.scratch = scratch;
        result
    }

    /// Produces one delivery and its disclosure record per grant. A minimal delivery carries
    /// no values: a reference for an event, the alert without its reading.
    #[allow(clippy::too_many_arguments)]
    async fn produce_grants(
        &self,
        grants: &[Grant<'_>],
        what: &Disclosed<'_>,
        outputs: &Outputs,
        now: Millis,
        scratch: &mut Scratch,
        outbox: &mut Outbox,
        mut recipients: Option<&mut Vec<Recipient>>,
    ) -> Result<()> {
        let Disclosed {
            outgoing,
            source,
            data_controller,
            ..
        } = *what;
        let category = outgoing.category();
        let patient = outgoing.patient();
        let patient_key = patient.key();
        let partition = partition_for(patient_key.as_bytes(), self.settings.partitions);
        for grant in grants {
            let Grant {
                subscription,
                consent,
                professional_denies,
            } = grant;
            let subscriber = subscription.subscriber_id.as_str();
            let Some(&(ref encoder, topic)) = self.deliver.get(subscriber) else {
                // disclose made every grant's encoder before calling.
                continue;
            };
            let mut id = [0; 36];
            let delivery_id =
                outgoing.delivery_id(source, subscriber, &mut scratch.id_name, &mut id);
            let mut delivery = DeliveryView {
                delivery_id,
                subscriber_id: subscriber,
                subscription_id: &subscription.subscription_id,
                consent_id: &consent.consent_id,
                patient,
                source,
                content_level: subscription.content_level,
                routed_at: now,
                measurement: None,
                self_report: None,
                alert: None,
                reference: None,
                replaces: None,
                professional_denies,
                sharing_ended: None,
            };
            let minimal_alert;
            match (subscription.content_level, outgoing) {
                (ContentLevel::Minimal, Outgoing::Event(e)) => {
                    delivery.reference = Some(e.reference())
                }
                (ContentLevel::Full, Outgoing::Event(Event::Measurement(e))) => {
                    delivery.measurement = Some(e)
                }
                (ContentLevel::Full, Outgoing::Event(Event::SelfReport(e))) => {
                    delivery.self_report = Some(e)
                }
                (ContentLevel::Full, Outgoing::Alert(a)) => delivery.alert = Some(a),
                (ContentLevel::Minimal, Outgoing::Alert(a)) => {
                    minimal_alert = Alert {
                        reading: None,
                        ..a.clone()
                    };
                    delivery.alert = Some(&minimal_alert);
                }
            }
            let key = patient_key.as_bytes();
            outbox.push_with(topic, partition, key, |out| {
                encoder.append_view(&delivery, out)
            })?;
            let record = DisclosureView {
                delivery_id,
                recorded_at: now,
                patient,
                recipient: &subscription.subscriber_org,
                subscriber_id: subscriber,
                subscription_id: &subscription.subscription_id,
                purpose_of_use: &subscription.purpose_of_use,
                decision_reference: &consent.consent_id,
                legal_basis: &consent.legal_basis,
                data_controller,
                category,
                event_id: outgoing.event_id(),
                content_level: subscription.content_level,
                source,
                replaces: None,
            };
            outbox.push_with(self.audit_topic, partition, key, |out| {
                self.audit.append_view(&record, out)
            })?;
            if outbox.len() >= Outbox::HAND_OVER_AT {
                hand_over(outputs, outbox).await?;
            }
            self.counters.delivered.emit(category);
            if let Some(recipients) = recipients.as_deref_mut() {
                recipients.push(Recipient::of(grant, delivery_id));
            }
        }
        Ok(())
    }

    /// Classifies a reading against each care organisation's plan for its code, moves that
    /// owner's alert track on and discloses the alert it raises, if any, through the consent
    /// path. Returns what it did to each track, for the reading's delivery record.
    pub(super) async fn observe_reading(
        &mut self,
        state: &mut StateSync,
        outputs: &mut Outputs,
        reading: &Measurement,
        source: &SourcePosition,
        now: Millis,
        out: &mut BatchOutputs,
    ) -> Result<Vec<TrackMoved>> {
        let partition = source.partition;
        // Tracks from before plans per organisation get their owner first.
        migrate::legacy_tracks(state, partition, out);
        let Some(patient) = state
            .partition(partition)
            .and_then(|s| s.patient(reading.patient.key()))
        else {
            return Ok(vec![]);
        };
        if patient.care_plans.is_empty() {
            return Ok(vec![]);
        }
        let components: Vec<&str> = reading.components.iter().map(|c| c.code.as_str()).collect();
        let plans: Vec<CarePlan> =
            plans_by_owner(patient.care_plans.values(), &reading.code, &components)
                .into_iter()
                .cloned()
                .collect();
        let mut moved = Vec::with_capacity(plans.len());
        for plan in &plans {
            if let Some(m) = self
                .observe_under(plan, state, outputs, reading, source, now, out)
                .await?
            {
                moved.push(m);
            }
        }
        Ok(moved)
    }

    /// Moves the reading's track under one owner's `plan` on, and raises its alert.
    #[allow(clippy::too_many_arguments)]
    async fn observe_under(
        &mut self,
        plan: &CarePlan,
        state: &mut StateSync,
        outputs: &mut Outputs,
        reading: &Measurement,
        source: &SourcePosition,
        now: Millis,
        out: &mut BatchOutputs,
    ) -> Result<Option<TrackMoved>> {
        let partition = source.partition;
        let owner = &plan.updated_by;
        let id = track_id(&reading.code, owner);
        let before = state
            .partition(partition)
            .and_then(|s| s.patient(reading.patient.key()))
            .and_then(|p| p.alerts.get(&id))
            .cloned();
        let mut track = before.clone().unwrap_or_else(|| {
            Track::new(reading.patient.clone(), reading.code.clone(), owner.clone())
        });
        let alert = match track.observe(reading, source.offset, plan, now) {
            Observed::Replayed | Observed::Unclassified => return Ok(None),
            Observed::Applied(alert) => alert,
        };
        let key = state_key(&reading.patient, &id);
        state
            .partition_mut(partition)
            .apply_track(&key, Some(track.clone()));
        out.tracks.insert((partition, key), Some(track));
        let mut raised = None;
        if let Some(alert) = alert {
            let mut recipients = vec![];
            self.raise(
                &alert,
                source,
                &reading.data_controller,
                state,
                outputs,
                now,
                &mut out.outbox,
                Some(&mut recipients),
            )
            .await?;
            raised = Some(RaisedAlert {
                alert: Alert {
                    reading: None,
                    ..alert
                },
                recipients,
            });
        }
        Ok(Some(TrackMoved {
            owner: owner.clone(),
            before,
            alert: raised,
        }))
    }

    /// Counts an alert and discloses it to the subscribers entitled to the patient's alerts.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn raise(
        &mut self,
        alert: &Alert,
        source: &SourcePosition,
        data_controller: &OrganisationIdentifier,
        state: &StateSync,
        outputs: &mut Outputs,
        now: Millis,
        outbox: &mut Outbox,
        recipients: Option<&mut Vec<Recipient>>,
    ) -> Result<()> {
        AlertRaised {
            zone: alert.zone,
            kind: alert.kind,
        }
        .emit();
        let view = EventView {
            category: DataCategory::Alert,
            code: Some(&alert.code),
        };
        let what = Disclosed {
            outgoing: Outgoing::Alert(alert),
            view,
            source,
            data_controller,
        };
        self.disclose(what, state, outputs, now, outbox, recipients)
            .await
    }

    /// The encoder for a subscriber's topic, creating (or checking) the topic and registering
    /// the subject on first use.
    async fn deliver_encoder(&mut self, subscriber_id: &str, outputs: &mut Outputs) -> Result<()> {
        if self.deliver.contains_key(subscriber_id) {
            return Ok(());
        }
        let topic = self.topics.deliver(subscriber_id);
        let settings = &self.settings;
        let spec = [TopicSpec::output(topic.clone(), settings.partitions, None)];
        let mut outage = Outage::new("a subscriber's topic");
        loop {
            let made = if self.create_topics {
                dho_kafka::ensure_topics(settings, &spec).await
            } else {
                // Provisioned by operators: CreateTopics may be denied to the router, or not
                // be served at all (librdkafka's mock cluster has no controller for it, so
                // the admin request would wait out its 60 s timeout). A metadata check is
                // enough.
                dho_kafka::check_topics(settings, &spec).await
            };
            match made {
                Ok(()) => break,
                Err(dho_kafka::Error::Kafka(e)) => tokio::time::sleep(outage.failed(e)?).await,
                Err(e) => return Err(e.into()),
            }
        }
        let encoder = self.serde.register::<Delivery>(&topic).await?;
        let topic = outputs.topic(&topic)?;
        self.deliver
            .insert(subscriber_id.to_string(), (encoder, topic));
        Ok(())
    }
}
