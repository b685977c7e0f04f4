//! Refusals: a whole request refused, rendered in the endpoint's language (an
//! OperationOutcome for FHIR endpoints, a small JSON error otherwise) and counted; and the
//! classification of publishing failures into answers.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dho_schemas::fhir::FhirError;
use serde_json::json;

use crate::events::{Endpoint, EntryRejected, RequestAnswered};
use dho_telemetry::InternalEvent;

/// FHIR's media type; the gateway also accepts plain `application/json`.
pub(super) const FHIR_JSON: &str = "application/fhir+json";

/// A refusal of a whole request, in the endpoint's language (OperationOutcome for FHIR,
/// a small JSON error otherwise).
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    /// OperationOutcome issue code.
    pub(super) code: &'static str,
    /// A bounded reason, for metrics and the JSON form.
    pub(super) reason: &'static str,
    pub(super) location: String,
    pub(super) message: String,
    pub(super) fhir: bool,
    pub(super) retry_after: Option<u64>,
}

impl Refusal {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        reason: &'static str,
        message: &str,
    ) -> Self {
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

    pub(super) fn at(mut self, location: impl Into<String>) -> Self {
        self.location = location.into();
        self
    }

    pub(super) fn from_fhir(status: StatusCode, e: &FhirError) -> Self {
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
pub(super) fn refuse(endpoint: Endpoint, refusal: Refusal) -> Response {
    RequestAnswered {
        endpoint,
        outcome: refusal.outcome(),
    }
    .emit();
    refusal.into_response()
}

/// A record the validators refused: 422 naming the field and the rule.
pub(super) fn refuse_invalid(endpoint: Endpoint, e: dho_schemas::ValidationError) -> Response {
    EntryRejected {
        reason: e.reason.as_str(),
    }
    .emit();
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
pub(super) fn created(body: serde_json::Value, location: &str) -> Response {
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// Bounded reason of a publishing failure, the entry status and whether to retry.
pub(super) fn publish_failure(
    e: &dho_publisher::Error,
) -> (&'static str, StatusCode, &'static str) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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
