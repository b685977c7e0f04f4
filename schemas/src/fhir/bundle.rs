//! Bundles (VKP_FHIR.md §4, rules 1-2 of §7): a `batch` (VKP) or `collection` (PMD's
//! examples) of Observations and QuestionnaireResponses. A bad bundle is refused whole; a
//! bad entry is refused alone, so one bad entry never sinks the rest.
//!
//! Locations of envelope errors are bundle-relative (`Bundle.entry[2].fullUrl`); those of a
//! resource's own errors are resource-relative (`Observation.status`), as they go into that
//! entry's `response.outcome`.

use std::collections::HashSet;

use super::types::Bundle;
use super::{FhirError, IngestContext, Ingested, IssueCode};

/// What became of one entry, in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryOutcome {
    /// The entry's `fullUrl`: the response repeats it, and the gateway keeps a map from it
    /// to the event id.
    pub full_url: Option<String>,
    /// The event, or why the entry was refused.
    pub result: Result<Ingested, FhirError>,
}

impl EntryOutcome {
    /// The `batch-response` entry: `201 Created` with a location, or an error status with
    /// an OperationOutcome.
    pub fn response_entry(&self) -> serde_json::Value {
        let response = match &self.result {
            Ok(event) => serde_json::json!({
                "status": "201 Created",
                "location": format!("{}/{}", event.resource_type(), event.event_id()),
            }),
            Err(e) => {
                // Unparseable or repeated: the request is bad. Otherwise it broke a rule.
                let status = match e.code {
                    IssueCode::Structure | IssueCode::Duplicate => "400 Bad Request",
                    _ => "422 Unprocessable Entity",
                };
                serde_json::json!({"status": status, "outcome": e.to_operation_outcome()})
            }
        };
        let mut entry = serde_json::json!({ "response": response });
        if let Some(url) = &self.full_url {
            entry["fullUrl"] = url.clone().into();
        }
        entry
    }
}

/// The `batch-response` Bundle for the outcomes, in the same order (HTTP 200 as a whole).
pub fn response_bundle(outcomes: &[EntryOutcome]) -> serde_json::Value {
    serde_json::json!({
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": outcomes.iter().map(EntryOutcome::response_entry).collect::<Vec<_>>(),
    })
}

/// Validates the bundle and maps every entry. `context_for(i)` supplies the event id (and
/// the rest of the context) for entry `i`; it is called only for entries that get mapped.
/// `Err` means the whole bundle is refused (HTTP 400).
pub fn split(
    json: &serde_json::Value,
    mut context_for: impl FnMut(usize) -> IngestContext,
) -> Result<Vec<EntryOutcome>, FhirError> {
    if json.get("resourceType").and_then(|t| t.as_str()) != Some("Bundle") {
        return Err(FhirError::format(
            "resourceType",
            IssueCode::Structure,
            "expected a Bundle",
        ));
    }
    let bundle: Bundle = super::parse("Bundle", json)?;
    let batch = match bundle.type_.as_deref() {
        Some("batch") => true,
        Some("collection") => false,
        _ => {
            return Err(FhirError::format(
                "Bundle.type",
                IssueCode::Structure,
                "the bundle type must be batch (or collection, as PMD sends it)",
            ));
        }
    };
    let mut seen = HashSet::new();
    let outcomes = bundle
        .entry
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let at = format!("Bundle.entry[{i}]");
            let result = (|| {
                let full_url = entry.full_url.as_deref().ok_or_else(|| {
                    FhirError::format(
                        format!("{at}.fullUrl"),
                        IssueCode::Required,
                        "fullUrl is required",
                    )
                })?;
                if !seen.insert(full_url) {
                    return Err(FhirError::format(
                        format!("{at}.fullUrl"),
                        IssueCode::Duplicate,
                        "fullUrl repeats an earlier entry's",
                    ));
                }
                if batch {
                    let method = entry.request.as_ref().and_then(|r| r.method.as_deref());
                    if !matches!(method, Some("POST" | "PUT")) {
                        return Err(FhirError::format(
                            format!("{at}.request.method"),
                            IssueCode::Required,
                            "a batch entry needs a request with method POST or PUT",
                        ));
                    }
                }
                let resource = entry.resource.as_ref().ok_or_else(|| {
                    FhirError::format(
                        format!("{at}.resource"),
                        IssueCode::Required,
                        "resource is required",
                    )
                })?;
                super::ingest_resource(resource, &context_for(i))
            })();
            EntryOutcome {
                full_url: entry.full_url.clone(),
                result,
            }
        })
        .collect();
    Ok(outcomes)
}
