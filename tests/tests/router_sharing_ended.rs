//! The "sharing ended" notice (issue 19, item 1), against the development broker: a consent
//! change that ends an organisation's deliveries of a patient sends exactly that
//! organisation one delivery without clinical content, naming who recorded the change and
//! when; the others get none, and neither does an organisation that ended its own
//! subscription. A router killed between sending the notice and committing it leaves the
//! next one to send it again: in exactly-once mode a `read_committed` subscriber sees it
//! once, with the same delivery id as the aborted one.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use dho_kafka::KafkaSettings;
use dho_publisher::Publisher;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_tests::{RouterProcess, Stack, read_decoded, read_topic, wait_receipt_routed};

const ALL: [DataCategory; 3] = [
    DataCategory::Measurement,
    DataCategory::SelfReport,
    DataCategory::Alert,
];
const RECORDED_AT: Millis = 1_767_225_600_000;

fn subscribers() -> [(&'static str, OrganisationIdentifier); 3] {
    [
        ("gp", fixtures::gp()),
        ("home", fixtures::home_care()),
        ("lung", fixtures::lung_clinic()),
    ]
}

/// One consent permitting all three organisations every category (a permit must name
/// its organisation).
fn blanket(patient: &PatientIdentifier, status: ConsentStatus) -> Consent {
    let orgs = subscribers().map(|(_, org)| org);
    let mut c = fixtures::consent(patient, "c-blanket", &orgs);
    c.status = status;
    c.recorded_by = fixtures::gp();
    c.recorded_at = RECORDED_AT;
    c
}

/// The patient's own deny of home care, recorded on their behalf by the GP at `RECORDED_AT`.
fn deny_home_care(patient: &PatientIdentifier) -> Consent {
    let mut c = fixtures::consent(patient, "c-deny-home", &[]);
    c.provisions = vec![ConsentProvision::organisation(
        ProvisionKind::Deny,
        fixtures::home_care(),
        ALL.to_vec(),
    )];
    c.recorded_by = fixtures::gp();
    c.recorded_at = RECORDED_AT + 1;
    c
}

/// The blanket permit, and the three organisations subscribed to everything.
async fn setup(publisher: &Publisher, patient: &PatientIdentifier) {
    publisher
        .put_consent(&blanket(patient, ConsentStatus::Active))
        .await
        .unwrap();
    for (subscriber, org) in subscribers() {
        publisher
            .put_subscription(&fixtures::subscription(patient, subscriber, &org))
            .await
            .unwrap();
    }
}

/// Publishes a reading of `patient` and waits until the router group committed past it:
/// every consent change acknowledged before it is judged by then.
async fn reading_routed(
    stack: &Stack,
    publisher: &Publisher,
    group: &str,
    patient: &PatientIdentifier,
) {
    let receipt = publisher
        .publish_measurement(&fixtures::spo2(patient, 95.0, now_millis() - 1_000))
        .await
        .unwrap();
    wait_receipt_routed(&stack.settings, group, &receipt).await;
}

/// The notices on `subscriber`'s topic as written (repeats included), about `patient`.
async fn notices(stack: &Stack, subscriber: &str, patient: &PatientIdentifier) -> Vec<Delivery> {
    read_decoded::<Delivery>(
        &stack.settings,
        &stack.settings.topics().deliver(subscriber),
    )
    .await
    .into_iter()
    .filter(|d| d.sharing_ended.is_some() && d.patient == *patient)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_narrowing_tells_exactly_the_organisations_whose_deliveries_it_ended() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let group = "sharing-ended";
    // Patient A: home care is denied, the lung clinic ends its own subscription.
    // Patient B: the blanket permit is withdrawn.
    let a = fixtures::patient(41);
    let b = fixtures::patient(42);
    setup(&publisher, &a).await;
    setup(&publisher, &b).await;
    let router = stack.spawn_router(group).await;
    // Everyone receives: the sharing as it starts is recorded, silently.
    reading_routed(&stack, &publisher, group, &a).await;
    reading_routed(&stack, &publisher, group, &b).await;

    let lung = fixtures::subscription(&a, "lung", &fixtures::lung_clinic());
    publisher
        .delete_subscription(&a, &lung.subscription_id)
        .await
        .unwrap();
    reading_routed(&stack, &publisher, group, &a).await;
    let deny = deny_home_care(&a);
    publisher.put_consent(&deny).await.unwrap();
    let mut withdrawn = blanket(&b, ConsentStatus::Inactive);
    withdrawn.recorded_by = fixtures::home_care();
    withdrawn.recorded_at = RECORDED_AT + 2;
    publisher.put_consent(&withdrawn).await.unwrap();
    reading_routed(&stack, &publisher, group, &a).await;
    reading_routed(&stack, &publisher, group, &b).await;
    router.stop().await;

    let audit: BTreeMap<String, DisclosureRecord> =
        read_decoded::<DisclosureRecord>(&stack.settings, &stack.settings.topics().audit())
            .await
            .into_iter()
            .map(|r| (r.delivery_id.clone(), r))
            .collect();
    let check = |d: &Delivery, consent: &Consent, subscriber: &str| {
        let ended = d.sharing_ended.as_ref().unwrap();
        assert_eq!(ended.recorded_by.as_ref(), Some(&consent.recorded_by));
        assert_eq!(ended.recorded_at, consent.recorded_at);
        assert_eq!(ended.categories, ALL.to_vec());
        assert_eq!(d.consent_id, consent.consent_id);
        assert_eq!(d.subscriber_id, subscriber);
        assert_eq!(d.kind(), DeliveryKind::SharingEnded(ended));
        assert!(
            d.measurement.is_none()
                && d.self_report.is_none()
                && d.alert.is_none()
                && d.reference.is_none(),
            "a notice carries no clinical content"
        );
        let record = audit
            .get(&d.delivery_id)
            .unwrap_or_else(|| panic!("{subscriber}'s notice was not audited"));
        assert_eq!(record.decision_reference, consent.consent_id);
        assert_eq!(record.subscriber_id, subscriber);
    };

    let count = |ds: &[Delivery]| ds.len();
    let (gp_a, home_a, lung_a) = (
        notices(&stack, "gp", &a).await,
        notices(&stack, "home", &a).await,
        notices(&stack, "lung", &a).await,
    );
    assert_eq!(
        (count(&gp_a), count(&home_a), count(&lung_a)),
        (0, 1, 0),
        "patient A: only home care, whose deliveries the deny ended, is told; not the GP, \
         not the lung clinic that ended its own subscription"
    );
    check(&home_a[0], &deny, "home");
    for (subscriber, _) in subscribers() {
        let told = notices(&stack, subscriber, &b).await;
        assert_eq!(
            told.len(),
            1,
            "patient B: {subscriber} is told once that the blanket permit was withdrawn"
        );
        check(&told[0], &withdrawn, subscriber);
    }
    // The flow did end: home care got no reading of A after the deny.
    let home_readings_after =
        read_decoded::<Delivery>(&stack.settings, &stack.settings.topics().deliver("home"))
            .await
            .into_iter()
            .filter(|d| d.patient == a && d.measurement.is_some())
            .count();
    assert_eq!(
        home_readings_after, 2,
        "home care got A's two readings before the deny"
    );
}

/// A router config file: exactly-once, and a no-data timer that never runs in the test
/// (so the notice goes out in the reading's batch, where the fault holds it).
fn config_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("router.toml");
    std::fs::write(
        &path,
        "transactional_id = \"sharing-ended-eos\"\n\
         session_timeout = 2\n\
         silence_check_interval = 3600\n\
         [kafka]\n\
         bootstrap_servers = \"unused\"\n\
         schema_registry_url = \"http://unused\"\n",
    )
    .unwrap();
    path
}

async fn start_router(
    stack: &Stack,
    config: &Path,
    log: &Path,
    fault: Option<&str>,
) -> RouterProcess {
    let config = config.display().to_string();
    let env: Vec<(&str, &str)> = fault.map(|f| ("DHO_ROUTER_FAULT", f)).into_iter().collect();
    RouterProcess::start_with_env(
        stack,
        "sharing-ended-eos",
        &["--config", &config],
        &env,
        "warn",
        log,
    )
    .await
}

/// The notices on `topic` a reader with `isolation` sees: (delivery id, subscriber).
async fn notice_ids(settings: &KafkaSettings, topic: &str, isolation: &str) -> Vec<String> {
    let mut reader = settings.clone();
    reader
        .librdkafka
        .insert("isolation.level".into(), isolation.into());
    let serde = dho_kafka::AvroSerde::new(&settings.schema_registry_url);
    let mut ids = Vec::new();
    for record in read_topic(&reader, topic) {
        let d: Delivery = serde.decode(&record.value.unwrap()).await.unwrap();
        if d.sharing_ended.is_some() {
            ids.push(d.delivery_id);
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_before_committing_the_notice_leaves_it_to_the_next_once() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let group = "sharing-ended-eos";
    let patient = fixtures::patient(43);
    setup(&publisher, &patient).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path());
    let log = dir.path().join("router.log");
    // The second consuming batch (the reading after the deny) is produced and acknowledged,
    // notice included, then held open before its commit.
    let held = start_router(&stack, &config, &log, Some("hold-before-commit@2")).await;
    reading_routed(&stack, &publisher, group, &patient).await;
    publisher
        .put_consent(&deny_home_care(&patient))
        .await
        .unwrap();
    publisher
        .publish_measurement(&fixtures::spo2(&patient, 96.0, now_millis() - 500))
        .await
        .unwrap();
    let topic = stack.settings.topics().deliver("home");
    let deadline = Instant::now() + Duration::from_secs(90);
    while notice_ids(&stack.settings, &topic, "read_uncommitted")
        .await
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the held router never sent the notice: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    held.signal("KILL");
    // Same transactional id: the new instance aborts the held transaction, finds the old
    // sharing snapshot (its update was in that transaction) and judges the deny again.
    let router = start_router(&stack, &config, &log, None).await;
    reading_routed(&stack, &publisher, group, &patient).await;
    router.terminate().await;

    let committed = notice_ids(&stack.settings, &topic, "read_committed").await;
    let written = notice_ids(&stack.settings, &topic, "read_uncommitted").await;
    assert_eq!(
        committed.len(),
        1,
        "home care sees the notice once: {committed:?}"
    );
    assert_eq!(
        written,
        vec![committed[0].clone(), committed[0].clone()],
        "the aborted notice and the one sent again have the same delivery id"
    );
    for other in ["gp", "lung"] {
        let topic = stack.settings.topics().deliver(other);
        assert!(
            notice_ids(&stack.settings, &topic, "read_uncommitted")
                .await
                .is_empty()
        );
    }
}
