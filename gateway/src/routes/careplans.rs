//! `POST /careplans`, `PUT|DELETE /careplans/{id}`: a patient's self-management plan
//! (`CarePlan`, native JSON), by care organisations only, as themselves; every change
//! audited first on `<prefix>.audit.careplans`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dho_publisher::CarePlanAudit;
use dho_schemas::model::*;
use serde_json::json;

use super::refusal::{Refusal, created, refuse, refuse_invalid};
use super::roles::{CareOrganisation, at};
use super::steps::{
    Who, delete_target, json_object, own_id, owner_of, parse, publish_state, stamp_caller_org,
    state_failure, upsert_failure,
};
use crate::Gateway;
use crate::events::{CarePlanDeleted, CarePlanRecorded, Endpoint, EntryForbidden, EntryRejected};
use dho_telemetry::{InternalEvent, Pseudonym};

/// A care plan id made through the gateway is `<orgnr>.<name>`, with the organisation number
/// of the organisation that owns (and alone may replace or delete) it. Like subscription
/// ids, the prefix names exactly one owner, so no organisation can overwrite another's plan;
/// the router classifies each reading under every organisation's plan for its code, each on
/// its own alert track (`dho_routing_core::tracks`), so none overrules another's either.
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

/// The care organisation writing a care plan (device platforms never write care plans).
type Author = CareOrganisation<at::CarePlans>;

pub(super) async fn create_care_plan(
    caller: Author,
    State(gw): State<Gateway>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    upsert_care_plan(gw, caller, None, body).await
}

pub(super) async fn put_care_plan(
    caller: Author,
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    upsert_care_plan(gw, caller, Some(id), body).await
}

/// `POST /careplans`, `PUT /careplans/{id}`: a patient's self-management plan in the
/// native JSON form of `CarePlan`. `updated_by` is the caller (403 if another
/// organisation is named), `updated_at` is the gateway's clock (a sender cannot pin its
/// plan as the newest), and the id is the caller's own `<orgnr>.<name>`. Audited first on
/// `<prefix>.audit.careplans` (`CarePlanChange`), like consent.
async fn upsert_care_plan(
    gw: Gateway,
    caller: Author,
    path_id: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const EP: Endpoint = Endpoint::CarePlans;
    let CareOrganisation { org, name, .. } = caller;
    let who = Who::new(&name, &org);
    let mut json = match gw.body(body, EP) {
        Ok(json) => json,
        Err(r) => return refuse(EP, r),
    };
    let object = match json_object(&mut json) {
        Ok(object) => object,
        Err(r) => return refuse(EP, r),
    };
    let id = match own_id(
        &gw,
        &who,
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
        EntryRejected {
            reason: "malformed",
        }
        .emit();
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
    if let Err(r) = stamp_caller_org(&gw, &who, EP, object, "updated_by") {
        EntryForbidden {
            reason: "not_owner",
        }
        .emit();
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
            CarePlanRecorded {
                patient: Pseudonym::from(&plan.patient),
                author: &name,
                version: plan.version,
                targets: plan.targets.len(),
            }
            .emit();
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
pub(super) async fn delete_care_plan(
    caller: Author,
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const EP: Endpoint = Endpoint::CarePlans;
    let CareOrganisation { org, name, .. } = caller;
    let owned = plan_owner(&id) == Some(org.value.as_str());
    let not_owned = "not one of this organisation's care plans";
    let patient = match delete_target(&gw, &Who::new(&name, &org), EP, owned, not_owned, body) {
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
            CarePlanDeleted {
                patient: Pseudonym::from(&patient),
                author: &name,
            }
            .emit();
            StatusCode::NO_CONTENT.into_response()
        }
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dho_schemas::fixtures;

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
}
