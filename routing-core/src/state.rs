//! The router's view of the compacted state topics, per owned partition. Applying records
//! in log order reproduces what compaction keeps: the latest value per key, tombstones
//! deleting.

use std::collections::{BTreeSet, HashMap};

use dho_schemas::topics::{patient_key, state_key};
use dho_schemas::{CarePlan, Consent, Subscription};

use crate::alerts::Track;
use crate::decision::PatientState;
use crate::delivered::{DeliveryRecord, event_id_of_key};
use crate::sharing::{SharingSnapshot, is_snapshot_key};
use crate::tracks::{self, Legacy};

/// The state of the patients of one partition.
#[derive(Debug, Default)]
pub struct PartitionState {
    patients: HashMap<String, PatientState>,
    /// Patients with a red alert episode open (kept as tracks change, for the gauge).
    patients_in_red: usize,
    /// Patients on hold (see [`PartitionState::hold`]).
    patients_on_hold: usize,
    /// What was delivered of each named reading, by patient key, then event id (kept apart
    /// from the patients' state: a patient with no consent left still has deliveries to
    /// retract).
    delivered: HashMap<String, HashMap<String, DeliveryRecord>>,
    /// Patients with an alert track persisted before plans per organisation (no owner),
    /// waiting for [`PartitionState::migrate_legacy_tracks`].
    legacy_tracks: BTreeSet<String>,
    /// The consents each patient's sharing was last judged by, by patient key (kept apart
    /// like `delivered`: see [`crate::sharing`]).
    sharing: HashMap<String, SharingSnapshot>,
}

/// One track from before plans per organisation, migrated (see [`tracks::migrate`]): the
/// router tombstones `legacy_key` and writes the adopted track under its own key.
#[derive(Debug, Clone, PartialEq)]
pub struct Migrated {
    /// The old `<patient>|<code>` key.
    pub legacy_key: String,
    /// The adopted track, or why it was dropped.
    pub outcome: Legacy,
    /// The track had a red episode open (a drop then loses it: the router says so).
    pub was_red: bool,
}

/// The kind of a state record, as a hold names it (a consent and a subscription of one
/// patient may share a record id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Consent,
    Subscription,
    CarePlan,
}

impl StateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Consent => "consent",
            StateKind::Subscription => "subscription",
            StateKind::CarePlan => "care_plan",
        }
    }
}

fn held_name(kind: StateKind, key: &str) -> String {
    format!("{}|{}", kind.as_str(), record_id(key))
}

/// Which state record a key's id part names.
fn record_id(key: &str) -> &str {
    key.split_once('|').map_or("", |(_, id)| id)
}

impl PartitionState {
    pub fn patient(&self, key: &str) -> Option<&PatientState> {
        self.patients.get(key)
    }

    pub fn patients(&self) -> usize {
        self.patients.len()
    }

    /// Patients with a red alert episode open, for any code.
    pub fn patients_in_red(&self) -> usize {
        self.patients_in_red
    }

    /// Patients on hold: a state record of theirs could not be applied.
    pub fn patients_on_hold(&self) -> usize {
        self.patients_on_hold
    }

    /// Puts the patient of `key` on hold: its latest `kind` record could not be applied
    /// (unreadable, invalid, or naming another patient). Whatever that record said, a
    /// withdrawal perhaps, the patient's old state must not go on deciding: the decision
    /// withholds everything of the patient until a valid record (or a tombstone) for the
    /// same key replaces it.
    pub fn hold(&mut self, kind: StateKind, key: &str) {
        let newly = self
            .patients
            .entry(patient_key(key).to_string())
            .or_default()
            .hold(held_name(kind, key));
        self.patients_on_hold += usize::from(newly);
    }

    /// A valid record (or a tombstone) for `key` replaces an unusable one. (Every state
    /// record comes here: the name is only made for a patient on hold.)
    fn release(&mut self, kind: StateKind, key: &str) {
        if let Some(state) = self.patients.get_mut(patient_key(key))
            && state.is_on_hold()
            && state.release(&held_name(kind, key))
        {
            self.patients_on_hold -= 1;
        }
    }

    /// Every patient of the partition, by patient key.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &PatientState)> {
        self.patients.iter()
    }

    /// Applies a consent record (`None` = tombstone) under its `patient|consent_id` key.
    pub fn apply_consent(&mut self, key: &str, value: Option<Consent>) {
        self.release(StateKind::Consent, key);
        let id = record_id(key).to_string();
        match value {
            Some(c) => {
                self.patients
                    .entry(patient_key(key).to_string())
                    .or_default()
                    .set_consent(id, Some(c));
            }
            None => self.remove(key, |p| p.set_consent(id, None)),
        }
    }

    pub fn apply_subscription(&mut self, key: &str, value: Option<Subscription>) {
        self.release(StateKind::Subscription, key);
        let id = record_id(key).to_string();
        match value {
            Some(s) => {
                self.patients
                    .entry(patient_key(key).to_string())
                    .or_default()
                    .set_subscription(id, Some(s));
            }
            None => self.remove(key, |p| p.set_subscription(id, None)),
        }
    }

    pub fn apply_care_plan(&mut self, key: &str, value: Option<CarePlan>) {
        self.release(StateKind::CarePlan, key);
        let id = record_id(key).to_string();
        match value {
            Some(p) => {
                self.patients
                    .entry(patient_key(key).to_string())
                    .or_default()
                    .care_plans
                    .insert(id, p);
            }
            None => self.remove(key, |p| {
                p.care_plans.remove(&id);
            }),
        }
    }

    /// The record of what was delivered of the patient's reading `event_id`.
    pub fn delivered(&self, patient_key: &str, event_id: &str) -> Option<&DeliveryRecord> {
        self.delivered.get(patient_key)?.get(event_id)
    }

    /// Applies a delivery record under its `patient|delivered:<event id>` key (`None` =
    /// tombstone). Other keys are ignored.
    pub fn apply_delivered(&mut self, key: &str, value: Option<DeliveryRecord>) {
        let Some(event_id) = event_id_of_key(key) else {
            return;
        };
        let patient = patient_key(key);
        match value {
            Some(record) => {
                self.delivered
                    .entry(patient.to_string())
                    .or_default()
                    .insert(event_id.to_string(), record);
            }
            None => {
                if let Some(records) = self.delivered.get_mut(patient) {
                    records.remove(event_id);
                    if records.is_empty() {
                        self.delivered.remove(patient);
                    }
                }
            }
        }
    }

    /// The sharing snapshot of the patient `patient_key`.
    pub fn sharing(&self, patient_key: &str) -> Option<&SharingSnapshot> {
        self.sharing.get(patient_key)
    }

    /// Applies a sharing snapshot under its `patient|sharing:consents` key (`None` =
    /// tombstone), unless the one held reflects a later consent record (a late write of a
    /// previous owner of the partition).
    pub fn apply_sharing(&mut self, key: &str, value: Option<SharingSnapshot>) {
        let patient = patient_key(key);
        match value {
            Some(snapshot) => {
                let newer_held = self
                    .sharing
                    .get(patient)
                    .is_some_and(|held| held.consents_offset > snapshot.consents_offset);
                if !newer_held {
                    self.sharing.insert(patient.to_string(), snapshot);
                }
            }
            None => {
                self.sharing.remove(patient);
            }
        }
    }

    /// Removes the router's own record under `key` (a tombstone on its alert-state topic):
    /// a delivery record, a sharing snapshot or an alert track.
    pub fn remove_own(&mut self, key: &str) {
        if event_id_of_key(key).is_some() {
            self.apply_delivered(key, None)
        } else if is_snapshot_key(key) {
            self.apply_sharing(key, None)
        } else {
            self.apply_track(key, None)
        }
    }

    /// Whether a track from before plans per organisation waits for its migration.
    pub fn has_legacy_tracks(&self) -> bool {
        !self.legacy_tracks.is_empty()
    }

    /// Migrates every track persisted before plans per organisation (see
    /// [`tracks::migrate`]), in memory; returns what the router must persist. Call it once
    /// the care plans are read (a state sync), before the tracks are used.
    pub fn migrate_legacy_tracks(&mut self) -> Vec<Migrated> {
        let mut migrated = vec![];
        for patient in std::mem::take(&mut self.legacy_tracks) {
            let Some(state) = self.patients.get(&patient) else {
                continue;
            };
            let outcomes: Vec<(String, Legacy, bool)> = state
                .alerts
                .iter()
                .filter(|(_, t)| t.state.owner.is_none())
                .map(|(id, t)| (id.clone(), tracks::migrate(t, state), t.in_red()))
                .collect();
            for (id, outcome, was_red) in outcomes {
                let legacy_key = format!("{patient}|{id}");
                self.apply_track(&legacy_key, None);
                if let Legacy::Adopted(track) = &outcome {
                    let key = state_key(&track.state.patient, &track.id());
                    self.apply_track(&key, Some(track.clone()));
                }
                migrated.push(Migrated {
                    legacy_key,
                    outcome,
                    was_red,
                });
            }
        }
        migrated
    }

    /// Applies an alert track under its `patient|<track id>` key (`None` = tombstone).
    pub fn apply_track(&mut self, key: &str, value: Option<Track>) {
        let track_id = record_id(key).to_string();
        let patient = patient_key(key);
        let in_red = |s: &Self| {
            s.patients
                .get(patient)
                .is_some_and(|p| p.alerts.values().any(Track::in_red))
        };
        let old_red = in_red(self);
        match value {
            Some(t) => {
                if t.state.owner.is_none() {
                    self.legacy_tracks.insert(patient.to_string());
                }
                self.patients
                    .entry(patient.to_string())
                    .or_default()
                    .alerts
                    .insert(track_id, t);
            }
            None => self.remove(key, |p| {
                p.alerts.remove(&track_id);
            }),
        }
        self.patients_in_red =
            self.patients_in_red + usize::from(in_red(self)) - usize::from(old_red);
    }

    fn remove(&mut self, key: &str, f: impl FnOnce(&mut PatientState)) {
        let patient = patient_key(key);
        if let Some(state) = self.patients.get_mut(patient) {
            f(state);
            if state.is_empty() {
                self.patients.remove(patient);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_schemas::fixtures;
    use dho_schemas::topics::state_key;

    #[test]
    fn latest_value_wins_and_tombstones_delete() {
        let p = fixtures::patient(1);
        let mut s = PartitionState::default();
        let key = state_key(&p, "c1");
        s.apply_consent(&key, Some(fixtures::consent(&p, "c1", &[fixtures::gp()])));
        s.apply_consent(
            &key,
            Some(fixtures::consent(&p, "c1", &[fixtures::home_care()])),
        );
        let state = s.patient(p.key()).unwrap();
        assert_eq!(state.consents().len(), 1);
        assert_eq!(
            state.consents()["c1"].provisions[0].actor,
            Some(fixtures::home_care())
        );
        s.apply_consent(&key, None);
        assert!(s.patient(p.key()).is_none());
        assert_eq!(s.patients(), 0);
    }

    #[test]
    fn an_unusable_record_holds_its_patient_until_a_valid_one_for_the_same_key_replaces_it() {
        use crate::decision::{EventView, Withheld, decide};
        use dho_schemas::model::DataCategory;
        let p = fixtures::patient(1);
        let other = fixtures::patient(2);
        let mut s = PartitionState::default();
        for patient in [&p, &other] {
            s.apply_consent(
                &state_key(patient, "c1"),
                Some(fixtures::consent(patient, "c1", &[fixtures::gp()])),
            );
            s.apply_subscription(
                &state_key(patient, "s1"),
                Some(fixtures::subscription(patient, "gp", &fixtures::gp())),
            );
        }
        let reading = EventView {
            category: DataCategory::Measurement,
            code: Some("59408-5"),
        };
        let now = dho_schemas::model::now_millis();
        let withheld = |s: &PartitionState, patient: &dho_schemas::PatientIdentifier| {
            decide(s.patient(patient.key()), reading, now)
                .withheld
                .to_vec()
        };
        assert!(withheld(&s, &p).is_empty(), "delivered before the hold");

        // A consent record that could not be applied (a withdrawal, perhaps).
        s.hold(StateKind::Consent, &state_key(&p, "c2"));
        assert_eq!(s.patients_on_hold(), 1);
        assert_eq!(withheld(&s, &p), vec![Withheld::StateInvalid]);
        assert!(withheld(&s, &other).is_empty(), "only that patient is held");
        // A valid record under another key, or of another kind, does not release it.
        s.apply_consent(
            &state_key(&p, "c1"),
            Some(fixtures::consent(&p, "c1", &[fixtures::gp()])),
        );
        s.apply_subscription(&state_key(&p, "c2"), None);
        assert_eq!(withheld(&s, &p), vec![Withheld::StateInvalid]);
        // A second bad record; one valid replacement is not enough.
        s.hold(StateKind::CarePlan, &state_key(&p, "plan"));
        s.apply_consent(
            &state_key(&p, "c2"),
            Some(fixtures::consent(&p, "c2", &[fixtures::gp()])),
        );
        assert_eq!(withheld(&s, &p), vec![Withheld::StateInvalid]);
        assert_eq!(s.patients_on_hold(), 1);
        // A tombstone for the other key releases the patient.
        s.apply_care_plan(&state_key(&p, "plan"), None);
        assert!(withheld(&s, &p).is_empty());
        assert_eq!(s.patients_on_hold(), 0);
    }

    #[test]
    fn tracks_from_before_plans_per_organisation_are_migrated_once_and_say_what_became_of_them() {
        use crate::alerts::Track;
        use crate::tracks::{DropReason, Legacy, track_id};
        use dho_schemas::codes::SPO2;
        use dho_schemas::model::Zone;
        let p = fixtures::patient(1);
        let q = fixtures::patient(2);
        let mut s = PartitionState::default();
        let legacy = |patient: &dho_schemas::PatientIdentifier| {
            let mut t = Track::new(patient.clone(), SPO2, fixtures::gp());
            t.state.owner = None;
            t.state.zone = Some(Zone::Red);
            t.applied_through = 4;
            t.target_codes = vec![SPO2.into()];
            t
        };
        // Read back from the alert-state topic under the old keys: p has a plan, q none.
        s.apply_track(&state_key(&p, SPO2), Some(legacy(&p)));
        s.apply_track(&state_key(&q, SPO2), Some(legacy(&q)));
        s.apply_care_plan(&state_key(&p, "plan-1"), Some(fixtures::care_plan(&p)));
        assert!(s.has_legacy_tracks());
        assert_eq!(s.patients_in_red(), 2);

        let mut migrated = s.migrate_legacy_tracks();
        migrated.sort_by(|a, b| a.legacy_key.cmp(&b.legacy_key));
        assert_eq!(migrated.len(), 2);
        let of = |patient: &dho_schemas::PatientIdentifier| {
            migrated
                .iter()
                .find(|m| m.legacy_key == state_key(patient, SPO2))
                .expect("migrated")
        };
        // p's track goes to the owner of its plan, open red episode and position kept.
        let Legacy::Adopted(adopted) = &of(&p).outcome else {
            panic!("p's track is adopted");
        };
        assert!(adopted.state.is_owned_by(&fixtures::lung_clinic()));
        let owned_id = track_id(SPO2, &fixtures::lung_clinic());
        let alerts = &s.patient(p.key()).unwrap().alerts;
        assert_eq!(alerts.keys().collect::<Vec<_>>(), [&owned_id]);
        assert!(alerts[&owned_id].in_red());
        assert_eq!(alerts[&owned_id].applied_through, 4);
        // q's is dropped: no plan speaks about its code; the red episode is named as lost.
        assert_eq!(of(&q).outcome, Legacy::Dropped(DropReason::NoPlan));
        assert!(of(&q).was_red);
        assert!(s.patient(q.key()).is_none());
        assert_eq!(s.patients_in_red(), 1);
        // Once: nothing is left to migrate.
        assert!(!s.has_legacy_tracks());
        assert!(s.migrate_legacy_tracks().is_empty());
    }

    #[test]
    fn records_of_one_patient_accumulate() {
        let p = fixtures::patient(1);
        let mut s = PartitionState::default();
        s.apply_consent(
            &state_key(&p, "c1"),
            Some(fixtures::consent(&p, "c1", &[fixtures::gp()])),
        );
        s.apply_subscription(
            &state_key(&p, "s1"),
            Some(fixtures::subscription(&p, "gp", &fixtures::gp())),
        );
        s.apply_subscription(
            &state_key(&p, "s2"),
            Some(fixtures::subscription(&p, "home", &fixtures::home_care())),
        );
        let state = s.patient(p.key()).unwrap();
        assert_eq!(
            (state.consents().len(), state.subscriptions().len()),
            (1, 2)
        );
    }
}
