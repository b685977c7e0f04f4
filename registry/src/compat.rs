//! Compatibility rules. Avro uses apache-avro's schema-resolution checker; a partial match
//! (some written values could not be read, e.g. a missing enum symbol or union branch) counts
//! as incompatible, as in Confluent's checker. For PROTOBUF and JSON only a change of schema
//! type is detected; see the crate documentation.

use std::panic::{AssertUnwindSafe, catch_unwind};

use apache_avro::Schema as AvroSchema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};

use crate::types::{CompatibilityLevel, SchemaType};

/// One side of a compatibility check.
#[derive(Debug, Clone, Copy)]
pub struct Checked<'a> {
    pub schema_type: SchemaType,
    /// `None` for non-Avro schemas and for stored Avro schemas that no longer parse.
    pub avro: Option<&'a AvroSchema>,
}

/// Checks `new` against `existing` (ascending versions, live ones only) as `level` demands.
/// Returns the reasons it is incompatible; empty means compatible.
pub fn check(
    level: CompatibilityLevel,
    new: Checked<'_>,
    existing: &[(u32, Checked<'_>)],
) -> Vec<String> {
    if level == CompatibilityLevel::None {
        return Vec::new();
    }
    let against: &[(u32, Checked<'_>)] = if level.transitive() {
        existing
    } else {
        match existing.last() {
            Some(_) => &existing[existing.len() - 1..],
            None => &[],
        }
    };
    let mut messages = Vec::new();
    for (version, old) in against {
        messages.extend(check_pair(level, new, *old, *version));
    }
    messages
}

/// Checks against one explicit version with the level's direction(s).
pub fn check_one(
    level: CompatibilityLevel,
    new: Checked<'_>,
    version: u32,
    old: Checked<'_>,
) -> Vec<String> {
    if level == CompatibilityLevel::None {
        return Vec::new();
    }
    check_pair(level, new, old, version)
}

fn check_pair(
    level: CompatibilityLevel,
    new: Checked<'_>,
    old: Checked<'_>,
    version: u32,
) -> Vec<String> {
    if new.schema_type != old.schema_type {
        return vec![format!(
            "{level}: incompatible schema type: version {version} is {}, the new schema is {}",
            old.schema_type, new.schema_type
        )];
    }
    let (Some(new_avro), Some(old_avro)) = (new.avro, old.avro) else {
        // Non-Avro types: only the type change above is detected (documented limitation).
        return Vec::new();
    };
    let mut messages = Vec::new();
    if level.backward()
        && let Some(reason) = can_read(old_avro, new_avro)
    {
        messages.push(format!(
            "{level}: the new schema cannot read data written with version {version}: {reason}"
        ));
    }
    if level.forward()
        && let Some(reason) = can_read(new_avro, old_avro)
    {
        messages.push(format!(
            "{level}: version {version} cannot read data written with the new schema: {reason}"
        ));
    }
    messages
}

/// `None` if every datum written with `writer` can be read with `reader`, else the reason.
fn can_read(writer: &AvroSchema, reader: &AvroSchema) -> Option<String> {
    let result = catch_unwind(AssertUnwindSafe(|| {
        SchemaCompatibility::can_read(writer, reader)
    }));
    match result {
        Ok(Ok(Compatibility::Full)) => None,
        Ok(Ok(Compatibility::Partial)) => Some(
            "only partially compatible: some values (enum symbols or union branches) \
             could not be read"
                .to_string(),
        ),
        Ok(Err(error)) => Some(format!("{error:?}")),
        Err(_) => Some("the compatibility checker failed on these schemas".to_string()),
    }
}
