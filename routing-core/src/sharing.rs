//! Whether a consent change ended an organisation's deliveries: the pure rule behind the
//! "sharing ended" notice, so an ended flow is never mistaken for a quiet patient.
//!
//! A subscriber *lost sharing* when, for a data category one of its subscriptions wants
//! now, the decision granted it under the consents before the change and withholds it
//! under the consents after. Both sides are judged with the patient's subscriptions now
//! and at the same `now`: a subscription its owner ended, or a permit that ran out with
//! no change, ends nothing here. A patient on hold is not judged until a valid record
//! replaces the one held (what it said is unknown).
//!
//! "Before" is the [`SharingSnapshot`]: the patient's consents as the router last judged
//! them, persisted on its compacted alert-state topic under `<patient>|sharing:consents`
//! (written in the same transaction as the notices), so a router that dies between
//! reading a change and committing its notices leaves the next owner the same "before".

use std::collections::{BTreeMap, BTreeSet};

use dho_schemas::model::*;
use serde::{Deserialize, Serialize};

use crate::decision::{EventView, PatientState, decide};

/// The key part after `<patient>|` that marks a sharing snapshot in the alert-state topic
/// (alert tracks are keyed by a code, which never contains a colon).
pub const KEY_PART: &str = "sharing:consents";

/// The alert-state key of `patient_key`'s sharing snapshot.
pub fn snapshot_key(patient_key: &str) -> String {
    format!("{patient_key}|{KEY_PART}")
}

/// Whether an alert-state key names a sharing snapshot.
pub fn is_snapshot_key(key: &str) -> bool {
    key.split_once('|')
        .is_some_and(|(_, part)| part == KEY_PART)
}

/// The patient's consents as the router last judged who they share with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SharingSnapshot {
    /// By record id, as in [`PatientState::consents`].
    pub consents: BTreeMap<String, Consent>,
    /// The consents-topic offset of the latest consent record judged: a late write of an
    /// older snapshot (a previous owner's) never replaces a newer one.
    pub consents_offset: i64,
}

/// One subscriber whose deliveries a consent change ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    /// The subscription that was granted before (the one the notice names).
    pub subscription: Subscription,
    /// The categories it no longer receives, in schema order.
    pub categories: BTreeSet<DataCategory>,
}

/// What a patient's consents now do to sharing, compared with the snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum Judged {
    /// The consents are the ones last judged: nothing to do.
    Unchanged,
    /// The patient is on hold: judged once a valid record replaces the one held.
    OnHold,
    /// Changed: these subscribers lost sharing (maybe none); the snapshot moves on.
    Changed(Vec<Ended>),
}

/// Judges the patient's state now against `before` (the consents last judged) at `now`.
pub fn judge(before: &SharingSnapshot, after: &PatientState, now: Millis) -> Judged {
    if after.consents() == &before.consents {
        return Judged::Unchanged;
    }
    if after.is_on_hold() {
        return Judged::OnHold;
    }
    Judged::Changed(ended(&after.with_consents(&before.consents), after, now))
}

/// The subscribers granted some category under `before` and not under `after`, where both
/// hold the same subscriptions (so a grant lost is a consent's doing).
fn ended(before: &PatientState, after: &PatientState, now: Millis) -> Vec<Ended> {
    // A code filter makes a subscription want only its codes: ask for each of them too.
    let mut codes: BTreeSet<Option<&str>> = BTreeSet::from([None]);
    for s in after.subscriptions().values() {
        codes.extend(s.code_filter.iter().map(|c| Some(c.as_str())));
    }
    let mut lost: BTreeMap<String, Ended> = BTreeMap::new();
    for category in [
        DataCategory::Measurement,
        DataCategory::SelfReport,
        DataCategory::Alert,
    ] {
        for &code in &codes {
            let view = EventView { category, code };
            let granted_after: BTreeSet<&str> = decide(Some(after), view, now)
                .grants
                .iter()
                .map(|g| g.subscription.subscriber_id.as_str())
                .collect();
            for grant in decide(Some(before), view, now).grants {
                let subscriber = &grant.subscription.subscriber_id;
                if granted_after.contains(subscriber.as_str()) {
                    continue;
                }
                lost.entry(subscriber.clone())
                    .or_insert_with(|| Ended {
                        subscription: grant.subscription.clone(),
                        categories: BTreeSet::new(),
                    })
                    .categories
                    .insert(category);
            }
        }
    }
    // Consents rule per organisation and category, not per code: a category withheld
    // after for one code is withheld for all of them.
    lost.into_values().collect()
}

#[cfg(test)]
mod tests;
