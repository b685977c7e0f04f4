//! A corpus of malformed records on the ingest topics, written past the publisher's
//! validation as a misbehaving platform would: every one lands in the dead-letter topic
//! with its original key and bytes and a reason, and the router keeps routing good records
//! between them.

use std::collections::BTreeMap;
use std::time::Duration;

use dho_kafka::AvroSerde;
use dho_schemas::fixtures;
use dho_schemas::model::*;
use dho_schemas::partition::partition_for;
use dho_schemas::topics::{headers, state_key};
use dho_tests::scenario::{consent, subscribe};
use dho_tests::{PARTITIONS, Stack, read_decoded, read_topic, wait_routed};
use rdkafka::producer::{FutureProducer, FutureRecord};

const GROUP: &str = "router";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_record_is_dead_lettered_and_good_ones_still_flow() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let topics = stack.settings.topics();
    let patient = fixtures::patient(4);
    consent(&publisher, &patient, "c-gp", &[fixtures::gp()]).await;
    subscribe(&publisher, &patient, &[("gp", fixtures::gp())]).await;

    let serde = AvroSerde::new(&stack.settings.schema_registry_url);
    let measurements = serde
        .register::<Measurement>(&topics.measurements())
        .await
        .unwrap();
    let selfreports = serde
        .register::<SelfReport>(&topics.selfreports())
        .await
        .unwrap();
    let consents = serde.register::<Consent>(&topics.consents()).await.unwrap();
    let at = now_millis() - 60_000;
    let valid = fixtures::spo2(&patient, 95.0, at);
    let with = |f: &dyn Fn(&mut Measurement)| {
        let mut m = fixtures::spo2(&patient, 95.0, at);
        f(&mut m);
        measurements.encode(&m).unwrap()
    };
    let mut truncated = measurements.encode(&valid).unwrap();
    truncated.truncate(truncated.len() - 3);
    let mut two_values = fixtures::self_report(&patient, at);
    two_values.answers[0].value_boolean = Some(true);
    let mut bad_check_digit = patient.clone();
    bad_check_digit.value.replace_range(
        10..11,
        if patient.value.ends_with('0') {
            "1"
        } else {
            "0"
        },
    );

    // (topic, key, payload, expected reason)
    let corpus: Vec<(String, String, Option<Vec<u8>>, &str)> = vec![
        (
            topics.measurements(),
            patient.value.clone(),
            Some(b"not avro at all".to_vec()),
            "undecodable",
        ),
        (
            topics.measurements(),
            patient.value.clone(),
            Some(vec![0, 0, 0, 0x7f, 0x7f, 1]),
            "unknown_schema",
        ),
        (topics.measurements(), patient.value.clone(), None, "empty"),
        (
            topics.measurements(),
            patient.value.clone(),
            Some(truncated),
            "undecodable",
        ),
        // A string length prefix of about 2^62: must not allocate, must not crash.
        (
            topics.measurements(),
            patient.value.clone(),
            Some(
                [
                    &measurements.encode(&valid).unwrap()[..5],
                    &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f][..],
                ]
                .concat(),
            ),
            "undecodable",
        ),
        (
            topics.measurements(),
            patient.value.clone(),
            Some(
                consents
                    .encode(&fixtures::consent(&patient, "x", &[]))
                    .unwrap(),
            ),
            "wrong_schema",
        ),
        (
            topics.measurements(),
            bad_check_digit.value.clone(),
            Some(with(&|m| m.patient = bad_check_digit.clone())),
            "invalid_identifier",
        ),
        (
            topics.measurements(),
            patient.value.clone(),
            Some(with(&|m| m.value.as_mut().unwrap().value = 0.95)),
            "implausible",
        ),
        (
            topics.measurements(),
            patient.value.clone(),
            Some(with(&|m| m.value.as_mut().unwrap().unit = "mm[Hg]".into())),
            "wrong_unit",
        ),
        (
            topics.measurements(),
            patient.value.clone(),
            Some(with(&|m| m.code = "1234-5".into())),
            "unknown_code",
        ),
        (
            topics.measurements(),
            patient.value.clone(),
            Some(with(&|m| m.effective_time = now_millis() + 86_400_000)),
            "future_time",
        ),
        (
            topics.measurements(),
            fixtures::patient(5).value,
            Some(with(&|_| ())),
            "key_mismatch",
        ),
        (
            topics.selfreports(),
            patient.value.clone(),
            Some(selfreports.encode(&two_values).unwrap()),
            "malformed",
        ),
    ];

    let raw: FutureProducer = stack.settings.client_config(&[]).unwrap().create().unwrap();
    let partition = partition_for(patient.key().as_bytes(), PARTITIONS);
    let mut good = vec![];
    for (topic, key, payload, _) in &corpus {
        let mut record = FutureRecord::<str, [u8]>::to(topic)
            .key(key.as_str())
            .partition(partition);
        if let Some(payload) = payload {
            record = record.payload(payload.as_slice());
        }
        raw.send(record, Duration::from_secs(10)).await.unwrap();
        // A good reading after every bad one: routing must go on between them.
        let m = fixtures::spo2(&patient, 96.0, at);
        good.push((
            m.event_id.clone(),
            publisher.publish_measurement(&m).await.unwrap(),
        ));
    }

    let router = stack.spawn_router(GROUP).await;
    let (_, last) = good.last().unwrap();
    wait_routed(
        &stack.settings,
        GROUP,
        &last.topic,
        last.partition,
        last.offset,
    )
    .await;
    let selfreport_end = read_topic(&stack.settings, &topics.selfreports());
    let last_selfreport = selfreport_end.iter().max_by_key(|r| r.offset).unwrap();
    wait_routed(
        &stack.settings,
        GROUP,
        &topics.selfreports(),
        last_selfreport.partition,
        last_selfreport.offset,
    )
    .await;
    router.stop().await;

    let delivered: Vec<Delivery> = read_decoded(&stack.settings, &topics.deliver("gp")).await;
    let delivered_ids: Vec<&str> = delivered
        .iter()
        .map(|d| d.measurement.as_ref().unwrap().event_id.as_str())
        .collect();
    let good_ids: Vec<&str> = good.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        delivered_ids, good_ids,
        "every good reading delivered, in order, and nothing else"
    );

    let dead = read_topic(&stack.settings, &topics.deadletter());
    assert_eq!(
        dead.len(),
        corpus.len(),
        "every malformed record is parked, once"
    );
    // Dead letters of one source partition keep the source order.
    let mut by_source: BTreeMap<(String, i64), &dho_tests::Record> = BTreeMap::new();
    for record in &dead {
        let offset: i64 = record.headers[headers::SOURCE_OFFSET].parse().unwrap();
        by_source.insert(
            (record.headers[headers::SOURCE_TOPIC].clone(), offset),
            record,
        );
        assert_eq!(record.headers[headers::COMPONENT], "router");
        assert!(!record.headers[headers::DETAIL].is_empty());
        for number in [&patient.value, &bad_check_digit.value] {
            assert!(
                !record.headers[headers::DETAIL].contains(number.as_str()),
                "identifier in a header"
            );
        }
    }
    let parked: Vec<&&dho_tests::Record> = by_source.values().collect();
    let (measurement_cases, selfreport_cases): (Vec<_>, Vec<_>) = corpus
        .iter()
        .partition(|(topic, ..)| *topic == topics.measurements());
    let ordered: Vec<&(String, String, Option<Vec<u8>>, &str)> = measurement_cases
        .into_iter()
        .chain(selfreport_cases)
        .collect();
    for (record, (_, key, payload, reason)) in parked.iter().zip(ordered) {
        assert_eq!(
            record.headers[headers::REASON],
            *reason,
            "reason for a {reason} case"
        );
        assert_eq!(
            record.key.as_deref(),
            Some(key.as_str()),
            "original key kept"
        );
        assert_eq!(
            record.value.as_ref(),
            payload.as_ref(),
            "original bytes kept"
        );
    }
}

/// A consent record the router cannot apply (unreadable, or filed under another patient's
/// key) is dead-lettered *and* holds its patient: whatever it said, a withdrawal perhaps,
/// the old permit must not go on deciding. Nothing of that patient is delivered until a
/// valid record (or a tombstone) for the same key replaces it; other patients flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_that_cannot_be_applied_holds_its_patient_until_a_valid_record_replaces_it() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let topics = stack.settings.topics();
    let held = fixtures::patient(4);
    let other = fixtures::patient(6);
    for p in [&held, &other] {
        consent(&publisher, p, "c-gp", &[fixtures::gp()]).await;
        subscribe(&publisher, p, &[("gp", fixtures::gp())]).await;
    }
    let router = stack.spawn_router(GROUP).await;
    let at = now_millis() - 60_000;
    let serde = AvroSerde::new(&stack.settings.schema_registry_url);
    let consents = serde.register::<Consent>(&topics.consents()).await.unwrap();
    let raw: FutureProducer = stack.settings.client_config(&[]).unwrap().create().unwrap();
    let send_state = |key: String, payload: Vec<u8>| {
        let raw = raw.clone();
        let topic = topics.consents();
        async move {
            // State topics are partitioned by patient, like the events.
            let patient = dho_schemas::topics::patient_key(&key);
            let partition = partition_for(patient.as_bytes(), PARTITIONS);
            let record = FutureRecord::<str, [u8]>::to(&topic)
                .key(key.as_str())
                .partition(partition)
                .payload(payload.as_slice());
            raw.send(record, Duration::from_secs(10)).await.unwrap();
        }
    };
    // Publishes a reading of each patient and waits until the router has routed it.
    let readings = |value: f64| {
        let publisher = publisher.clone();
        let settings = stack.settings.clone();
        let (held, other) = (held.clone(), other.clone());
        async move {
            let mut ids = vec![];
            for p in [&held, &other] {
                let m = fixtures::spo2(p, value, at);
                let receipt = publisher.publish_measurement(&m).await.unwrap();
                wait_routed(
                    &settings,
                    GROUP,
                    &receipt.topic,
                    receipt.partition,
                    receipt.offset,
                )
                .await;
                ids.push(m.event_id);
            }
            ids
        }
    };
    let delivered = || async {
        let gp: Vec<Delivery> = read_decoded(&stack.settings, &topics.deliver("gp")).await;
        gp.into_iter()
            .map(|d| d.measurement.unwrap().event_id)
            .collect::<std::collections::BTreeSet<_>>()
    };

    let before = readings(95.0).await;
    // The permit's key now holds bytes nobody can read.
    send_state(state_key(&held, "c-gp"), b"not avro at all".to_vec()).await;
    let unreadable = readings(94.0).await;
    // A valid permit for the same key releases the patient.
    consent(&publisher, &held, "c-gp", &[fixtures::gp()]).await;
    let released = readings(93.0).await;
    // Another patient's consent filed under a key of the held patient: held again.
    let foreign = fixtures::consent(&other, "c-2", &[fixtures::gp()]);
    send_state(state_key(&held, "c-2"), consents.encode(&foreign).unwrap()).await;
    let misfiled = readings(92.0).await;
    // A tombstone for that key replaces it too.
    publisher.delete_consent(&held, "c-2").await.unwrap();
    let after = readings(91.0).await;
    router.stop().await;

    let got = delivered().await;
    for (phase, ids, held_delivered) in [
        ("before", &before, true),
        ("while unreadable", &unreadable, false),
        ("after a valid record", &released, true),
        ("while misfiled", &misfiled, false),
        ("after a tombstone", &after, true),
    ] {
        assert_eq!(
            got.contains(&ids[0]),
            held_delivered,
            "the held patient's reading {phase}"
        );
        assert!(got.contains(&ids[1]), "the other patient's reading {phase}");
    }
    let dead = read_topic(&stack.settings, &topics.deadletter());
    let mut reasons: Vec<&str> = dead
        .iter()
        .map(|r| r.headers[headers::REASON].as_str())
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["key_mismatch", "undecodable"], "both parked");
}

/// A record written to another partition than its patient's (a client whose partitioner is
/// not Java's murmur2, as confluent-kafka's default) is read by an instance without that
/// patient's state: the router would withhold a reading as unsubscribed, or apply a consent
/// where no reading of the patient is ever routed. Each is a dead letter `wrong_partition`
/// with its original bytes instead; a state record also holds its patient on the patient's
/// own partition (a marker under its key there), until a valid record for the key replaces
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_on_another_partition_than_its_patients_is_a_dead_letter_never_withheld() {
    let stack = Stack::start().await;
    let publisher = stack.publisher().await;
    let topics = stack.settings.topics();
    let patient = fixtures::patient(4);
    consent(&publisher, &patient, "c-gp", &[fixtures::gp()]).await;
    subscribe(&publisher, &patient, &[("gp", fixtures::gp())]).await;

    let serde = AvroSerde::new(&stack.settings.schema_registry_url);
    let measurements = serde
        .register::<Measurement>(&topics.measurements())
        .await
        .unwrap();
    let consents = serde.register::<Consent>(&topics.consents()).await.unwrap();
    let right = partition_for(patient.key().as_bytes(), PARTITIONS);
    let wrong = (right + 1) % PARTITIONS;
    let at = now_millis() - 60_000;
    let misplaced = fixtures::spo2(&patient, 95.0, at);
    let misplaced_bytes = measurements.encode(&misplaced).unwrap();
    // A withdrawal on the wrong partition must not be taken for applied, nor vanish.
    let mut withdrawal = fixtures::consent(&patient, "c-deny", &[fixtures::gp()]);
    withdrawal.provisions[0].kind = ProvisionKind::Deny;
    let withdrawal_bytes = consents.encode(&withdrawal).unwrap();
    let raw: FutureProducer = stack.settings.client_config(&[]).unwrap().create().unwrap();
    for (topic, key, bytes) in [
        (
            topics.measurements(),
            patient.value.clone(),
            &misplaced_bytes,
        ),
        (
            topics.consents(),
            state_key(&patient, "c-deny"),
            &withdrawal_bytes,
        ),
    ] {
        let record = FutureRecord::<str, [u8]>::to(&topic)
            .key(key.as_str())
            .partition(wrong)
            .payload(bytes.as_slice());
        raw.send(record, Duration::from_secs(10)).await.unwrap();
    }

    let router = stack.spawn_router(GROUP).await;
    // The router reads the wrong partition's state when it is assigned it, and marks the
    // patient's own partition.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let marker = loop {
        if let Some(marker) = read_topic(&stack.settings, &topics.consents())
            .into_iter()
            .find(|r| r.headers.contains_key(headers::HOLD))
        {
            break marker;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no hold marker on the patient's partition"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        marker.partition, right,
        "the marker is on the patient's partition"
    );
    assert_eq!(
        marker.key.as_deref(),
        Some(state_key(&patient, "c-deny").as_str())
    );
    assert_eq!(marker.headers[headers::HOLD], "wrong_partition");
    let publish = |value: f64| {
        let publisher = publisher.clone();
        let settings = stack.settings.clone();
        let patient = patient.clone();
        async move {
            let m = fixtures::spo2(&patient, value, at);
            let receipt = publisher.publish_measurement(&m).await.unwrap();
            assert_eq!(receipt.partition, right);
            wait_routed(
                &settings,
                GROUP,
                &receipt.topic,
                receipt.partition,
                receipt.offset,
            )
            .await;
            m.event_id
        }
    };
    let while_held = publish(96.0).await;
    // A valid record for the key, on the right partition, replaces the marker.
    consent(&publisher, &patient, "c-deny", &[fixtures::gp()]).await;
    let released = publish(97.0).await;
    let misplaced_offset = read_topic(&stack.settings, &topics.measurements())
        .into_iter()
        .find(|r| r.partition == wrong)
        .unwrap()
        .offset;
    wait_routed(
        &stack.settings,
        GROUP,
        &topics.measurements(),
        wrong,
        misplaced_offset,
    )
    .await;
    router.stop().await;
    // A restarted router reloads both partitions: the misplaced record was handled once,
    // so no second marker holds the patient again.
    let router = stack.spawn_router(GROUP).await;
    let after_restart = publish(98.0).await;
    router.stop().await;
    let markers = read_topic(&stack.settings, &topics.consents())
        .into_iter()
        .filter(|r| r.headers.contains_key(headers::HOLD))
        .count();
    assert_eq!(
        markers, 1,
        "one marker, however often the partition is loaded"
    );

    let delivered: Vec<Delivery> = read_decoded(&stack.settings, &topics.deliver("gp")).await;
    let ids: Vec<&str> = delivered
        .iter()
        .map(|d| d.measurement.as_ref().unwrap().event_id.as_str())
        .collect();
    assert!(
        !ids.contains(&while_held.as_str()),
        "held while the marker stands"
    );
    assert_eq!(
        ids,
        [released.as_str(), after_restart.as_str()],
        "only the reading after the release"
    );
    let mut dead: Vec<(String, String, Option<Vec<u8>>)> =
        read_topic(&stack.settings, &topics.deadletter())
            .into_iter()
            .map(|r| {
                (
                    r.headers[headers::SOURCE_TOPIC].clone(),
                    r.headers[headers::REASON].clone(),
                    r.value,
                )
            })
            .collect();
    dead.sort();
    let mut expected = vec![
        (
            topics.consents(),
            "wrong_partition".to_string(),
            Some(withdrawal_bytes),
        ),
        (
            topics.measurements(),
            "wrong_partition".to_string(),
            Some(misplaced_bytes),
        ),
    ];
    expected.sort();
    assert_eq!(dead, expected, "both parked with their original bytes");
}
