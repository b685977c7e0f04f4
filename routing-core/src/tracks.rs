//! Alert tracks per care organisation (issue 19): every organisation's plan that covers a
//! reading's code classifies the reading on a track of its own, keyed by (patient, code,
//! plan owner), so one organisation's thresholds never replace another's and each raises
//! its own alerts, with ids of their own.
//!
//! The owner is the plan's `updated_by`: the gateway stamps it with the caller (refusing any
//! other) and accepts only plan ids `<caller's orgnr>.<name>`, so a plan's owner never
//! changes across its versions. It is typed (system and number) and validated on every
//! plan, also on plans written by the admin or loaded directly, whose ids need not carry the
//! prefix. Among one organisation's several plans for a code, the rule of
//! [`plan_for`] still chooses one.
//!
//! Tracks persisted before this had no owner (key `<patient>|<code>`): [`migrate`] says what
//! becomes of each.

use std::fmt;

use dho_schemas::model::*;
use smallvec::SmallVec;

use crate::alerts::{Track, plan_for};
use crate::decision::PatientState;

/// How an owner is named in track ids and alert ids: `orgnr.<number>` or `resh.<id>` (no
/// `|` and no `:`, so a track id never reads as a delivery record's key).
pub fn owner_tag(owner: &OrganisationIdentifier) -> impl fmt::Display + '_ {
    struct Tag<'a>(&'a OrganisationIdentifier);
    impl fmt::Display for Tag<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let system = match self.0.system {
                OrgIdSystem::Orgnr => "orgnr",
                OrgIdSystem::Resh => "resh",
            };
            write!(f, "{system}.{}", self.0.value)
        }
    }
    Tag(owner)
}

/// The id of the track of `code` under `owner`'s plan: `<code>|<owner tag>`. Its alert-state
/// key is `<patient>|<track id>`.
pub fn track_id(code: &str, owner: &OrganisationIdentifier) -> String {
    format!("{code}|{}", owner_tag(owner))
}

/// The plans that speak about `code` (or one of `component_codes`), one per owning
/// organisation: of one organisation's several, the one [`plan_for`] picks. In plan id
/// order, so the order never depends on anything else.
pub fn plans_by_owner<'a>(
    plans: impl IntoIterator<Item = &'a CarePlan>,
    code: &str,
    component_codes: &[&str],
) -> SmallVec<[&'a CarePlan; 2]> {
    let mut chosen: SmallVec<[&'a CarePlan; 2]> = SmallVec::new();
    for plan in plans {
        let Some(plan) = plan_for([plan], code, component_codes) else {
            continue;
        };
        match chosen
            .iter_mut()
            .find(|c| c.updated_by.same_entity(&plan.updated_by))
        {
            Some(mine) => {
                if let Some(newer) = plan_for([*mine, plan], code, component_codes) {
                    *mine = newer;
                }
            }
            None => chosen.push(plan),
        }
    }
    chosen
}

/// The plan of `owner` that speaks about the track's code, if any is left.
pub fn plan_of_owner<'a>(
    plans: impl IntoIterator<Item = &'a CarePlan>,
    owner: &OrganisationIdentifier,
    code: &str,
    component_codes: &[&str],
) -> Option<&'a CarePlan> {
    let owned = plans
        .into_iter()
        .filter(|p| p.updated_by.same_entity(owner));
    plan_for(owned, code, component_codes)
}

/// What becomes of a track persisted before plans per organisation.
#[derive(Debug, Clone, PartialEq)]
pub enum Legacy {
    /// Taken over by the owner of the plan it followed: episode, silence and position go on.
    Adopted(Track),
    /// Dropped (a tombstone), for the reason given.
    Dropped(DropReason),
}

/// Why a track from before plans per organisation is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No plan of the patient speaks about its code any more: no reading could move it and
    /// no silence was checked on it, before or after.
    NoPlan,
    /// The owner already has a track of the code, written by a router with plans per
    /// organisation: it is the later one.
    Superseded,
}

impl DropReason {
    /// A bounded label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NoPlan => "no_plan",
            DropReason::Superseded => "superseded",
        }
    }
}

/// The migration of `legacy`, a track of `patient` without owner. The router before plans per
/// organisation classified a code under one plan, the one [`plan_for`] picks among all the
/// patient's plans: that plan's owner takes the track over, so an open episode (a red one
/// too) stays open and is resolved as before; any other organisation's plan for the code
/// starts a track of its own with its next reading.
pub fn migrate(legacy: &Track, patient: &PatientState) -> Legacy {
    let code = legacy.state.code.as_str();
    let components: SmallVec<[&str; 2]> = legacy.target_codes.iter().map(String::as_str).collect();
    let Some(plan) = plan_for(patient.care_plans.values(), code, &components) else {
        return Legacy::Dropped(DropReason::NoPlan);
    };
    let owner = &plan.updated_by;
    if patient.alerts.contains_key(&track_id(code, owner)) {
        return Legacy::Dropped(DropReason::Superseded);
    }
    let mut adopted = legacy.clone();
    adopted.state.owner = Some(owner.clone());
    Legacy::Adopted(adopted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_schemas::{codes, fixtures};

    fn plan(id: &str, owner: OrganisationIdentifier, updated_at: Millis, green: f64) -> CarePlan {
        let mut p = fixtures::care_plan(&fixtures::patient(1));
        p.plan_id = id.into();
        p.updated_by = owner;
        p.updated_at = updated_at;
        p.targets[0].green.low = Some(green);
        p
    }

    #[test]
    fn each_organisation_gets_its_own_plan_and_the_newest_among_its_own() {
        let home_old = plan("h.a", fixtures::home_care(), 1, 92.0);
        let home_new = plan("h.b", fixtures::home_care(), 2, 93.0);
        let lung = plan("l.a", fixtures::lung_clinic(), 0, 90.0);
        let plans = [&home_old, &lung, &home_new];
        let chosen = plans_by_owner(plans, codes::SPO2, &[]);
        let ids: Vec<&str> = chosen.iter().map(|p| p.plan_id.as_str()).collect();
        assert_eq!(ids, ["h.b", "l.a"]);
        assert!(plans_by_owner(plans, codes::BODY_WEIGHT, &[]).is_empty());
        assert_eq!(
            plan_of_owner(plans, &fixtures::lung_clinic(), codes::SPO2, &[]).map(|p| &p.plan_id),
            Some(&lung.plan_id)
        );
        assert_eq!(
            plan_of_owner(plans, &fixtures::gp(), codes::SPO2, &[]),
            None
        );
    }

    #[test]
    fn each_owners_track_raises_its_own_episode_with_ids_of_its_own() {
        use crate::alerts::Observed;
        let p = fixtures::patient(1);
        let home = plan("h.a", fixtures::home_care(), 1, 92.0);
        let mut lung = plan("l.a", fixtures::lung_clinic(), 2, 88.0);
        lung.targets[0].yellow.low = Some(85.0);
        let mut tracks: Vec<Track> = [&home, &lung]
            .iter()
            .map(|plan| Track::new(p.clone(), codes::SPO2, plan.updated_by.clone()))
            .collect();
        let mut feed = |value: f64, offset: i64| -> Vec<Option<Alert>> {
            let reading = fixtures::spo2(&p, value, 1_700_000_000_000);
            tracks
                .iter_mut()
                .zip([&home, &lung])
                .map(
                    |(track, plan)| match track.observe(&reading, offset, plan, 0) {
                        Observed::Applied(alert) => alert,
                        other => panic!("{other:?}"),
                    },
                )
                .collect()
        };
        // Red under home care's plan (green ≥ 92, yellow ≥ 88), yellow under
        // the lung clinic's (green ≥ 88, yellow ≥ 85).
        let first = feed(86.0, 1);
        let home_alert = first[0].as_ref().expect("home care's plan raises");
        let lung_alert = first[1].as_ref().expect("the lung clinic's plan raises");
        assert_eq!(
            (home_alert.kind, home_alert.zone),
            (AlertKind::ZoneEntered, Zone::Red)
        );
        assert_eq!(
            (lung_alert.kind, lung_alert.zone),
            (AlertKind::ZoneEntered, Zone::Yellow)
        );
        assert_ne!(
            home_alert.alert_id, lung_alert.alert_id,
            "one reading, two ids"
        );
        assert_eq!(home_alert.plan_owner, Some(fixtures::home_care()));
        assert_eq!(lung_alert.plan_id, "l.a");
        // Green under the lung clinic's plan only: only its episode resolves.
        let second = feed(90.0, 2);
        assert_eq!(second[0], None, "home care's red episode stays open");
        let resolved = second[1]
            .as_ref()
            .expect("the lung clinic's episode resolves");
        assert_eq!(resolved.kind, AlertKind::Resolved);
        assert!(tracks[0].in_red() && !tracks[1].in_red());
    }

    #[test]
    fn track_ids_name_code_and_owner_and_never_a_delivery_record() {
        let id = track_id(codes::SPO2, &fixtures::lung_clinic());
        assert_eq!(
            id,
            format!("{}|orgnr.{}", codes::SPO2, fixtures::lung_clinic().value)
        );
        assert_ne!(id, track_id(codes::SPO2, &fixtures::home_care()));
        assert!(!id.contains(':'));
        let p = fixtures::patient(1);
        let key = dho_schemas::topics::state_key(&p, &id);
        assert_eq!(crate::delivered::event_id_of_key(&key), None);
    }

    fn legacy_red(patient: &PatientIdentifier) -> Track {
        let mut t = Track::new(patient.clone(), codes::SPO2, fixtures::gp());
        t.state.owner = None;
        t.state.zone = Some(Zone::Red);
        t.applied_through = 7;
        t.target_codes = vec![codes::SPO2.into()];
        t
    }

    #[test]
    fn a_track_without_owner_goes_to_the_owner_of_the_plan_it_followed_or_is_dropped() {
        let p = fixtures::patient(1);
        let legacy = legacy_red(&p);
        let mut state = PatientState::default();
        // No plan speaks about the code: dropped.
        assert_eq!(
            migrate(&legacy, &state),
            Legacy::Dropped(DropReason::NoPlan)
        );
        // Two organisations' plans: the newest decided before, its owner takes it over with
        // its open red episode and its position.
        let lung = plan("l.a", fixtures::lung_clinic(), 5, 90.0);
        let home = plan("h.a", fixtures::home_care(), 3, 92.0);
        state.care_plans.insert(lung.plan_id.clone(), lung);
        state.care_plans.insert(home.plan_id.clone(), home);
        let Legacy::Adopted(adopted) = migrate(&legacy, &state) else {
            panic!("adopted");
        };
        assert!(adopted.state.is_owned_by(&fixtures::lung_clinic()));
        assert!(adopted.in_red());
        assert_eq!(adopted.applied_through, 7);
        assert_eq!(
            adopted.id(),
            track_id(codes::SPO2, &fixtures::lung_clinic())
        );
        // The owner has a track of its own already: that one is later.
        state.alerts.insert(adopted.id(), adopted);
        assert_eq!(
            migrate(&legacy, &state),
            Legacy::Dropped(DropReason::Superseded)
        );
    }

    #[test]
    fn a_track_persisted_before_owners_reads_back_without_owner() {
        let p = fixtures::patient(1);
        let mut json = serde_json::to_value(legacy_red(&p)).unwrap();
        json["state"].as_object_mut().unwrap().remove("owner");
        let read: Track = serde_json::from_value(json).unwrap();
        assert_eq!(read.state.owner, None);
        assert_eq!(read.id(), codes::SPO2);
    }
}
