//! Audit records of care-plan changes (`CarePlanChange`, `avro/CarePlanChange.avsc`), kept
//! like consent changes: who recorded or deleted which plan of which patient, when, and
//! through what; written on `<prefix>.audit.careplans` before the change itself.
//!
//! The schema file is written like the contract's files in `schemas/avro/` (other named
//! types by name) and composed here against the contract's own `CarePlan` schema, so the
//! plan inside a record is always exactly the plan on the careplans topic.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use dho_schemas::model::{CarePlan, Millis, OrganisationIdentifier, PatientIdentifier};
use dho_schemas::{SchemaKind, wire};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The record's full name, as registered.
pub const CARE_PLAN_CHANGE_NAME: &str = "no.dho.v1.CarePlanChange";

const KIND: &str = "CarePlanChange";

/// What a care-plan change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CarePlanAction {
    /// The plan was recorded or replaced.
    Recorded,
    /// The plan was removed (a tombstone).
    Deleted,
}

/// The audit record of one care-plan change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarePlanChange {
    pub change_id: String,
    pub plan_id: String,
    pub patient: PatientIdentifier,
    pub action: CarePlanAction,
    /// The plan as recorded; `None` when deleted.
    pub plan: Option<CarePlan>,
    /// The care organisation on whose behalf the change was made.
    pub changed_by: OrganisationIdentifier,
    /// The authenticated credential's name or the operator (never a secret).
    pub principal: String,
    /// `gateway`, `admin-cli`, ...
    pub channel: String,
    pub changed_at: Millis,
}

// Compiled in and checked by the tests below: a failure here is a build defect.
static TEXT: LazyLock<String> = LazyLock::new(|| compose().expect("CarePlanChange.avsc composes"));
static SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(&TEXT).expect("the composed schema parses"));
static WRITER: LazyLock<GenericDatumWriter<'static>> = LazyLock::new(|| {
    GenericDatumWriter::builder(&SCHEMA)
        .build()
        .expect("the writer builds")
});
static READER: LazyLock<GenericDatumReader<'static>> = LazyLock::new(|| {
    GenericDatumReader::builder(&SCHEMA)
        .build()
        .expect("the reader builds")
});

impl CarePlanChange {
    /// The self-contained schema text, as registered.
    pub fn schema_text() -> &'static str {
        &TEXT
    }

    /// The parsed schema.
    pub fn schema() -> &'static Schema {
        &SCHEMA
    }

    /// The record framed with `schema_id`: magic byte, schema id, Avro body.
    pub fn encode(&self, schema_id: u32) -> dho_schemas::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(512);
        wire::frame_into(schema_id, &mut out);
        WRITER
            .write_ser(&mut out, self)
            .map_err(|e| dho_schemas::Error::Encode {
                kind: KIND,
                detail: e.to_string(),
            })?;
        Ok(out)
    }

    /// Decodes a framed record written with this version of the schema (whatever id it
    /// was registered under).
    pub fn decode(framed: &[u8]) -> dho_schemas::Result<Self> {
        let (_, mut body) = wire::unframe(framed)?;
        let value =
            READER
                .read_deser::<Self>(&mut body)
                .map_err(|e| dho_schemas::Error::Decode {
                    kind: KIND,
                    detail: e.to_string(),
                })?;
        if !body.is_empty() {
            return Err(dho_schemas::Error::TrailingBytes {
                kind: KIND,
                count: body.len(),
            });
        }
        Ok(value)
    }
}

/// `CarePlanChange.avsc` with every named type it refers to inlined at first use, taken
/// from the contract's composed `CarePlan` schema.
fn compose() -> Result<String, String> {
    let file: Json = serde_json::from_str(include_str!("../avro/CarePlanChange.avsc"))
        .map_err(|e| format!("CarePlanChange.avsc is not JSON: {e}"))?;
    let care_plan: Json = serde_json::from_str(SchemaKind::CarePlan.schema_text())
        .map_err(|e| format!("the CarePlan schema is not JSON: {e}"))?;
    let mut library = BTreeMap::new();
    collect(care_plan, &mut library);
    let composed = inline(file, &library, &mut BTreeSet::new());
    serde_json::to_string_pretty(&composed).map_err(|e| e.to_string())
}

/// Whether `node` defines a named type (record, enum, fixed); its name if so.
fn definition(node: &serde_json::Map<String, Json>) -> Option<String> {
    let named = matches!(node.get("type"), Some(Json::String(t)) if t == "record" || t == "enum" || t == "fixed");
    match node.get("name") {
        Some(Json::String(name)) if named => Some(name.clone()),
        _ => None,
    }
}

/// Takes every named type defined in `node` into `library`, each with the types it
/// defines replaced by their names; returns `node` likewise.
fn collect(node: Json, library: &mut BTreeMap<String, Json>) -> Json {
    match node {
        Json::Array(items) => Json::Array(items.into_iter().map(|i| collect(i, library)).collect()),
        Json::Object(mut map) => {
            for key in ["type", "items", "values", "fields"] {
                if let Some(child) = map.remove(key) {
                    map.insert(key.to_string(), collect(child, library));
                }
            }
            match definition(&map) {
                Some(name) => {
                    library.insert(name.clone(), Json::Object(map));
                    Json::String(name)
                }
                None => Json::Object(map),
            }
        }
        other => other,
    }
}

/// Replaces each reference to a library type not yet defined by its definition (as
/// `schemas/src/avro.rs` composes the contract's files).
fn inline(node: Json, library: &BTreeMap<String, Json>, defined: &mut BTreeSet<String>) -> Json {
    match node {
        Json::String(name) if library.contains_key(&name) && !defined.contains(&name) => {
            inline(library[&name].clone(), library, defined)
        }
        Json::Array(items) => Json::Array(
            items
                .into_iter()
                .map(|i| inline(i, library, defined))
                .collect(),
        ),
        Json::Object(mut map) => {
            if let Some(name) = definition(&map) {
                defined.insert(name);
            }
            for key in ["type", "items", "values", "fields"] {
                if let Some(child) = map.remove(key) {
                    map.insert(key.to_string(), inline(child, library, defined));
                }
            }
            Json::Object(map)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_schemas::fixtures;

    #[test]
    fn the_schema_composes_into_a_self_contained_one_holding_the_contracts_care_plan() {
        // Parsing alone (no other schemata given) proves nothing is left unresolved.
        let schema = Schema::parse_str(CarePlanChange::schema_text()).unwrap();
        assert_eq!(schema.name().unwrap().fullname(None), CARE_PLAN_CHANGE_NAME);
        let json: Json = serde_json::from_str(CarePlanChange::schema_text()).unwrap();
        let plan = &json["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "plan")
            .unwrap()["type"][1];
        let contract: Json = serde_json::from_str(SchemaKind::CarePlan.schema_text()).unwrap();
        // The same fields, in the same order (the patient and organisation types are
        // defined once, earlier in the record, and referred to by name here).
        let names = |record: &Json| -> Vec<Json> {
            record["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["name"].clone())
                .collect()
        };
        assert_eq!(plan["name"], "CarePlan");
        assert_eq!(names(plan), names(&contract));
        assert!(json["doc"].as_str().unwrap().contains("audit.careplans"));
    }

    #[test]
    fn a_change_round_trips_through_its_framed_form() {
        let patient = fixtures::patient(1);
        let recorded = CarePlanChange {
            change_id: "c-1".into(),
            plan_id: format!("{}.kols", fixtures::home_care().value),
            patient: patient.clone(),
            action: CarePlanAction::Recorded,
            plan: Some(fixtures::care_plan(&patient)),
            changed_by: fixtures::home_care(),
            principal: "bergen-home-care".into(),
            channel: "gateway".into(),
            changed_at: 1_700_000_000_000,
        };
        let deleted = CarePlanChange {
            action: CarePlanAction::Deleted,
            plan: None,
            ..recorded.clone()
        };
        for change in [recorded, deleted] {
            let framed = change.encode(42).unwrap();
            assert_eq!(wire::unframe(&framed).unwrap().0, 42);
            assert_eq!(CarePlanChange::decode(&framed).unwrap(), change);
            let mut longer = framed.clone();
            longer.push(0);
            assert!(CarePlanChange::decode(&longer).is_err());
        }
    }
}
