use super::*;
use crate::fixtures;
use proptest::prelude::*;

fn round_trip<T: AvroRecord + PartialEq + std::fmt::Debug>(value: T) {
    let bytes = encode(&value).unwrap();
    assert_eq!(decode::<T>(&bytes).unwrap(), value);
    // The generic path (what any other Avro reader does) agrees with the fast path.
    let generic = GenericDatumReader::builder(T::KIND.schema())
        .build()
        .unwrap()
        .read_value(&mut &bytes[..])
        .unwrap();
    assert_eq!(apache_avro::from_value::<T>(&generic).unwrap(), value);
}

#[test]
fn every_type_round_trips() {
    let m = fixtures::spo2(&fixtures::patient(1), 93.0, 1_700_000_000_000);
    round_trip(m.clone());
    round_trip(fixtures::blood_pressure(
        &fixtures::patient(2),
        150.0,
        95.0,
        1_700_000_000_000,
    ));
    round_trip(fixtures::self_report(
        &fixtures::patient(3),
        1_700_000_000_000,
    ));
    round_trip(fixtures::consent(
        &fixtures::patient(1),
        "c-1",
        &[fixtures::gp()],
    ));
    round_trip(fixtures::subscription(
        &fixtures::patient(1),
        "gp-1",
        &fixtures::gp(),
    ));
    round_trip(fixtures::care_plan(&fixtures::patient(1)));
    let delivery = fixtures::delivery_of(&m);
    round_trip(delivery.clone());
    round_trip(fixtures::disclosure_of(&delivery));
    let consent = fixtures::consent(&fixtures::patient(1), "c-1", &[fixtures::gp()]);
    let change = |action, consent| ConsentChange {
        change_id: "x".into(),
        consent_id: "c-1".into(),
        patient: fixtures::patient(1),
        action,
        consent,
        changed_by: fixtures::home_care(),
        principal: "bergen-home-care".into(),
        channel: "gateway".into(),
        changed_at: 1_700_000_000_000,
    };
    round_trip(change(ConsentAction::Recorded, Some(consent)));
    round_trip(change(ConsentAction::Deleted, None));
    let plan = fixtures::care_plan(&fixtures::patient(1));
    let plan_change = |action, plan| CarePlanChange {
        change_id: "y".into(),
        plan_id: format!("{}.kols", fixtures::home_care().value),
        patient: fixtures::patient(1),
        action,
        plan,
        changed_by: fixtures::home_care(),
        principal: "bergen-home-care".into(),
        channel: "gateway".into(),
        changed_at: 1_700_000_000_000,
    };
    round_trip(plan_change(CarePlanAction::Recorded, Some(plan)));
    round_trip(plan_change(CarePlanAction::Deleted, None));
    let subscription =
        fixtures::subscription(&fixtures::patient(1), "gp-1", &fixtures::home_care());
    let subscription_change = |action, subscription| SubscriptionChange {
        change_id: "z".into(),
        subscription_id: "gp-1.p1".into(),
        patient: fixtures::patient(1),
        action,
        subscription,
        changed_by: fixtures::home_care(),
        principal: "operator".into(),
        channel: "admin-cli".into(),
        changed_at: 1_700_000_000_000,
    };
    round_trip(subscription_change(
        SubscriptionAction::Recorded,
        Some(subscription),
    ));
    round_trip(subscription_change(SubscriptionAction::Deleted, None));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(decode::<Measurement>(&[]).is_err());
    assert!(decode::<Measurement>(&[0xff; 40]).is_err());
    let mut bytes = encode(&fixtures::spo2(&fixtures::patient(1), 93.0, 1)).unwrap();
    bytes.push(0);
    assert!(matches!(
        decode::<Measurement>(&bytes),
        Err(Error::TrailingBytes { .. })
    ));
}

#[test]
fn a_v1_record_reads_as_v2_with_a_new_optional_field_and_back() {
    let v1 = Schema::parse_str(SchemaKind::Measurement.schema_text()).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(SchemaKind::Measurement.schema_text()).unwrap();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"name": "note", "type": ["null", "string"], "default": null}
        ));
    let v2 = Schema::parse_str(&json.to_string()).unwrap();
    let m = fixtures::spo2(&fixtures::patient(1), 93.0, 1_700_000_000_000);

    // v2 writer (a newer platform) -> this crate's v1 reader.
    let mut value = apache_avro::to_value(&m).unwrap();
    if let apache_avro::types::Value::Record(fields) = &mut value {
        fields.push((
            "note".into(),
            apache_avro::types::Value::Union(1, Box::new("x".into())),
        ));
    }
    let bytes = GenericDatumWriter::builder(&v2)
        .build()
        .unwrap()
        .write_value_to_vec(value.resolve(&v2).unwrap())
        .unwrap();
    assert_eq!(decode_with_writer::<Measurement>(&v2, &bytes).unwrap(), m);

    // v1 writer (this crate) -> a v2 reader fills the default.
    let bytes = encode(&m).unwrap();
    let read = GenericDatumReader::builder(&v1)
        .reader_schema(&v2)
        .build()
        .unwrap()
        .read_value(&mut &bytes[..])
        .unwrap();
    let apache_avro::types::Value::Record(fields) = read else {
        panic!()
    };
    assert_eq!(
        fields.last().unwrap(),
        &(
            "note".to_string(),
            apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null))
        )
    );
}

fn delivery_view<'a>(
    d: &'a Delivery,
    denies: &'a [&'a str],
) -> (DeliveryView<'a>, Option<ReferenceView<'a>>) {
    let reference = d.reference.as_ref().map(|r| ReferenceView {
        event_id: &r.event_id,
        category: r.category,
        code: r.code.as_deref(),
        effective_time: r.effective_time,
    });
    let view = DeliveryView {
        delivery_id: &d.delivery_id,
        subscriber_id: &d.subscriber_id,
        subscription_id: &d.subscription_id,
        consent_id: &d.consent_id,
        patient: &d.patient,
        source: &d.source,
        content_level: d.content_level,
        routed_at: d.routed_at,
        measurement: d.measurement.as_ref(),
        self_report: d.self_report.as_ref(),
        alert: d.alert.as_ref(),
        reference,
        replaces: d.replaces.as_ref(),
        professional_denies: denies,
        sharing_ended: d.sharing_ended.as_ref(),
    };
    (view, reference)
}

/// The view's bytes (direct writer, or apache-avro for the payloads it leaves to it)
/// equal apache-avro's bytes of the owned record, and decode back to it.
fn same_bytes_as_owned(d: &Delivery) {
    let denies: Vec<&str> = d.professional_denies.iter().map(String::as_str).collect();
    let (view, _) = delivery_view(d, &denies);
    let mut direct = Vec::new();
    view.encode_into(&mut direct).unwrap();
    assert_eq!(direct, encode(d).unwrap(), "delivery bytes differ");
    assert_eq!(&decode::<Delivery>(&direct).unwrap(), d);
    let mut via_serde = Vec::new();
    encode_ser(SchemaKind::Delivery, &view, &mut via_serde).unwrap();
    assert_eq!(via_serde, direct);

    let r = fixtures::disclosure_of(d);
    let view = DisclosureView {
        delivery_id: &r.delivery_id,
        recorded_at: r.recorded_at,
        patient: &r.patient,
        recipient: &r.recipient,
        subscriber_id: &r.subscriber_id,
        subscription_id: &r.subscription_id,
        purpose_of_use: &r.purpose_of_use,
        decision_reference: &r.decision_reference,
        legal_basis: &r.legal_basis,
        data_controller: &r.data_controller,
        category: r.category,
        event_id: &r.event_id,
        content_level: r.content_level,
        source: &r.source,
        replaces: r.replaces.as_deref(),
    };
    let mut direct = Vec::new();
    view.encode_into(&mut direct).unwrap();
    assert_eq!(direct, encode(&r).unwrap(), "disclosure bytes differ");
    let mut via_serde = Vec::new();
    encode_ser(SchemaKind::DisclosureRecord, &view, &mut via_serde).unwrap();
    assert_eq!(via_serde, direct);
}

#[test]
fn the_direct_writer_knows_the_current_schemas() {
    for (kind, hash) in DIRECT_LAYOUT {
        assert_eq!(
            fnv1a(&kind.schema().canonical_form()),
            hash,
            "{kind:?} changed: update codec::direct to it, then its hash"
        );
    }
    assert!(*DIRECT_LAYOUT_MATCHES);
}

#[test]
fn direct_bytes_equal_apache_avro_bytes() {
    let at = 1_700_000_000_000;
    let mut measurements = vec![
        fixtures::spo2(&fixtures::patient(1), 93.0, at),
        fixtures::blood_pressure(&fixtures::patient(2), 150.0, 95.0, at),
    ];
    // Every enum symbol, absent optionals, other identifier systems, odd numbers.
    let severities = [
        VkpSeverity::NotReported,
        VkpSeverity::Normal,
        VkpSeverity::Moderate,
        VkpSeverity::Severe,
        VkpSeverity::Critical,
    ];
    let triages = [
        TriageColour::Red,
        TriageColour::Orange,
        TriageColour::Yellow,
        TriageColour::Green,
        TriageColour::Blue,
        TriageColour::Black,
        TriageColour::NotReported,
    ];
    for (i, triage) in triages.into_iter().enumerate() {
        let mut m = fixtures::spo2(&fixtures::patient(3 + i as u64), -0.0, -5);
        m.triage = Some(triage);
        m.severity = Some(severities[i % severities.len()]);
        m.source_id = None;
        m.snomed_code = None;
        m.source.device_id = None;
        m.source.device_type = Some("æøå ✓".into());
        m.source.platform.name = None;
        m.data_controller.system = OrgIdSystem::Resh;
        m.patient.system = [PatientIdSystem::Dnr, PatientIdSystem::Fhn][i % 2];
        m.value = (i % 2 == 0).then(|| Quantity {
            value: f64::MAX,
            unit: String::new(),
        });
        m.received_time = i64::MAX - 10 - i as i64;
        m.effective_time = i64::MIN + i as i64;
        measurements.push(m);
    }
    let mut many = fixtures::blood_pressure(&fixtures::patient(9), 1.0, 2.0, at);
    many.components = (0..200).flat_map(|_| many.components.clone()).collect();
    measurements.push(many);

    for m in &measurements {
        let mut d = fixtures::delivery_of(m);
        same_bytes_as_owned(&d);
        d.source.offset = i64::MAX;
        d.source.partition = i32::MAX;
        d.routed_at = -1;
        d.delivery_id = "x".repeat(300);
        same_bytes_as_owned(&d);
        // MINIMAL: a reference instead of the values, with and without a code.
        d.measurement = None;
        d.content_level = ContentLevel::Minimal;
        for code in [Some(m.code.clone()), None] {
            d.reference = Some(EventReference {
                event_id: m.event_id.clone(),
                category: DataCategory::Measurement,
                code,
                effective_time: m.effective_time,
            });
            same_bytes_as_owned(&d);
        }
        // A retraction or correction names the delivery it replaces (the audit record too).
        for status in ["entered-in-error", "corrected"] {
            d.replaces = Some(Replaces {
                delivery_id: "d-0".into(),
                event_id: m.event_id.clone(),
                status: status.into(),
            });
            same_bytes_as_owned(&d);
        }
        d.replaces = None;
    }
    // Self-reports, alerts and sharing-ended notices keep apache-avro's path.
    let mut d = fixtures::delivery_of(&measurements[0]);
    d.measurement = None;
    for recorded_by in [Some(fixtures::gp()), None] {
        d.sharing_ended = Some(SharingEnded {
            recorded_by,
            recorded_at: at,
            categories: vec![DataCategory::Measurement, DataCategory::Alert],
        });
        same_bytes_as_owned(&d);
        assert!(matches!(d.kind(), DeliveryKind::SharingEnded(_)));
    }
    d.sharing_ended = None;
    d.self_report = Some(fixtures::self_report(&fixtures::patient(1), at));
    same_bytes_as_owned(&d);
    d.self_report = None;
    for category in [DataCategory::SelfReport, DataCategory::Alert] {
        d.reference = Some(EventReference {
            event_id: "e".into(),
            category,
            code: Some("cat".into()),
            effective_time: at,
        });
        same_bytes_as_owned(&d);
    }
    d.reference = None;
    d.alert = Some(Alert {
        alert_id: "a-1".into(),
        patient: fixtures::patient(1),
        kind: AlertKind::Escalated,
        zone: Zone::Red,
        severity: VkpSeverity::Severe,
        code: measurements[1].code.clone(),
        plan_id: "p".into(),
        plan_version: 3,
        plan_owner: Some(fixtures::lung_clinic()),
        triggering_event_id: Some("e".into()),
        reading: Some(measurements[1].clone()),
        raised_at: at,
    });
    same_bytes_as_owned(&d);
}

/// Whenever the hand-written reader accepts a body, apache-avro accepts it too and reads
/// the same value (compared by its bytes, so NaN payloads count); when it declines,
/// `decode` gives apache-avro's answer.
fn direct_reads_as_apache_avro(body: &[u8]) -> bool {
    let avro = decode_avro::<Measurement>(body);
    match Measurement::decode_direct(body) {
        Some(direct) => {
            let avro = avro.expect("apache-avro accepts what the direct reader accepts");
            assert_eq!(encode(&direct).unwrap(), encode(&avro).unwrap());
            true
        }
        None => {
            assert_eq!(
                decode::<Measurement>(body).map_err(|e| e.to_string()),
                avro.map_err(|e| e.to_string())
            );
            false
        }
    }
}

#[test]
fn the_direct_reader_reads_what_apache_avro_reads() {
    let at = 1_700_000_000_000;
    let mut m = fixtures::blood_pressure(&fixtures::patient(2), 150.0, 95.0, at);
    assert!(direct_reads_as_apache_avro(&encode(&m).unwrap()));
    m.triage = Some(TriageColour::NotReported);
    m.severity = Some(VkpSeverity::Critical);
    m.patient.system = PatientIdSystem::Fhn;
    m.data_controller.system = OrgIdSystem::Resh;
    m.data_controller.name = None;
    m.value = Some(Quantity {
        value: f64::NAN,
        unit: "æ".into(),
    });
    m.effective_time = i64::MIN;
    m.received_time = i64::MAX;
    assert!(direct_reads_as_apache_avro(&encode(&m).unwrap()));
    let spo2 = fixtures::spo2(&fixtures::patient(1), 93.0, at);
    let body = encode(&spo2).unwrap();
    assert!(direct_reads_as_apache_avro(&body));
    assert_eq!(Measurement::decode_direct(&body), Some(spo2.clone()));

    // Components in two blocks, the second with a negative count and a byte size (what
    // other writers may do): the same reading.
    let bp = fixtures::blood_pressure(&fixtures::patient(3), 120.0, 80.0, at);
    let one_block = encode(&bp).unwrap();
    let mut single = bp.clone();
    single.components.truncate(1);
    let head_len = encode(&Measurement {
        components: vec![],
        ..bp.clone()
    })
    .unwrap()
    .len();
    // Locate the array by encoding with one component and comparing.
    let one = encode(&single).unwrap();
    let start = one
        .iter()
        .zip(&one_block)
        .position(|(a, b)| a != b)
        .unwrap();
    let mut item = Vec::new();
    let second = &bp.components[1];
    item.push(2 * second.code.len() as u8);
    item.extend_from_slice(second.code.as_bytes());
    item.push(2);
    let snomed = second.snomed_code.as_deref().unwrap();
    item.push(2 * snomed.len() as u8);
    item.extend_from_slice(snomed.as_bytes());
    item.extend_from_slice(&second.value.value.to_le_bytes());
    item.push(2 * second.value.unit.len() as u8);
    item.extend_from_slice(second.value.unit.as_bytes());
    assert!(item.len() < 64);
    // one: [.. count=1 (2), item0, 0, tail]; make it [.. 1, item0, -1 (1), size, item1, 0, tail]
    let end_of_first = one.len() - (head_len - start) + 1;
    let mut blocks = one[..end_of_first - 1].to_vec();
    blocks.push(1); // zig-zag -1
    blocks.push(2 * item.len() as u8);
    blocks.extend_from_slice(&item);
    blocks.extend_from_slice(&one[end_of_first - 1..]);
    assert!(direct_reads_as_apache_avro(&blocks));
    assert_eq!(decode::<Measurement>(&blocks).unwrap(), bp);

    // Every truncation and every single-byte change of a valid body.
    for body in [&body, &one_block] {
        for len in 0..body.len() {
            direct_reads_as_apache_avro(&body[..len]);
        }
        for i in 0..body.len() {
            for byte in [0x00, 0x01, 0x02, 0x7f, 0x80, 0xff, body[i] ^ 0x01] {
                let mut changed = body.clone();
                changed[i] = byte;
                direct_reads_as_apache_avro(&changed);
            }
        }
    }
}

/// A reading decoded into a value reused from readings of other shapes (more or fewer
/// components, optional fields present or absent, a rejected body in between) is the
/// reading.
#[test]
fn decoding_into_a_reused_reading_gives_the_reading() {
    let at = 1_700_000_000_000;
    let bp = fixtures::blood_pressure(&fixtures::patient(1), 150.0, 95.0, at);
    let spo2 = fixtures::spo2(&fixtures::patient(22), 91.0, at + 1);
    let mut bare = bp.clone();
    bare.source_id = None;
    bare.snomed_code = None;
    bare.source.device_id = None;
    bare.source.device_type = None;
    bare.data_controller.name = None;
    bare.components[0].snomed_code = None;
    bare.components.truncate(1);
    bare.severity = Some(VkpSeverity::Severe);
    let mut three = bp.clone();
    three.components.push(bp.components[0].clone());
    three.value = Some(Quantity {
        value: 7.5,
        unit: "mmol/L".into(),
    });
    let mut into = spo2.clone();
    for reading in [&bp, &spo2, &bare, &three, &bp, &bare, &spo2, &three, &spo2] {
        let body = encode(reading).unwrap();
        decode_into(&body, &mut into).unwrap();
        assert_eq!(&into, reading);
        // A rejected body leaves an unspecified value; the next reading overwrites it.
        assert!(decode_into(&body[..body.len() - 3], &mut into).is_err());
    }
}

proptest! {
    #[test]
    fn measurements_round_trip(value in 50.0f64..100.0, at in 1i64..4_000_000_000_000, seed in 0u64..10_000) {
        round_trip(fixtures::spo2(&fixtures::patient(seed), value, at));
    }

    #[test]
    fn direct_bytes_equal_apache_avro_bytes_for_any_reading(
        value in proptest::num::f64::ANY,
        at in any::<i64>(),
        offset in any::<i64>(),
        seed in 0u64..10_000,
        text in ".{0,40}",
        bp in any::<bool>(),
    ) {
        let p = fixtures::patient(seed);
        let mut m = if bp {
            fixtures::blood_pressure(&p, value, -value, at)
        } else {
            fixtures::spo2(&p, value, at)
        };
        m.code = text.clone();
        let mut d = fixtures::delivery_of(&m);
        d.source.offset = offset;
        d.subscriber_id = text;
        d.professional_denies = (0..offset % 3).map(|i| format!("91448{i}")).collect();
        let denies: Vec<&str> = d.professional_denies.iter().map(String::as_str).collect();
        let (view, _) = delivery_view(&d, &denies);
        let mut direct = Vec::new();
        view.encode_into(&mut direct).unwrap();
        prop_assert_eq!(direct, encode(&d).unwrap());
    }

    #[test]
    fn the_direct_reader_agrees_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        direct_reads_as_apache_avro(&bytes);
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode::<Measurement>(&bytes);
        let _ = decode::<Delivery>(&bytes);
        let _ = decode::<Consent>(&bytes);
    }
}
