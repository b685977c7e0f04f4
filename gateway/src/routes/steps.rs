//! The steps every endpoint shares once the caller's role is known (see [`super::roles`]):
//! refuse what the caller may not do, bound what is in flight, read and parse the body; and those of the state changes (subscriptions, care plans):
//! ids owned by the caller, the caller's organisation stamped in, deletes naming their
//! patient in the body, publishing with room reserved.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::Response;
use dho_schemas::model::*;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::refusal::{Refusal, publish_failure, refuse, refuse_invalid};
use crate::Gateway;
use crate::events::{
    AuthRefused, Endpoint, EntryNotPublished, PublishQueueMeasured, Published, RefusalNotAudited,
};
use dho_telemetry::InternalEvent;

/// Who made a request, and about which patient when known: what the audit of a refusal
/// names.
#[derive(Debug, Clone)]
pub(super) struct Who<'a> {
    pub(super) name: &'a str,
    pub(super) org: &'a OrganisationIdentifier,
    pub(super) patient: Option<PatientIdentifier>,
}

impl<'a> Who<'a> {
    pub(super) fn new(name: &'a str, org: &'a OrganisationIdentifier) -> Self {
        Self {
            name,
            org,
            patient: None,
        }
    }

    /// The same caller, about the patient a JSON body names (if it names one readably).
    pub(super) fn about_body(&self, object: &serde_json::Map<String, Value>) -> Self {
        let patient = object
            .get("patient")
            .and_then(|p| serde_json::from_value::<PatientIdentifier>(p.clone()).ok());
        Self {
            patient,
            ..self.clone()
        }
    }

    /// The same caller, about `patient`.
    pub(super) fn about(&self, patient: &PatientIdentifier) -> Self {
        Self {
            patient: Some(patient.clone()),
            ..self.clone()
        }
    }
}

impl Gateway {
    /// 403 for an authenticated caller doing what its role does not allow; audited on
    /// `<prefix>.audit.refusals` (see [`Gateway::audit_refusal`]).
    pub(super) fn forbid(
        &self,
        who: &Who<'_>,
        endpoint: Endpoint,
        reason: &'static str,
        message: &str,
        fhir: bool,
    ) -> Refusal {
        AuthRefused { endpoint, reason }.emit();
        self.audit_refusal(who, endpoint, reason, message);
        Refusal {
            fhir,
            ..Refusal::new(StatusCode::FORBIDDEN, "forbidden", reason, message)
        }
    }

    /// 429 with `Retry-After` for a credential over its rate (audited like a 403).
    pub(super) fn rate_limited(
        &self,
        who: &Who<'_>,
        endpoint: Endpoint,
        wait: std::time::Duration,
    ) -> Refusal {
        let reason = "rate_limited";
        let message = "too many consent changes from this credential; retry later";
        AuthRefused { endpoint, reason }.emit();
        self.audit_refusal(who, endpoint, reason, message);
        Refusal {
            fhir: true,
            retry_after: Some(wait.as_secs().max(1)),
            ..Refusal::new(StatusCode::TOO_MANY_REQUESTS, "throttled", reason, message)
        }
    }

    /// Writes the audit record of a refused request. The refusal does not wait for it: a
    /// refusal stands whether or not the broker takes its record, and a caller must not be
    /// able to slow the gateway down by being refused. A record the broker does not take is
    /// counted and logged.
    pub(super) fn audit_refusal(
        &self,
        who: &Who<'_>,
        endpoint: Endpoint,
        reason: &'static str,
        message: &str,
    ) {
        let record = AccessRefusal {
            refusal_id: uuid::Uuid::new_v4().to_string(),
            endpoint: endpoint.as_str().into(),
            principal: who.name.into(),
            organisation: who.org.clone(),
            patient: who.patient.clone(),
            reason: reason.into(),
            detail: message.into(),
            refused_at: now_millis(),
        };
        // Bounded: a flood of refused requests must not queue without limit (nor crowd
        // readings out of the producer's queue); past the bound a refusal is counted only.
        let Ok(permit) = self.inner.refusal_audits.clone().try_acquire_owned() else {
            RefusalNotAudited {
                credential: who.name,
                error: "too many refusals being audited at once".into(),
            }
            .emit();
            return;
        };
        let publisher = self.inner.publisher.clone();
        tokio::spawn(async move {
            if let Err(error) = publisher.audit_refusal(&record).await {
                RefusalNotAudited {
                    credential: &record.principal,
                    error: error.to_string(),
                }
                .emit();
            }
            drop(permit);
        });
    }

    /// Room for `n` entries in flight, or 503 with `Retry-After`.
    pub(super) fn reserve(&self, n: usize, fhir: bool) -> Result<OwnedSemaphorePermit, Refusal> {
        let permit = self
            .inner
            .in_flight
            .clone()
            .try_acquire_many_owned(n.max(1) as u32)
            .map_err(|_| self.busy(fhir));
        self.observe_queue();
        permit
    }

    pub(super) fn busy(&self, fhir: bool) -> Refusal {
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

    pub(super) fn observe_queue(&self) {
        let in_flight = self.inner.config.max_in_flight - self.inner.in_flight.available_permits();
        PublishQueueMeasured {
            depth: self.inner.publisher.queue_depth(),
            in_flight,
        }
        .emit();
    }

    /// The request body, or 413 (over the endpoint's limit), 408 (too slow) or 400.
    pub(super) fn body(
        &self,
        body: Result<Bytes, BytesRejection>,
        endpoint: Endpoint,
    ) -> Result<Value, Refusal> {
        let fhir = matches!(endpoint, Endpoint::FhirBundle | Endpoint::FhirConsent);
        let bytes = body.map_err(|rejection| {
            let config = &self.inner.config;
            let (status, issue, reason, message) =
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    let limit = match endpoint {
                        Endpoint::FhirBundle | Endpoint::Measurements | Endpoint::SelfReports => {
                            config.max_body_bytes
                        }
                        Endpoint::FhirConsent | Endpoint::Subscriptions | Endpoint::CarePlans => {
                            config.max_state_body_bytes
                        }
                    };
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too-costly",
                        "too_large",
                        format!("the body is larger than {limit} bytes"),
                    )
                } else if crate::limits::timed_out(&rejection) {
                    (
                        StatusCode::REQUEST_TIMEOUT,
                        "timeout",
                        "body_timeout",
                        format!(
                            "the body did not arrive within {} s",
                            config.body_timeout.as_secs()
                        ),
                    )
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        "structure",
                        "unreadable",
                        "the body could not be read".into(),
                    )
                };
            Refusal {
                fhir,
                ..Refusal::new(status, issue, reason, &message)
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
}

/// Deserialises the native form; errors name the path and what was expected, never the
/// sender's value (it may be an identifier).
pub(super) fn parse<T: serde::de::DeserializeOwned>(json: &Value) -> Result<T, Refusal> {
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

/// The owner named by an id of the form `<owner>.<rest>` (subscriptions, care plans).
/// A subscription id made through the gateway is `<subscriber_id>.<rest>`: the subscriber
/// alphabet has no '.', so the prefix names exactly one owner, and no care service can
/// write under (and so overwrite) another's subscription key.
pub(super) fn owner_of(subscription_id: &str) -> Option<&str> {
    subscription_id.split_once('.').map(|(owner, _)| owner)
}

/// The body as a JSON object, or 400.
pub(super) fn json_object(
    json: &mut Value,
) -> Result<&mut serde_json::Map<String, Value>, Refusal> {
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
#[allow(clippy::too_many_arguments)] // Each is one fact about the id; a struct would only rename them.
pub(super) fn own_id(
    gw: &Gateway,
    who: &Who<'_>,
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
        let who = who.about_body(object);
        return Err(gw
            .forbid(&who, endpoint, "not_owner", form, false)
            .at(field));
    }
    Ok(id)
}

/// Puts the caller's organisation in the body's `field`; 403 (`not_owner`) when the body
/// named another organisation there.
pub(super) fn stamp_caller_org(
    gw: &Gateway,
    who: &Who<'_>,
    endpoint: Endpoint,
    object: &mut serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<(), Refusal> {
    let org = who.org;
    let me = serde_json::to_value(org).unwrap_or(Value::Null);
    let given = object.insert(field.into(), me);
    if given.is_some_and(|given| {
        serde_json::from_value::<OrganisationIdentifier>(given)
            .map_or(true, |g| !g.same_entity(org))
    }) {
        return Err(gw
            .forbid(
                &who.about_body(object),
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
pub(super) fn delete_target(
    gw: &Gateway,
    who: &Who<'_>,
    endpoint: Endpoint,
    owned: bool,
    not_owned: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<PatientIdentifier, Refusal> {
    if !owned {
        return Err(gw.forbid(who, endpoint, "not_owner", not_owned, false));
    }
    let json = gw.body(body, endpoint)?;
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
pub(super) async fn publish_state<R>(
    gw: &Gateway,
    endpoint: Endpoint,
    change: impl Future<Output = dho_publisher::Result<R>>,
    failure: fn(&Gateway, Endpoint, dho_publisher::Error) -> Response,
) -> Result<R, Response> {
    let _permit = gw.reserve(1, false).map_err(|r| refuse(endpoint, r))?;
    let result = change.await.map_err(|e| failure(gw, endpoint, e))?;
    Published { endpoint }.emit();
    Ok(result)
}

/// A record put the broker did not take: 422 for one the validators refused, else as
/// [`state_failure`].
pub(super) fn upsert_failure(
    gw: &Gateway,
    endpoint: Endpoint,
    e: dho_publisher::Error,
) -> Response {
    match e {
        dho_publisher::Error::Invalid(e) => refuse_invalid(endpoint, e),
        e => state_failure(gw, endpoint, e),
    }
}

/// A state change (subscription, care plan) the broker did not take: 503 with
/// `Retry-After` when retrying may help, 500 otherwise.
pub(super) fn state_failure(gw: &Gateway, endpoint: Endpoint, e: dho_publisher::Error) -> Response {
    let (reason, status, code) = publish_failure(&e);
    EntryNotPublished {
        endpoint,
        reason,
        error: &e,
    }
    .emit();
    let mut r = Refusal::new(status, code, reason, &e.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.retry_after = Some(gw.inner.config.retry_after.as_secs());
    }
    refuse(endpoint, r)
}
