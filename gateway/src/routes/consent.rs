//! `POST /fhir/Consent`: a care organisation records (or withdraws) a patient's consent,
//! audited first on `<prefix>.audit.consents`, and gets it back as the hub stored it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dho_publisher::ConsentAudit;
use dho_schemas::fhir::consent;
use dho_schemas::model::*;

use super::refusal::{FHIR_JSON, Refusal, publish_failure, refuse};
use super::roles::{CareOrganisation, at};
use crate::Gateway;
use crate::events::{ConsentRecorded, Endpoint, EntryNotPublished, EntryRejected};
use dho_telemetry::{InternalEvent, Pseudonym};

pub(super) async fn fhir_consent(
    caller: CareOrganisation<at::FhirConsent>,
    State(gw): State<Gateway>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const EP: Endpoint = Endpoint::FhirConsent;
    let CareOrganisation { org, name, .. } = caller;
    let json = match gw.body(body, EP) {
        Ok(json) => json,
        Err(r) => return refuse(EP, r),
    };
    let now = now_millis();
    let consent = match consent::consent_from_fhir(&json, &org, now, gw.inner.policy) {
        Ok(c) => c,
        Err(e) => {
            EntryRejected {
                reason: e.code.as_str(),
            }
            .emit();
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
            ConsentRecorded {
                patient: Pseudonym::from(&consent.patient),
                recorder: &name,
                status: consent.status,
            }
            .emit();
            // The directive as stored, not as sent: the sender sees how the hub read it.
            let stored = consent::consent_to_fhir(&consent);
            let mut response = (StatusCode::CREATED, Json(stored)).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
            if let Ok(v) = HeaderValue::from_str(&format!("Consent/{}", consent.consent_id)) {
                headers.insert(header::LOCATION, v);
            }
            response
        }
        Err(e) => {
            let (reason, status, code) = publish_failure(&e);
            EntryNotPublished {
                endpoint: EP,
                reason,
                error: &e,
            }
            .emit();
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
