//! `POST /subscriptions`, `PUT|DELETE /subscriptions/{id}`: a care service manages its own
//! subscriptions (ids `<subscriber_id>.<name>`; `DELETE` names the patient in its body).
//! Every change is audited first on `<prefix>.audit.subscriptions`, like consent.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dho_publisher::SubscriptionAudit;
use dho_schemas::model::*;
use serde_json::{Value, json};

use super::refusal::{created, refuse};
use super::roles::{CareOrganisation, at};
use super::steps::{
    Who, delete_target, json_object, own_id, owner_of, parse, publish_state, stamp_caller_org,
    state_failure, upsert_failure,
};
use crate::Gateway;
use crate::events::Endpoint;

/// Whether the gateway takes `subscription_id` from the care service that owns
/// `subscriber_id`: `<subscriber_id>.<name>`.
pub fn is_own_subscription_id(subscriber_id: &str, subscription_id: &str) -> bool {
    owner_of(subscription_id) == Some(subscriber_id)
}

/// A care service's subscriptions, as their owner sees them.
type Owner = CareOrganisation<at::Subscriptions>;

pub(super) async fn create_subscription(
    caller: Owner,
    State(gw): State<Gateway>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    upsert_subscription(gw, caller, None, body).await
}

pub(super) async fn put_subscription(
    caller: Owner,
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    upsert_subscription(gw, caller, Some(id), body).await
}

async fn upsert_subscription(
    gw: Gateway,
    caller: Owner,
    path_id: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const EP: Endpoint = Endpoint::Subscriptions;
    let CareOrganisation {
        org,
        name,
        subscriber_ids: own,
        ..
    } = caller;
    let who = Who::new(&name, &org);
    let mut json = match gw.body(body, EP) {
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
                &who.about_body(object),
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
        &who,
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
    if let Err(r) = stamp_caller_org(&gw, &who, EP, object, "subscriber_org") {
        return refuse(EP, r);
    }
    object.insert("subscription_id".into(), id.clone().into());
    object.insert("updated_at".into(), json!(now_millis()));
    let subscription: Subscription = match parse(&json) {
        Ok(s) => s,
        Err(r) => return refuse(EP, r),
    };
    let audit = SubscriptionAudit {
        principal: &name,
        channel: "gateway",
    };
    let change = gw.inner.publisher.record_subscription(&subscription, audit);
    match publish_state(&gw, EP, change, upsert_failure).await {
        Ok(_) => created(json, &format!("/subscriptions/{id}")),
        Err(response) => response,
    }
}

/// `DELETE /subscriptions/{id}` with body `{"patient": {"system": "FNR", "value": "…"}}`:
/// the patient is part of the record's key and never belongs in a URL (proxies log URLs).
pub(super) async fn delete_subscription(
    caller: Owner,
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const EP: Endpoint = Endpoint::Subscriptions;
    let CareOrganisation {
        org,
        name,
        subscriber_ids: own,
        ..
    } = caller;
    let owned = owner_of(&id).is_some_and(|owner| own.iter().any(|s| s == owner));
    let not_owned = "not one of this organisation's subscriptions";
    let patient = match delete_target(&gw, &Who::new(&name, &org), EP, owned, not_owned, body) {
        Ok(patient) => patient,
        Err(r) => return refuse(EP, r),
    };
    let audit = SubscriptionAudit {
        principal: &name,
        channel: "gateway",
    };
    let change = gw
        .inner
        .publisher
        .remove_subscription(&patient, &id, &org, audit);
    match publish_state(&gw, EP, change, state_failure).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_id_names_exactly_one_owner() {
        assert_eq!(owner_of("bergen-home-care.p1"), Some("bergen-home-care"));
        assert_eq!(owner_of("sentrum-gp.a.b"), Some("sentrum-gp"));
        // The fixture convention ('-') names nobody: such ids are the operator's.
        assert_eq!(owner_of("bergen-home-care-p1"), None);
    }
}
