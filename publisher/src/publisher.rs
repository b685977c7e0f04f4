use std::time::Duration;

use dho_kafka::{AvroSerde, Encoder, KafkaSettings};
use dho_schemas::codec::AvroRecord;
use dho_schemas::partition::partition_for;
use dho_schemas::topics::state_key;
use dho_schemas::{
    AccessRefusal, CarePlan, CarePlanAction, CarePlanChange, Consent, ConsentAction, ConsentChange,
    ConsentStatus, Enrolment, EnrolmentChange, Measurement, OrganisationIdentifier,
    PatientIdentifier, Policy, ProvisionKind, SelfReport, Subscription, SubscriptionAction,
    SubscriptionChange, TopicNames, ValidationError, model::now_millis,
};
use dho_schemas::{proto, wire};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

mod access;

/// Errors publishing, by what the caller should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The record is wrong: fix it, do not retry.
    #[error("invalid record: {0}")]
    Invalid(#[from] ValidationError),
    /// The producer's bounded queue stayed full: slow down and retry.
    #[error("the producer queue is full; retry later")]
    Backpressure,
    /// The broker did not acknowledge the record: retry (the producer is idempotent).
    #[error("the broker did not acknowledge the record: {0}")]
    NotAcknowledged(KafkaError),
    #[error(transparent)]
    Setup(#[from] dho_kafka::Error),
    #[error(transparent)]
    Contract(#[from] dho_schemas::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where an acknowledged record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Who made a consent (or care-plan) change and through what, for its audit record.
#[derive(Debug, Clone, Copy)]
pub struct ConsentAudit<'a> {
    /// The authenticated credential's name, or the operator (never a token).
    pub principal: &'a str,
    /// `gateway`, `admin-cli`, ...
    pub channel: &'a str,
}

/// Who made a care-plan change and through what, for its audit record (`CarePlanChange`).
pub type CarePlanAudit<'a> = ConsentAudit<'a>;

/// Who made a subscription change and through what, for its audit record
/// (`SubscriptionChange`).
pub type SubscriptionAudit<'a> = ConsentAudit<'a>;

/// The topic of consent-change audit records: `<prefix>.audit.consents`.
pub fn consent_audit_topic(topics: &TopicNames) -> String {
    topics.consent_audit()
}

/// How long `send` waits for room in a full queue before answering [`Error::Backpressure`].
const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Publishes events and state records, keyed and partitioned by patient, idempotently,
/// and returns only after the broker acknowledged them (acks=all).
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    topics: TopicNames,
    partitions: i32,
    policy: Policy,
    measurements: Encoder<Measurement>,
    selfreports: Encoder<SelfReport>,
    consents: Encoder<Consent>,
    subscriptions: Encoder<Subscription>,
    careplans: Encoder<CarePlan>,
    consent_changes: Encoder<ConsentChange>,
    care_plan_changes: Encoder<CarePlanChange>,
    subscription_changes: Encoder<SubscriptionChange>,
    enrolments: Encoder<Enrolment>,
    enrolment_changes: Encoder<EnrolmentChange>,
    refusals: Encoder<AccessRefusal>,
    /// Set by [`Publisher::with_protobuf`]: events go out in the Confluent Protobuf format
    /// with this schema id.
    protobuf_schema: Option<u32>,
    serde: AvroSerde,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Creates missing topics, registers the schemas and connects the producer.
    pub async fn connect(settings: &KafkaSettings, policy: Policy) -> Result<Self> {
        settings.validate()?;
        dho_kafka::ensure_topics(settings, &dho_kafka::hub_topics(settings)).await?;
        let serde = AvroSerde::new(&settings.schema_registry_url);
        let topics = settings.topics();
        let producer: FutureProducer = settings
            .client_config(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                // Same partition for a key as Java clients: matters only for keys we do not
                // partition explicitly, but keeps every writer consistent.
                ("partitioner", "murmur2_random"),
                ("linger.ms", "5"),
                // Bounded: a full queue is backpressure to the caller, never unbounded memory.
                ("queue.buffering.max.messages", "100000"),
                ("queue.buffering.max.kbytes", "65536"),
            ])?
            .create()
            .map_err(dho_kafka::Error::from)?;
        Ok(Self {
            measurements: serde.register(&topics.measurements()).await?,
            selfreports: serde.register(&topics.selfreports()).await?,
            consents: serde.register(&topics.consents()).await?,
            subscriptions: serde.register(&topics.subscriptions()).await?,
            careplans: serde.register(&topics.careplans()).await?,
            consent_changes: serde.register(&consent_audit_topic(&topics)).await?,
            care_plan_changes: serde.register(&topics.careplan_audit()).await?,
            subscription_changes: serde.register(&topics.subscription_audit()).await?,
            enrolments: serde.register(&topics.enrolments()).await?,
            enrolment_changes: serde.register(&topics.enrolment_audit()).await?,
            refusals: serde.register(&topics.refusal_audit()).await?,
            protobuf_schema: None,
            serde,
            producer,
            topics,
            partitions: settings.partitions,
            policy,
        })
    }

    /// Publishes readings and self-reports as Protobuf from now on (for platforms whose own
    /// pipeline speaks Protobuf); the router delivers them as Avro like any other.
    pub async fn with_protobuf(mut self) -> Result<Self> {
        let mut id = None;
        for subject in ["dho.v1.Measurement", "dho.v1.SelfReport"] {
            // One file holds both messages, so both subjects share its id.
            id = Some(
                self.serde
                    .register_protobuf(subject, proto::PROTO_FILE)
                    .await?,
            );
        }
        self.protobuf_schema = id;
        Ok(self)
    }

    pub async fn publish_measurement(&self, m: &Measurement) -> Result<Receipt> {
        m.validate(self.policy, now_millis())?;
        if let Some(id) = self.protobuf_schema {
            let payload =
                wire::frame_protobuf(id, proto::MEASUREMENT_INDEX, &proto::encode_measurement(m));
            return self
                .send_payload(
                    &self.topics.measurements(),
                    &m.patient,
                    m.patient.key(),
                    Some(payload),
                )
                .await;
        }
        self.send(
            &self.topics.measurements(),
            &m.patient,
            m.patient.key(),
            &self.measurements,
            Some(m),
        )
        .await
    }

    pub async fn publish_self_report(&self, r: &SelfReport) -> Result<Receipt> {
        r.validate(self.policy, now_millis())?;
        if let Some(id) = self.protobuf_schema {
            let payload =
                wire::frame_protobuf(id, proto::SELF_REPORT_INDEX, &proto::encode_self_report(r));
            return self
                .send_payload(
                    &self.topics.selfreports(),
                    &r.patient,
                    r.patient.key(),
                    Some(payload),
                )
                .await;
        }
        self.send(
            &self.topics.selfreports(),
            &r.patient,
            r.patient.key(),
            &self.selfreports,
            Some(r),
        )
        .await
    }

    /// Records (or replaces) a consent directive.
    pub async fn put_consent(&self, c: &Consent) -> Result<Receipt> {
        c.validate(self.policy)?;
        let key = state_key(&c.patient, &c.consent_id);
        self.send(
            &self.topics.consents(),
            &c.patient,
            &key,
            &self.consents,
            Some(c),
        )
        .await
    }

    /// Deletes a consent directive (a tombstone): from then on it permits nothing.
    pub async fn delete_consent(
        &self,
        patient: &PatientIdentifier,
        consent_id: &str,
    ) -> Result<Receipt> {
        let key = state_key(patient, consent_id);
        self.send::<Consent>(&self.topics.consents(), patient, &key, &self.consents, None)
            .await
    }

    /// Records a consent directive with its audit record (`<prefix>.audit.consents`): the
    /// audit record first, so no change is ever stored without one. Without transactions
    /// a crash between the two leaves an audit record of a change that did not happen,
    /// which the caller, getting no answer, retries: the safe direction.
    pub async fn record_consent(&self, c: &Consent, audit: ConsentAudit<'_>) -> Result<Receipt> {
        c.validate(self.policy)?;
        let withdrawn = c.status == ConsentStatus::Inactive
            || c.provisions.iter().all(|p| p.kind == ProvisionKind::Deny);
        let action = if withdrawn {
            ConsentAction::Withdrawn
        } else {
            ConsentAction::Recorded
        };
        self.audit_consent(
            &c.patient,
            &c.consent_id,
            action,
            Some(c.clone()),
            &c.recorded_by,
            audit,
        )
        .await?;
        self.put_consent(c).await
    }

    /// Deletes a consent directive (a tombstone) with its audit record, audit first.
    pub async fn revoke_consent(
        &self,
        patient: &PatientIdentifier,
        consent_id: &str,
        by: &OrganisationIdentifier,
        audit: ConsentAudit<'_>,
    ) -> Result<Receipt> {
        self.audit_consent(patient, consent_id, ConsentAction::Deleted, None, by, audit)
            .await?;
        self.delete_consent(patient, consent_id).await
    }

    async fn audit_consent(
        &self,
        patient: &PatientIdentifier,
        consent_id: &str,
        action: ConsentAction,
        consent: Option<Consent>,
        by: &OrganisationIdentifier,
        audit: ConsentAudit<'_>,
    ) -> Result<Receipt> {
        let change = ConsentChange {
            change_id: uuid::Uuid::new_v4().to_string(),
            consent_id: consent_id.to_string(),
            patient: patient.clone(),
            action,
            consent,
            changed_by: by.clone(),
            principal: audit.principal.to_string(),
            channel: audit.channel.to_string(),
            changed_at: now_millis(),
        };
        self.send(
            &consent_audit_topic(&self.topics),
            patient,
            patient.key(),
            &self.consent_changes,
            Some(&change),
        )
        .await
    }

    pub async fn put_subscription(&self, s: &Subscription) -> Result<Receipt> {
        s.validate(self.policy)?;
        let key = state_key(&s.patient, &s.subscription_id);
        self.send(
            &self.topics.subscriptions(),
            &s.patient,
            &key,
            &self.subscriptions,
            Some(s),
        )
        .await
    }

    pub async fn delete_subscription(
        &self,
        patient: &PatientIdentifier,
        subscription_id: &str,
    ) -> Result<Receipt> {
        let key = state_key(patient, subscription_id);
        self.send::<Subscription>(
            &self.topics.subscriptions(),
            patient,
            &key,
            &self.subscriptions,
            None,
        )
        .await
    }

    /// Records (or replaces) a subscription with its audit record
    /// (`<prefix>.audit.subscriptions`), audit first, as [`record_consent`](Self::record_consent).
    /// `changed_by` is the subscriber's organisation.
    pub async fn record_subscription(
        &self,
        s: &Subscription,
        audit: SubscriptionAudit<'_>,
    ) -> Result<Receipt> {
        s.validate(self.policy)?;
        let (id, by) = (&s.subscription_id, &s.subscriber_org);
        let action = SubscriptionAction::Recorded;
        self.audit_subscription(&s.patient, id, action, Some(s.clone()), by, audit)
            .await?;
        self.put_subscription(s).await
    }

    /// Deletes a subscription (a tombstone) with its audit record, audit first; `by` is the
    /// care organisation on whose behalf it is deleted.
    pub async fn remove_subscription(
        &self,
        patient: &PatientIdentifier,
        subscription_id: &str,
        by: &OrganisationIdentifier,
        audit: SubscriptionAudit<'_>,
    ) -> Result<Receipt> {
        dho_schemas::validate::patient("patient", patient, self.policy)?;
        let action = SubscriptionAction::Deleted;
        self.audit_subscription(patient, subscription_id, action, None, by, audit)
            .await?;
        self.delete_subscription(patient, subscription_id).await
    }

    async fn audit_subscription(
        &self,
        patient: &PatientIdentifier,
        subscription_id: &str,
        action: SubscriptionAction,
        subscription: Option<Subscription>,
        by: &OrganisationIdentifier,
        audit: SubscriptionAudit<'_>,
    ) -> Result<Receipt> {
        let change = SubscriptionChange {
            change_id: uuid::Uuid::new_v4().to_string(),
            subscription_id: subscription_id.to_string(),
            patient: patient.clone(),
            action,
            subscription,
            changed_by: by.clone(),
            principal: audit.principal.to_string(),
            channel: audit.channel.to_string(),
            changed_at: now_millis(),
        };
        let topic = self.topics.subscription_audit();
        let encoder = &self.subscription_changes;
        self.send(&topic, patient, patient.key(), encoder, Some(&change))
            .await
    }

    /// Records (or replaces) a care plan without an audit record (fixtures, the demo);
    /// people's changes go through [`record_care_plan`](Self::record_care_plan).
    pub async fn put_care_plan(&self, p: &CarePlan) -> Result<Receipt> {
        p.validate(self.policy)?;
        let key = state_key(&p.patient, &p.plan_id);
        self.send(
            &self.topics.careplans(),
            &p.patient,
            &key,
            &self.careplans,
            Some(p),
        )
        .await
    }

    /// Deletes a care plan (a tombstone for its key): from then on it classifies nothing.
    /// Without an audit record; see [`remove_care_plan`](Self::remove_care_plan).
    pub async fn delete_care_plan(
        &self,
        patient: &PatientIdentifier,
        plan_id: &str,
    ) -> Result<Receipt> {
        let key = state_key(patient, plan_id);
        self.send::<CarePlan>(
            &self.topics.careplans(),
            patient,
            &key,
            &self.careplans,
            None,
        )
        .await
    }

    /// Records (or replaces) a care plan with its audit record
    /// (`<prefix>.audit.careplans`), audit first, as [`record_consent`](Self::record_consent):
    /// no plan is ever stored without a record of who changed it. `changed_by` is the
    /// plan's `updated_by`.
    pub async fn record_care_plan(
        &self,
        p: &CarePlan,
        audit: CarePlanAudit<'_>,
    ) -> Result<Receipt> {
        p.validate(self.policy)?;
        self.audit_care_plan(
            &p.patient,
            &p.plan_id,
            CarePlanAction::Recorded,
            Some(p.clone()),
            &p.updated_by,
            audit,
        )
        .await?;
        self.put_care_plan(p).await
    }

    /// Deletes a care plan (a tombstone) with its audit record, audit first; `by` is the
    /// care organisation on whose behalf it is deleted.
    pub async fn remove_care_plan(
        &self,
        patient: &PatientIdentifier,
        plan_id: &str,
        by: &OrganisationIdentifier,
        audit: CarePlanAudit<'_>,
    ) -> Result<Receipt> {
        dho_schemas::validate::patient("patient", patient, self.policy)?;
        self.audit_care_plan(patient, plan_id, CarePlanAction::Deleted, None, by, audit)
            .await?;
        self.delete_care_plan(patient, plan_id).await
    }

    async fn audit_care_plan(
        &self,
        patient: &PatientIdentifier,
        plan_id: &str,
        action: CarePlanAction,
        plan: Option<CarePlan>,
        by: &OrganisationIdentifier,
        audit: CarePlanAudit<'_>,
    ) -> Result<Receipt> {
        let change = CarePlanChange {
            change_id: uuid::Uuid::new_v4().to_string(),
            plan_id: plan_id.to_string(),
            patient: patient.clone(),
            action,
            plan,
            changed_by: by.clone(),
            principal: audit.principal.to_string(),
            channel: audit.channel.to_string(),
            changed_at: now_millis(),
        };
        self.send(
            &self.topics.careplan_audit(),
            patient,
            patient.key(),
            &self.care_plan_changes,
            Some(&change),
        )
        .await
    }

    /// Records handed to the producer and not yet acknowledged.
    pub fn queue_depth(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Waits until everything queued is acknowledged (call before shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer
            .flush(Timeout::After(timeout))
            .map_err(Error::NotAcknowledged)
    }

    async fn send<T: AvroRecord>(
        &self,
        topic: &str,
        patient: &PatientIdentifier,
        key: &str,
        encoder: &Encoder<T>,
        value: Option<&T>,
    ) -> Result<Receipt> {
        let payload = value.map(|v| encoder.encode(v)).transpose()?;
        self.send_payload(topic, patient, key, payload).await
    }

    async fn send_payload(
        &self,
        topic: &str,
        patient: &PatientIdentifier,
        key: &str,
        payload: Option<Vec<u8>>,
    ) -> Result<Receipt> {
        // Explicit partition by the patient alone, so state keys (patient|id) co-partition
        // with the events of the same patient.
        let partition = partition_for(patient.key().as_bytes(), self.partitions);
        self.send_to(topic, partition, key, payload).await
    }

    /// A record partitioned by its own key (not about one patient).
    async fn send_keyed(
        &self,
        topic: &str,
        key: &str,
        payload: Option<Vec<u8>>,
    ) -> Result<Receipt> {
        let partition = partition_for(key.as_bytes(), self.partitions);
        self.send_to(topic, partition, key, payload).await
    }

    async fn send_to(
        &self,
        topic: &str,
        partition: i32,
        key: &str,
        payload: Option<Vec<u8>>,
    ) -> Result<Receipt> {
        let mut record = FutureRecord::to(topic).key(key).partition(partition);
        if let Some(payload) = &payload {
            record = record.payload(payload);
        }
        match self.producer.send(record, Timeout::After(QUEUE_WAIT)).await {
            Ok(delivery) => Ok(Receipt {
                topic: topic.to_string(),
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(Error::Backpressure)
            }
            Err((e, _)) => Err(Error::NotAcknowledged(e)),
        }
    }
}
