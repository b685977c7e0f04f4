//! Care plans through the gateway, against the real broker: a care organisation records its
//! own plan for a patient (201 only once the broker has it: the plan is on the topic when
//! the answer comes), never as another organisation, never under another's id, and never
//! a plan whose ranges break the rules (422 naming the field); device platforms write none.
//! End to end: a plan, a consent and a subscription recorded through the gateway, and a
//! reading out of the green zone published through it, raise an alert delivery for the
//! subscriber; once the owner deletes the plan, readings raise nothing more. Operators
//! record, list and delete plans with `dho-admin` (the program). Every change, through
//! either, is audited like a consent change: who changed which plan of which patient, when,
//! through what (`<prefix>.audit.careplans`); refused changes leave no record.

use dho_gateway::fhir_consent;
use dho_kafka::KafkaSettings;
use dho_schemas::model::*;
use dho_schemas::{codec, fixtures, wire};
use dho_tests::ingest::{
    GP_TOKEN, HOME, HOME_TOKEN, Http, PLATFORM_TOKEN, PORTAL_TOKEN, gateway_config, publish_routed,
    run_admin, start_gateway,
};
use dho_tests::{Stack, read_decoded, read_topic, read_topic_sizes, wait_for};
use serde_json::{Value, json};

/// A plan body in the native form: SpO2 green from 92, yellow from 88 (red below).
fn plan_json(patient: &PatientIdentifier, plan_id: &str) -> Value {
    let mut plan = serde_json::to_value(fixtures::care_plan(patient)).unwrap();
    plan["plan_id"] = plan_id.into();
    let object = plan.as_object_mut().unwrap();
    // The gateway fills in the author (the caller) and the time.
    object.remove("updated_by");
    object.remove("updated_at");
    plan
}

fn home_plan_id(name: &str) -> String {
    format!("{}.{name}", fixtures::home_care().value)
}

/// The care-plan audit records so far, each with its record key.
fn audited(settings: &KafkaSettings) -> Vec<(CarePlanChange, Option<String>)> {
    read_topic(settings, &settings.topics().careplan_audit())
        .into_iter()
        .map(|r| {
            let value = r.value.expect("a value");
            let (_, body) = wire::unframe(&value).expect("framed");
            let change: CarePlanChange = codec::decode(body).expect("decodes");
            (change, r.key)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_careplans_only_the_owning_care_organisation_records_valid_plans() {
    let stack = Stack::start().await;
    let gw = start_gateway(gateway_config(&stack.settings)).await;
    let http = Http::new(gw.url());
    let topic = stack.settings.topics().careplans();
    let patient = fixtures::patient(71);
    let id = home_plan_id("kols");
    let put = |path: String, token: &'static str, body: Value| {
        let http = http.clone();
        async move {
            http.send(reqwest::Method::PUT, &path, Some(token), Some(&body))
                .await
                .expect("the gateway answers")
        }
    };

    // Home care records its plan: 201, and the plan is on the topic already.
    let before = now_millis();
    let a = put(
        format!("/careplans/{id}"),
        HOME_TOKEN,
        plan_json(&patient, &id),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!(
        a.headers["location"].to_str().unwrap(),
        format!("/careplans/{id}")
    );
    assert_eq!(a.json["topic"], topic.as_str());
    let plans: Vec<CarePlan> = read_decoded(&stack.settings, &topic).await;
    assert_eq!(plans.len(), 1, "the plan is on the topic when 201 comes");
    let plan = &plans[0];
    assert_eq!(plan.plan_id, id);
    assert_eq!(plan.patient, patient);
    assert!(plan.updated_by.same_entity(&fixtures::home_care()));
    assert!(plan.updated_at >= before, "the gateway's clock");
    assert_eq!(plan.targets, fixtures::care_plan(&patient).targets);
    let records = read_topic(&stack.settings, &topic);
    assert_eq!(
        records[0].key.as_deref(),
        Some(format!("{}|{id}", patient.value).as_str())
    );
    assert_eq!(
        i64::from(records[0].partition),
        a.json["partition"].as_i64().unwrap()
    );
    // Audited: who recorded which plan of which patient, when, through what.
    let changes = audited(&stack.settings);
    assert_eq!(changes.len(), 1);
    let (change, key) = &changes[0];
    assert_eq!(key.as_deref(), Some(patient.value.as_str()));
    assert_eq!(change.action, CarePlanAction::Recorded);
    assert_eq!(change.plan_id, id);
    assert_eq!(change.patient, patient);
    assert_eq!(change.plan.as_ref(), Some(plan));
    assert!(change.changed_by.same_entity(&fixtures::home_care()));
    assert_eq!(change.principal, HOME);
    assert_eq!(change.channel, "gateway");
    assert!(change.changed_at >= before);

    // A device platform records no care plan.
    let r = put(
        format!("/careplans/{id}"),
        PLATFORM_TOKEN,
        plan_json(&patient, &id),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.json);
    assert_eq!(r.json["error"]["reason"], "wrong_role");

    // The GP cannot write a plan as home care...
    let gp_id = format!("{}.kols", fixtures::gp().value);
    let mut as_home = plan_json(&patient, &gp_id);
    as_home["updated_by"] = serde_json::to_value(fixtures::home_care()).unwrap();
    let r = put(format!("/careplans/{gp_id}"), GP_TOKEN, as_home).await;
    assert_eq!(r.status, 403, "{}", r.json);
    assert_eq!(r.json["error"]["reason"], "not_owner");
    assert_eq!(r.json["error"]["field"], "updated_by");

    // ... nor overwrite home care's plan under its id, nor delete it.
    let r = put(
        format!("/careplans/{id}"),
        GP_TOKEN,
        plan_json(&patient, &id),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.json);
    assert_eq!(r.json["error"]["reason"], "not_owner");
    assert_eq!(r.json["error"]["field"], "plan_id");
    let patient_body = json!({"patient": serde_json::to_value(&patient).unwrap()});
    let r = http
        .send(
            reqwest::Method::DELETE,
            &format!("/careplans/{id}"),
            Some(GP_TOKEN),
            Some(&patient_body),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.json);
    assert_eq!(r.json["error"]["reason"], "not_owner");

    // A yellow range that does not contain the green one: 422 naming the field.
    let mut bad = plan_json(&patient, &id);
    bad["targets"][0]["yellow"]["low"] = json!(93.0);
    let r = put(format!("/careplans/{id}"), HOME_TOKEN, bad).await;
    assert_eq!(r.status, 422, "{}", r.json);
    assert_eq!(r.json["error"]["field"], "targets[0].yellow");
    assert!(!r.json.to_string().contains(&patient.value));

    // A plan id that is not '<own orgnr>.<name>', and no token at all.
    let r = put(
        "/careplans/kols".into(),
        HOME_TOKEN,
        plan_json(&patient, "kols"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.json);
    assert_eq!(r.json["error"]["field"], "plan_id");
    let r = http
        .send(
            reqwest::Method::PUT,
            &format!("/careplans/{id}"),
            None,
            Some(&plan_json(&patient, &id)),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401);

    // Nothing refused reached the topic, nor the audit.
    let plans: Vec<CarePlan> = read_decoded(&stack.settings, &topic).await;
    assert_eq!(plans.len(), 1);
    assert_eq!(audited(&stack.settings).len(), 1);

    // POST without an id: the gateway names it under the caller.
    let mut unnamed = plan_json(&patient, "x");
    unnamed.as_object_mut().unwrap().remove("plan_id");
    let c = http.post("/careplans", Some(HOME_TOKEN), &unnamed).await;
    assert_eq!(c.status, 201, "{}", c.json);
    let new_id = c.json["plan_id"].as_str().unwrap();
    assert!(new_id.starts_with(&format!("{}.", fixtures::home_care().value)));

    // The owner deletes its plan: a tombstone for the plan's key.
    let d = http
        .send(
            reqwest::Method::DELETE,
            &format!("/careplans/{id}"),
            Some(HOME_TOKEN),
            Some(&patient_body),
        )
        .await
        .unwrap();
    assert_eq!(d.status, 204, "{}", d.json);
    let records = read_topic(&stack.settings, &topic);
    assert_eq!(records.len(), 3);
    let last = records
        .iter()
        .filter(|r| r.key.as_deref() == Some(format!("{}|{id}", patient.value).as_str()))
        .max_by_key(|r| r.offset)
        .unwrap();
    assert!(last.value.is_none(), "a tombstone");
    // Both audited too: the new plan, then the deletion (no plan, by the owner).
    let changes = audited(&stack.settings);
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[1].0.plan_id, new_id);
    let (deleted, key) = &changes[2];
    assert_eq!(key.as_deref(), Some(patient.value.as_str()));
    assert_eq!(deleted.action, CarePlanAction::Deleted);
    assert_eq!(deleted.plan_id, id);
    assert_eq!(deleted.patient, patient);
    assert!(deleted.plan.is_none());
    assert!(deleted.changed_by.same_entity(&fixtures::home_care()));
    assert_eq!(
        (deleted.principal.as_str(), deleted.channel.as_str()),
        (HOME, "gateway")
    );

    // Counted under the endpoint's own label.
    let (_, metrics) = http.get_text("/metrics").await;
    let counted = |outcome: &str| {
        metrics.lines().any(|l| {
            l.starts_with("dho_ingest_requests_total{")
                && l.contains("endpoint=\"careplans\"")
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
    };
    for outcome in ["accepted", "forbidden", "rejected", "unauthorized"] {
        assert!(
            counted(outcome),
            "careplans/{outcome} not counted:\n{metrics}"
        );
    }
    assert!(!metrics.contains(&patient.value));
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_careplans_a_reading_out_of_the_green_zone_raises_an_alert_for_the_subscriber() {
    const GROUP: &str = "router";
    let stack = Stack::start().await;
    let gw = start_gateway(gateway_config(&stack.settings)).await;
    let http = Http::new(gw.url());
    let deliver = stack.settings.topics().deliver(HOME);
    let patient = fixtures::patient(72);
    let router = stack.spawn_router(GROUP).await;

    // Home care: its care plan, a consent permitting it, its subscription.
    let id = home_plan_id("egenbehandlingsplan");
    let p = http
        .send(
            reqwest::Method::PUT,
            &format!("/careplans/{id}"),
            Some(HOME_TOKEN),
            Some(&plan_json(&patient, &id)),
        )
        .await
        .unwrap();
    assert_eq!(p.status, 201, "{}", p.json);
    let consent = fhir_consent(
        "home-1",
        &patient,
        ProvisionKind::Permit,
        true,
        &[fixtures::home_care()],
    );
    let c = http
        .post("/fhir/Consent", Some(PORTAL_TOKEN), &consent)
        .await;
    assert_eq!(c.status, 201, "{}", c.json);
    let mut sub = serde_json::to_value(fixtures::subscription(
        &patient,
        HOME,
        &fixtures::home_care(),
    ))
    .unwrap();
    sub["subscription_id"] = format!("{HOME}.p72").into();
    let s = http.post("/subscriptions", Some(HOME_TOKEN), &sub).await;
    assert_eq!(s.status, 201, "{}", s.json);

    // Publishes SpO2 `value` through the gateway and waits until it is routed.
    let reading = |value: f64| {
        let (http, stack, patient) = (&http, &stack, &patient);
        async move {
            let m = fixtures::spo2(patient, value, now_millis() - 5_000);
            publish_routed(stack, http, GROUP, &m).await
        }
    };
    let alerts = |deliveries: &[Delivery]| {
        deliveries
            .iter()
            .filter_map(|d| d.alert.clone())
            .collect::<Vec<_>>()
    };

    // Green: delivered, no alert.
    let green = reading(96.0).await;
    let deliveries: Vec<Delivery> = wait_for(&stack.settings, &deliver, 1).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        deliveries[0].measurement.as_ref().map(|m| &m.event_id),
        Some(&green)
    );

    // Red (below yellow's 88): the reading and a ZONE_ENTERED alert from home care's plan.
    let red = reading(85.0).await;
    let deliveries: Vec<Delivery> = wait_for(&stack.settings, &deliver, 3).await;
    let raised = alerts(&deliveries);
    assert_eq!(raised.len(), 1, "{raised:?}");
    let alert = &raised[0];
    assert_eq!(alert.kind, AlertKind::ZoneEntered);
    assert_eq!(alert.zone, Zone::Red);
    assert_eq!(alert.severity, VkpSeverity::Severe);
    assert_eq!(alert.plan_id, id);
    assert_eq!(alert.patient, patient);
    assert_eq!(alert.triggering_event_id.as_deref(), Some(red.as_str()));
    let with_alert = deliveries.iter().find(|d| d.alert.is_some()).unwrap();
    assert_eq!(with_alert.subscriber_id, HOME);
    assert_eq!(
        with_alert.consent_id,
        format!("{}.home-1", dho_tests::ingest::portal().value)
    );

    // The owner deletes the plan: back in green raises no RESOLVED, there is no plan.
    let d = http
        .send(
            reqwest::Method::DELETE,
            &format!("/careplans/{id}"),
            Some(HOME_TOKEN),
            Some(&json!({"patient": serde_json::to_value(&patient).unwrap()})),
        )
        .await
        .unwrap();
    assert_eq!(d.status, 204, "{}", d.json);
    let after = reading(97.0).await;
    let deliveries: Vec<Delivery> = wait_for(&stack.settings, &deliver, 4).await;
    assert!(
        deliveries
            .iter()
            .any(|d| d.measurement.as_ref().is_some_and(|m| m.event_id == after))
    );
    assert_eq!(alerts(&deliveries).len(), 1, "no alert without a plan");
    assert_eq!(deliveries.len(), 4);

    router.stop().await;
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_careplans_operators_record_list_and_delete_a_plan_with_dho_admin() {
    let stack = Stack::start().await;
    let topic = stack.settings.topics().careplans();
    let patient = fixtures::patient(73);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.json");
    let path = file.to_str().unwrap();

    // Refused before anything is sent: the field and the rule, never the patient.
    let mut bad = serde_json::to_value(fixtures::care_plan(&patient)).unwrap();
    bad["targets"][0]["yellow"]["low"] = json!(95.0);
    std::fs::write(&file, bad.to_string()).unwrap();
    let out = run_admin(&stack, &["care-plan", "--file", path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("targets[0].yellow"), "{stderr}");
    assert!(!stderr.contains(&patient.value), "{stderr}");
    assert_eq!(read_topic_sizes(&stack.settings, &topic), 0);

    // A valid plan (no updated_at: now) is recorded as given.
    let mut good = plan_json(&patient, "lung-clinic.kols");
    good["updated_by"] = serde_json::to_value(fixtures::lung_clinic()).unwrap();
    std::fs::write(&file, good.to_string()).unwrap();
    let before = now_millis();
    let out = run_admin(
        &stack,
        &["care-plan", "--file", path, "--operator", "test-operator"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("lung-clinic.kols"), "{stdout}");
    assert!(!stdout.contains(&patient.value), "{stdout}");
    let plans: Vec<CarePlan> = read_decoded(&stack.settings, &topic).await;
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].plan_id, "lung-clinic.kols");
    assert!(plans[0].updated_by.same_entity(&fixtures::lung_clinic()));
    assert!(plans[0].updated_at >= before);

    // Listed with a pseudonym, then deleted.
    let out = run_admin(&stack, &["care-plans", &patient.value]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains("lung-clinic.kols") && !listed.contains(&patient.value));
    let out = run_admin(
        &stack,
        &[
            "delete-care-plan",
            "--patient",
            &patient.value,
            "--plan-id",
            "lung-clinic.kols",
            "--recorded-by",
            &fixtures::lung_clinic().value,
            "--operator",
            "test-operator",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_admin(&stack, &["care-plans", &patient.value]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 0);

    // Both audited (the refused plan is not): by the operator, through the CLI, for the
    // lung clinic.
    let changes: Vec<CarePlanChange> = audited(&stack.settings)
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(
        changes.iter().map(|c| c.action).collect::<Vec<_>>(),
        vec![CarePlanAction::Recorded, CarePlanAction::Deleted]
    );
    assert_eq!(changes[0].plan.as_ref(), Some(&plans[0]));
    assert!(changes[1].plan.is_none());
    for change in &changes {
        assert_eq!(change.plan_id, "lung-clinic.kols");
        assert_eq!(change.patient, patient);
        assert!(change.changed_by.same_entity(&fixtures::lung_clinic()));
        assert_eq!(change.principal, "test-operator");
        assert_eq!(change.channel, "admin-cli");
        assert!(change.changed_at >= before);
    }
}
