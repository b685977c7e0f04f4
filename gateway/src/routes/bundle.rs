//! `POST /fhir` and `POST /fhir/Bundle`: a `batch` (VKP) or `collection` (PMD) Bundle from
//! a device platform → HTTP 200 with a `batch-response` Bundle, one entry per input entry in
//! order.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dho_schemas::fhir::IngestContext;
use dho_schemas::fhir::bundle::{self, EntryOutcome};
use dho_schemas::model::*;
use serde_json::{Value, json};

use super::readings::{data_controller, patient_of};
use super::refusal::{FHIR_JSON, Refusal, publish_failure, refuse};
use super::roles::{Platform, at};
use super::steps::Who;
use crate::Gateway;
use crate::event_id::assign_event_id;
use crate::events::{
    Endpoint, EntryAccepted, EntryForbidden, EntryNotPublished, EntryRejected, RequestAnswered,
};
use dho_telemetry::InternalEvent;

pub(super) async fn fhir_bundle(
    caller: Platform<at::FhirBundle>,
    State(gw): State<Gateway>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const EP: Endpoint = Endpoint::FhirBundle;
    let platform = caller.org.clone();
    let json = match gw.body(body, EP) {
        Ok(json) => json,
        Err(r) => return refuse(EP, r),
    };
    let entries = json
        .get("entry")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if entries > gw.inner.config.max_bundle_entries {
        let r = Refusal {
            fhir: true,
            ..Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-costly",
                "too_many_entries",
                &format!(
                    "{entries} entries; at most {} per bundle",
                    gw.inner.config.max_bundle_entries
                ),
            )
            .at("Bundle.entry")
        };
        return refuse(EP, r);
    }
    let _permit = match gw.reserve(entries, true) {
        Ok(p) => p,
        Err(r) => return refuse(EP, r),
    };
    let now = now_millis();
    // A random event id for the mapping (which validates it); replaced by one derived from
    // the sender's id where there is one.
    let context = |_| IngestContext {
        event_id: uuid::Uuid::new_v4().to_string(),
        received_time: now,
        platform: platform.clone(),
        policy: gw.inner.policy,
    };
    let mut outcomes = match bundle::split(&json, context) {
        Ok(o) => o,
        Err(e) => return refuse(EP, Refusal::from_fhir(StatusCode::BAD_REQUEST, &e)),
    };
    // The platform publishes only as itself: its organisation is the data controller.
    let mut forbidden = vec![false; outcomes.len()];
    for (outcome, forbidden) in outcomes.iter_mut().zip(&mut forbidden) {
        if let Ok(event) = &mut outcome.result {
            assign_event_id(event, &platform);
            *forbidden = !data_controller(event).same_entity(&platform);
            if *forbidden {
                let who = Who::new(&caller.name, &platform).about(patient_of(event));
                let message = "an entry named another organisation as data controller";
                gw.audit_refusal(&who, EP, "cross_platform", message);
            }
        }
    }
    let (gw, platform) = (&gw, &platform);
    let published = futures::future::join_all(outcomes.iter().zip(&forbidden).map(
        |(outcome, forbidden)| async move {
            match &outcome.result {
                Ok(event) if !forbidden => Some(gw.publish_once(event, platform).await),
                _ => None,
            }
        },
    ))
    .await;
    gw.observe_queue();

    let mut accepted = 0;
    let mut retry = false;
    let entries: Vec<Value> = outcomes
        .iter()
        .zip(&forbidden)
        .zip(published)
        .map(|((outcome, forbidden), published)| match (&outcome.result, published) {
            (Ok(_), Some(Ok(_))) => {
                accepted += 1;
                EntryAccepted.emit();
                outcome.response_entry()
            }
            (Ok(_), None) if *forbidden => {
                EntryForbidden {
                    reason: "cross_platform",
                }
                .emit();
                failed_entry(
                    outcome,
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "1.2",
                    "Observation.performer",
                    "the organisation performer (data controller) must be the authenticated platform",
                )
            }
            (Ok(_), Some(Err(e))) => {
                let (reason, status, code) = publish_failure(&e);
                retry |= status == StatusCode::SERVICE_UNAVAILABLE;
                EntryNotPublished {
                    endpoint: EP,
                    reason,
                    error: &e,
                }
                .emit();
                failed_entry(outcome, status, code, "3.1", "", &e.to_string())
            }
            (Err(e), _) => {
                EntryRejected {
                    reason: e.code.as_str(),
                }
                .emit();
                outcome.response_entry()
            }
            (Ok(_), None) => unreachable!("every unforbidden event is published"),
        })
        .collect();
    let total = entries.len();
    let body = json!({"resourceType": "Bundle", "type": "batch-response", "entry": entries});
    RequestAnswered {
        endpoint: EP,
        outcome: match accepted {
            a if a == total => "accepted",
            0 => "rejected",
            _ => "partial",
        },
    }
    .emit();
    tracing::debug!(accepted, total, "bundle answered");
    let mut response = (StatusCode::OK, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    if retry {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(gw.inner.config.retry_after.as_secs()),
        );
    }
    response
}

/// A batch-response entry for an entry that mapped but was not stored.
fn failed_entry(
    outcome: &EntryOutcome,
    status: StatusCode,
    code: &str,
    vkp: &str,
    location: &str,
    message: &str,
) -> Value {
    let mut issue = json!({
        "severity": "error",
        "code": code,
        "details": {"coding": [{"system": dho_schemas::fhir::VKP_OUTCOME_SYSTEM, "code": vkp}]},
        "diagnostics": message,
    });
    if !location.is_empty() {
        issue["expression"] = json!([location]);
    }
    let mut entry = json!({"response": {
        "status": status_line(status),
        "outcome": {"resourceType": "OperationOutcome", "issue": [issue]},
    }});
    if let Some(url) = &outcome.full_url {
        entry["fullUrl"] = url.clone().into();
    }
    entry
}

fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    )
}
