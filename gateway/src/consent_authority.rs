//! Who may record a consent change (ARCHITECTURE.md, "Who may change consent").
//!
//! The patient's right to object (pasient- og brukerrettighetsloven § 5-3) is the
//! patient's: the patient's own channel (a patient portal) may record any change. An
//! organisation an operator enrolled as responsible for the patient's follow-up
//! (`dho-admin enrol`) records changes on the patient's behalf, and may too. Any other care
//! organisation may only narrow its own access: the change must, by the routing decision
//! run over the patient's directives before and after it, allow nothing new to anyone and
//! take nothing from anyone else; and it may not replace a directive another organisation
//! recorded.
//!
//! The patient's directives and enrolments are read from their topics up to the high
//! watermarks for every change (consent changes are rare; a cached view could be stale, and
//! a stale view could let a widening through). A read that fails is an outage: the change
//! is refused with 503, never judged on what is missing. Changes to one patient are judged
//! and written one at a time in this gateway; two gateway instances could still judge two
//! changes to one patient at once (ARCHITECTURE.md says what that allows).

use std::collections::BTreeMap;

use dho_publisher::state::patient_state;
use dho_routing_core::authority::judge;
use dho_schemas::model::*;
use dho_schemas::topics::state_key;
use tokio::sync::{Mutex, MutexGuard};

use crate::Gateway;

/// Why a change was refused: a bounded reason code and what the caller is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) reason: &'static str,
    pub(crate) message: &'static str,
}

const WIDENS: Refused = Refused {
    reason: "widens_sharing",
    message: "this change widens the patient's sharing (a permit, or a deny made inactive, \
              shorter or removed): only the patient's own channel or an organisation \
              responsible for the patient's follow-up may record it",
};
const NARROWS_OTHERS: Refused = Refused {
    reason: "narrows_others",
    message: "this change narrows another organisation's access: only the patient's own \
              channel or an organisation responsible for the patient's follow-up may record \
              it; an organisation may narrow only its own access",
};
const NOT_OWNER: Refused = Refused {
    reason: "not_owner",
    message: "this directive was recorded by another organisation: only it, the patient's \
              own channel or an organisation responsible for the patient's follow-up may \
              change it",
};

/// Who asks for a change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recorder<'a> {
    pub(crate) org: &'a OrganisationIdentifier,
    /// The patient's own channel (a patient portal).
    pub(crate) patient_channel: bool,
}

/// One lock per stripe of patients: changes to one patient are judged and written one at a
/// time (two changes each narrowing alone may widen together: two redundant denies, each
/// removed).
#[derive(Debug)]
pub(crate) struct ConsentLocks(Vec<Mutex<()>>);

impl Default for ConsentLocks {
    fn default() -> Self {
        Self((0..64).map(|_| Mutex::new(())).collect())
    }
}

impl ConsentLocks {
    pub(crate) async fn lock(&self, patient: &PatientIdentifier) -> MutexGuard<'_, ()> {
        let stripe = dho_schemas::partition::partition_for(patient.key().as_bytes(), 64);
        self.0[stripe as usize].lock().await
    }
}

impl Gateway {
    /// Whether `recorder` may record `consent` now (hold the patient's lock from before this
    /// call until the change is written).
    pub(crate) async fn may_record(
        &self,
        recorder: Recorder<'_>,
        consent: &Consent,
        now: Millis,
    ) -> dho_publisher::Result<Result<(), Refused>> {
        if recorder.patient_channel {
            return Ok(Ok(()));
        }
        let settings = &self.inner.config.kafka;
        let topics = settings.topics();
        let (consents_topic, enrolments_topic) = (topics.consents(), topics.enrolments());
        let (before, enrolments) = tokio::try_join!(
            patient_state::<Consent>(settings, &consents_topic, &consent.patient),
            patient_state::<Enrolment>(settings, &enrolments_topic, &consent.patient),
        )?;
        let responsible = enrolments
            .values()
            .any(|e| e.organisation.same_entity(recorder.org));
        // Judged from a little before now: a router whose clock is behind the gateway's
        // still decides by the time just before the gateway's `now`, and a change there
        // (one's own deny moved to start a moment ago) must count too.
        let from = now - CLOCK_SKEW_MS;
        Ok(judge_change(
            recorder.org,
            responsible,
            before,
            consent,
            from,
        ))
    }
}

/// How far behind the gateway a router's clock may be (NTP keeps them far closer).
const CLOCK_SKEW_MS: Millis = 5 * 60_000;

/// The rule, over what was read: `before` is the patient's directives by state key.
fn judge_change(
    org: &OrganisationIdentifier,
    responsible: bool,
    before: BTreeMap<String, Consent>,
    consent: &Consent,
    now: Millis,
) -> Result<(), Refused> {
    if responsible {
        return Ok(());
    }
    let key = state_key(&consent.patient, &consent.consent_id);
    if before
        .get(&key)
        .is_some_and(|existing| !existing.recorded_by.same_entity(org))
    {
        return Err(NOT_OWNER);
    }
    let own_before = before.get(&key).cloned();
    let mut after = before.clone();
    after.insert(key.clone(), consent.clone());
    let effect = judge(&before, &after, now);
    if !effect.only_narrows() {
        return Err(WIDENS);
    }
    if !effect.narrows_only(org) {
        return Err(NARROWS_OTHERS);
    }
    latent(&key, own_before, consent, org, now)
}

/// What the record can ever do, whatever the patient's other directives become: a record
/// judged only against today's directives may be masked now (by a deny, a redundant permit,
/// nobody having access yet) and take effect when the patient changes theirs. So, alone it
/// grants nothing; against a context that permits everyone everything it loosens nothing
/// of the record it replaces and narrows nobody but `org`.
fn latent(
    key: &str,
    own_before: Option<Consent>,
    consent: &Consent,
    org: &OrganisationIdentifier,
    now: Millis,
) -> Result<(), Refused> {
    let alone = BTreeMap::from([(key.to_string(), consent.clone())]);
    if !judge(&BTreeMap::new(), &alone, now).only_narrows() {
        return Err(WIDENS);
    }
    let everyone = everything_for_everyone(consent);
    // A key no record has: the blanket permit sorts before every real one.
    let context = BTreeMap::from([(String::new(), everyone)]);
    let with = |record: Option<Consent>| {
        let mut state = context.clone();
        if let Some(r) = record {
            state.insert(key.to_string(), r);
        }
        state
    };
    let (old, new) = (with(own_before), with(Some(consent.clone())));
    if !judge(&old, &new, now).only_narrows() {
        return Err(WIDENS);
    }
    if !judge(&context, &new, now).narrows_only(org) {
        return Err(NARROWS_OTHERS);
    }
    Ok(())
}

/// A permit of every category to everyone, always: the widest the patient could grant.
fn everything_for_everyone(like: &Consent) -> Consent {
    Consent {
        consent_id: String::new(),
        status: ConsentStatus::Active,
        provisions: vec![ConsentProvision {
            kind: ProvisionKind::Permit,
            actor: None,
            categories: vec![
                DataCategory::Measurement,
                DataCategory::SelfReport,
                DataCategory::Alert,
            ],
            period_start: None,
            period_end: None,
            professional: None,
            parent: None,
        }],
        ..like.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_schemas::fixtures;

    pub(super) const NOW: Millis = 1_800_000_000_000;

    pub(super) fn recorded_by(mut c: Consent, org: &OrganisationIdentifier) -> Consent {
        c.recorded_by = org.clone();
        c
    }

    pub(super) fn state(consents: &[Consent]) -> BTreeMap<String, Consent> {
        consents
            .iter()
            .map(|c| (state_key(&c.patient, &c.consent_id), c.clone()))
            .collect()
    }

    fn deny_for(org: &OrganisationIdentifier, id: &str) -> Consent {
        let p = fixtures::patient(1);
        let mut c = fixtures::consent(&p, id, std::slice::from_ref(org));
        c.provisions[0].kind = ProvisionKind::Deny;
        recorded_by(c, org)
    }

    #[test]
    fn an_organisation_not_responsible_may_only_narrow_its_own_access() {
        let p = fixtures::patient(1);
        let (gp, clinic) = (fixtures::gp(), fixtures::lung_clinic());
        let permits = fixtures::consent(&p, "c1", &[gp.clone(), clinic.clone()]);
        let before = state(&[permits]);
        // Self-grant.
        let grant = recorded_by(fixtures::consent(&p, "g", std::slice::from_ref(&gp)), &gp);
        let fresh = state(&[]);
        assert_eq!(judge_change(&gp, false, fresh, &grant, NOW), Err(WIDENS));
        // Its own deny: allowed.
        let own = deny_for(&gp, "d1");
        assert_eq!(judge_change(&gp, false, before.clone(), &own, NOW), Ok(()));
        // A deny naming another organisation: refused.
        let other = recorded_by(deny_for(&clinic, "d2"), &gp);
        assert_eq!(
            judge_change(&gp, false, before.clone(), &other, NOW),
            Err(NARROWS_OTHERS)
        );
        // A blanket deny: refused (it narrows the clinic too).
        let mut blanket = deny_for(&gp, "d3");
        blanket.provisions[0].actor = None;
        assert_eq!(
            judge_change(&gp, false, before.clone(), &blanket, NOW),
            Err(NARROWS_OTHERS)
        );
        // Inactivating its own deny: a widening.
        let with_deny = state(&[
            fixtures::consent(&p, "c1", &[gp.clone(), clinic.clone()]),
            own.clone(),
        ]);
        let mut inactive = own.clone();
        inactive.status = ConsentStatus::Inactive;
        assert_eq!(
            judge_change(&gp, false, with_deny, &inactive, NOW),
            Err(WIDENS)
        );
        // Replacing the patient's directive (recorded by home care) even with itself.
        let mut same = fixtures::consent(&p, "c1", &[gp.clone(), clinic.clone()]);
        same.recorded_by = gp.clone();
        assert_eq!(judge_change(&gp, false, before, &same, NOW), Err(NOT_OWNER));
    }

    #[test]
    fn a_responsible_organisation_may_widen_and_narrow() {
        let p = fixtures::patient(1);
        let (gp, clinic) = (fixtures::gp(), fixtures::lung_clinic());
        let grant = recorded_by(
            fixtures::consent(&p, "g", std::slice::from_ref(&clinic)),
            &gp,
        );
        assert_eq!(judge_change(&gp, true, state(&[]), &grant, NOW), Ok(()));
        let deny = recorded_by(deny_for(&clinic, "d"), &gp);
        assert_eq!(judge_change(&gp, true, state(&[grant]), &deny, NOW), Ok(()));
    }
}

#[cfg(test)]
#[path = "consent_authority/masked_tests.rs"]
mod masked_tests;
