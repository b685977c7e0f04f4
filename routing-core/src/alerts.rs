//! Alerts from the patient's self-management plan (issue 7): a pure core, no Kafka.
//!
//! [`classify`] puts a reading in the plan's green, yellow or red zone. [`AlertState`] is the
//! alert state machine of one (patient, code, plan owner): each care organisation's plan
//! keeps its own track (see [`crate::tracks`]), and it turns the sequence of classified readings,
//! and the silence between them, into as few alerts as possible. The state is plain data
//! (serde), so the pipeline can persist it and rebuild it after a restart or rebalance; alert
//! ids are UUID v5 of their causes, so a replay produces the same ids and the consumer SDK
//! drops the repeats.
//!
//! Transitions of [`AlertState::observe`] (`-` = unknown, no reading yet):
//!
//! | before          | reading | alert                                      |
//! |-----------------|---------|--------------------------------------------|
//! | `-` / green     | green   | none                                       |
//! | `-` / green     | yellow  | `ZONE_ENTERED`, yellow, `MODERATE`         |
//! | `-` / green     | red     | `ZONE_ENTERED`, red, `SEVERE`              |
//! | yellow          | red     | `ESCALATED`, red, `SEVERE`                 |
//! | yellow / red    | green   | `RESOLVED`, green, `NORMAL`                |
//! | yellow          | yellow  | none                                       |
//! | red             | red     | none                                       |
//! | red             | yellow  | none (see below)                           |
//!
//! De-escalation (red → yellow) raises nothing: the open alert stays open until the patient
//! is back in green, and a later yellow → red is then not an escalation either, because the
//! state remembers the worst zone of the open episode. So one episode is at most one
//! `ZONE_ENTERED`, one `ESCALATED` and one `RESOLVED`, whatever the readings wobble.
//!
//! Missing data: [`AlertState::check_silence`] (driven by a timer) raises `NO_DATA` once
//! when the target's `expected_interval_hours` has passed since the last reading. The next
//! reading resolves it: if that reading raises a zone alert itself (the table above), that
//! alert is the resolution; otherwise it raises a `RESOLVED` alert, `NORMAL` severity, whose
//! `zone` is the zone the patient is in now. A zone alert still open (yellow or red) stays
//! open in that case; only a reading in green closes it.

use dho_schemas::model::*;
use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// The namespace of alert ids (UUID v5 of patient key, code, plan owner, kind, trigger).
const ALERT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x3c9e_71a4_5b2d_4f60_8e1a_d47b_92c3_0f15);

const MILLIS_PER_HOUR: i64 = 3_600_000;

/// Where a reading falls in the patient's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// The zone of the reading (the worst of its components).
    pub zone: Zone,
    /// The plan target code that decided the zone: the measurement's code for a single
    /// value, the worst component's code (e.g. systolic `8480-6`) for a multi-component one.
    pub decided_by: String,
    /// The value that decided the zone.
    pub value: f64,
}

/// The zone of `value` against one target: green if inside `green`, else yellow if inside
/// `yellow`, else red. Bounds are inclusive; a missing bound is open.
pub fn zone_of(target: &PlanTarget, value: f64) -> Zone {
    if target.green.contains(value) {
        Zone::Green
    } else if target.yellow.contains(value) {
        Zone::Yellow
    } else {
        Zone::Red
    }
}

/// Classifies `measurement` against `plan`.
///
/// A target applies to the measurement's own value when its `code` is the measurement's
/// code, and to a component when its `code` is the component's code (blood pressure:
/// systolic `8480-6`, diastolic `8462-4`), in both cases only when its `unit` is exactly the
/// value's unit (UCUM string equality; no unit conversion is attempted). Every applicable
/// (target, value) pair is classified and the worst zone wins, so a multi-component reading
/// classifies by its worst component; on a tie the first in reading order decides.
///
/// Returns `None` when nothing applies: the plan has no target for the reading's code or
/// its components' codes, **or** the targets that exist are in another unit than the
/// reading (a plan in `mmol/L` does not classify a reading in `mg/dL`). Non-finite values
/// are not classified either. A component without a target (e.g. a plan with a systolic
/// target only) does not count, and does not prevent the others from classifying.
pub fn classify(measurement: &Measurement, plan: &CarePlan) -> Option<Classification> {
    let own = measurement
        .value
        .as_ref()
        .map(|q| (measurement.code.as_str(), q));
    let components = measurement
        .components
        .iter()
        .map(|c| (c.code.as_str(), &c.value));
    let mut worst: Option<Classification> = None;
    for (code, quantity) in own.into_iter().chain(components) {
        if !quantity.value.is_finite() {
            continue;
        }
        for target in plan
            .targets
            .iter()
            .filter(|t| t.code == code && t.unit == quantity.unit)
        {
            let zone = zone_of(target, quantity.value);
            if worst.as_ref().is_none_or(|w| zone > w.zone) {
                worst = Some(Classification {
                    zone,
                    decided_by: code.to_owned(),
                    value: quantity.value,
                });
            }
        }
    }
    worst
}

/// The alert state of one (patient, code, plan owner), where `code` is the measurement's
/// code (for blood pressure the panel code `85354-9`, not a component's). Plain data:
/// serialise it to persist, deserialise it to continue exactly where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub patient: PatientIdentifier,
    pub code: String,
    /// The care organisation whose plan this track follows (its plans' `updated_by`).
    /// `None` only in a track persisted before plans per organisation: such a track is
    /// migrated before use (see [`crate::tracks::migrate`]).
    #[serde(default)]
    pub owner: Option<OrganisationIdentifier>,
    /// The worst zone of the open episode: `None` before the first reading, `Green` when no
    /// zone alert is open, `Yellow`/`Red` while one is.
    pub zone: Option<Zone>,
    /// A `NO_DATA` alert is open (raised, not yet resolved by a reading).
    pub no_data_open: bool,
    /// The event id of the last reading observed; names the silence after it in the
    /// `NO_DATA` alert id.
    pub last_event_id: Option<String>,
}

impl AlertState {
    /// The state of a (patient, code) under `owner`'s plan, with no reading seen yet.
    pub fn new(
        patient: PatientIdentifier,
        code: impl Into<String>,
        owner: OrganisationIdentifier,
    ) -> Self {
        Self {
            patient,
            code: code.into(),
            owner: Some(owner),
            zone: None,
            no_data_open: false,
            last_event_id: None,
        }
    }

    /// Feeds one classified reading (`classification` = [`classify`]`(reading, plan)`) and
    /// returns the alert it raises, if any (see the module table). `now` is `raised_at`.
    ///
    /// The caller keeps one state per (patient, measurement code, plan owner) and passes
    /// only readings of that patient and code that classified under that owner's `plan`;
    /// readings without a classification do not touch the state.
    pub fn observe(
        &mut self,
        classification: &Classification,
        reading: &Measurement,
        plan: &CarePlan,
        now: Millis,
    ) -> Option<Alert> {
        debug_assert_eq!(reading.code, self.code, "state of another code");
        debug_assert_eq!(reading.patient, self.patient, "state of another patient");
        debug_assert!(self.is_owned_by(&plan.updated_by), "state of another owner");
        let zone = classification.zone;
        let before = self.zone.unwrap_or(Zone::Green);
        let transition = match (before, zone) {
            (Zone::Green, Zone::Yellow | Zone::Red) => {
                Some((AlertKind::ZoneEntered, zone, severity_of(zone)))
            }
            (Zone::Yellow, Zone::Red) => {
                Some((AlertKind::Escalated, Zone::Red, VkpSeverity::Severe))
            }
            (Zone::Yellow | Zone::Red, Zone::Green) => {
                Some((AlertKind::Resolved, Zone::Green, VkpSeverity::Normal))
            }
            // Same zone, or red → yellow (de-escalation: the open alert stays open).
            _ => None,
        };
        // The episode's worst zone: de-escalation does not lower it, green closes it.
        self.zone = Some(match (before, zone) {
            (Zone::Red, Zone::Yellow) => Zone::Red,
            _ => zone,
        });
        self.last_event_id = Some(reading.event_id.clone());
        let resolves_no_data = std::mem::take(&mut self.no_data_open);
        let (kind, zone, severity) = match transition {
            Some(t) => t,
            None if resolves_no_data => (AlertKind::Resolved, zone, VkpSeverity::Normal),
            None => return None,
        };
        // A correction keeps its reading's event id, but its alert is another than the one
        // the corrected reading raised (and retracted): its id names the correction too.
        let trigger = if reading.is_change() {
            format!(
                "{}|{}|{}",
                reading.event_id,
                reading.status(),
                reading.received_time
            )
        } else {
            reading.event_id.clone()
        };
        Some(Alert {
            alert_id: alert_id(&self.patient, &self.code, &plan.updated_by, kind, &trigger),
            patient: self.patient.clone(),
            kind,
            zone,
            severity,
            code: self.code.clone(),
            plan_id: plan.plan_id.clone(),
            plan_version: plan.version,
            plan_owner: Some(plan.updated_by.clone()),
            triggering_event_id: Some(reading.event_id.clone()),
            reading: Some(reading.clone()),
            raised_at: now,
        })
    }

    /// Called by a timer: raises `NO_DATA` once when `target.expected_interval_hours` has
    /// passed since `last_reading_at` (`now - last_reading_at >= interval`, so exactly at
    /// the interval it has passed). Nothing when the target expects no interval (`None` or
    /// not positive), or while a `NO_DATA` alert is already open; the next reading closes
    /// it (see [`AlertState::observe`]).
    ///
    /// `target` is the plan's target for this state's code (for blood pressure, a component
    /// target; the caller picks the shortest interval). `plan` gives the alert its plan id
    /// and version: the plan in force when the silence is noticed. The alert's `zone` and
    /// `severity` are those of the open episode (green/`NORMAL` if none), it has no reading
    /// and no triggering event; its id is derived from the last reading's event id (or
    /// `last_reading_at` if no reading was ever observed), so the same silence always gets
    /// the same id.
    pub fn check_silence(
        &mut self,
        plan: &CarePlan,
        target: &PlanTarget,
        last_reading_at: Millis,
        now: Millis,
    ) -> Option<Alert> {
        debug_assert!(self.is_owned_by(&plan.updated_by), "state of another owner");
        let hours = target.expected_interval_hours.filter(|h| *h > 0)?;
        if self.no_data_open || now.saturating_sub(last_reading_at) < hours as i64 * MILLIS_PER_HOUR
        {
            return None;
        }
        self.no_data_open = true;
        let after = match &self.last_event_id {
            Some(event_id) => format!("after:{event_id}"),
            None => format!("since:{last_reading_at}"),
        };
        let zone = self.zone.unwrap_or(Zone::Green);
        Some(Alert {
            alert_id: alert_id(
                &self.patient,
                &self.code,
                &plan.updated_by,
                AlertKind::NoData,
                &after,
            ),
            patient: self.patient.clone(),
            kind: AlertKind::NoData,
            zone,
            severity: severity_of(zone),
            code: self.code.clone(),
            plan_id: plan.plan_id.clone(),
            plan_version: plan.version,
            plan_owner: Some(plan.updated_by.clone()),
            triggering_event_id: None,
            reading: None,
            raised_at: now,
        })
    }
}

impl AlertState {
    /// Whether this is the track of `owner`'s plans.
    pub fn is_owned_by(&self, owner: &OrganisationIdentifier) -> bool {
        self.owner.as_ref().is_some_and(|o| o.same_entity(owner))
    }
}

/// What the router keeps per (patient, code, plan owner) between readings, persisted on the compacted
/// alert-state topic so a restart or a rebalance continues exactly where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    pub state: AlertState,
    /// When the last reading was received (its `received_time`, never later than when it
    /// was routed): the start of the silence the no-data timer measures.
    pub last_reading_at: Millis,
    /// The offset of the last reading applied, in the patient's measurements partition. A
    /// replayed reading at or below it was applied before the crash, and its alert (if
    /// any) was acknowledged before this record was written: it is not applied again.
    pub applied_through: i64,
    /// The plan target codes that classified the last reading (a panel's components):
    /// the silence interval is the shortest of theirs.
    pub target_codes: Vec<String>,
}

/// What one reading did to its track.
// Returned once per reading and matched at once, never stored: boxing the alert would
// only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// Already applied before a restart (a replay): nothing changes, nothing is raised.
    Replayed,
    /// No plan target applies to the reading: the track is untouched.
    Unclassified,
    /// The track changed (persist it), and maybe raised an alert.
    Applied(Option<Alert>),
}

impl Track {
    pub fn new(
        patient: PatientIdentifier,
        code: impl Into<String>,
        owner: OrganisationIdentifier,
    ) -> Self {
        Self {
            state: AlertState::new(patient, code, owner),
            last_reading_at: 0,
            applied_through: -1,
            target_codes: vec![],
        }
    }

    /// Feeds the reading at `offset` of its measurements partition (see [`Observed`]).
    pub fn observe(
        &mut self,
        reading: &Measurement,
        offset: i64,
        plan: &CarePlan,
        now: Millis,
    ) -> Observed {
        if offset <= self.applied_through {
            return Observed::Replayed;
        }
        let Some(classification) = classify(reading, plan) else {
            return Observed::Unclassified;
        };
        let alert = self.state.observe(&classification, reading, plan, now);
        self.last_reading_at = reading.received_time.min(now);
        self.applied_through = offset;
        self.target_codes = target_codes(reading, plan);
        Observed::Applied(alert)
    }

    /// The timer's check: `NO_DATA` once the shortest expected interval of the track's
    /// targets in `plan` has passed since the last reading.
    pub fn check_silence(&mut self, plan: &CarePlan, now: Millis) -> Option<Alert> {
        let target = self.interval_target(plan)?;
        self.state
            .check_silence(plan, target, self.last_reading_at, now)
    }

    /// When the silence after the last reading becomes a `NO_DATA` alert under `plan`:
    /// `None` when no target expects readings, or one is open already. Cheap: the timer
    /// asks it of every track before touching any.
    pub fn silence_deadline(&self, plan: &CarePlan) -> Option<Millis> {
        if self.state.no_data_open {
            return None;
        }
        let hours = self.interval_target(plan)?.expected_interval_hours?;
        Some(self.last_reading_at + i64::from(hours) * MILLIS_PER_HOUR)
    }

    /// The track's target with the shortest expected interval.
    fn interval_target<'a>(&self, plan: &'a CarePlan) -> Option<&'a PlanTarget> {
        plan.targets
            .iter()
            .filter(|t| self.target_codes.contains(&t.code))
            .filter(|t| t.expected_interval_hours.is_some_and(|h| h > 0))
            .min_by_key(|t| t.expected_interval_hours)
    }

    /// The track's id in its patient's state and its alert-state key after `<patient>|`:
    /// `<code>|<owner>` (see [`crate::tracks::track_id`]), or the bare code of a track from
    /// before plans per organisation.
    pub fn id(&self) -> String {
        match &self.state.owner {
            Some(owner) => crate::tracks::track_id(&self.state.code, owner),
            None => self.state.code.clone(),
        }
    }

    /// The worst zone of the open episode is red.
    pub fn in_red(&self) -> bool {
        self.state.zone == Some(Zone::Red)
    }
}

/// The codes of `plan`'s targets that apply to `reading` (its own code and its components').
fn target_codes(reading: &Measurement, plan: &CarePlan) -> Vec<String> {
    let own = std::iter::once(reading.code.as_str());
    let components = reading.components.iter().map(|c| c.code.as_str());
    let mut codes: Vec<String> = own
        .chain(components)
        .filter(|code| plan.targets.iter().any(|t| t.code == *code))
        .map(str::to_owned)
        .collect();
    codes.dedup();
    codes
}

/// The plan that speaks about `code` (a target for the code or one of `component_codes`):
/// of several, the most recently updated (then the highest version, then the plan id, so
/// the choice never depends on map order). Between organisations this chooses nothing any
/// more ([`crate::tracks::plans_by_owner`] gives each owner's plan its own track); it is
/// the rule among one owner's plans, and names the plan a track persisted before plans per
/// organisation followed.
pub fn plan_for<'a>(
    plans: impl IntoIterator<Item = &'a CarePlan>,
    code: &str,
    component_codes: &[&str],
) -> Option<&'a CarePlan> {
    plans
        .into_iter()
        .filter(|p| {
            p.targets
                .iter()
                .any(|t| t.code == code || component_codes.contains(&t.code.as_str()))
        })
        .max_by(|a, b| {
            (a.updated_at, a.version, &a.plan_id).cmp(&(b.updated_at, b.version, &b.plan_id))
        })
}

/// The VKP severity of a zone: green `NORMAL`, yellow `MODERATE`, red `SEVERE`.
pub fn severity_of(zone: Zone) -> VkpSeverity {
    match zone {
        Zone::Green => VkpSeverity::Normal,
        Zone::Yellow => VkpSeverity::Moderate,
        Zone::Red => VkpSeverity::Severe,
    }
}

/// The deterministic id of an alert: UUID v5 of patient key, code, plan owner, kind and the
/// triggering event id (for `NO_DATA`, the silence it reports). The owner, so two
/// organisations' plans for one code raise distinct alerts for one reading. Not the plan
/// version: a reading replayed after a crash under a plan changed meanwhile must give the
/// same id, so the subscriber drops the repeat (one reading raises at most one alert per
/// code and owner anyway).
pub fn alert_id(
    patient: &PatientIdentifier,
    code: &str,
    owner: &OrganisationIdentifier,
    kind: AlertKind,
    trigger: &str,
) -> String {
    let kind = match kind {
        AlertKind::ZoneEntered => "ZONE_ENTERED",
        AlertKind::Escalated => "ESCALATED",
        AlertKind::Resolved => "RESOLVED",
        AlertKind::NoData => "NO_DATA",
    };
    let name = format!(
        "{}|{}|{code}|{}|{kind}|{trigger}",
        patient.system.oid(),
        patient.key(),
        crate::tracks::owner_tag(owner),
    );
    uuid::Uuid::new_v5(&ALERT_ID_NAMESPACE, name.as_bytes()).to_string()
}
