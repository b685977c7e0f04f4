//! Schema evolution against the real broker and registry: hub subjects are registered at
//! FULL_TRANSITIVE by `AvroSerde::register`, so a new optional field is accepted and both
//! versions read each other's records, while an incompatible change is refused with a
//! message naming the subject and the reason, also when only an older version conflicts.

use apache_avro::Schema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use dho_kafka::AvroSerde;
use dho_schemas::avro::SchemaKind;
use dho_schemas::model::Measurement;
use dho_schemas::{codec, fixtures, topics, wire};
use dho_tests::Stack;
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_schema_by_id, post_schema,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
use serde_json::json;

/// The hub's Measurement schema with `edit` applied to its JSON.
fn measurement_schema(edit: impl FnOnce(&mut Vec<serde_json::Value>)) -> String {
    let mut schema: serde_json::Value =
        serde_json::from_str(SchemaKind::Measurement.schema_text()).unwrap();
    edit(schema["fields"].as_array_mut().unwrap());
    schema.to_string()
}

fn with_note() -> String {
    measurement_schema(|fields| {
        fields.push(json!({
            "name": "note", "type": ["null", "string"], "default": null,
            "doc": "A free-text remark from the platform (v2)."
        }))
    })
}

fn without(field: &str) -> String {
    measurement_schema(|fields| fields.retain(|f| f["name"] != field))
}

async fn register(sr: &SrSettings, subject: &str, schema: String) -> Result<u32, SRCError> {
    let supplied = SuppliedSchema::new(
        Some("no.dho.v1.Measurement".into()),
        SchemaType::Avro,
        schema,
    );
    post_schema(sr, subject.to_string(), supplied)
        .await
        .map(|r| r.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evolution_an_optional_field_is_compatible_both_ways_and_breaking_changes_are_refused() {
    let stack = Stack::start().await;
    let url = stack.settings.schema_registry_url.clone();
    let serde = AvroSerde::new(&url);
    let sr = SrSettings::new(url.to_string());
    let topic = stack.settings.topics().measurements();
    let subject = topics::value_subject(&topic);

    // v1: the hub's own schema, registered as every service does at start-up.
    let v1 = serde.register::<Measurement>(&topic).await.unwrap();

    // v2: a newer platform adds an optional field.
    let v2_text = with_note();
    let v2_id = register(&sr, &subject, v2_text.clone())
        .await
        .expect("a new optional field is a FULL_TRANSITIVE-compatible change");
    assert_ne!(v2_id, v1.schema_id());
    let v2 = Schema::parse_str(&v2_text).unwrap();

    // A v2 record, read by the v1 code.
    let m = fixtures::spo2(&fixtures::patient(11), 92.5, 1_700_000_000_000);
    let mut record = apache_avro::to_value(&m).unwrap();
    let Value::Record(fields) = &mut record else {
        panic!("a Measurement is an Avro record")
    };
    fields.push((
        "note".into(),
        Value::Union(1, Box::new("felt dizzy".into())),
    ));
    let body = GenericDatumWriter::builder(&v2)
        .build()
        .unwrap()
        .write_value_to_vec(record.resolve(&v2).unwrap())
        .unwrap();
    let framed = wire::frame(v2_id, &body);
    assert_eq!(serde.decode::<Measurement>(&framed).await.unwrap(), m);

    // A v1 record, read by a v2 reader that fetches the writer's schema by id.
    let framed = v1.encode(&m).unwrap();
    let (id, body) = wire::unframe(&framed).unwrap();
    let writer = Schema::parse_str(&get_schema_by_id(id, &sr).await.unwrap().schema).unwrap();
    let read = apache_avro::reader::datum::GenericDatumReader::builder(&writer)
        .reader_schema(&v2)
        .build()
        .unwrap()
        .read_value(&mut &body[..])
        .unwrap();
    let Value::Record(fields) = &read else {
        panic!("a Measurement is an Avro record")
    };
    assert_eq!(
        fields.last().unwrap(),
        &("note".to_string(), Value::Union(0, Box::new(Value::Null))),
        "the v2 reader fills the new field's default"
    );
    assert_eq!(apache_avro::from_value::<Measurement>(&read).unwrap(), m);
    // And the hub's fast path still reads its own records.
    assert_eq!(codec::decode::<Measurement>(body).unwrap(), m);

    // Removing a field without a default: v1 readers could not read new records.
    let refused = register(&sr, &subject, without("code")).await.unwrap_err();
    let message = refused.to_string();
    assert!(message.contains(&subject), "names the subject: {message}");
    assert!(message.contains("code"), "names the field: {message}");
    assert!(message.contains("incompatible"), "says why: {message}");

    // Changing a field's type.
    let retyped = measurement_schema(|fields| {
        let field = fields
            .iter_mut()
            .find(|f| f["name"] == "effective_time")
            .unwrap();
        field["type"] = json!("string");
    });
    let message = register(&sr, &subject, retyped)
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains(&subject), "names the subject: {message}");
    assert!(
        message.contains("effective_time"),
        "names the field: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evolution_compatibility_is_checked_against_every_version_not_only_the_latest() {
    let stack = Stack::start().await;
    let url = stack.settings.schema_registry_url.clone();
    let serde = AvroSerde::new(&url);
    let sr = SrSettings::new(url.to_string());
    let topic = stack.settings.topics().measurements();
    let subject = topics::value_subject(&topic);
    serde.register::<Measurement>(&topic).await.unwrap();

    // v2 drops the optional source_id: compatible with v1 (it has a default).
    register(&sr, &subject, without("source_id"))
        .await
        .expect("dropping a field with a default is compatible");
    // v3 brings source_id back as a long: fine against v2, but v3 cannot read v1's strings.
    let v3 = measurement_schema(|fields| {
        let field = fields
            .iter_mut()
            .find(|f| f["name"] == "source_id")
            .unwrap();
        field["type"] = json!(["null", "long"]);
    });
    let message = register(&sr, &subject, v3).await.unwrap_err().to_string();
    assert!(message.contains(&subject), "names the subject: {message}");
    assert!(
        message.contains("version 1"),
        "names the older version: {message}"
    );
}

/// `text` with every field named in `fields` removed, at any depth: the schema as it was
/// before those fields were added.
fn before(text: &str, fields: &[&str]) -> String {
    fn strip(node: &mut serde_json::Value, fields: &[&str]) {
        match node {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(list)) = map.get_mut("fields") {
                    list.retain(|f| !fields.contains(&f["name"].as_str().unwrap_or_default()));
                }
                map.values_mut().for_each(|v| strip(v, fields));
            }
            serde_json::Value::Array(list) => list.iter_mut().for_each(|v| strip(v, fields)),
            _ => {}
        }
    }
    let mut schema: serde_json::Value = serde_json::from_str(text).unwrap();
    strip(&mut schema, fields);
    schema.to_string()
}

/// Issue 20's additions: `Delivery.replaces` and `DisclosureRecord.replaces` (retraction and
/// correction) and `Answer.nested_in` (QuestionnaireResponse groups), each registered over
/// the version before it on the subject it lives in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evolution_retraction_and_nesting_fields_are_compatible_with_the_versions_before() {
    use dho_schemas::model::{Delivery, DisclosureRecord, SelfReport};
    let stack = Stack::start().await;
    let url = stack.settings.schema_registry_url.clone();
    let serde = AvroSerde::new(&url);
    let sr = SrSettings::new(url.to_string());
    let topics = stack.settings.topics();
    let added = ["replaces", "nested_in"];
    let post = |subject: String, name: &str, text: String| {
        let sr = sr.clone();
        let supplied =
            SuppliedSchema::new(Some(format!("no.dho.v1.{name}")), SchemaType::Avro, text);
        async move { post_schema(&sr, subject, supplied).await.map(|r| r.id) }
    };
    let deliver = topics.deliver("gp");
    for (topic, kind) in [
        (deliver.clone(), SchemaKind::Delivery),
        (topics.audit(), SchemaKind::DisclosureRecord),
        (topics.selfreports(), SchemaKind::SelfReport),
    ] {
        let old = before(kind.schema_text(), &added);
        assert_ne!(old, kind.schema_text(), "{kind:?} has one of the fields");
        post(topics::value_subject(&topic), kind.type_name(), old)
            .await
            .unwrap_or_else(|e| panic!("{kind:?} before: {e}"));
    }
    // Registered as the services do, at FULL_TRANSITIVE: checked against the version before.
    serde
        .register::<Delivery>(&deliver)
        .await
        .expect("Delivery");
    serde
        .register::<DisclosureRecord>(&topics.audit())
        .await
        .expect("DisclosureRecord");
    serde
        .register::<SelfReport>(&topics.selfreports())
        .await
        .expect("SelfReport");

    // The same field without a default would not be: old readers could not fill it.
    let mut no_default: serde_json::Value =
        serde_json::from_str(SchemaKind::DisclosureRecord.schema_text()).unwrap();
    let fields = no_default["fields"].as_array_mut().unwrap();
    let last = fields.last_mut().unwrap();
    assert_eq!(last["name"], "replaces");
    last.as_object_mut().unwrap().remove("default");
    last["type"] = json!("string");
    let refused = post(
        topics::value_subject(&topics.audit()),
        "DisclosureRecord",
        no_default.to_string(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(refused.contains("incompatible"), "{refused}");

    // A record of the version before reads with the current code: the new fields null.
    let old = Schema::parse_str(&before(SchemaKind::Delivery.schema_text(), &added)).unwrap();
    let mut delivery = fixtures::delivery_of(&fixtures::spo2(&fixtures::patient(12), 95.0, 1));
    let mut value = apache_avro::to_value(&delivery).unwrap();
    let Value::Record(fields) = &mut value else {
        panic!("a Delivery is an Avro record")
    };
    fields.retain(|(name, _)| name != "replaces");
    let body = GenericDatumWriter::builder(&old)
        .build()
        .unwrap()
        .write_value_to_vec(value.resolve(&old).unwrap())
        .unwrap();
    delivery.replaces = None;
    assert_eq!(
        codec::decode_with_writer::<Delivery>(&old, &body).unwrap(),
        delivery
    );
}

/// Issue 19's addition: `Delivery.sharing_ended` (the notice that sharing ended), registered
/// over the version before it; a delivery of that version reads with it null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evolution_the_sharing_ended_notice_is_compatible_with_the_delivery_before() {
    use dho_schemas::model::Delivery;
    let stack = Stack::start().await;
    let url = stack.settings.schema_registry_url.clone();
    let sr = SrSettings::new(url.to_string());
    let deliver = stack.settings.topics().deliver("gp");
    let old_text = before(SchemaKind::Delivery.schema_text(), &["sharing_ended"]);
    assert_ne!(old_text, SchemaKind::Delivery.schema_text());
    let supplied = SuppliedSchema::new(
        Some("no.dho.v1.Delivery".into()),
        SchemaType::Avro,
        old_text.clone(),
    );
    post_schema(&sr, topics::value_subject(&deliver), supplied)
        .await
        .expect("the Delivery before");
    AvroSerde::new(&url)
        .register::<Delivery>(&deliver)
        .await
        .expect("Delivery with sharing_ended, at FULL_TRANSITIVE over the one before");

    let old = Schema::parse_str(&old_text).unwrap();
    let delivery = fixtures::delivery_of(&fixtures::spo2(&fixtures::patient(13), 95.0, 1));
    let mut value = apache_avro::to_value(&delivery).unwrap();
    let Value::Record(fields) = &mut value else {
        panic!("a Delivery is an Avro record")
    };
    fields.retain(|(name, _)| name != "sharing_ended");
    let body = GenericDatumWriter::builder(&old)
        .build()
        .unwrap()
        .write_value_to_vec(value.resolve(&old).unwrap())
        .unwrap();
    assert_eq!(
        codec::decode_with_writer::<Delivery>(&old, &body).unwrap(),
        delivery
    );
}
