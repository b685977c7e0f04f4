//! The `schema_registry_converter` crate (the project's Rust client) against the registry.

use apache_avro::types::Value;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::proto_raw::{ProtoRawDecoder, ProtoRawEncoder};
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_all_subjects, get_schema_by_id, get_schema_by_subject_and_version, post_schema,
};
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use crate::common::Env;

const READING: &str = r#"{"type":"record","name":"Reading","namespace":"dho","fields":[{"name":"patient","type":"string"},{"name":"value","type":"double"}]}"#;

fn settings(env: &Env) -> SrSettings {
    SrSettings::new(env.registry.url())
}

fn reading() -> SuppliedSchema {
    SuppliedSchema::new(Some("dho.Reading".into()), SchemaType::Avro, READING.into())
}

#[tokio::test]
async fn register_fetch_encode_and_decode_avro() {
    let env = Env::start().await;
    let sr = settings(&env);

    let registered = post_schema(&sr, "dho.readings-value".into(), reading())
        .await
        .unwrap();
    assert_eq!(registered.id, 1);
    let again = post_schema(&sr, "dho.readings-value".into(), reading())
        .await
        .unwrap();
    assert_eq!(again.id, 1);

    let by_id = get_schema_by_id(1, &sr).await.unwrap();
    assert_eq!(by_id.schema, READING);
    assert_eq!(by_id.schema_type, SchemaType::Avro);
    let latest = get_schema_by_subject_and_version(&sr, "dho.readings-value", None)
        .await
        .unwrap();
    assert_eq!((latest.id, latest.version), (1, Some(1)));
    let v1 = get_schema_by_subject_and_version(&sr, "dho.readings-value", Some(1))
        .await
        .unwrap();
    assert_eq!(v1.schema, READING);
    assert_eq!(
        get_all_subjects(&sr).await.unwrap(),
        vec!["dho.readings-value".to_string()]
    );

    // Encode (looks up `latest`), then decode (fetches by id).
    let encoder = AvroEncoder::new(settings(&env));
    let strategy = SubjectNameStrategy::TopicNameStrategy("dho.readings".into(), false);
    let bytes = encoder
        .encode(
            vec![
                ("patient", Value::String("p-1".into())),
                ("value", Value::Double(120.5)),
            ],
            strategy,
        )
        .await
        .unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 1]);
    let decoder = AvroDecoder::new(settings(&env));
    let decoded = decoder.decode(Some(&bytes)).await.unwrap();
    assert_eq!(
        decoded.value,
        Value::Record(vec![
            ("patient".into(), Value::String("p-1".into())),
            ("value".into(), Value::Double(120.5)),
        ])
    );

    // Encoding with a schema registers it: a compatible v2 gets id 2.
    let v2 = READING.replace(
        r#"{"name":"value","type":"double"}"#,
        r#"{"name":"value","type":"double"},{"name":"unit","type":"string","default":"mmHg"}"#,
    );
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        "dho.readings".into(),
        false,
        SuppliedSchema::new(Some("dho.Reading".into()), SchemaType::Avro, v2),
    );
    // A fresh encoder: the client caches the schema per subject.
    let encoder = AvroEncoder::new(settings(&env));
    let bytes = encoder
        .encode(
            vec![
                ("patient", Value::String("p-2".into())),
                ("value", Value::Double(80.0)),
                ("unit", Value::String("bpm".into())),
            ],
            strategy,
        )
        .await
        .unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 2]);
    let decoded = decoder.decode(Some(&bytes)).await.unwrap();
    let Value::Record(fields) = decoded.value else {
        panic!("not a record: {decoded:?}");
    };
    assert_eq!(fields[2], ("unit".into(), Value::String("bpm".into())));

    // An incompatible schema is refused with the registry's 409.
    let incompatible = READING.replace(r#""type":"double""#, r#""type":"string""#);
    let error = post_schema(
        &sr,
        "dho.readings-value".into(),
        SuppliedSchema::new(Some("dho.Reading".into()), SchemaType::Avro, incompatible),
    )
    .await
    .unwrap_err();
    let text = format!("{error:?}");
    assert!(
        text.contains("409") && text.contains("dho.readings-value"),
        "{text}"
    );

    // A missing id is a non-retryable error, not a hang.
    assert!(get_schema_by_id(99, &sr).await.is_err());
}

#[tokio::test]
async fn protobuf_raw_round_trip() {
    let env = Env::start().await;
    let proto = "syntax = \"proto3\";\npackage dho;\n\nmessage Reading {\n  string patient = 1;\n}\n\nmessage Alert {\n  string reason = 1;\n}\n";
    let encoder = ProtoRawEncoder::new(settings(&env));
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        "dho.alerts".into(),
        false,
        SuppliedSchema::new(Some("dho.Alert".into()), SchemaType::Protobuf, proto.into()),
    );
    // Field 1, length-delimited, "x".
    let payload = [0x0a, 0x01, b'x'];
    let bytes = encoder
        .encode(&payload, "dho.Alert", strategy)
        .await
        .unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 1]);
    // Message index [1] is written as 02 02.
    assert_eq!(&bytes[5..7], &[2, 2]);
    let decoder = ProtoRawDecoder::new(settings(&env));
    let decoded = decoder.decode(Some(&bytes)).await.unwrap().unwrap();
    assert_eq!(decoded.bytes, payload);
    assert_eq!(decoded.full_name.as_str(), "dho.Alert");
    assert_eq!(decoded.schema.schema_type, SchemaType::Protobuf);
    assert_eq!(decoded.schema.schema, proto);
}
