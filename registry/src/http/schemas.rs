//! Schemas, subjects, versions and compatibility checks.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::json;

use super::{
    AppState, OnePath, Params, Q, Reply, Shared, TwoPaths, answer, body, ok, one, parse_id, two,
};
use crate::Result;
use crate::canonical;
use crate::state::VersionInfo;
use crate::types::{Reference, SchemaRequest, SchemaType, VersionSpec};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SchemaBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u32>,
    // Confluent omits schemaType for AVRO, and clients default to AVRO.
    #[serde(skip_serializing_if = "Option::is_none")]
    schema_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    references: Vec<Reference>,
    schema: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_id: Option<u32>,
}

fn schema_text(schema_type: SchemaType, text: &str, params: &Params) -> String {
    if schema_type == SchemaType::Protobuf
        && params
            .get("format")
            .is_some_and(|f| f.eq_ignore_ascii_case("serialized"))
    {
        return canonical::protobuf_serialized(text).unwrap_or_else(|| text.to_string());
    }
    text.to_string()
}

fn type_field(schema_type: SchemaType) -> Option<&'static str> {
    (schema_type != SchemaType::Avro).then(|| schema_type.as_str())
}

fn version_body(info: VersionInfo, params: &Params) -> SchemaBody {
    SchemaBody {
        schema: schema_text(info.schema_type, &info.schema, params),
        subject: Some(info.subject),
        version: Some(info.version),
        id: Some(info.id),
        schema_type: type_field(info.schema_type),
        references: info.references,
        max_id: None,
    }
}

pub(super) async fn schema_types() -> Response {
    let types: Vec<&str> = SchemaType::ALL.iter().map(|t| t.as_str()).collect();
    ok(&types)
}

pub(super) async fn list_schemas(State(app): State<AppState>, query: Q) -> Reply {
    let params = Params::from(query);
    let all = app.read().all_versions(
        params.filter(),
        params.subject_prefix(),
        params.flag(&["latestOnly"]),
    );
    let bodies: Vec<SchemaBody> = all.into_iter().map(|i| version_body(i, &params)).collect();
    Ok(ok(&params.page(bodies)))
}

pub(super) async fn schema_by_id(State(app): State<AppState>, id: OnePath, query: Q) -> Reply {
    let id = parse_id(&one(id)?)?;
    let params = Params::from(query);
    let state = app.read();
    let stored = state.schema_by_id(id)?;
    Ok(ok(&SchemaBody {
        subject: None,
        version: None,
        id: None,
        schema_type: type_field(stored.schema_type),
        references: stored.references.clone(),
        schema: schema_text(stored.schema_type, &stored.schema, &params),
        max_id: params.flag(&["fetchMaxId"]).then(|| state.max_id()),
    }))
}

pub(super) async fn raw_schema_by_id(State(app): State<AppState>, id: OnePath, query: Q) -> Reply {
    let id = parse_id(&one(id)?)?;
    let params = Params::from(query);
    let state = app.read();
    let stored = state.schema_by_id(id)?;
    Ok(raw(schema_text(
        stored.schema_type,
        &stored.schema,
        &params,
    )))
}

/// A schema's text as it is, not wrapped in JSON (the `/schema` endpoints).
fn raw(text: String) -> Response {
    answer(StatusCode::OK, text)
}

fn uses_of(app: &Shared, id: &str, params: &Params) -> Result<Vec<(String, u32)>> {
    let id = parse_id(id)?;
    let mut uses = app.read().id_versions(id, params.filter())?;
    if let Some(subject) = params.get("subject").filter(|s| !s.is_empty()) {
        uses.retain(|(s, _)| s == subject);
    }
    Ok(uses)
}

pub(super) async fn id_versions(State(app): State<AppState>, id: OnePath, query: Q) -> Reply {
    let params = Params::from(query);
    let uses = uses_of(&app, &one(id)?, &params)?;
    let list: Vec<_> = uses
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    Ok(ok(&params.page(list)))
}

pub(super) async fn id_subjects(State(app): State<AppState>, id: OnePath, query: Q) -> Reply {
    let params = Params::from(query);
    let uses = uses_of(&app, &one(id)?, &params)?;
    let subjects: BTreeSet<String> = uses.into_iter().map(|(s, _)| s).collect();
    Ok(ok(&params.page(subjects.into_iter().collect())))
}

pub(super) async fn list_subjects(State(app): State<AppState>, query: Q) -> Reply {
    let params = Params::from(query);
    let subjects = app
        .read()
        .subjects(params.filter(), params.subject_prefix());
    Ok(ok(&params.page(subjects)))
}

pub(super) async fn list_versions(
    State(app): State<AppState>,
    subject: OnePath,
    query: Q,
) -> Reply {
    let subject = one(subject)?;
    let params = Params::from(query);
    let versions = app.read().versions(&subject, params.filter())?;
    Ok(ok(&params.page(versions)))
}

/// The version a `/subjects/{s}/versions/{v}` path names (soft-deleted ones with `deleted`).
fn version_of(app: &Shared, path: TwoPaths, params: &Params) -> Result<VersionInfo> {
    let (subject, version) = two(path)?;
    let spec = VersionSpec::parse(&version)?;
    app.read()
        .version(&subject, spec, params.flag(&["deleted"]))
}

pub(super) async fn get_version(State(app): State<AppState>, path: TwoPaths, query: Q) -> Reply {
    let params = Params::from(query);
    let info = version_of(&app, path, &params)?;
    Ok(ok(&version_body(info, &params)))
}

pub(super) async fn get_raw_version(
    State(app): State<AppState>,
    path: TwoPaths,
    query: Q,
) -> Reply {
    let params = Params::from(query);
    let info = version_of(&app, path, &params)?;
    Ok(raw(schema_text(info.schema_type, &info.schema, &params)))
}

pub(super) async fn referenced_by(State(app): State<AppState>, path: TwoPaths, query: Q) -> Reply {
    let (subject, version) = two(path)?;
    let spec = VersionSpec::parse(&version)?;
    let state = app.read();
    let info = state.version(&subject, spec, Params::from(query).flag(&["deleted"]))?;
    Ok(ok(&state.referenced_by(&subject, info.version)))
}

pub(super) async fn register(State(app): State<AppState>, subject: OnePath, bytes: Bytes) -> Reply {
    let subject = one(subject)?;
    let request: SchemaRequest = body(&bytes)?;
    let registered = app
        .write(|state| state.plan_register(&subject, &request))
        .await?;
    tracing::info!(%subject, id = registered.id, version = registered.version, "schema registered");
    // `{id}` is what every client reads; 8.x registries add the version and schema, which
    // Python's full-response call reports.
    let info = app
        .read()
        .version(&subject, VersionSpec::Number(registered.version), true);
    match info {
        Ok(info) => Ok(ok(&SchemaBody {
            subject: None,
            ..version_body(info, &Params::default())
        })),
        Err(_) => Ok(ok(&json!({ "id": registered.id }))),
    }
}

pub(super) async fn lookup(
    State(app): State<AppState>,
    subject: OnePath,
    query: Q,
    bytes: Bytes,
) -> Reply {
    let subject = one(subject)?;
    let params = Params::from(query);
    let request: SchemaRequest = body(&bytes)?;
    let info = app
        .read()
        .lookup(&subject, &request, params.flag(&["deleted"]))?;
    Ok(ok(&version_body(info, &params)))
}

pub(super) async fn delete_subject(
    State(app): State<AppState>,
    subject: OnePath,
    query: Q,
) -> Reply {
    let subject = one(subject)?;
    let permanent = Params::from(query).flag(&["permanent"]);
    let versions = app
        .write(|state| state.plan_delete_subject(&subject, permanent))
        .await?;
    tracing::info!(%subject, permanent, ?versions, "subject deleted");
    Ok(ok(&versions))
}

pub(super) async fn delete_version(State(app): State<AppState>, path: TwoPaths, query: Q) -> Reply {
    let (subject, version) = two(path)?;
    let spec = VersionSpec::parse(&version)?;
    let permanent = Params::from(query).flag(&["permanent"]);
    let deleted = app
        .write(|state| state.plan_delete_version(&subject, spec, permanent))
        .await?;
    tracing::info!(%subject, version = deleted, permanent, "version deleted");
    Ok(ok(&deleted))
}

fn compatibility_reply(messages: Vec<String>, params: &Params) -> Response {
    let compatible = messages.is_empty();
    if params.flag(&["verbose"]) {
        ok(&json!({ "is_compatible": compatible, "messages": messages }))
    } else {
        ok(&json!({ "is_compatible": compatible }))
    }
}

pub(super) async fn compatibility_all(
    State(app): State<AppState>,
    subject: OnePath,
    query: Q,
    bytes: Bytes,
) -> Reply {
    let subject = one(subject)?;
    let params = Params::from(query);
    let request: SchemaRequest = body(&bytes)?;
    let messages = app.read().check_compatibility(&subject, None, &request)?;
    Ok(compatibility_reply(messages, &params))
}

pub(super) async fn compatibility_version(
    State(app): State<AppState>,
    path: TwoPaths,
    query: Q,
    bytes: Bytes,
) -> Reply {
    let (subject, version) = two(path)?;
    let spec = VersionSpec::parse(&version)?;
    let params = Params::from(query);
    let request: SchemaRequest = body(&bytes)?;
    let messages = app
        .read()
        .check_compatibility(&subject, Some(spec), &request)?;
    Ok(compatibility_reply(messages, &params))
}
