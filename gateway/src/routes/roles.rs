//! Authentication as axum extractors, one per role: a handler's first argument names the
//! role that may call it ([`Platform`], [`CareOrganisation`], or [`ConsentRecorder`]: a
//! care organisation or the patient's own channel) and the endpoint it answers for, so no
//! route can forget its check.
//!
//! Both extract from the request's head only ([`FromRequestParts`]): axum runs them before
//! the body extractor, which must be a handler's last argument. A caller without a valid
//! token gets its `401` (and a caller of the other role its `403`) before a byte of the
//! body is read, however large the body says it is.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use dho_schemas::model::OrganisationIdentifier;

use super::refusal::{Refusal, refuse};
use super::steps::Who;
use crate::Gateway;
use crate::auth::{AuthFailure, Principal};
use crate::events::{AuthRefused, Endpoint};
use dho_telemetry::InternalEvent;

/// An endpoint as a type, for the role extractors: where they count a refusal, whether
/// they answer it as FHIR, and what a caller of the other role is told.
pub(super) trait Guarded: Send + Sync + 'static {
    const ENDPOINT: Endpoint;
    /// The `403` message for a caller of the other role.
    const ROLE: &'static str;
}

/// The endpoints, as types: `Platform<at::FhirBundle>` reads "a device platform, at the
/// Bundle endpoint".
pub(super) mod at {
    use super::{Endpoint, Guarded};

    macro_rules! endpoints {
        ($($name:ident: $role:literal),* $(,)?) => {$(
            #[derive(Debug)]
            pub(in crate::routes) struct $name;
            impl Guarded for $name {
                const ENDPOINT: Endpoint = Endpoint::$name;
                const ROLE: &'static str = $role;
            }
        )*};
    }

    endpoints! {
        FhirBundle: "only device platforms publish readings",
        Measurements: "only device platforms publish readings",
        SelfReports: "only device platforms publish readings",
        FhirConsent: "only care organisations and the patient's own channel record consent",
        Subscriptions: "only care organisations manage subscriptions",
        CarePlans: "only care organisations record care plans",
    }
}

/// A device platform calling endpoint `E`: it may publish readings and self-reports, as
/// itself.
#[derive(Debug)]
pub(super) struct Platform<E> {
    /// The operator-given name (for logs and audit; not a secret).
    pub(super) name: String,
    /// The platform's organisation: the data controller and source platform of everything
    /// it sends.
    pub(super) org: OrganisationIdentifier,
    endpoint: PhantomData<E>,
}

/// A care organisation calling endpoint `E`: it may record consent and care plans (as
/// itself) and manage its own subscriptions.
#[derive(Debug)]
pub(super) struct CareOrganisation<E> {
    /// The operator-given name (for logs and audit; not a secret).
    pub(super) name: String,
    pub(super) org: OrganisationIdentifier,
    /// The subscriber ids (delivery topics) it owns.
    pub(super) subscriber_ids: Vec<String>,
    endpoint: PhantomData<E>,
}

impl<E: Guarded> FromRequestParts<Gateway> for Platform<E> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, Response> {
        match principal(gw, parts).map_err(unauthenticated::<E>)? {
            Principal::Platform { name, org } => Ok(Self {
                name,
                org,
                endpoint: PhantomData,
            }),
            other => Err(wrong_role::<E>(gw, &other)),
        }
    }
}

impl<E: Guarded> FromRequestParts<Gateway> for CareOrganisation<E> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, Response> {
        match principal(gw, parts).map_err(unauthenticated::<E>)? {
            Principal::CareOrganisation {
                name,
                org,
                subscriber_ids,
            } => Ok(Self {
                name,
                org,
                subscriber_ids,
                endpoint: PhantomData,
            }),
            other => Err(wrong_role::<E>(gw, &other)),
        }
    }
}

/// Who may record a consent change: a care organisation (within the rule of
/// `routes/consent_rule.rs`), or the patient's own channel.
#[derive(Debug)]
pub(super) struct ConsentRecorder<E> {
    /// The operator-given name (for logs and audit; not a secret).
    pub(super) name: String,
    pub(super) org: OrganisationIdentifier,
    /// The patient's own channel (a patient portal), not a care organisation.
    pub(super) patient_channel: bool,
    endpoint: PhantomData<E>,
}

impl<E: Guarded> FromRequestParts<Gateway> for ConsentRecorder<E> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, Response> {
        let (name, org, patient_channel) =
            match principal(gw, parts).map_err(unauthenticated::<E>)? {
                Principal::CareOrganisation { name, org, .. } => (name, org, false),
                Principal::PatientChannel { name, org } => (name, org, true),
                other => return Err(wrong_role::<E>(gw, &other)),
            };
        Ok(Self {
            name,
            org,
            patient_channel,
            endpoint: PhantomData,
        })
    }
}

/// Whether `endpoint` answers with FHIR OperationOutcomes.
fn speaks_fhir(endpoint: Endpoint) -> bool {
    matches!(endpoint, Endpoint::FhirBundle | Endpoint::FhirConsent)
}

/// The caller behind the request's bearer token.
fn principal(gw: &Gateway, parts: &Parts) -> Result<Principal, AuthFailure> {
    gw.inner.credentials.authenticate(&parts.headers).cloned()
}

/// 401 (counted and logged without the token).
fn unauthenticated<E: Guarded>(failure: AuthFailure) -> Response {
    AuthRefused {
        endpoint: E::ENDPOINT,
        reason: failure.as_str(),
    }
    .emit();
    let refusal = Refusal {
        fhir: speaks_fhir(E::ENDPOINT),
        ..Refusal::new(
            StatusCode::UNAUTHORIZED,
            "login",
            failure.as_str(),
            "a valid bearer token is required",
        )
    };
    refuse(E::ENDPOINT, refusal)
}

/// 403 for a caller of another role (audited).
fn wrong_role<E: Guarded>(gw: &Gateway, caller: &Principal) -> Response {
    let who = Who::new(caller.name(), caller.org());
    let fhir = speaks_fhir(E::ENDPOINT);
    let refusal = gw.forbid(&who, E::ENDPOINT, "wrong_role", E::ROLE, fhir);
    refuse(E::ENDPOINT, refusal)
}
