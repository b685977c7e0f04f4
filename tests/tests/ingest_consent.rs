//! Consent and subscriptions through the gateway change what the router delivers, end to
//! end against the real broker: a subscription and a permitting consent recorded by the
//! care organisation let a reading through; the same consent withdrawn stops the next one;
//! every change is audited (who, what, when). The operator CLI (`dho-admin`, run as the
//! program it is) lists the patient's consents and the subscriber's subscriptions with
//! pseudonyms only, and its grant lets readings through again.

use dho_gateway::fhir_consent;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::ingest::{
    HOME, HOME_TOKEN, Http, admin_ok, enrol, gateway_config, json_lines, publish_routed,
    start_gateway,
};
use dho_tests::{Stack, read_decoded, wait_for};
use serde_json::Value;

const GROUP: &str = "router";

/// Publishes a reading through the gateway and waits until the router has routed it.
async fn reading(stack: &Stack, http: &Http, patient: &PatientIdentifier, value: f64) -> String {
    let m = fixtures::spo2(patient, value, now_millis() - 10_000);
    publish_routed(stack, http, GROUP, &m).await
}

fn delivered(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .filter_map(|d| d.measurement.as_ref().map(|m| m.event_id.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_consent_recorded_then_withdrawn_through_the_gateway_changes_what_is_delivered() {
    let stack = Stack::start().await;
    let gw = start_gateway(gateway_config(&stack.settings)).await;
    let http = Http::new(gw.url());
    let topics = stack.settings.topics();
    let deliver = topics.deliver(HOME);
    let patient = fixtures::patient(42);
    let router = stack.spawn_router(GROUP).await;
    // Home care is responsible for the patient's follow-up: it records consent on the
    // patient's behalf (a permit widens sharing; see `consent_authority`).
    enrol(&stack, &patient, &fixtures::home_care());

    // Home care subscribes to the patient (its own subscription) and records consent.
    let mut sub = serde_json::to_value(fixtures::subscription(
        &patient,
        HOME,
        &fixtures::home_care(),
    ))
    .unwrap();
    sub.as_object_mut().unwrap().remove("subscription_id");
    let s = http.post("/subscriptions", Some(HOME_TOKEN), &sub).await;
    assert_eq!(s.status, 201, "{}", s.json);
    let subscription_id = s.json["subscription_id"].as_str().unwrap().to_string();
    assert!(subscription_id.starts_with("bergen-home-care."));

    // Without consent nothing is delivered (default deny).
    let before = reading(&stack, &http, &patient, 95.0).await;
    let permit = fhir_consent(
        "home-1",
        &patient,
        ProvisionKind::Permit,
        true,
        &[fixtures::home_care()],
    );
    let c = http.post("/fhir/Consent", Some(HOME_TOKEN), &permit).await;
    assert_eq!(c.status, 201, "{}", c.json);
    let consent_id = format!("{}.home-1", fixtures::home_care().value);
    assert_eq!(c.json["id"], consent_id.as_str());
    assert_eq!(
        c.headers["location"].to_str().unwrap(),
        format!("Consent/{consent_id}")
    );

    let permitted = reading(&stack, &http, &patient, 94.0).await;
    let deliveries: Vec<Delivery> = wait_for(&stack.settings, &deliver, 1).await;
    assert_eq!(delivered(&deliveries), vec![permitted.clone()]);
    assert_eq!(deliveries[0].consent_id, consent_id);

    // Withdrawn: the same directive, inactive.
    let withdraw = fhir_consent(
        "home-1",
        &patient,
        ProvisionKind::Permit,
        false,
        &[fixtures::home_care()],
    );
    let w = http
        .post("/fhir/Consent", Some(HOME_TOKEN), &withdraw)
        .await;
    assert_eq!(w.status, 201, "{}", w.json);
    let withheld = reading(&stack, &http, &patient, 93.0).await;
    let deliveries: Vec<Delivery> = read_decoded(&stack.settings, &deliver).await;
    assert_eq!(delivered(&deliveries), vec![permitted.clone()]);
    assert!(!delivered(&deliveries).contains(&before));
    assert!(!delivered(&deliveries).contains(&withheld));

    // Each change was audited: who recorded what, when, through what.
    let changes: Vec<ConsentChange> = read_decoded(&stack.settings, &topics.consent_audit()).await;
    assert_eq!(changes.len(), 2);
    assert_eq!(
        changes.iter().map(|c| c.action).collect::<Vec<_>>(),
        vec![ConsentAction::Recorded, ConsentAction::Withdrawn]
    );
    for change in &changes {
        assert_eq!(change.consent_id, consent_id);
        assert_eq!(change.patient, patient);
        assert_eq!(change.principal, HOME);
        assert_eq!(change.channel, "gateway");
        assert!(change.changed_by.same_entity(&fixtures::home_care()));
        assert!(change.changed_at > 0);
    }
    assert_eq!(
        changes[1].consent.as_ref().map(|c| c.status),
        Some(ConsentStatus::Inactive)
    );

    // The operator's view: the current directive (inactive) and the subscription, with
    // the patient as a pseudonym only.
    let listed = json_lines(&admin_ok(&stack, &["consents", &patient.value]));
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["consent_id"], consent_id.as_str());
    assert_eq!(listed[0]["status"], "INACTIVE");
    let subs = admin_ok(&stack, &["subscriptions", HOME]);
    let subs_text = String::from_utf8_lossy(&subs.stdout).to_string();
    assert_eq!(json_lines(&subs).len(), 1);
    assert_eq!(
        json_lines(&subs)[0]["subscription_id"],
        subscription_id.as_str()
    );
    for text in [listed[0].to_string(), subs_text] {
        assert!(!text.contains(&patient.value), "a listing shows the number");
    }

    // The operator grants again through the CLI: readings flow again.
    admin_ok(
        &stack,
        &[
            "grant",
            "--patient",
            &patient.value,
            "--recipient",
            &fixtures::home_care().value,
            "--recorded-by",
            &fixtures::home_care().value,
            "--consent-id",
            "cli-1",
            "--operator",
            "test-operator",
        ],
    );
    let again = reading(&stack, &http, &patient, 92.0).await;
    let deliveries: Vec<Delivery> = wait_for(&stack.settings, &deliver, 2).await;
    assert_eq!(delivered(&deliveries), vec![permitted, again]);
    assert_eq!(
        json_lines(&admin_ok(&stack, &["consents", &patient.value])).len(),
        2
    );

    // ... and revokes it: the directive is gone, the revocation audited.
    admin_ok(
        &stack,
        &[
            "revoke",
            "--patient",
            &patient.value,
            "--consent-id",
            "cli-1",
            "--recorded-by",
            &fixtures::home_care().value,
        ],
    );
    assert_eq!(
        json_lines(&admin_ok(&stack, &["consents", &patient.value])).len(),
        1
    );
    let changes: Vec<ConsentChange> = read_decoded(&stack.settings, &topics.consent_audit()).await;
    assert_eq!(changes.len(), 4);
    assert_eq!(changes[2].principal, "test-operator");
    assert_eq!(changes[2].channel, "admin-cli");
    assert_eq!(changes[3].action, ConsentAction::Deleted);

    // Home care ends its subscription through the gateway.
    let d = http
        .send(
            reqwest::Method::DELETE,
            &format!("/subscriptions/{subscription_id}"),
            Some(HOME_TOKEN),
            Some(&serde_json::json!({"patient": patient})),
        )
        .await
        .unwrap();
    assert_eq!(d.status, 204);
    assert!(json_lines(&admin_ok(&stack, &["subscriptions", HOME])).is_empty());

    router.stop().await;
    gw.stop().await.unwrap();
}

/// HL7 Norway's own withdrawal examples (conformance/fixtures/consent), sent for the test's
/// patient: a deny for one health professional leaves the organisation's deliveries flowing
/// and names the professional in each; a deny for everyone stops them. A research consent
/// is refused, naming its scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_consent_hl7_norway_withdrawals_deny_a_professional_and_then_everyone() {
    let stack = Stack::start().await;
    let gw = start_gateway(gateway_config(&stack.settings)).await;
    let http = Http::new(gw.url());
    let deliver = stack.settings.topics().deliver(HOME);
    let patient = fixtures::patient(43);
    let router = stack.spawn_router(GROUP).await;
    enrol(&stack, &patient, &fixtures::home_care());
    let mut sub = serde_json::to_value(fixtures::subscription(
        &patient,
        HOME,
        &fixtures::home_care(),
    ))
    .unwrap();
    sub.as_object_mut().unwrap().remove("subscription_id");
    assert_eq!(
        http.post("/subscriptions", Some(HOME_TOKEN), &sub)
            .await
            .status,
        201
    );
    let permit = fhir_consent(
        "share",
        &patient,
        ProvisionKind::Permit,
        true,
        &[fixtures::home_care()],
    );
    let c = http.post("/fhir/Consent", Some(HOME_TOKEN), &permit).await;
    assert_eq!(c.status, 201, "{}", c.json);
    // The answer is the directive as the hub stored it, as HL7 Norway's profile has it.
    assert_eq!(c.json["scope"]["coding"][0]["code"], "patient-privacy");
    assert_eq!(
        c.json["provision"]["actor"][0]["role"]["coding"][0]["code"],
        "IRCP"
    );

    let upstream = |name: &str| {
        let path = format!(
            "{}/../conformance/fixtures/consent/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut json: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        json["patient"] = serde_json::json!({"identifier": {"system": patient.system.oid(), "value": patient.value}});
        json
    };
    let one_professional = upstream("HNConsentProfileExample003");
    let r = http
        .post("/fhir/Consent", Some(HOME_TOKEN), &one_professional)
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let first = reading(&stack, &http, &patient, 95.0).await;
    let deliveries: Vec<Delivery> = wait_for(&stack.settings, &deliver, 1).await;
    assert_eq!(delivered(&deliveries), vec![first.clone()]);
    assert_eq!(
        deliveries[0].professional_denies,
        vec!["9144897".to_string()]
    );

    let mut research = upstream("HNConsentProfileExample001");
    research["scope"]["coding"][0]["code"] = "research".into();
    let refused = http
        .post("/fhir/Consent", Some(HOME_TOKEN), &research)
        .await;
    assert_eq!(refused.status, 422, "{}", refused.json);
    assert_eq!(
        refused.json["issue"][0]["expression"][0], "Consent.scope",
        "{}",
        refused.json
    );

    let everyone = upstream("HNConsentProfileExample001");
    let r = http
        .post("/fhir/Consent", Some(HOME_TOKEN), &everyone)
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let withheld = reading(&stack, &http, &patient, 94.0).await;
    let deliveries: Vec<Delivery> = read_decoded(&stack.settings, &deliver).await;
    assert_eq!(delivered(&deliveries), vec![first]);
    assert!(!delivered(&deliveries).contains(&withheld));

    router.stop().await;
    gw.stop().await.unwrap();
}
