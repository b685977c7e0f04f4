//! Records whose effect is masked today (ARCHITECTURE.md guarantee 9, found by a hostile
//! review): judged only against the patient's directives as they are now, a record masked
//! by a deny, by a redundant permit or by nobody having access yet would change nothing
//! today and take effect later, when the patient's own directives change. Each test is such
//! an attack by a stolen, non-enrolled credential; the rule refuses it because it also
//! judges what the record can ever do (`latent`).

use super::tests::{NOW, recorded_by as by, state};
use super::*;
use dho_routing_core::authority::judge;
use dho_schemas::fixtures;

const ALL: [DataCategory; 3] = [
    DataCategory::Measurement,
    DataCategory::SelfReport,
    DataCategory::Alert,
];

/// The patient's own objection, as the portal records it: deny everyone everything.
fn patient_objects(p: &PatientIdentifier) -> Consent {
    let mut c = fixtures::consent(p, "portal.objection", &[]);
    c.provisions = vec![ConsentProvision {
        kind: ProvisionKind::Deny,
        actor: None,
        categories: ALL.to_vec(),
        period_start: None,
        period_end: None,
        professional: None,
        parent: None,
    }];
    c
}

/// (a) A self-grant hidden behind the patient's objection: judged "nothing new" now (the
/// deny wins), it grants the GP as soon as the patient lifts the objection.
#[test]
fn a_permit_masked_by_the_patients_deny_is_refused() {
    let p = fixtures::patient(1);
    let gp = fixtures::gp();
    let before = state(&[patient_objects(&p)]);
    let grant = by(
        fixtures::consent(&p, "gp.g", std::slice::from_ref(&gp)),
        &gp,
    );
    let verdict = judge_change(&gp, false, before.clone(), &grant, NOW);
    // What it does later: the patient (portal, any change allowed) withdraws the objection.
    let mut later_before = before.clone();
    later_before.insert(state_key(&p, &grant.consent_id), grant.clone());
    let mut later_after = later_before.clone();
    later_after.remove(&state_key(&p, "portal.objection"));
    let effect = judge(&later_before, &later_after, NOW);
    assert!(
        effect.widened.contains(&(gp.system, gp.value.clone())),
        "the planted permit grants the GP once the objection is lifted: {effect:?}"
    );
    assert_eq!(
        verdict,
        Err(WIDENS),
        "a permit the patient's deny masks today is a latent self-grant"
    );
}

/// (a)/(c) A redundant self-permit outlives the patient's withdrawal of the permit it
/// copied: status `inactive` on the portal's directive no longer ends the GP's access.
#[test]
fn a_redundant_permit_is_refused() {
    let p = fixtures::patient(1);
    let (gp, clinic) = (fixtures::gp(), fixtures::lung_clinic());
    let portal_permit = fixtures::consent(&p, "portal.c1", &[gp.clone(), clinic.clone()]);
    let before = state(std::slice::from_ref(&portal_permit));
    let copy = by(
        fixtures::consent(&p, "gp.copy", std::slice::from_ref(&gp)),
        &gp,
    );
    assert_eq!(
        judge_change(&gp, false, before, &copy, NOW),
        Err(WIDENS),
        "a permit that copies the patient's permit keeps the GP in after the patient withdraws"
    );
}

/// (b) A deny planted before anyone has access: nothing narrows today, so it passes; it
/// cuts the clinic off from the red alerts the patient grants it later, and no
/// "sharing ended" notice is ever sent (sharing never started).
#[test]
fn a_deny_of_another_organisation_planted_before_it_has_access_is_refused() {
    let p = fixtures::patient(1);
    let (gp, clinic) = (fixtures::gp(), fixtures::lung_clinic());
    let mut deny_clinic = by(
        fixtures::consent(&p, "gp.d", std::slice::from_ref(&clinic)),
        &gp,
    );
    deny_clinic.provisions[0].kind = ProvisionKind::Deny;
    assert_eq!(
        judge_change(&gp, false, state(&[]), &deny_clinic, NOW),
        Err(NARROWS_OTHERS),
        "a deny naming the clinic, planted while the clinic has no access yet"
    );
    let mut blanket = deny_clinic.clone();
    blanket.consent_id = "gp.blanket".into();
    blanket.provisions[0].actor = None;
    assert_eq!(
        judge_change(&gp, false, state(&[]), &blanket, NOW),
        Err(NARROWS_OTHERS),
        "a blanket deny planted on a patient nobody follows yet (patient numbers enumerate)"
    );
}

/// (b) A professional deny that applies to every organisation's deliveries, planted while
/// nobody has access.
#[test]
fn a_professional_deny_planted_before_anyone_has_access_is_refused() {
    let p = fixtures::patient(1);
    let gp = fixtures::gp();
    let mut deny = by(fixtures::consent(&p, "gp.hpr", &[]), &gp);
    deny.provisions = vec![ConsentProvision {
        kind: ProvisionKind::Deny,
        actor: None,
        categories: ALL.to_vec(),
        period_start: None,
        period_end: None,
        professional: Some(HealthProfessional {
            hpr_number: "9144889".into(),
        }),
        parent: None,
    }];
    assert_eq!(
        judge_change(&gp, false, state(&[]), &deny, NOW),
        Err(NARROWS_OTHERS),
        "a top-level professional deny governs every organisation's deliveries"
    );
}

/// (c) The GP's own deny (recorded on the patient's behalf) removed while the patient's
/// objection masks it: when the patient lifts the objection, the GP is back in.
#[test]
fn inactivating_ones_own_masked_deny_is_refused() {
    let p = fixtures::patient(1);
    let gp = fixtures::gp();
    let permit = fixtures::consent(&p, "portal.c1", std::slice::from_ref(&gp));
    let mut own_deny = by(
        fixtures::consent(&p, "gp.d", std::slice::from_ref(&gp)),
        &gp,
    );
    own_deny.provisions[0].kind = ProvisionKind::Deny;
    let before = state(&[permit, own_deny.clone(), patient_objects(&p)]);
    let mut inactive = own_deny;
    inactive.status = ConsentStatus::Inactive;
    assert_eq!(
        judge_change(&gp, false, before, &inactive, NOW),
        Err(WIDENS),
        "withdrawing one's own deny is a widening even while another deny masks it"
    );
}
