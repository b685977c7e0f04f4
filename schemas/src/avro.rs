//! The `.avsc` files under `schemas/avro/` are the source of truth. Each named type is written
//! once, in its own file; a top-level schema is composed into a self-contained one (every
//! named type inlined at first use), which is what a schema registry stores and a peer reads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use apache_avro::Schema;
use serde_json::Value as Json;

/// Every schema file, by the name of the type it defines.
const FILES: &[(&str, &str)] = &[
    (
        "PatientIdentifier",
        include_str!("../avro/PatientIdentifier.avsc"),
    ),
    (
        "OrganisationIdentifier",
        include_str!("../avro/OrganisationIdentifier.avsc"),
    ),
    ("Source", include_str!("../avro/Source.avsc")),
    ("Quantity", include_str!("../avro/Quantity.avsc")),
    ("Coding", include_str!("../avro/Coding.avsc")),
    ("VkpSeverity", include_str!("../avro/VkpSeverity.avsc")),
    ("DataCategory", include_str!("../avro/DataCategory.avsc")),
    ("ContentLevel", include_str!("../avro/ContentLevel.avsc")),
    (
        "SourcePosition",
        include_str!("../avro/SourcePosition.avsc"),
    ),
    ("Measurement", include_str!("../avro/Measurement.avsc")),
    ("SelfReport", include_str!("../avro/SelfReport.avsc")),
    ("Consent", include_str!("../avro/Consent.avsc")),
    ("Subscription", include_str!("../avro/Subscription.avsc")),
    ("CarePlan", include_str!("../avro/CarePlan.avsc")),
    ("Alert", include_str!("../avro/Alert.avsc")),
    ("Delivery", include_str!("../avro/Delivery.avsc")),
    (
        "DisclosureRecord",
        include_str!("../avro/DisclosureRecord.avsc"),
    ),
    ("ConsentChange", include_str!("../avro/ConsentChange.avsc")),
    (
        "CarePlanChange",
        include_str!("../avro/CarePlanChange.avsc"),
    ),
    (
        "SubscriptionChange",
        include_str!("../avro/SubscriptionChange.avsc"),
    ),
    ("Enrolment", include_str!("../avro/Enrolment.avsc")),
    (
        "EnrolmentChange",
        include_str!("../avro/EnrolmentChange.avsc"),
    ),
    ("AccessRefusal", include_str!("../avro/AccessRefusal.avsc")),
];

/// The records that travel on topics on their own: each is registered as a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SchemaKind {
    Measurement,
    SelfReport,
    Consent,
    Subscription,
    CarePlan,
    Delivery,
    DisclosureRecord,
    ConsentChange,
    CarePlanChange,
    SubscriptionChange,
    Enrolment,
    EnrolmentChange,
    AccessRefusal,
}

impl SchemaKind {
    pub const ALL: [SchemaKind; 13] = [
        SchemaKind::Measurement,
        SchemaKind::SelfReport,
        SchemaKind::Consent,
        SchemaKind::Subscription,
        SchemaKind::CarePlan,
        SchemaKind::Delivery,
        SchemaKind::DisclosureRecord,
        SchemaKind::ConsentChange,
        SchemaKind::CarePlanChange,
        SchemaKind::SubscriptionChange,
        SchemaKind::Enrolment,
        SchemaKind::EnrolmentChange,
        SchemaKind::AccessRefusal,
    ];

    /// The Avro type name (without namespace).
    pub fn type_name(self) -> &'static str {
        match self {
            SchemaKind::Measurement => "Measurement",
            SchemaKind::SelfReport => "SelfReport",
            SchemaKind::Consent => "Consent",
            SchemaKind::Subscription => "Subscription",
            SchemaKind::CarePlan => "CarePlan",
            SchemaKind::Delivery => "Delivery",
            SchemaKind::DisclosureRecord => "DisclosureRecord",
            SchemaKind::ConsentChange => "ConsentChange",
            SchemaKind::CarePlanChange => "CarePlanChange",
            SchemaKind::SubscriptionChange => "SubscriptionChange",
            SchemaKind::Enrolment => "Enrolment",
            SchemaKind::EnrolmentChange => "EnrolmentChange",
            SchemaKind::AccessRefusal => "AccessRefusal",
        }
    }

    /// The registry compatibility of the kind's subjects. FULL_TRANSITIVE: any version reads
    /// any other. A consent directive and its audit record are BACKWARD_TRANSITIVE: a new
    /// version reads every old record, but an old reader may fail on a new one, as it must
    /// on a rule it does not know (version 2's blanket and professional rules): it holds the
    /// patient rather than read the directive without the rule.
    pub fn compatibility(self) -> &'static str {
        match self {
            SchemaKind::Consent | SchemaKind::ConsentChange => "BACKWARD_TRANSITIVE",
            _ => "FULL_TRANSITIVE",
        }
    }

    /// The self-contained schema text, as registered.
    pub fn schema_text(self) -> &'static str {
        &COMPOSED[&self].0
    }

    /// The parsed schema.
    pub fn schema(self) -> &'static Schema {
        &COMPOSED[&self].1
    }
}

static COMPOSED: LazyLock<BTreeMap<SchemaKind, (String, Schema)>> = LazyLock::new(|| {
    SchemaKind::ALL
        .iter()
        .map(|&kind| {
            // The files are compiled in and checked by tests: a failure here is a build defect.
            let text = compose(kind.type_name()).expect("schema files compose");
            let schema = Schema::parse_str(&text).expect("composed schema parses");
            (kind, (text, schema))
        })
        .collect()
});

/// Composes the named type into one self-contained schema document.
pub fn compose(type_name: &str) -> Result<String, String> {
    let library: BTreeMap<&str, Json> = FILES
        .iter()
        .map(|(name, text)| {
            serde_json::from_str(text)
                .map(|json| (*name, json))
                .map_err(|e| format!("{name}.avsc is not JSON: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let root = library
        .get(type_name)
        .ok_or_else(|| format!("no schema file defines {type_name}"))?
        .clone();
    let mut defined = BTreeSet::new();
    let composed = inline(root, &library, &mut defined)?;
    serde_json::to_string_pretty(&composed).map_err(|e| e.to_string())
}

/// Walks a schema; a reference to a library type not yet defined is replaced by its definition.
fn inline(
    node: Json,
    library: &BTreeMap<&str, Json>,
    defined: &mut BTreeSet<String>,
) -> Result<Json, String> {
    match node {
        Json::String(name) if library.contains_key(name.as_str()) && !defined.contains(&name) => {
            inline(library[name.as_str()].clone(), library, defined)
        }
        Json::Array(items) => items
            .into_iter()
            .map(|item| inline(item, library, defined))
            .collect::<Result<Vec<_>, _>>()
            .map(Json::Array),
        Json::Object(mut map) => {
            if let Some(Json::String(name)) = map.get("name")
                && matches!(map.get("type"), Some(Json::String(t)) if t == "record" || t == "enum" || t == "fixed")
            {
                defined.insert(name.clone());
            }
            for key in ["type", "items", "values", "fields"] {
                if let Some(child) = map.remove(key) {
                    map.insert(key.to_string(), inline(child, library, defined)?);
                }
            }
            Ok(Json::Object(map))
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_a_named_avro_type_with_the_file_name() {
        for (name, text) in FILES {
            let json: Json = serde_json::from_str(text).unwrap();
            assert_eq!(json["name"], *name, "{name}.avsc");
            assert_eq!(json["namespace"], "no.dho.v1", "{name}.avsc");
        }
    }

    #[test]
    fn every_kind_composes_into_a_self_contained_schema() {
        for kind in SchemaKind::ALL {
            // Parsing alone (no other schemata given) proves nothing is left unresolved.
            let schema = Schema::parse_str(kind.schema_text()).unwrap();
            assert_eq!(schema.name().unwrap().name(), kind.type_name());
        }
    }

    #[test]
    fn an_audit_record_holds_the_contracts_own_record() {
        // The plan (consent) inside a change is exactly the record on the state topic.
        let names = |record: &Json| -> Vec<Json> {
            record["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["name"].clone())
                .collect()
        };
        for (change, field, kind) in [
            (SchemaKind::CarePlanChange, "plan", SchemaKind::CarePlan),
            (SchemaKind::ConsentChange, "consent", SchemaKind::Consent),
            (
                SchemaKind::SubscriptionChange,
                "subscription",
                SchemaKind::Subscription,
            ),
        ] {
            let json: Json = serde_json::from_str(change.schema_text()).unwrap();
            let held = &json["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == field)
                .unwrap()["type"][1];
            let own: Json = serde_json::from_str(kind.schema_text()).unwrap();
            assert_eq!(held["name"], kind.type_name());
            assert_eq!(names(held), names(&own), "{}", change.type_name());
        }
    }

    #[test]
    fn every_field_is_documented_or_self_explanatory() {
        // Documentation is part of the contract: records must have docs.
        for (name, text) in FILES {
            let json: Json = serde_json::from_str(text).unwrap();
            assert!(json.get("doc").is_some(), "{name} has no doc");
        }
    }

    #[test]
    fn a_reference_to_an_unknown_type_fails_to_parse() {
        let broken = r#"{"type":"record","name":"X","fields":[{"name":"a","type":"Nope"}]}"#;
        assert!(Schema::parse_str(broken).is_err());
    }
}
