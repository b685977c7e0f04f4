//! The router's record of what it delivered of each reading a platform named (its
//! `Observation.identifier`, from which the gateway derives the event id): who received it
//! and the alerts it raised. A retraction (`entered-in-error`) or correction (`amended`,
//! `corrected`) of that reading goes to exactly those recipients, whatever the consents say
//! now; a re-send of a reading already routed is recognised as one.
//!
//! Plain data (serde), persisted by the router on its compacted alert-state topic under
//! `<patient>|delivered:<event id>`, partitioned by patient, and read back on assignment like
//! the alert tracks. [`judge`] is the pure rule; the router does the I/O.

use std::collections::BTreeMap;

use dho_schemas::model::*;
use serde::{Deserialize, Serialize};

use crate::alerts::{AlertState, Track};
use crate::decision::Grant;

/// The key part after `<patient>|` that marks a delivery record in the alert-state topic
/// (alert tracks are keyed by a code, which never contains a colon).
pub const KEY_PREFIX: &str = "delivered:";

/// The alert-state key of the record of `event_id`.
pub fn record_key(patient: &PatientIdentifier, event_id: &str) -> String {
    format!("{}|{KEY_PREFIX}{event_id}", patient.key())
}

/// The event id a delivery record's key names, if it is one (`<patient>|delivered:<id>`).
pub fn event_id_of_key(key: &str) -> Option<&str> {
    key.split_once('|')?.1.strip_prefix(KEY_PREFIX)
}

/// One subscriber's delivery, as it was made: a retraction rests on what the original
/// rested on (the subscription and consent then), and names the delivery it replaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    pub delivery_id: String,
    pub subscriber_id: String,
    pub subscriber_org: OrganisationIdentifier,
    pub subscription_id: String,
    pub consent_id: String,
    pub purpose_of_use: String,
    pub legal_basis: String,
    pub content_level: ContentLevel,
}

impl Recipient {
    /// The recipient of the delivery `delivery_id` made under `grant`.
    pub fn of(grant: &Grant<'_>, delivery_id: &str) -> Self {
        let s = grant.subscription;
        Self {
            delivery_id: delivery_id.to_string(),
            subscriber_id: s.subscriber_id.clone(),
            subscriber_org: s.subscriber_org.clone(),
            subscription_id: s.subscription_id.clone(),
            consent_id: grant.consent.consent_id.clone(),
            purpose_of_use: s.purpose_of_use.clone(),
            legal_basis: grant.consent.legal_basis.clone(),
            content_level: s.content_level,
        }
    }
}

/// An alert the reading raised, and who received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaisedAlert {
    /// The alert as raised, without the reading (a retraction carries no values).
    pub alert: Alert,
    pub recipients: Vec<Recipient>,
}

/// One alert track of the reading's code as it was before the reading moved it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackBefore {
    /// The owner of the plan the track follows.
    pub owner: OrganisationIdentifier,
    /// `None`: the owner had no track of the code yet.
    pub track: Option<Track>,
}

/// What the router delivered of one reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The reading's offset in its measurements partition when first routed: that record
    /// routed again (a replay after a crash) is routed as before, any other is not new.
    pub offset: i64,
    /// The reading's code (its alert tracks' code).
    pub code: String,
    pub recipients: Vec<Recipient>,
    /// Alerts the reading (or its latest correction) raised.
    pub alerts: Vec<RaisedAlert>,
    /// Records written before plans per organisation: the one alert track of `code` before
    /// the reading. Read, never written any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_before: Option<Track>,
    /// The alert tracks of `code` the reading moved, one per plan owner, as they were
    /// before it: each put back if the reading is retracted while it is still that track's
    /// latest.
    #[serde(default)]
    pub tracks_before: Vec<TrackBefore>,
    /// The reading's status now: `final` (or whatever it came with), or the latest
    /// retraction or correction.
    pub status: String,
    /// The offsets of the retractions and corrections applied, oldest first.
    pub changes: Vec<i64>,
}

/// What a reading at `offset` with `status` is, given the record of its event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// Routed as a reading (and recorded, if it names itself): nothing of it was routed
    /// before, or this is the very record routed before (a replay), or a correction of a
    /// reading never delivered (its values are new to everyone).
    Route,
    /// A re-send of a reading (or of a retraction) routed before: not new, withheld.
    Resent,
    /// A retraction of a reading never routed: nothing to retract, withheld.
    NothingToRetract,
    /// A retraction or correction of the recorded reading: to its recipients.
    Change,
    /// A retraction or correction routed before (a replay after a crash): its record was
    /// written only once its deliveries were acknowledged, so nothing is left to do.
    ChangeReplayed,
}

/// Judges a reading against the record of its event id (see [`Judged`]).
pub fn judge(record: Option<&DeliveryRecord>, reading: &Measurement, offset: i64) -> Judged {
    let status = reading.status();
    let Some(record) = record else {
        return if status == RETRACTED {
            Judged::NothingToRetract
        } else {
            Judged::Route
        };
    };
    if offset == record.offset {
        return Judged::Route;
    }
    if record.changes.contains(&offset) {
        return Judged::ChangeReplayed;
    }
    if !reading.is_change() || (status == RETRACTED && record.status == RETRACTED) {
        return Judged::Resent;
    }
    Judged::Change
}

/// The content a recorded recipient gets of a change: a retraction at the level the
/// original went at (it discloses nothing new: the recipient already holds the reading and
/// must learn it is wrong); a correction's new values only to a recipient entitled to them
/// now (`entitled_now`), others a reference without values.
pub fn change_level(
    recipient: &Recipient,
    reading: &Measurement,
    entitled_now: bool,
) -> ContentLevel {
    if reading.status() == RETRACTED || entitled_now {
        recipient.content_level
    } else {
        ContentLevel::Minimal
    }
}

/// The tracks of the reading's code after the reading is retracted, from the patient's
/// tracks (by track id): each track whose latest reading it still is gets back its state
/// from before it, per plan owner; the others are left alone, since later readings decided
/// their zone since. A restored track keeps its owner and its current position, so a
/// replay of the readings before does not apply again. (A record from before plans per
/// organisation has one `track_before`: it goes back to whichever owner's track the reading
/// is still the latest of.)
pub fn tracks_after_retraction(
    tracks: &BTreeMap<String, Track>,
    record: &DeliveryRecord,
    event_id: &str,
) -> Vec<Track> {
    tracks
        .values()
        .filter(|t| t.state.code == record.code)
        .filter(|t| t.state.last_event_id.as_deref() == Some(event_id))
        .map(|current| {
            let owner = current.state.owner.as_ref();
            let before = match owner {
                Some(owner) if !record.tracks_before.is_empty() => record
                    .tracks_before
                    .iter()
                    .find(|b| b.owner.same_entity(owner))
                    .and_then(|b| b.track.clone()),
                _ => record.track_before.clone(),
            };
            let mut restored = before.unwrap_or_else(|| Track {
                state: AlertState {
                    zone: None,
                    no_data_open: false,
                    last_event_id: None,
                    ..current.state.clone()
                },
                last_reading_at: 0,
                applied_through: -1,
                target_codes: vec![],
            });
            restored.state.owner = current.state.owner.clone();
            restored.applied_through = current.applied_through;
            restored
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_schemas::fixtures;

    fn record(offset: i64) -> DeliveryRecord {
        DeliveryRecord {
            offset,
            code: "59408-5".into(),
            recipients: vec![],
            alerts: vec![],
            track_before: None,
            tracks_before: vec![],
            status: "final".into(),
            changes: vec![],
        }
    }

    fn reading(status: Option<&str>) -> Measurement {
        let mut m = fixtures::spo2(&fixtures::patient(1), 95.0, 1_700_000_000_000);
        m.status = status.map(str::to_string);
        m
    }

    #[test]
    fn a_reading_is_judged_by_what_was_delivered_of_its_event_id() {
        let fresh = reading(None);
        let retraction = reading(Some(RETRACTED));
        let correction = reading(Some("corrected"));
        // Nothing recorded.
        assert_eq!(judge(None, &fresh, 5), Judged::Route);
        assert_eq!(judge(None, &correction, 5), Judged::Route);
        assert_eq!(judge(None, &retraction, 5), Judged::NothingToRetract);
        // Recorded at offset 5.
        let mut r = record(5);
        assert_eq!(judge(Some(&r), &fresh, 5), Judged::Route, "a replay");
        assert_eq!(judge(Some(&r), &fresh, 9), Judged::Resent);
        assert_eq!(judge(Some(&r), &retraction, 9), Judged::Change);
        assert_eq!(judge(Some(&r), &correction, 9), Judged::Change);
        // Retracted at 9.
        r.status = RETRACTED.into();
        r.changes.push(9);
        assert_eq!(judge(Some(&r), &retraction, 9), Judged::ChangeReplayed);
        assert_eq!(judge(Some(&r), &retraction, 12), Judged::Resent);
        assert_eq!(judge(Some(&r), &fresh, 12), Judged::Resent);
        assert_eq!(judge(Some(&r), &correction, 12), Judged::Change);
    }

    #[test]
    fn a_retraction_goes_at_the_original_level_and_new_values_only_to_the_entitled() {
        let full = Recipient {
            delivery_id: "d".into(),
            subscriber_id: "gp".into(),
            subscriber_org: fixtures::gp(),
            subscription_id: "s".into(),
            consent_id: "c".into(),
            purpose_of_use: "TREAT".into(),
            legal_basis: "pbrl".into(),
            content_level: ContentLevel::Full,
        };
        let retraction = reading(Some(RETRACTED));
        let correction = reading(Some("amended"));
        assert_eq!(change_level(&full, &retraction, false), ContentLevel::Full);
        assert_eq!(change_level(&full, &correction, true), ContentLevel::Full);
        assert_eq!(
            change_level(&full, &correction, false),
            ContentLevel::Minimal
        );
    }

    #[test]
    fn keys_name_their_event_and_never_a_code() {
        let p = fixtures::patient(1);
        let key = record_key(&p, "e-1");
        assert_eq!(event_id_of_key(&key), Some("e-1"));
        assert_eq!(
            event_id_of_key(&dho_schemas::topics::state_key(&p, "59408-5")),
            None
        );
    }

    fn by_id(tracks: &[&Track]) -> BTreeMap<String, Track> {
        tracks.iter().map(|t| (t.id(), (*t).clone())).collect()
    }

    #[test]
    fn a_retracted_reading_still_latest_gives_back_each_owners_track_before_it() {
        let p = fixtures::patient(1);
        let mut lung_before = Track::new(p.clone(), "59408-5", fixtures::lung_clinic());
        lung_before.applied_through = 3;
        lung_before.state.zone = Some(Zone::Yellow);
        let mut lung = lung_before.clone();
        lung.state.last_event_id = Some("e-1".into());
        lung.state.zone = Some(Zone::Red);
        lung.applied_through = 5;
        // Home care had no track before the reading; the reading opened one.
        let mut home = Track::new(p.clone(), "59408-5", fixtures::home_care());
        home.state.last_event_id = Some("e-1".into());
        home.state.zone = Some(Zone::Red);
        home.applied_through = 5;
        let mut r = record(5);
        r.tracks_before = vec![
            TrackBefore {
                owner: fixtures::lung_clinic(),
                track: Some(lung_before.clone()),
            },
            TrackBefore {
                owner: fixtures::home_care(),
                track: None,
            },
        ];
        let restored = tracks_after_retraction(&by_id(&[&lung, &home]), &r, "e-1");
        assert_eq!(restored.len(), 2);
        let of = |owner: &OrganisationIdentifier| {
            restored
                .iter()
                .find(|t| t.state.is_owned_by(owner))
                .expect("restored")
        };
        assert_eq!(of(&fixtures::lung_clinic()).state, lung_before.state);
        assert_eq!(of(&fixtures::lung_clinic()).applied_through, 5);
        assert_eq!(of(&fixtures::home_care()).state.zone, None);
        assert_eq!(of(&fixtures::home_care()).applied_through, 5);
        // A later reading decided the lung clinic's track since: only home care's goes back.
        lung.state.last_event_id = Some("e-2".into());
        let restored = tracks_after_retraction(&by_id(&[&lung, &home]), &r, "e-1");
        assert_eq!(restored.len(), 1);
        assert!(restored[0].state.is_owned_by(&fixtures::home_care()));
    }

    #[test]
    fn a_record_from_before_owners_gives_its_one_track_back_to_the_owner_now() {
        let p = fixtures::patient(1);
        let mut before = Track::new(p.clone(), "59408-5", fixtures::gp());
        before.state.owner = None;
        before.applied_through = 3;
        let mut current = Track::new(p.clone(), "59408-5", fixtures::lung_clinic());
        current.state.last_event_id = Some("e-1".into());
        current.applied_through = 5;
        let mut r = record(5);
        r.track_before = Some(before.clone());
        let restored = tracks_after_retraction(&by_id(&[&current]), &r, "e-1");
        assert_eq!(restored.len(), 1);
        assert!(restored[0].state.is_owned_by(&fixtures::lung_clinic()));
        assert_eq!(restored[0].applied_through, 5);
        // Written without the old field, read back by an older shape: both directions.
        let json = serde_json::to_value(&r).unwrap();
        let back: DeliveryRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }
}
