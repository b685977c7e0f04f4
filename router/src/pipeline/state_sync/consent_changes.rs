//! Which patients' consents changed since their sharing was last judged (see
//! `pipeline::sharing`): noted per consent record as it is applied, taken after the sync.
//! Nothing here runs per reading.

use std::collections::HashMap;

use dho_schemas::model::Millis;
use rdkafka::message::{Message, OwnedMessage};

use super::StateSync;

/// The latest consent record of a patient the sync applied: the cause a "sharing ended"
/// notice names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::pipeline) struct ConsentSeen {
    pub(in crate::pipeline) offset: i64,
    /// The consent record id (its key's part after `<patient>|`).
    pub(in crate::pipeline) record_id: String,
    /// The record's broker time (a tombstone carries nothing else).
    pub(in crate::pipeline) at: Millis,
}

impl StateSync {
    /// Notes a consent record of `partition` under `key` (`<patient>|<record id>`), whatever
    /// it holds: a value, a tombstone, or one that puts its patient on hold.
    pub(super) fn saw_consent(&mut self, partition: i32, key: &str, message: &OwnedMessage) {
        let Some((patient, record_id)) = key.split_once('|') else {
            return;
        };
        let seen = ConsentSeen {
            offset: message.offset(),
            record_id: record_id.to_string(),
            at: message.timestamp().to_millis().unwrap_or_default(),
        };
        self.consent_changes
            .insert((partition, patient.to_string()), seen);
    }

    /// The patients whose consents changed since their sharing was last judged, by
    /// (partition, patient key).
    pub(in crate::pipeline) fn take_consent_changes(
        &mut self,
    ) -> HashMap<(i32, String), ConsentSeen> {
        std::mem::take(&mut self.consent_changes)
    }

    /// Keeps a change to judge at a later sync (its patient is on hold), unless a later
    /// one of the same patient was seen meanwhile.
    pub(in crate::pipeline) fn judge_later(
        &mut self,
        partition: i32,
        patient: String,
        seen: ConsentSeen,
    ) {
        if self.owned.contains_key(&partition) {
            self.consent_changes
                .entry((partition, patient))
                .or_insert(seen);
        }
    }
}
