//! Topic names and keys: part of the contract between publishers, the router and subscribers.

use crate::model::PatientIdentifier;

/// The hub's topic names under a configurable prefix (default `dho`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicNames {
    prefix: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        Self::new("dho")
    }
}

impl TopicNames {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn measurements(&self) -> String {
        format!("{}.measurements", self.prefix)
    }
    pub fn selfreports(&self) -> String {
        format!("{}.selfreports", self.prefix)
    }
    pub fn consents(&self) -> String {
        format!("{}.consents", self.prefix)
    }
    pub fn subscriptions(&self) -> String {
        format!("{}.subscriptions", self.prefix)
    }
    pub fn careplans(&self) -> String {
        format!("{}.careplans", self.prefix)
    }
    /// The router's own alert state per (patient, code): compacted and co-partitioned like
    /// the other state topics, so alerts survive restarts and rebalances. Internal to the
    /// router (JSON values), not a contract topic.
    pub fn alert_state(&self) -> String {
        format!("{}.alertstate", self.prefix)
    }
    pub fn audit(&self) -> String {
        format!("{}.audit", self.prefix)
    }
    /// Audit records of consent changes (`ConsentChange`), keyed by patient.
    pub fn consent_audit(&self) -> String {
        format!("{}.audit.consents", self.prefix)
    }
    /// Audit records of care-plan changes (`CarePlanChange`), keyed by patient.
    pub fn careplan_audit(&self) -> String {
        format!("{}.audit.careplans", self.prefix)
    }
    /// Audit records of subscription changes (`SubscriptionChange`), keyed by patient.
    pub fn subscription_audit(&self) -> String {
        format!("{}.audit.subscriptions", self.prefix)
    }
    /// Who is responsible for each patient's follow-up (`Enrolment`, compacted, key
    /// `<patient>|<system>:<value>`): written by `dho-admin enrol`, read by the gateway.
    pub fn enrolments(&self) -> String {
        format!("{}.enrolments", self.prefix)
    }
    /// Audit records of enrolment changes (`EnrolmentChange`), keyed by patient.
    pub fn enrolment_audit(&self) -> String {
        format!("{}.audit.enrolments", self.prefix)
    }
    /// Audit records of requests the gateway refused (`AccessRefusal`).
    pub fn refusal_audit(&self) -> String {
        format!("{}.audit.refusals", self.prefix)
    }
    /// Audit records of operators' reviews and undoing of a credential's consent changes
    /// (`dho-admin changes`, `dho-admin undo`; JSON, keyed by the credential's name).
    pub fn operator_audit(&self) -> String {
        format!("{}.audit.operator", self.prefix)
    }
    /// Audit records of dead letters sent back to their source topic by `dho-admin
    /// redrive` (JSON, keyed by the dead-letter topic's partition and offset).
    pub fn redrive_audit(&self) -> String {
        format!("{}.audit.redrives", self.prefix)
    }
    pub fn deadletter(&self) -> String {
        format!("{}.deadletter", self.prefix)
    }
    /// One topic per subscriber; `subscriber_id` is validated to a topic-safe alphabet.
    pub fn deliver(&self, subscriber_id: &str) -> String {
        format!("{}.deliver.{subscriber_id}", self.prefix)
    }
}

/// The Confluent subject of a topic's values (TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// Key of a state record (consent, subscription, care plan): patient and record id, so the
/// compacted topic keeps every record of a patient. Partitioned by the patient part alone.
pub fn state_key(patient: &PatientIdentifier, record_id: &str) -> String {
    format!("{}|{record_id}", patient.key())
}

/// The patient part of a state key (or the whole key, for event topics).
pub fn patient_key(key: &str) -> &str {
    key.split_once('|').map_or(key, |(patient, _)| patient)
}

/// Dead-letter header names.
pub mod headers {
    /// Bounded reason code, e.g. `undecodable`, `invalid_identifier`.
    pub const REASON: &str = "dho.deadletter.reason";
    /// Human-readable detail (never contains identifiers).
    pub const DETAIL: &str = "dho.deadletter.detail";
    pub const SOURCE_TOPIC: &str = "dho.source.topic";
    pub const SOURCE_PARTITION: &str = "dho.source.partition";
    pub const SOURCE_OFFSET: &str = "dho.source.offset";
    /// The component that dead-lettered it (router, ingest).
    pub const COMPONENT: &str = "dho.deadletter.component";
    /// Milliseconds since the epoch when the ingest acknowledged the source record.
    pub const INGESTED_AT: &str = "dho.ingested_at";
    /// On a state record the router wrote: a hold marker, not state. Its patient's
    /// deliveries are held until a valid record for the same key replaces it; the value
    /// is the reason (`wrong_partition`: the record it stands for went to another
    /// partition and is dead-lettered there).
    pub const HOLD: &str = "dho.hold";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_keys_split_back_to_the_patient() {
        let p = PatientIdentifier::fnr("01010101006");
        assert_eq!(patient_key(&state_key(&p, "c-1")), "01010101006");
        assert_eq!(patient_key("01010101006"), "01010101006");
        assert_eq!(TopicNames::new("x").deliver("gp-1"), "x.deliver.gp-1");
        assert_eq!(TopicNames::new("x").careplan_audit(), "x.audit.careplans");
    }
}
