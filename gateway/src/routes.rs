//! The HTTP handlers. Each one: authenticate, authorise, bound, parse, validate, publish,
//! and answer only after the broker acknowledged.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use dho_schemas::fhir::bundle::{self, EntryOutcome};
use dho_schemas::fhir::{FhirError, IngestContext, Ingested};
use dho_schemas::model::*;
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use crate::Gateway;
use crate::auth::Principal;
use crate::metrics::{self as m, Endpoint};
use crate::resent::{Claim, Kind};
use dho_publisher::{CarePlanAudit, ConsentAudit, Receipt};
use dho_schemas::fhir::consent;

/// FHIR's media type; the gateway also accepts plain `application/json`.
const FHIR_JSON: &str = "application/fhir+json";

/// Namespace of event ids derived from a sender's own record id (UUID v5): a platform that
/// re-sends a reading after a lost answer gets the same event id, so downstream can drop
/// the repeat.
const EVENT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6a0e_54d1_7c1b_4f0e_9b7d_2f45_d1c3_a001);

pub(crate) fn app(gateway: Gateway) -> axum::Router {
    let limit = gateway.inner.config.max_body_bytes;
    axum::Router::new()
        .route("/fhir", post(fhir_bundle))
        .route("/fhir/Bundle", post(fhir_bundle))
        .route("/fhir/Consent", post(fhir_consent))
        .route("/measurements", post(measurement))
        .route("/selfreports", post(self_report))
        .route("/subscriptions", post(create_subscription))
        .route(
            "/subscriptions/{id}",
            put(put_subscription).delete(delete_subscription),
        )
        .route("/careplans", post(create_care_plan))
        .route(
            "/careplans/{id}",
            put(put_care_plan).delete(delete_care_plan),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(gateway)
}

// ---------------------------------------------------------------------------------------
// Answers

/// A refusal of a whole request, in the endpoint's language (OperationOutcome for FHIR,
/// a small JSON error otherwise).
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    /// OperationOutcome issue code.
    code: &'static str,
    /// A bounded reason, for metrics and the JSON form.
    reason: &'static str,
    location: String,
    message: String,
    fhir: bool,
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, reason: &'static str, message: &str) -> Self {
        Self {
            status,
            code,
            reason,
            location: String::new(),
            message: message.into(),
            fhir: false,
            retry_after: None,
        }
    }

    fn at(mut self, location: impl Into<String>) -> Self {
        self.location = location.into();
        self
    }

    fn from_fhir(status: StatusCode, e: &FhirError) -> Self {
        Self {
            status,
            code: e.code.as_str(),
            reason: e.code.as_str(),
            location: e.location.clone(),
            message: e.message.clone(),
            fhir: true,
            retry_after: None,
        }
    }

    fn outcome(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            s if s.is_server_error() => "error",
            _ => "rejected",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = if self.fhir {
            let mut issue = json!({
                "severity": "error",
                "code": self.code,
                "diagnostics": self.message,
            });
            if !self.location.is_empty() {
                issue["expression"] = json!([self.location]);
            }
            let body = json!({"resourceType": "OperationOutcome", "issue": [issue]});
            let mut r = (self.status, Json(body)).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
            r
        } else {
            let body = json!({"error": {
                "field": self.location, "reason": self.reason, "detail": self.message,
            }});
            (self.status, Json(body)).into_response()
        };
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Counts the refusal and turns it into the answer.
fn refuse(endpoint: Endpoint, refusal: Refusal) -> Response {
    m::request(endpoint, refusal.outcome());
    refusal.into_response()
}

/// A record the validators refused: 422 naming the field and the rule.
fn refuse_invalid(endpoint: Endpoint, e: dho_schemas::ValidationError) -> Response {
    m::entries("rejected", e.reason.as_str(), 1);
    refuse(
        endpoint,
        Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            e.reason.as_str(),
            &e.detail,
        )
        .at(e.field),
    )
}

/// 201 Created with the new resource's location.
fn created(body: serde_json::Value, location: &str) -> Response {
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

// ---------------------------------------------------------------------------------------
// Common steps

impl Gateway {
    /// The caller, or 401 (counted and logged without the token).
    fn authenticate(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
        fhir: bool,
    ) -> Result<Principal, Refusal> {
        self.inner
            .credentials
            .authenticate(headers)
            .cloned()
            .map_err(|failure| {
                m::auth_failure(endpoint, failure.as_str());
                Refusal {
                    fhir,
                    ..Refusal::new(
                        StatusCode::UNAUTHORIZED,
                        "login",
                        failure.as_str(),
                        "a valid bearer token is required",
                    )
                }
            })
    }

    /// 403 for an authenticated caller doing what its role does not allow.
    fn forbid(
        &self,
        endpoint: Endpoint,
        reason: &'static str,
        message: &str,
        fhir: bool,
    ) -> Refusal {
        m::auth_failure(endpoint, reason);
        Refusal {
            fhir,
            ..Refusal::new(StatusCode::FORBIDDEN, "forbidden", reason, message)
        }
    }

    /// Room for `n` entries in flight, or 503 with `Retry-After`.
    fn reserve(&self, n: usize, fhir: bool) -> Result<OwnedSemaphorePermit, Refusal> {
        let permit = self
            .inner
            .in_flight
            .clone()
            .try_acquire_many_owned(n.max(1) as u32)
            .map_err(|_| self.busy(fhir));
        self.observe_queue();
        permit
    }

    fn busy(&self, fhir: bool) -> Refusal {
        Refusal {
            fhir,
            retry_after: Some(self.inner.config.retry_after.as_secs()),
            ..Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "backpressure",
                "the gateway is at capacity; retry after the indicated delay",
            )
        }
    }

    fn observe_queue(&self) {
        let in_flight = self.inner.config.max_in_flight - self.inner.in_flight.available_permits();
        m::queue_depth(self.inner.publisher.queue_depth(), in_flight);
    }

    /// The request body, or 413/400.
    fn body(&self, body: Result<Bytes, BytesRejection>, fhir: bool) -> Result<Value, Refusal> {
        let bytes = body.map_err(|rejection| {
            let too_large = rejection.status() == StatusCode::PAYLOAD_TOO_LARGE;
            let (status, reason) = if too_large {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
            } else {
                (StatusCode::BAD_REQUEST, "unreadable")
            };
            let message = if too_large {
                format!(
                    "the body is larger than {} bytes",
                    self.inner.config.max_body_bytes
                )
            } else {
                "the body could not be read".into()
            };
            Refusal {
                fhir,
                ..Refusal::new(
                    status,
                    if too_large { "too-costly" } else { "structure" },
                    reason,
                    &message,
                )
            }
        })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            // serde_json's message holds only a position, never the text itself.
            Refusal {
                fhir,
                ..Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "structure",
                    "malformed_json",
                    &format!("malformed JSON: {e}"),
                )
            }
        })
    }

    async fn publish(&self, event: &Ingested) -> dho_publisher::Result<Receipt> {
        let started = Instant::now();
        let result = match event {
            Ingested::Measurement(m) => self.inner.publisher.publish_measurement(m).await,
            Ingested::SelfReport(r) => self.inner.publisher.publish_self_report(r).await,
        };
        m::published(started.elapsed());
        result
    }

    /// Publishes `event` from `platform`, unless it is a re-send of a reading published
    /// recently (see `resent.rs`): then the original's acknowledgement, without publishing
    /// again. The publishing runs in a task of its own, so an answer the client stopped
    /// waiting for (and a handler dropped with it) still leaves the acknowledged reading
    /// in the memory for the re-send that follows.
    async fn publish_once(
        &self,
        event: &Ingested,
        platform: &OrganisationIdentifier,
    ) -> dho_publisher::Result<Receipt> {
        loop {
            match self.inner.recent.claim(event, platform) {
                None => return self.publish(event).await,
                Some(Claim::Answered(receipt)) => {
                    tracing::debug!("a re-sent reading answered with the original acknowledgement");
                    return Ok(receipt);
                }
                Some(Claim::Wait(mut in_flight)) => {
                    // Ends when the original's publishing is over, whichever way.
                    let _ = in_flight.changed().await;
                }
                Some(Claim::Publish(ticket)) => {
                    let (gw, event) = (self.clone(), event.clone());
                    let task = tokio::spawn(async move {
                        let result = gw.publish(&event).await;
                        ticket.finish(&result);
                        result
                    });
                    return match task.await {
                        Ok(result) => result,
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(_) => Err(dho_publisher::Error::NotAcknowledged(
                            rdkafka::error::KafkaError::Canceled,
                        )),
                    };
                }
            }
        }
    }
}

/// Event id: derived from the sender's id when there is one (a retry maps to the same
/// event), random otherwise.
fn event_id(platform: &OrganisationIdentifier, kind: Kind, source_id: Option<&str>) -> String {
    match source_id {
        Some(id) => derived_event_id(platform, kind, id),
        None => uuid::Uuid::new_v4(),
    }
    .to_string()
}

/// The event id of the reading of `kind` that `platform` calls `source_id`. A FHIR id is
/// unique per resource type, so an Observation and a QuestionnaireResponse may share one:
/// the kind is part of the name. (A measurement's name has no kind, as before self-reports
/// were told apart, so ids already given stay the same.)
pub(crate) fn derived_event_id(
    platform: &OrganisationIdentifier,
    kind: Kind,
    source_id: &str,
) -> uuid::Uuid {
    let name = match kind {
        Kind::Measurement => format!("{}|{source_id}", platform.value),
        Kind::SelfReport => format!("{}|QuestionnaireResponse|{source_id}", platform.value),
    };
    uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes())
}

fn assign_event_id(event: &mut Ingested, platform: &OrganisationIdentifier) {
    match event {
        Ingested::Measurement(m) => {
            m.event_id = event_id(platform, Kind::Measurement, m.source_id.as_deref())
        }
        Ingested::SelfReport(r) => {
            r.event_id = event_id(platform, Kind::SelfReport, r.source_id.as_deref())
        }
    }
}

fn data_controller(event: &Ingested) -> &OrganisationIdentifier {
    match event {
        Ingested::Measurement(m) => &m.data_controller,
        Ingested::SelfReport(r) => &r.data_controller,
    }
}

/// Bounded reason of a publishing failure, the entry status and whether to retry.
fn publish_failure(e: &dho_publisher::Error) -> (&'static str, StatusCode, &'static str) {
    match e {
        dho_publisher::Error::Backpressure => {
            ("backpressure", StatusCode::SERVICE_UNAVAILABLE, "transient")
        }
        dho_publisher::Error::NotAcknowledged(_) => (
            "not_acknowledged",
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
        ),
        dho_publisher::Error::Invalid(_) => {
            ("invalid", StatusCode::UNPROCESSABLE_ENTITY, "invariant")
        }
        _ => ("internal", StatusCode::INTERNAL_SERVER_ERROR, "exception"),
    }
}

fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    )
}

// ---------------------------------------------------------------------------------------
// FHIR Bundle

async fn fhir_bundle(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const EP: Endpoint = Endpoint::FhirBundle;
    let principal = match gw.authenticate(EP, &headers, true) {
        Ok(p) => p,
        Err(r) => return refuse(EP, r),
    };
    let Principal::Platform { org: platform, .. } = principal else {
        return refuse(
            EP,
            gw.forbid(
                EP,
                "wrong_role",
                "only device platforms publish readings",
                true,
            ),
        );
    };
    let json = match gw.body(body, true) {
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
                m::entries("accepted", "none", 1);
                outcome.response_entry()
            }
            (Ok(_), None) if *forbidden => {
                m::entries("forbidden", "cross_platform", 1);
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
                m::entries("failed", reason, 1);
                tracing::warn!(reason, error = %e, "bundle entry not published");
                failed_entry(outcome, status, code, "3.1", "", &e.to_string())
            }
            (Err(e), _) => {
                m::entries("rejected", e.code.as_str(), 1);
                outcome.response_entry()
            }
            (Ok(_), None) => unreachable!("every unforbidden event is published"),
        })
        .collect();
    let total = entries.len();
    let body = json!({"resourceType": "Bundle", "type": "batch-response", "entry": entries});
    m::request(
        EP,
        match accepted {
            a if a == total => "accepted",
            0 => "rejected",
            _ => "partial",
        },
    );
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

// ---------------------------------------------------------------------------------------
// Native JSON

async fn measurement(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    native(gw, Endpoint::Measurements, headers, body).await
}

async fn self_report(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    native(gw, Endpoint::SelfReports, headers, body).await
}

async fn native(
    gw: Gateway,
    ep: Endpoint,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let principal = match gw.authenticate(ep, &headers, false) {
        Ok(p) => p,
        Err(r) => return refuse(ep, r),
    };
    let Principal::Platform { org: platform, .. } = principal else {
        return refuse(
            ep,
            gw.forbid(
                ep,
                "wrong_role",
                "only device platforms publish readings",
                false,
            ),
        );
    };
    let mut json = match gw.body(body, false) {
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
        m::entries("forbidden", "cross_platform", 1);
        return refuse(
            ep,
            gw.forbid(
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
            m::entries("accepted", "none", 1);
            m::request(ep, "accepted");
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
            m::entries("failed", reason, 1);
            tracing::warn!(reason, error = %e, "record not published");
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

/// Deserialises the native form; errors name the path and what was expected, never the
/// sender's value (it may be an identifier).
fn parse<T: serde::de::DeserializeOwned>(json: &Value) -> Result<T, Refusal> {
    serde_path_to_error::deserialize(json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let expected = inner
            .find("expected")
            .map(|at| inner[at..].to_string())
            .or_else(|| inner.starts_with("missing field").then(|| inner.clone()))
            .unwrap_or_else(|| "wrong JSON type".into());
        Refusal::new(StatusCode::BAD_REQUEST, "structure", "malformed", &expected).at(path)
    })
}

// ---------------------------------------------------------------------------------------
// Consent

async fn fhir_consent(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const EP: Endpoint = Endpoint::FhirConsent;
    let principal = match gw.authenticate(EP, &headers, true) {
        Ok(p) => p,
        Err(r) => return refuse(EP, r),
    };
    let Principal::CareOrganisation { org, name, .. } = principal else {
        return refuse(
            EP,
            gw.forbid(
                EP,
                "wrong_role",
                "only care organisations record consent",
                true,
            ),
        );
    };
    let mut json = match gw.body(body, true) {
        Ok(json) => json,
        Err(r) => return refuse(EP, r),
    };
    let now = now_millis();
    let consent = match consent::consent_from_fhir(&json, &org, now, gw.inner.policy) {
        Ok(c) => c,
        Err(e) => {
            m::entries("rejected", e.code.as_str(), 1);
            return refuse(EP, Refusal::from_fhir(StatusCode::UNPROCESSABLE_ENTITY, &e));
        }
    };
    let _permit = match gw.reserve(1, true) {
        Ok(p) => p,
        Err(r) => return refuse(EP, r),
    };
    let audit = ConsentAudit {
        principal: &name,
        channel: "gateway",
    };
    match gw.inner.publisher.record_consent(&consent, audit).await {
        Ok(_) => {
            m::entries("accepted", "none", 1);
            m::request(EP, "accepted");
            tracing::info!(
                patient = %consent.patient.log_tag(),
                recorder = %name,
                status = ?consent.status,
                "consent recorded"
            );
            json["id"] = consent.consent_id.clone().into();
            let mut response = (StatusCode::CREATED, Json(json)).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
            if let Ok(v) = HeaderValue::from_str(&format!("Consent/{}", consent.consent_id)) {
                headers.insert(header::LOCATION, v);
            }
            response
        }
        Err(e) => {
            let (reason, status, code) = publish_failure(&e);
            m::entries("failed", reason, 1);
            tracing::warn!(reason, error = %e, "consent not recorded");
            let mut r = Refusal {
                fhir: true,
                ..Refusal::new(status, code, reason, &e.to_string())
            };
            if status == StatusCode::SERVICE_UNAVAILABLE {
                r.retry_after = Some(gw.inner.config.retry_after.as_secs());
            }
            refuse(EP, r)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Subscriptions

/// A subscription id made through the gateway is `<subscriber_id>.<rest>`: the subscriber
/// alphabet has no '.', so the prefix names exactly one owner, and no care service can
/// write under (and so overwrite) another's subscription key.
fn owner_of(subscription_id: &str) -> Option<&str> {
    subscription_id.split_once('.').map(|(owner, _)| owner)
}

/// Whether the gateway takes `subscription_id` from the care service that owns
/// `subscriber_id`: `<subscriber_id>.<name>`.
pub fn is_own_subscription_id(subscriber_id: &str, subscription_id: &str) -> bool {
    owner_of(subscription_id) == Some(subscriber_id)
}

async fn create_subscription(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    upsert_subscription(gw, None, headers, body).await
}

async fn put_subscription(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    upsert_subscription(gw, Some(id), headers, body).await
}

/// The caller's own subscriber ids and organisation, or 401/403.
fn subscription_owner(
    gw: &Gateway,
    headers: &HeaderMap,
) -> Result<(OrganisationIdentifier, Vec<String>), Refusal> {
    const EP: Endpoint = Endpoint::Subscriptions;
    match gw.authenticate(EP, headers, false)? {
        Principal::CareOrganisation {
            org,
            subscriber_ids,
            ..
        } => Ok((org, subscriber_ids)),
        Principal::Platform { .. } => Err(gw.forbid(
            EP,
            "wrong_role",
            "only care organisations manage subscriptions",
            false,
        )),
    }
}

async fn upsert_subscription(
    gw: Gateway,
    path_id: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const EP: Endpoint = Endpoint::Subscriptions;
    let (org, own) = match subscription_owner(&gw, &headers) {
        Ok(o) => o,
        Err(r) => return refuse(EP, r),
    };
    let mut json = match gw.body(body, false) {
        Ok(json) => json,
        Err(r) => return refuse(EP, r),
    };
    let object = match json_object(&mut json) {
        Ok(object) => object,
        Err(r) => return refuse(EP, r),
    };
    let subscriber = object
        .get("subscriber_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !own.contains(&subscriber) {
        return refuse(
            EP,
            gw.forbid(
                EP,
                "not_owner",
                "subscriber_id is not one of this organisation's subscribers",
                false,
            )
            .at("subscriber_id"),
        );
    }
    let id = match own_id(
        &gw,
        EP,
        path_id,
        object,
        "subscription_id",
        &subscriber,
        "a subscription id is '<subscriber_id>.<name>', with the caller's own subscriber id",
    ) {
        Ok(id) => id,
        Err(r) => return refuse(EP, r),
    };
    if let Err(r) = stamp_caller_org(&gw, EP, object, "subscriber_org", &org) {
        return refuse(EP, r);
    }
    object.insert("subscription_id".into(), id.clone().into());
    object.insert("updated_at".into(), json!(now_millis()));
    let subscription: Subscription = match parse(&json) {
        Ok(s) => s,
        Err(r) => return refuse(EP, r),
    };
    let change = gw.inner.publisher.put_subscription(&subscription);
    match publish_state(&gw, EP, change, upsert_failure).await {
        Ok(_) => created(json, &format!("/subscriptions/{id}")),
        Err(response) => response,
    }
}

/// `DELETE /subscriptions/{id}` with body `{"patient": {"system": "FNR", "value": "…"}}`:
/// the patient is part of the record's key and never belongs in a URL (proxies log URLs).
async fn delete_subscription(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const EP: Endpoint = Endpoint::Subscriptions;
    let (_, own) = match subscription_owner(&gw, &headers) {
        Ok(o) => o,
        Err(r) => return refuse(EP, r),
    };
    let owned = owner_of(&id).is_some_and(|owner| own.iter().any(|s| s == owner));
    let not_owned = "not one of this organisation's subscriptions";
    let patient = match delete_target(&gw, EP, owned, not_owned, body) {
        Ok(patient) => patient,
        Err(r) => return refuse(EP, r),
    };
    let change = gw.inner.publisher.delete_subscription(&patient, &id);
    match publish_state(&gw, EP, change, state_failure).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(response) => response,
    }
}

// ---------------------------------------------------------------------------------------
// Steps shared by the state changes (subscriptions, care plans)

/// The body as a JSON object, or 400.
fn json_object(json: &mut Value) -> Result<&mut serde_json::Map<String, Value>, Refusal> {
    json.as_object_mut().ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "structure",
            "malformed",
            "expected a JSON object",
        )
    })
}

/// The id of a record the caller writes, of the form `<prefix>.<name>` with the caller's
/// own `prefix`: the id in the path, else the one in the body's `field`, else a new random
/// one. 400 when the path and the body name different ids, 403 (`not_owner`, saying the
/// id's `form`) when the prefix is not the caller's.
fn own_id(
    gw: &Gateway,
    endpoint: Endpoint,
    path_id: Option<String>,
    object: &serde_json::Map<String, Value>,
    field: &'static str,
    prefix: &str,
    form: &str,
) -> Result<String, Refusal> {
    let id = match (path_id, object.get(field).and_then(Value::as_str)) {
        (Some(path), Some(body)) if path != body => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "value",
                "malformed",
                &format!("{field} differs from the id in the path"),
            )
            .at(field));
        }
        (Some(path), _) => path,
        (None, Some(body)) => body.to_string(),
        (None, None) => format!("{prefix}.{}", uuid::Uuid::new_v4().simple()),
    };
    if owner_of(&id) != Some(prefix) {
        return Err(gw.forbid(endpoint, "not_owner", form, false).at(field));
    }
    Ok(id)
}

/// Puts the caller's organisation in the body's `field`; 403 (`not_owner`) when the body
/// named another organisation there.
fn stamp_caller_org(
    gw: &Gateway,
    endpoint: Endpoint,
    object: &mut serde_json::Map<String, Value>,
    field: &'static str,
    org: &OrganisationIdentifier,
) -> Result<(), Refusal> {
    let me = serde_json::to_value(org).unwrap_or(Value::Null);
    let given = object.insert(field.into(), me);
    if given.is_some_and(|given| {
        serde_json::from_value::<OrganisationIdentifier>(given)
            .map_or(true, |g| !g.same_entity(org))
    }) {
        return Err(gw
            .forbid(
                endpoint,
                "not_owner",
                &format!("{field} must be the caller's organisation"),
                false,
            )
            .at(field));
    }
    Ok(())
}

/// The patient a delete names in its body (`{"patient": …}`, never in the URL), once the
/// caller is known to own the record (`owned`; 403 `not_owner` saying `not_owned`
/// otherwise); 400/413 for a body that is not that.
fn delete_target(
    gw: &Gateway,
    endpoint: Endpoint,
    owned: bool,
    not_owned: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<PatientIdentifier, Refusal> {
    if !owned {
        return Err(gw.forbid(endpoint, "not_owner", not_owned, false));
    }
    let json = gw.body(body, false)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        patient: PatientIdentifier,
    }
    let Body { patient } = parse(&json)?;
    Ok(patient)
}

/// Room for one state change, then the change: its result once the broker took it
/// (counted as accepted), or the answer `failure` makes of the error (503 without room).
async fn publish_state<R>(
    gw: &Gateway,
    endpoint: Endpoint,
    change: impl Future<Output = dho_publisher::Result<R>>,
    failure: fn(&Gateway, Endpoint, dho_publisher::Error) -> Response,
) -> Result<R, Response> {
    let _permit = gw.reserve(1, false).map_err(|r| refuse(endpoint, r))?;
    let result = change.await.map_err(|e| failure(gw, endpoint, e))?;
    m::entries("accepted", "none", 1);
    m::request(endpoint, "accepted");
    Ok(result)
}

/// A record put the broker did not take: 422 for one the validators refused, else as
/// [`state_failure`].
fn upsert_failure(gw: &Gateway, endpoint: Endpoint, e: dho_publisher::Error) -> Response {
    match e {
        dho_publisher::Error::Invalid(e) => refuse_invalid(endpoint, e),
        e => state_failure(gw, endpoint, e),
    }
}

/// A state change (subscription, care plan) the broker did not take: 503 with
/// `Retry-After` when retrying may help, 500 otherwise.
fn state_failure(gw: &Gateway, endpoint: Endpoint, e: dho_publisher::Error) -> Response {
    let (reason, status, code) = publish_failure(&e);
    m::entries("failed", reason, 1);
    tracing::warn!(
        endpoint = endpoint.as_str(),
        reason,
        error = %e,
        "state change not published"
    );
    let mut r = Refusal::new(status, code, reason, &e.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.retry_after = Some(gw.inner.config.retry_after.as_secs());
    }
    refuse(endpoint, r)
}

// ---------------------------------------------------------------------------------------
// Care plans

/// A care plan id made through the gateway is `<orgnr>.<name>`, with the organisation number
/// of the organisation that owns (and alone may replace or delete) it. Like subscription
/// ids, the prefix names exactly one owner, so no organisation can overwrite another's plan;
/// the router still reads every plan of the patient, and the most recently updated one
/// that speaks about a code decides its zones.
fn plan_owner(plan_id: &str) -> Option<&str> {
    owner_of(plan_id)
}

/// The name after the owner: 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' and '.' (the
/// id is part of the record's key and of the URL).
fn plan_name_ok(plan_id: &str) -> bool {
    plan_id.split_once('.').is_some_and(|(_, name)| {
        !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    })
}

/// Whether the gateway takes `plan_id` from the care organisation with organisation number
/// `orgnr`: `<orgnr>.<name>`, the name 1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.'.
pub fn is_own_care_plan_id(orgnr: &str, plan_id: &str) -> bool {
    plan_owner(plan_id) == Some(orgnr) && plan_name_ok(plan_id)
}

async fn create_care_plan(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    upsert_care_plan(gw, None, headers, body).await
}

async fn put_care_plan(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    upsert_care_plan(gw, Some(id), headers, body).await
}

/// The calling care organisation, or 401/403 (device platforms never write care plans).
fn care_plan_author(
    gw: &Gateway,
    headers: &HeaderMap,
) -> Result<(OrganisationIdentifier, String), Refusal> {
    const EP: Endpoint = Endpoint::CarePlans;
    match gw.authenticate(EP, headers, false)? {
        Principal::CareOrganisation { org, name, .. } => Ok((org, name)),
        Principal::Platform { .. } => Err(gw.forbid(
            EP,
            "wrong_role",
            "only care organisations record care plans",
            false,
        )),
    }
}

/// `POST /careplans`, `PUT /careplans/{id}`: a patient's self-management plan in the
/// native JSON form of `CarePlan`. `updated_by` is the caller (403 if another
/// organisation is named), `updated_at` is the gateway's clock (a sender cannot pin its
/// plan as the newest), and the id is the caller's own `<orgnr>.<name>`. Audited first on
/// `<prefix>.audit.careplans` (`CarePlanChange`), like consent.
async fn upsert_care_plan(
    gw: Gateway,
    path_id: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const EP: Endpoint = Endpoint::CarePlans;
    let (org, name) = match care_plan_author(&gw, &headers) {
        Ok(o) => o,
        Err(r) => return refuse(EP, r),
    };
    let mut json = match gw.body(body, false) {
        Ok(json) => json,
        Err(r) => return refuse(EP, r),
    };
    let object = match json_object(&mut json) {
        Ok(object) => object,
        Err(r) => return refuse(EP, r),
    };
    let id = match own_id(
        &gw,
        EP,
        path_id,
        object,
        "plan_id",
        &org.value,
        "a care plan id is '<orgnr>.<name>', with the caller's own organisation number",
    ) {
        Ok(id) => id,
        Err(r) => return refuse(EP, r),
    };
    if !plan_name_ok(&id) {
        m::entries("rejected", "malformed", 1);
        return refuse(
            EP,
            Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "malformed",
                "the name after '<orgnr>.' is 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' and '.'",
            )
            .at("plan_id"),
        );
    }
    if let Err(r) = stamp_caller_org(&gw, EP, object, "updated_by", &org) {
        m::entries("forbidden", "not_owner", 1);
        return refuse(EP, r);
    }
    object.insert("plan_id".into(), id.clone().into());
    object.insert("updated_at".into(), json!(now_millis()));
    let plan: CarePlan = match parse(&json) {
        Ok(p) => p,
        Err(r) => return refuse(EP, r),
    };
    let audit = CarePlanAudit {
        principal: &name,
        channel: "gateway",
    };
    let change = gw.inner.publisher.record_care_plan(&plan, audit);
    match publish_state(&gw, EP, change, upsert_failure).await {
        Ok(receipt) => {
            tracing::info!(
                patient = %plan.patient.log_tag(),
                author = %name,
                version = plan.version,
                targets = plan.targets.len(),
                "care plan recorded"
            );
            json["topic"] = receipt.topic.into();
            json["partition"] = receipt.partition.into();
            json["offset"] = receipt.offset.into();
            created(json, &format!("/careplans/{id}"))
        }
        Err(response) => response,
    }
}

/// `DELETE /careplans/{id}` with body `{"patient": {"system": "FNR", "value": "…"}}`, by the
/// plan's owner only: a tombstone for the plan's key, so it classifies nothing from then on.
/// Audited first, like a plan recorded.
async fn delete_care_plan(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const EP: Endpoint = Endpoint::CarePlans;
    let (org, name) = match care_plan_author(&gw, &headers) {
        Ok(o) => o,
        Err(r) => return refuse(EP, r),
    };
    let owned = plan_owner(&id) == Some(org.value.as_str());
    let not_owned = "not one of this organisation's care plans";
    let patient = match delete_target(&gw, EP, owned, not_owned, body) {
        Ok(patient) => patient,
        Err(r) => return refuse(EP, r),
    };
    if let Err(e) = dho_schemas::validate::patient("patient", &patient, gw.inner.policy) {
        return refuse_invalid(EP, e);
    }
    let audit = CarePlanAudit {
        principal: &name,
        channel: "gateway",
    };
    let change = gw
        .inner
        .publisher
        .remove_care_plan(&patient, &id, &org, audit);
    match publish_state(&gw, EP, change, state_failure).await {
        Ok(_) => {
            tracing::info!(patient = %patient.log_tag(), author = %name, "care plan deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(response) => response,
    }
}

// ---------------------------------------------------------------------------------------
// Operations

/// Ready while there is room to publish; a saturated gateway is taken out of the load
/// balancer's rotation until it drains.
async fn readyz(State(gw): State<Gateway>) -> Response {
    gw.observe_queue();
    if gw.inner.in_flight.available_permits() > 0 {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "saturated").into_response()
    }
}

async fn render_metrics(State(gw): State<Gateway>) -> Response {
    gw.observe_queue();
    dho_telemetry::server::metrics_response(gw.inner.metrics.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_schemas::fixtures;

    #[test]
    fn a_subscription_id_names_exactly_one_owner() {
        assert_eq!(owner_of("bergen-home-care.p1"), Some("bergen-home-care"));
        assert_eq!(owner_of("sentrum-gp.a.b"), Some("sentrum-gp"));
        // The fixture convention ('-') names nobody: such ids are the operator's.
        assert_eq!(owner_of("bergen-home-care-p1"), None);
    }

    #[test]
    fn a_care_plan_id_names_its_owning_organisation_and_a_key_safe_name() {
        let home = fixtures::home_care().value;
        let id = format!("{home}.egenbehandlingsplan");
        assert_eq!(plan_owner(&id), Some(home.as_str()));
        assert!(plan_name_ok(&id));
        assert!(plan_name_ok(&format!("{home}.kols-2026.v2")));
        assert_eq!(plan_owner("egenbehandlingsplan"), None);
        assert!(!plan_name_ok("egenbehandlingsplan"));
        assert!(!plan_name_ok(&format!("{home}.")));
        assert!(!plan_name_ok(&format!("{home}.a|b")));
        assert!(!plan_name_ok(&format!("{home}.{}", "x".repeat(65))));
    }

    #[test]
    fn event_ids_are_stable_per_platform_and_sender_id_and_random_otherwise() {
        let p = fixtures::platform();
        let q = fixtures::gp();
        for kind in [Kind::Measurement, Kind::SelfReport] {
            let id = |platform, source_id| event_id(platform, kind, source_id);
            assert_eq!(id(&p, Some("obs-1")), id(&p, Some("obs-1")));
            assert_ne!(id(&p, Some("obs-1")), id(&p, Some("obs-2")));
            assert_ne!(id(&p, Some("obs-1")), id(&q, Some("obs-1")));
            assert_ne!(id(&p, None), id(&p, None));
        }
    }

    #[test]
    fn an_observation_and_a_questionnaire_response_with_one_id_are_two_events() {
        let p = fixtures::platform();
        assert_ne!(
            event_id(&p, Kind::Measurement, Some("1")),
            event_id(&p, Kind::SelfReport, Some("1"))
        );
        // Measurements keep the ids they were given before the kind was part of the name.
        let before = uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, format!("{}|1", p.value).as_bytes());
        assert_eq!(
            event_id(&p, Kind::Measurement, Some("1")),
            before.to_string()
        );
    }

    #[tokio::test]
    async fn refusals_speak_the_endpoints_language() {
        let unauthorized = Refusal {
            fhir: true,
            ..Refusal::new(StatusCode::UNAUTHORIZED, "login", "missing_token", "no")
        }
        .at("Bundle")
        .into_response();
        assert_eq!(unauthorized.status(), 401);
        assert_eq!(unauthorized.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(unauthorized.headers()[header::CONTENT_TYPE], FHIR_JSON);
        let body = axum::body::to_bytes(unauthorized.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["resourceType"], "OperationOutcome");
        assert_eq!(json["issue"][0]["code"], "login");
        assert_eq!(json["issue"][0]["expression"][0], "Bundle");

        let busy = Refusal {
            retry_after: Some(2),
            ..Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "backpressure",
                "x",
            )
        };
        assert_eq!(busy.outcome(), "unavailable");
        let busy = busy.into_response();
        assert_eq!(busy.headers()[header::RETRY_AFTER], "2");
        let body = axum::body::to_bytes(busy.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["reason"], "backpressure");
    }
}
