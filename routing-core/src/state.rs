//! The router's view of the compacted state topics, per owned partition. Applying records
//! in log order reproduces what compaction keeps: the latest value per key, tombstones
//! deleting.

use std::collections::HashMap;

use dho_schemas::topics::patient_key;
use dho_schemas::{CarePlan, Consent, Subscription};

use crate::alerts::Track;
use crate::decision::PatientState;

/// The state of the patients of one partition.
#[derive(Debug, Default)]
pub struct PartitionState {
    patients: HashMap<String, PatientState>,
    /// Patients with a red alert episode open (kept as tracks change, for the gauge).
    patients_in_red: usize,
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

    /// Every patient of the partition, by patient key.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &PatientState)> {
        self.patients.iter()
    }

    /// Applies a consent record (`None` = tombstone) under its `patient|consent_id` key.
    pub fn apply_consent(&mut self, key: &str, value: Option<Consent>) {
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

    /// Applies an alert track under its `patient|code` key (`None` = tombstone).
    pub fn apply_track(&mut self, key: &str, value: Option<Track>) {
        let code = record_id(key).to_string();
        let patient = patient_key(key);
        let in_red = |s: &Self| {
            s.patients
                .get(patient)
                .is_some_and(|p| p.alerts.values().any(Track::in_red))
        };
        let old_red = in_red(self);
        match value {
            Some(t) => {
                self.patients
                    .entry(patient.to_string())
                    .or_default()
                    .alerts
                    .insert(code, t);
            }
            None => self.remove(key, |p| {
                p.alerts.remove(&code);
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
            fixtures::home_care()
        );
        s.apply_consent(&key, None);
        assert!(s.patient(p.key()).is_none());
        assert_eq!(s.patients(), 0);
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
