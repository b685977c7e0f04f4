//! Issue 19's hostile matrix: every attempt of a caller to do what it may not, refused with
//! the right status and audited on `<prefix>.audit.refusals` (who, which route, why, about
//! which patient when known), against a real gateway on Apache Kafka. Beside each, the
//! allowed counterpart still works, so the refusals are the rule and not a broken route.
//!
//! The rule for consent (`gateway/src/consent_authority.rs`): widening a patient's sharing
//! is the patient's own channel's (a portal) or a responsible organisation's
//! (`dho-admin enrol`); any other organisation may only narrow its own access. A direct
//! write to a state topic without the ACL is refused by the broker itself:
//! `broker_acl::a_principal_without_the_acl_cannot_write_a_state_topic`. A subscriber id
//! listed by two credentials is refused at start (last row here, and `auth.rs`'s unit test).

use std::time::{Duration, Instant};

use dho_gateway::{RunningGateway, fhir_consent};
use dho_schemas::codec;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_schemas::wire;
use dho_tests::ingest::{
    GP_TOKEN, HOME_TOKEN, Http, OTHER_PLATFORM_TOKEN, PLATFORM_TOKEN, PORTAL_TOKEN, enrol,
    gateway_config, start_gateway,
};
use dho_tests::{Stack, read_topic};
use reqwest::Method;
use serde_json::{Value, json};

/// One attempt: what, by whom, on which route, with what body; the status and the audited
/// reason it must get.
struct Attempt {
    what: &'static str,
    method: Method,
    path: String,
    token: &'static str,
    principal: &'static str,
    body: Value,
    status: u16,
    reason: &'static str,
}

fn attempt(
    what: &'static str,
    (method, path): (Method, &str),
    (token, principal): (&'static str, &'static str),
    body: Value,
    (status, reason): (u16, &'static str),
) -> Attempt {
    Attempt {
        what,
        method,
        path: path.to_string(),
        token,
        principal,
        body,
        status,
        reason,
    }
}

const GP: (&str, &str) = (GP_TOKEN, "sentrum-gp");
const HOME: (&str, &str) = (HOME_TOKEN, "bergen-home-care");
const PLATFORM: (&str, &str) = (PLATFORM_TOKEN, "test-platform");
const OTHER_PLATFORM: (&str, &str) = (OTHER_PLATFORM_TOKEN, "other-platform");
const PORTAL: (&str, &str) = (PORTAL_TOKEN, "test-portal");

fn consent(
    id: &str,
    patient: &PatientIdentifier,
    kind: ProvisionKind,
    active: bool,
    actors: &[OrganisationIdentifier],
) -> Value {
    fhir_consent(id, patient, kind, active, actors)
}

/// The refusal audit records so far.
fn refusals(stack: &Stack) -> Vec<AccessRefusal> {
    read_topic(&stack.settings, &stack.settings.topics().refusal_audit())
        .into_iter()
        .map(|r| {
            let value = r.value.expect("a value");
            let (_, body) = wire::unframe(&value).expect("framed");
            codec::decode(body).expect("decodes")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_every_attempt_is_refused_with_its_status_and_audited() {
    let stack = Stack::start().await;
    let mut config = gateway_config(&stack.settings);
    // Room for the GP's attempts below, then the limit is reached on purpose.
    config.consent_changes_per_minute = 7;
    let gw = start_gateway(config).await;
    let http = Http::new(gw.url());
    let (patient, fresh) = (fixtures::patient(1901), fixtures::patient(1902));
    let (home, gp, clinic) = (
        fixtures::home_care(),
        fixtures::gp(),
        fixtures::lung_clinic(),
    );
    // An organisation nobody shares with.
    let other = OrganisationIdentifier::orgnr(fixtures::orgnr(97_000_001), "Another clinic");

    // The patient shares with home care and the GP, through the portal (allowed: the
    // patient's own channel widens). Home care is responsible for the follow-up.
    let shared = consent(
        "share",
        &patient,
        ProvisionKind::Permit,
        true,
        &[home.clone(), gp.clone()],
    );
    let a = http
        .post("/fhir/Consent", Some(PORTAL_TOKEN), &shared)
        .await;
    assert_eq!(a.status, 201, "{}", a.json);
    enrol(&stack, &patient, &home);
    // The GP narrows its own access (allowed: any organisation, its own access only).
    let own_deny = consent(
        "gp-pause",
        &patient,
        ProvisionKind::Deny,
        true,
        std::slice::from_ref(&gp),
    );
    let a = http.post("/fhir/Consent", Some(GP_TOKEN), &own_deny).await;
    assert_eq!(a.status, 201, "{}", a.json);
    // Home care, responsible, widens sharing to the lung clinic (allowed).
    let to_clinic = consent(
        "clinic",
        &patient,
        ProvisionKind::Permit,
        true,
        std::slice::from_ref(&clinic),
    );
    let a = http
        .post("/fhir/Consent", Some(HOME_TOKEN), &to_clinic)
        .await;
    assert_eq!(a.status, 201, "{}", a.json);
    // Home care's own subscription and care plan, for the GP to try to take over.
    let mut sub =
        serde_json::to_value(fixtures::subscription(&patient, "bergen-home-care", &home)).unwrap();
    sub["subscription_id"] = "bergen-home-care.p1901".into();
    let a = http.post("/subscriptions", Some(HOME_TOKEN), &sub).await;
    assert_eq!(a.status, 201, "{}", a.json);
    let home_plan = format!("{}.plan", home.value);
    let mut plan = serde_json::to_value(fixtures::care_plan(&patient)).unwrap();
    plan["plan_id"] = home_plan.clone().into();
    for hub_side in ["updated_by", "updated_at"] {
        plan.as_object_mut().unwrap().remove(hub_side);
    }
    let path = format!("/careplans/{home_plan}");
    let a = http
        .send(Method::PUT, &path, Some(HOME_TOKEN), Some(&plan))
        .await
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.json);

    let fhir = "/fhir/Consent";
    let reading = serde_json::to_value(fixtures::spo2(&patient, 95.0, now_millis())).unwrap();
    let mut gp_sub = sub.clone();
    gp_sub["subscriber_org"] = serde_json::to_value(&gp).unwrap();
    let delete_body = json!({"patient": patient});
    let sub_path = "/subscriptions/bergen-home-care.p1901";
    let matrix: Vec<Attempt> = vec![
        attempt(
            "a self-grant",
            (Method::POST, fhir),
            GP,
            consent(
                "mine",
                &fresh,
                ProvisionKind::Permit,
                true,
                std::slice::from_ref(&gp),
            ),
            (403, "widens_sharing"),
        ),
        attempt(
            "a widening by an organisation that is not responsible",
            (Method::POST, fhir),
            GP,
            consent(
                "to-other",
                &patient,
                ProvisionKind::Permit,
                true,
                std::slice::from_ref(&other),
            ),
            (403, "widens_sharing"),
        ),
        attempt(
            "a deny naming another organisation",
            (Method::POST, fhir),
            GP,
            consent(
                "cut-home",
                &patient,
                ProvisionKind::Deny,
                true,
                std::slice::from_ref(&home),
            ),
            (403, "narrows_others"),
        ),
        attempt(
            "a blanket deny (everyone's access)",
            (Method::POST, fhir),
            GP,
            consent("cut-all", &patient, ProvisionKind::Deny, true, &[]),
            (403, "narrows_others"),
        ),
        attempt(
            "inactivating one's own deny",
            (Method::POST, fhir),
            GP,
            consent(
                "gp-pause",
                &patient,
                ProvisionKind::Deny,
                false,
                std::slice::from_ref(&gp),
            ),
            (403, "widens_sharing"),
        ),
        attempt(
            "changing another's subscription",
            (Method::PUT, sub_path),
            GP,
            gp_sub,
            (403, "not_owner"),
        ),
        attempt(
            "deleting another's subscription",
            (Method::DELETE, sub_path),
            GP,
            delete_body.clone(),
            (403, "not_owner"),
        ),
        attempt(
            "changing another's care plan",
            (Method::PUT, path.as_str()),
            GP,
            plan.clone(),
            (403, "not_owner"),
        ),
        attempt(
            "deleting another's care plan",
            (Method::DELETE, path.as_str()),
            GP,
            delete_body.clone(),
            (403, "not_owner"),
        ),
        attempt(
            "publishing as another platform",
            (Method::POST, "/measurements"),
            OTHER_PLATFORM,
            reading.clone(),
            (403, "cross_platform"),
        ),
        // A token for the wrong role, on each route.
        attempt(
            "a platform recording consent",
            (Method::POST, fhir),
            PLATFORM,
            shared.clone(),
            (403, "wrong_role"),
        ),
        attempt(
            "a platform subscribing",
            (Method::POST, "/subscriptions"),
            PLATFORM,
            sub.clone(),
            (403, "wrong_role"),
        ),
        attempt(
            "a platform recording a care plan",
            (Method::POST, "/careplans"),
            PLATFORM,
            plan.clone(),
            (403, "wrong_role"),
        ),
        attempt(
            "a care organisation publishing a reading",
            (Method::POST, "/measurements"),
            HOME,
            reading.clone(),
            (403, "wrong_role"),
        ),
        attempt(
            "a care organisation publishing a self-report",
            (Method::POST, "/selfreports"),
            HOME,
            json!({}),
            (403, "wrong_role"),
        ),
        attempt(
            "a care organisation publishing a Bundle",
            (Method::POST, "/fhir/Bundle"),
            HOME,
            json!({"resourceType": "Bundle"}),
            (403, "wrong_role"),
        ),
        attempt(
            "the patient portal subscribing",
            (Method::POST, "/subscriptions"),
            PORTAL,
            sub.clone(),
            (403, "wrong_role"),
        ),
        attempt(
            "the patient portal recording a care plan",
            (Method::POST, "/careplans"),
            PORTAL,
            plan.clone(),
            (403, "wrong_role"),
        ),
        attempt(
            "the patient portal publishing a reading",
            (Method::POST, "/measurements"),
            PORTAL,
            reading.clone(),
            (403, "wrong_role"),
        ),
        // The GP's consent budget: 7 a minute, 6 used above (1 allowed, 5 refused), then one
        // more refused, then throttled.
        attempt(
            "the seventh consent change in a minute",
            (Method::POST, fhir),
            GP,
            consent(
                "mine-again",
                &fresh,
                ProvisionKind::Permit,
                true,
                std::slice::from_ref(&gp),
            ),
            (403, "widens_sharing"),
        ),
        attempt(
            "the eighth consent change in a minute",
            (Method::POST, fhir),
            GP,
            consent(
                "mine-again",
                &fresh,
                ProvisionKind::Permit,
                true,
                std::slice::from_ref(&gp),
            ),
            (429, "rate_limited"),
        ),
    ];
    for a in &matrix {
        let answer = http
            .send(a.method.clone(), &a.path, Some(a.token), Some(&a.body))
            .await
            .unwrap();
        assert_eq!(answer.status, a.status, "{}: {}", a.what, answer.json);
        if a.status == 429 {
            assert!(answer.headers.contains_key("retry-after"), "{}", a.what);
        }
    }

    // Each refusal audited once, naming the credential, the route and the reason; and the
    // patient whenever the body named one.
    let deadline = Instant::now() + Duration::from_secs(30);
    let audited = loop {
        let audited = refusals(&stack);
        if audited.len() >= matrix.len() || Instant::now() > deadline {
            break audited;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        audited.len(),
        matrix.len(),
        "one audit record per refusal: {audited:#?}"
    );
    for a in &matrix {
        assert!(
            audited
                .iter()
                .any(|r| r.principal == a.principal && r.reason == a.reason),
            "{} ({} {}) not audited: {audited:#?}",
            a.what,
            a.principal,
            a.reason
        );
    }
    for r in audited.iter().filter(|r| {
        r.endpoint == "fhir_consent" && r.reason != "wrong_role" && r.reason != "rate_limited"
    }) {
        assert!(
            r.patient.is_some(),
            "a judged consent refusal names its patient: {r:?}"
        );
    }

    // Nothing refused reached the state topics: the consents are the three allowed.
    let consents: Vec<Consent> =
        dho_tests::read_decoded(&stack.settings, &stack.settings.topics().consents()).await;
    let mut ids: Vec<&str> = consents.iter().map(|c| c.consent_id.as_str()).collect();
    ids.sort_unstable();
    let mut expected = vec![
        format!("{}.share", dho_tests::ingest::portal().value),
        format!("{}.gp-pause", gp.value),
        format!("{}.clinic", home.value),
    ];
    expected.sort_unstable();
    assert_eq!(ids, expected);

    // The counter per credential.
    let (_, metrics) = http.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"dho_ingest_consent_changes_total{credential="sentrum-gp",outcome="widens_sharing"} 4"#),
        "{}",
        metrics.lines().filter(|l| l.contains("consent_changes")).collect::<Vec<_>>().join("\n")
    );
    gw.stop().await.unwrap();

    // A subscriber id listed by two credentials: the gateway does not start.
    let mut shared_id = gateway_config(&stack.settings);
    let stolen = shared_id.care_organisations[0].subscriber_ids[0].clone();
    shared_id.care_organisations[1]
        .subscriber_ids
        .push(stolen.clone());
    let Err(e) = RunningGateway::start(shared_id).await else {
        panic!("a gateway with a shared subscriber id started");
    };
    assert!(e.to_string().contains(&stolen), "{e}");
}
