use super::*;
use crate::{fixtures, wire};
use proptest::prelude::*;
use prost_types::field_descriptor_proto::{Label, Type};

fn proto_file() -> prost_types::FileDescriptorProto {
    protox_parse::parse("dho/v1/events.proto", PROTO_FILE).expect("events.proto parses")
}

/// The prost attribute (without tag) a `.proto` field needs, spaces removed.
fn expected_kind(
    file: &prost_types::FileDescriptorProto,
    field: &prost_types::FieldDescriptorProto,
) -> String {
    // The parser leaves named types unresolved (type unset, type_name as written).
    let type_name = field.type_name().rsplit('.').next().unwrap_or_default();
    let kind = match field.r#type {
        Some(_) => field.r#type(),
        None if file.enum_type.iter().any(|e| e.name() == type_name) => Type::Enum,
        None => Type::Message,
    };
    let base = match kind {
        Type::String => "string".to_string(),
        Type::Double => "double".to_string(),
        Type::Int64 => "int64".to_string(),
        Type::Bool => "bool".to_string(),
        Type::Message => "message".to_string(),
        Type::Enum => format!("enumeration=\"{type_name}\""),
        other => panic!("{}: no mapping for {other:?} yet", field.name()),
    };
    if field.label() == Label::Repeated {
        format!("{base},repeated")
    } else if field.proto3_optional() || kind == Type::Message {
        format!("{base},optional")
    } else {
        base
    }
}

fn check<T: Described>(file: &prost_types::FileDescriptorProto) {
    let message = file
        .message_type
        .iter()
        .find(|m| m.name() == T::NAME)
        .unwrap_or_else(|| panic!("events.proto has no message {}", T::NAME));
    let declared: Vec<(String, u32, String)> = message
        .field
        .iter()
        .map(|f| {
            (
                f.name().to_string(),
                f.number() as u32,
                expected_kind(file, f),
            )
        })
        .collect();
    let rust: Vec<(String, u32, String)> = T::FIELDS
        .iter()
        .map(|f| (f.name.to_string(), f.number, f.kind.replace(' ', "")))
        .collect();
    assert_eq!(rust, declared, "message {}", T::NAME);
}

fn check_enum(file: &prost_types::FileDescriptorProto, name: &str, values: &[(&str, i32)]) {
    let declared: Vec<(&str, i32)> = file
        .enum_type
        .iter()
        .find(|e| e.name() == name)
        .unwrap_or_else(|| panic!("events.proto has no enum {name}"))
        .value
        .iter()
        .map(|v| (v.name(), v.number()))
        .collect();
    assert_eq!(values, &declared[..], "enum {name}");
}

#[test]
fn the_rust_types_match_events_proto() {
    let file = proto_file();
    assert_eq!(file.package(), "dho.v1");
    check::<Measurement>(&file);
    check::<SelfReport>(&file);
    check::<PatientIdentifier>(&file);
    check::<OrganisationIdentifier>(&file);
    check::<Source>(&file);
    check::<Quantity>(&file);
    check::<Component>(&file);
    check::<Answer>(&file);
    check::<Coding>(&file);
    check_enum(&file, "PatientIdSystem", PatientIdSystem::VALUES);
    check_enum(&file, "OrgIdSystem", OrgIdSystem::VALUES);
    check_enum(&file, "VkpSeverity", VkpSeverity::VALUES);
    check_enum(&file, "TriageColour", TriageColour::VALUES);
    // Every message and enum in the file has a Rust twin (none added on one side only).
    assert_eq!(file.message_type.len(), 9);
    assert_eq!(file.enum_type.len(), 4);
    // The message indexes the framing uses are the messages' positions in the file.
    assert_eq!(
        file.message_type[MEASUREMENT_INDEX[0] as usize].name(),
        "Measurement"
    );
    assert_eq!(
        file.message_type[SELF_REPORT_INDEX[0] as usize].name(),
        "SelfReport"
    );
}

#[test]
fn a_drifted_proto_field_is_caught() {
    // The comparison itself can fail: renumber one field and it must notice.
    let mut file = proto_file();
    file.message_type[0].field[1].number = Some(99);
    let result = std::panic::catch_unwind(|| check::<Measurement>(&file));
    assert!(result.is_err());
}

#[test]
fn model_records_round_trip_through_protobuf() {
    let p = fixtures::patient(4);
    for m in [
        fixtures::spo2(&p, 93.5, 1_700_000_000_123),
        fixtures::blood_pressure(&p, 150.0, 95.0, 1_700_000_000_000),
    ] {
        let framed = wire::frame_protobuf(3, MEASUREMENT_INDEX, &encode_measurement(&m));
        let frame = wire::unframe_protobuf(&framed).unwrap();
        assert_eq!(
            decode_event(&frame.message_index, frame.body).unwrap(),
            Event::Measurement(m.clone())
        );
        m.validate(crate::Policy::SYNTHETIC_ALLOWED, m.received_time)
            .unwrap();
    }
    let r = fixtures::self_report(&p, 1_700_000_000_000);
    assert_eq!(decode_self_report(&encode_self_report(&r)).unwrap(), r);
    assert_eq!(
        decode_event(SELF_REPORT_INDEX, &encode_self_report(&r)).unwrap(),
        Event::SelfReport(r)
    );
    assert!(matches!(
        decode_event(&[2], &[]),
        Err(Error::UnknownMessageIndex { .. })
    ));
}

#[test]
fn missing_or_unknown_parts_are_typed_errors() {
    let m = fixtures::spo2(&fixtures::patient(1), 93.0, 1_700_000_000_000);
    let invalid = |edit: &dyn Fn(&mut Measurement)| {
        let mut message = Measurement::from(&m);
        edit(&mut message);
        match decode_measurement(&prost::Message::encode_to_vec(&message)) {
            Err(Error::Invalid(e)) => (e.field, e.reason),
            other => panic!("expected a validation error, got {other:?}"),
        }
    };
    assert_eq!(
        invalid(&|x| x.patient = None),
        ("patient".into(), Reason::Missing)
    );
    assert_eq!(
        invalid(&|x| x.patient.as_mut().unwrap().system = 0),
        ("patient.system".into(), Reason::Missing)
    );
    assert_eq!(
        invalid(&|x| x.data_controller.as_mut().unwrap().system = 7),
        ("data_controller.system".into(), Reason::Malformed)
    );
    assert_eq!(
        invalid(&|x| x.severity = 42),
        ("severity".into(), Reason::Malformed)
    );
    assert_eq!(
        invalid(&|x| x.source.as_mut().unwrap().platform = None),
        ("source.platform".into(), Reason::Missing)
    );
    // Structurally fine but clinically wrong: the existing validator refuses it.
    let mut fraction = m.clone();
    fraction.value.as_mut().unwrap().value = 0.93;
    let decoded = decode_measurement(&encode_measurement(&fraction)).unwrap();
    assert!(
        decoded
            .validate(crate::Policy::SYNTHETIC_ALLOWED, m.received_time)
            .is_err()
    );
}

proptest! {
    #[test]
    fn measurements_round_trip(value in 50.0f64..100.0, at in 1i64..4_000_000_000_000, seed in 0u64..1000, severity in 0i32..6, triage in 0i32..8) {
        let mut m = fixtures::spo2(&fixtures::patient(seed), value, at);
        m.severity = super::severity(severity).unwrap();
        m.triage = super::triage(triage).unwrap();
        prop_assert_eq!(decode_measurement(&encode_measurement(&m)).unwrap(), m);
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_measurement(&bytes);
        let _ = decode_self_report(&bytes);
    }
}
