//! `POST /measurements` and `POST /selfreports`: one reading from a device platform, in the
//! native JSON form.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::Response;
use dho_schemas::fhir::Ingested;
use dho_schemas::model::*;
use serde_json::{Value, json};

use super::readings::{data_controller, patient_of};
use super::refusal::{Refusal, created, publish_failure, refuse, refuse_invalid};
use super::roles::{Platform, at};
use super::steps::{Who, parse};
use crate::Gateway;
use crate::event_id::assign_event_id;
use crate::events::{Endpoint, EntryForbidden, EntryNotPublished, Published};
use dho_telemetry::InternalEvent;

pub(super) async fn measurement(
    caller: Platform<at::Measurements>,
    State(gw): State<Gateway>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    native(gw, Endpoint::Measurements, caller.name, caller.org, body).await
}

pub(super) async fn self_report(
    caller: Platform<at::SelfReports>,
    State(gw): State<Gateway>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    native(gw, Endpoint::SelfReports, caller.name, caller.org, body).await
}

/// One reading of the endpoint `ep`'s kind from `platform`.
async fn native(
    gw: Gateway,
    ep: Endpoint,
    name: String,
    platform: OrganisationIdentifier,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut json = match gw.body(body, ep) {
        Ok(json) => json,
        Err(r) => return refuse(ep, r),
    };
    let Some(object) = json.as_object_mut() else {
        let r = Refusal::new(
            StatusCode::BAD_REQUEST,
            "structure",
            "malformed",
            "expected a JSON object",
        );
        return refuse(ep, r);
    };
    // The gateway assigns these, whatever the sender put there.
    object.insert("event_id".into(), json!(uuid::Uuid::new_v4().to_string()));
    object.insert("received_time".into(), json!(now_millis()));
    // Missing data controller and source platform default to the caller; present ones
    // must be the caller (checked below, after parsing).
    let me = serde_json::to_value(&platform).unwrap_or(Value::Null);
    object
        .entry("data_controller")
        .or_insert_with(|| me.clone());
    if let Some(source) = object.get_mut("source").and_then(Value::as_object_mut) {
        source.entry("platform").or_insert(me);
    }
    let parsed = if ep == Endpoint::Measurements {
        parse::<Measurement>(&json).map(Ingested::Measurement)
    } else {
        parse::<SelfReport>(&json).map(Ingested::SelfReport)
    };
    let mut event = match parsed {
        Ok(e) => e,
        Err(r) => return refuse(ep, r),
    };
    let source_platform = match &event {
        Ingested::Measurement(m) => &m.source.platform,
        Ingested::SelfReport(r) => &r.source.platform,
    };
    if !data_controller(&event).same_entity(&platform) || !source_platform.same_entity(&platform) {
        EntryForbidden {
            reason: "cross_platform",
        }
        .emit();
        return refuse(
            ep,
            gw.forbid(
                &Who::new(&name, &platform).about(patient_of(&event)),
                ep,
                "cross_platform",
                "a platform publishes only as itself: data_controller and source.platform must be its organisation",
                false,
            )
            .at("data_controller"),
        );
    }
    assign_event_id(&mut event, &platform);
    let _permit = match gw.reserve(1, false) {
        Ok(p) => p,
        Err(r) => return refuse(ep, r),
    };
    match gw.publish_once(&event, &platform).await {
        Ok(receipt) => {
            Published { endpoint: ep }.emit();
            let body = json!({
                "event_id": event.event_id(),
                "topic": receipt.topic,
                "partition": receipt.partition,
                "offset": receipt.offset,
            });
            created(body, &format!("/{}/{}", ep_path(ep), event.event_id()))
        }
        Err(dho_publisher::Error::Invalid(e)) => refuse_invalid(ep, e),
        Err(e) => {
            let (reason, status, code) = publish_failure(&e);
            EntryNotPublished {
                endpoint: ep,
                reason,
                error: &e,
            }
            .emit();
            let mut r = Refusal::new(status, code, reason, &e.to_string());
            if status == StatusCode::SERVICE_UNAVAILABLE {
                r.retry_after = Some(gw.inner.config.retry_after.as_secs());
            }
            refuse(ep, r)
        }
    }
}

fn ep_path(ep: Endpoint) -> &'static str {
    match ep {
        Endpoint::SelfReports => "selfreports",
        _ => "measurements",
    }
}
