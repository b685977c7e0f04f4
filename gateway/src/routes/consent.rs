//! `POST /fhir/Consent`: a care organisation or the patient's own channel records (or
//! withdraws) a patient's consent, if the rule of `consent_authority.rs` allows this caller
//! this change (403 otherwise, audited), at most `consent_changes_per_minute` per credential
//! (429); audited first on `<prefix>.audit.consents`; answered with the directive as the
//! hub stored it.

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
use super::roles::{ConsentRecorder, at};
use super::steps::Who;
use crate::Gateway;
use crate::consent_authority::Recorder;
use crate::events::{
    ConsentChangeJudged, ConsentRecorded, Endpoint, EntryNotPublished, EntryRejected,
};
use dho_telemetry::{InternalEvent, Pseudonym};

pub(super) async fn fhir_consent(
    caller: ConsentRecorder<at::FhirConsent>,
    State(gw): State<Gateway>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const EP: Endpoint = Endpoint::FhirConsent;
    let ConsentRecorder {
        org,
        name,
        patient_channel,
        ..
    } = caller;
    let judged = |outcome| {
        ConsentChangeJudged {
            credential: &name,
            outcome,
        }
        .emit()
    };
    let who = Who::new(&name, &org);
    // Counted before anything else: refused attempts use up the credential's budget too.
    let config = &gw.inner.config;
    let per_minute = if patient_channel {
        config.patient_channel_consent_changes_per_minute
    } else {
        config.consent_changes_per_minute
    };
    let now = std::time::Instant::now();
    if let Err(wait) = gw.inner.consent_rate.take(&name, per_minute, now) {
        judged("rate_limited");
        return refuse(EP, gw.rate_limited(&who, EP, wait));
    }
    let json = match gw.body(body, EP) {
        Ok(json) => json,
        Err(r) => return refuse(EP, r),
    };
    let now = now_millis();
    let consent = match consent::consent_from_fhir(&json, &org, now, gw.inner.policy) {
        Ok(c) => c,
        Err(e) => {
            judged("rejected");
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
    // Held until the change is written: the next change to this patient is judged on it.
    let _patient = gw.inner.consent_locks.lock(&consent.patient).await;
    let recorder = Recorder {
        org: &org,
        patient_channel,
    };
    match gw.may_record(recorder, &consent, now).await {
        Ok(Ok(())) => {}
        Ok(Err(refused)) => {
            judged(refused.reason);
            let who = who.about(&consent.patient);
            let r = gw.forbid(&who, EP, refused.reason, refused.message, true);
            return refuse(EP, r);
        }
        Err(e) => {
            // Whatever failed (broker, registry, a read that timed out), the patient's
            // state is unknown: the change waits, it is not judged on what is missing.
            judged("unavailable");
            EntryNotPublished {
                endpoint: EP,
                reason: "state_unavailable",
                error: &e,
            }
            .emit();
            let mut r = Refusal {
                fhir: true,
                ..Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "transient",
                    "state_unavailable",
                    "the patient's consent state could not be read; retry later",
                )
            };
            r.retry_after = Some(gw.inner.config.retry_after.as_secs());
            return refuse(EP, r);
        }
    }
    let audit = ConsentAudit {
        principal: &name,
        channel: "gateway",
    };
    match gw.inner.publisher.record_consent(&consent, audit).await {
        Ok(_) => {
            judged("recorded");
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
            judged("unavailable");
            refuse(EP, unavailable(&gw, &e))
        }
    }
}

/// The broker did not take the change, or the patient's state could not be read: 503 with
/// `Retry-After` when retrying may help (never a judgement on what could not be read).
fn unavailable(gw: &Gateway, e: &dho_publisher::Error) -> Refusal {
    let (reason, status, code) = publish_failure(e);
    EntryNotPublished {
        endpoint: Endpoint::FhirConsent,
        reason,
        error: e,
    }
    .emit();
    let mut r = Refusal {
        fhir: true,
        ..Refusal::new(status, code, reason, &e.to_string())
    };
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.retry_after = Some(gw.inner.config.retry_after.as_secs());
    }
    r
}
