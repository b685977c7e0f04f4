//! A credential found misused (issue 19): `dho-admin changes --credential` lists what it
//! changed in patients' consent lately, and `dho-admin undo --credential` puts each
//! directive back as it was before, leaving one that someone else changed since; both
//! audited. And `dho-admin enrol` is what makes an organisation responsible: the same
//! widening refused before the enrolment is recorded after it.

use std::collections::BTreeMap;

use dho_gateway::fhir_consent;
use dho_publisher::state::patient_state;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::ingest::{
    GP_TOKEN, HOME_TOKEN, Http, PORTAL_TOKEN, admin_ok, enrol, gateway_config, json_lines, portal,
    start_gateway,
};
use dho_tests::{Stack, read_decoded, read_topic};

/// The patient's current directives, by consent id.
async fn directives(stack: &Stack, patient: &PatientIdentifier) -> BTreeMap<String, Consent> {
    let topic = stack.settings.topics().consents();
    patient_state::<Consent>(&stack.settings, &topic, patient)
        .await
        .unwrap()
        .into_values()
        .map(|c| (c.consent_id.clone(), c))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_undo_puts_back_what_a_misused_credential_changed_and_both_looks_are_audited() {
    let stack = Stack::start().await;
    let gw = start_gateway(gateway_config(&stack.settings)).await;
    let http = Http::new(gw.url());
    let (patient, other) = (fixtures::patient(2001), fixtures::patient(2002));
    let (home, gp, clinic) = (
        fixtures::home_care(),
        fixtures::gp(),
        fixtures::lung_clinic(),
    );
    let post = |token: &'static str, body: serde_json::Value| {
        let http = &http;
        async move { http.post("/fhir/Consent", Some(token), &body).await }
    };

    // The patient shares with the GP through the portal.
    let share = fhir_consent(
        "share",
        &patient,
        ProvisionKind::Permit,
        true,
        std::slice::from_ref(&gp),
    );
    assert_eq!(post(PORTAL_TOKEN, share).await.status, 201);
    // Home care may not widen yet; once enrolled (by an operator) it may.
    let to_clinic = fhir_consent(
        "clinic",
        &patient,
        ProvisionKind::Permit,
        true,
        std::slice::from_ref(&clinic),
    );
    let refused = post(HOME_TOKEN, to_clinic.clone()).await;
    assert_eq!(refused.status, 403, "{}", refused.json);
    enrol(&stack, &patient, &home);
    enrol(&stack, &other, &home);
    let listed = json_lines(&admin_ok(&stack, &["enrolments", &patient.value]));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["organisation"]["value"], home.value.as_str());
    assert_ne!(
        listed[0]["patient"],
        patient.value.as_str(),
        "a pseudonym, not the number"
    );

    // Then home care's token is misused: a permit for the clinic and a deny cutting the GP
    // off, and a permit for the clinic on the other patient.
    assert_eq!(post(HOME_TOKEN, to_clinic).await.status, 201);
    let cut_gp = fhir_consent(
        "cut",
        &patient,
        ProvisionKind::Deny,
        true,
        std::slice::from_ref(&gp),
    );
    assert_eq!(post(HOME_TOKEN, cut_gp).await.status, 201);
    let other_grant = fhir_consent(
        "clinic",
        &other,
        ProvisionKind::Permit,
        true,
        std::slice::from_ref(&clinic),
    );
    assert_eq!(post(HOME_TOKEN, other_grant.clone()).await.status, 201);
    // The GP narrows its own access on the other patient: its own record, not undone.
    let gp_pause = fhir_consent(
        "pause",
        &other,
        ProvisionKind::Deny,
        true,
        std::slice::from_ref(&gp),
    );
    assert_eq!(post(GP_TOKEN, gp_pause).await.status, 201);
    // An operator rewrites home care's grant on the other patient after the misuse.
    admin_ok(
        &stack,
        &[
            "grant",
            "--patient",
            &other.value,
            "--recipient",
            &clinic.value,
            "--consent-id",
            &format!("{}.clinic", home.value),
            "--recorded-by",
            &home.value,
        ],
    );

    // The listing: the credential's three changes, patients as pseudonyms.
    let changes = json_lines(&admin_ok(
        &stack,
        &["changes", "--credential", "bergen-home-care"],
    ));
    assert_eq!(changes.len(), 3, "{changes:#?}");
    for c in &changes {
        assert_ne!(c["patient"], patient.value.as_str());
        assert_ne!(c["patient"], other.value.as_str());
    }

    // Undo: the first patient's two directives deleted (home care made them), the other
    // patient's left (an operator changed it since) and said so.
    let out = json_lines(&admin_ok(
        &stack,
        &["undo", "--credential", "bergen-home-care"],
    ));
    let summary = out.last().unwrap();
    assert_eq!(summary["summary"]["undone"], 2, "{out:#?}");
    assert_eq!(summary["summary"]["left"], 1, "{out:#?}");
    assert!(out.iter().any(|l| {
        l["left"]
            .as_str()
            .is_some_and(|s| s.contains("changed since"))
    }));
    let now = directives(&stack, &patient).await;
    assert_eq!(
        now.keys().collect::<Vec<_>>(),
        vec![&format!("{}.share", portal().value)],
        "only the patient's own share is left"
    );
    assert!(
        directives(&stack, &other)
            .await
            .contains_key(&format!("{}.clinic", home.value))
    );

    // Every put-back is a consent change of its own, through the undo channel.
    let audit: Vec<ConsentChange> =
        read_decoded(&stack.settings, &stack.settings.topics().consent_audit()).await;
    let undone: Vec<&ConsentChange> = audit.iter().filter(|c| c.channel == "admin-undo").collect();
    assert_eq!(undone.len(), 2);
    assert!(undone.iter().all(|c| c.action == ConsentAction::Deleted));
    // And the look and the undo are audited on the operator's topic.
    let looks: Vec<serde_json::Value> =
        read_topic(&stack.settings, &stack.settings.topics().operator_audit())
            .into_iter()
            .map(|r| serde_json::from_slice(&r.value.unwrap()).unwrap())
            .collect();
    let commands: Vec<&str> = looks
        .iter()
        .map(|l| l["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands, vec!["changes", "undo"]);
    assert!(looks.iter().all(|l| l["credential"] == "bergen-home-care"));
    gw.stop().await.unwrap();
}
