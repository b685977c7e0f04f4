//! The Confluent REST API on axum. Handlers only translate HTTP to the state machine and
//! back; every rule lives in `state.rs`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::canonical;
use crate::state::{Filter, Plan, RegistryState, VersionInfo};
use crate::store::KafkaStore;
use crate::types::{CompatibilityLevel, Mode, Reference, SchemaRequest, SchemaType, VersionSpec};
use crate::{Error, Result};

/// What every response carries; clients also accept `application/json`.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// State shared by the handlers: reads take the lock briefly; writes are serialised by the
/// store mutex so that a plan stays valid until its records are acknowledged and applied.
#[derive(Debug)]
pub(crate) struct Shared {
    state: RwLock<RegistryState>,
    store: tokio::sync::Mutex<KafkaStore>,
}

impl Shared {
    pub(crate) fn new(state: RegistryState, store: KafkaStore) -> Self {
        Self {
            state: RwLock::new(state),
            store: tokio::sync::Mutex::new(store),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, RegistryState> {
        // No code panics while holding the lock; recover rather than fail every request.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, RegistryState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Plans against the current state, appends the records, applies each once acknowledged.
    async fn write<T>(&self, plan: impl FnOnce(&RegistryState) -> Result<Plan<T>>) -> Result<T> {
        let store = self.store.lock().await;
        let plan = plan(&self.read())?;
        for record in &plan.records {
            store.append(record).await?;
            self.write_lock().apply(record);
        }
        Ok(plan.outcome)
    }
}

type AppState = Arc<Shared>;

pub(crate) fn router(shared: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(root))
        .route("/contexts", get(contexts))
        .route("/schemas", get(list_schemas))
        .route("/schemas/types", get(schema_types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(id_versions))
        .route("/schemas/ids/{id}/subjects", get(id_subjects))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_raw_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatibility_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility_version),
        )
        .route(
            "/config",
            get(get_global_config)
                .put(put_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/mode",
            get(get_global_mode)
                .put(put_global_mode)
                .delete(delete_global_mode),
        )
        .route(
            "/mode/{subject}",
            get(get_subject_mode)
                .put(put_subject_mode)
                .delete(delete_subject_mode),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
}

/// Runs before routing: `//` collapses to `/` and a trailing `/` goes, as clients send both.
/// Percent-encoded characters (`%2F` in subjects) are left alone for the router.
pub(crate) fn normalize_path(mut request: Request) -> Request {
    let path = request.uri().path();
    let mut normalized = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    if normalized != path {
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{normalized}?{query}"),
            None => normalized,
        };
        let mut parts = request.uri().clone().into_parts();
        if let Ok(pq) = path_and_query.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }
    request
}

// ------------------------------------------------------------------- responses

fn ok<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            body,
        )
            .into_response(),
        Err(e) => Error::Store(format!("could not serialise the response: {e}")).into_response(),
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if self.is_client_error() {
            tracing::debug!(error_code = self.error_code(), error = %self, "client error");
        } else {
            tracing::error!(error_code = self.error_code(), error = %self, "server error");
        }
        let body = json!({ "error_code": self.error_code(), "message": self.to_string() });
        (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            body.to_string(),
        )
            .into_response()
    }
}

type Reply = Result<Response>;

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

// ------------------------------------------------------------------- request parts

/// Query parameters; unknown ones are ignored and a malformed query counts as empty.
#[derive(Debug, Default)]
struct Params(HashMap<String, String>);

impl Params {
    fn from(query: Result<Query<HashMap<String, String>>, QueryRejection>) -> Self {
        Params(query.map(|Query(q)| q).unwrap_or_default())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Booleans are case-insensitive (`True` from Python); anything else is false.
    fn flag(&self, names: &[&str]) -> bool {
        names.iter().any(|name| {
            self.get(name)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        })
    }

    fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(|v| v.trim().parse().ok())
    }

    fn filter(&self) -> Filter {
        if self.flag(&["deletedOnly", "deleted_only"]) {
            Filter::DeletedOnly
        } else if self.flag(&["deleted"]) {
            Filter::All
        } else {
            Filter::Live
        }
    }

    /// Applies `offset` and `limit` (-1 or absent: no limit).
    fn page<T>(&self, items: Vec<T>) -> Vec<T> {
        let offset = self
            .int("offset")
            .and_then(|o| usize::try_from(o).ok())
            .unwrap_or(0);
        let limit = self
            .int("limit")
            .and_then(|l| usize::try_from(l).ok())
            .filter(|l| *l > 0);
        let rest = items.into_iter().skip(offset);
        match limit {
            Some(limit) => rest.take(limit).collect(),
            None => rest.collect(),
        }
    }
}

type Q = Result<Query<HashMap<String, String>>, QueryRejection>;

fn one(path: Result<Path<String>, PathRejection>) -> Result<String> {
    path.map(|Path(p)| p).map_err(|_| Error::RouteNotFound)
}

fn two(path: Result<Path<(String, String)>, PathRejection>) -> Result<(String, String)> {
    path.map(|Path(p)| p).map_err(|_| Error::RouteNotFound)
}

fn parse_id(id: &str) -> Result<u32> {
    id.trim()
        .parse::<u32>()
        .map_err(|_| Error::SchemaNotFound(format!("Schema {id} not found")))
}

/// Parses a JSON body whatever its Content-Type; an empty body is `{}`.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| Error::BadBody(e.to_string()))
}

// ------------------------------------------------------------------- handlers

async fn root() -> Response {
    ok(&json!({}))
}

async fn contexts() -> Response {
    ok(&["."])
}

async fn not_found() -> Response {
    Error::RouteNotFound.into_response()
}

async fn method_not_allowed() -> Response {
    Error::MethodNotAllowed.into_response()
}

async fn schema_types() -> Response {
    let types: Vec<&str> = SchemaType::ALL.iter().map(|t| t.as_str()).collect();
    ok(&types)
}

async fn list_schemas(State(app): State<AppState>, query: Q) -> Reply {
    let params = Params::from(query);
    let prefix = params
        .get("subjectPrefix")
        .filter(|p| *p != ":*:")
        .unwrap_or("");
    let all = app
        .read()
        .all_versions(params.filter(), prefix, params.flag(&["latestOnly"]));
    let bodies: Vec<SchemaBody> = all.into_iter().map(|i| version_body(i, &params)).collect();
    Ok(ok(&params.page(bodies)))
}

async fn schema_by_id(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Q,
) -> Reply {
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

async fn raw_schema_by_id(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Q,
) -> Reply {
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

fn raw(text: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        text,
    )
        .into_response()
}

fn uses_of(app: &Shared, id: &str, params: &Params) -> Result<Vec<(String, u32)>> {
    let id = parse_id(id)?;
    let mut uses = app.read().id_versions(id, params.filter())?;
    if let Some(subject) = params.get("subject").filter(|s| !s.is_empty()) {
        uses.retain(|(s, _)| s == subject);
    }
    Ok(uses)
}

async fn id_versions(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Q,
) -> Reply {
    let params = Params::from(query);
    let uses = uses_of(&app, &one(id)?, &params)?;
    let list: Vec<_> = uses
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    Ok(ok(&params.page(list)))
}

async fn id_subjects(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Q,
) -> Reply {
    let params = Params::from(query);
    let uses = uses_of(&app, &one(id)?, &params)?;
    let subjects: BTreeSet<String> = uses.into_iter().map(|(s, _)| s).collect();
    Ok(ok(&params.page(subjects.into_iter().collect())))
}

async fn list_subjects(State(app): State<AppState>, query: Q) -> Reply {
    let params = Params::from(query);
    // Confluent's "all contexts" wildcard is the default prefix.
    let prefix = params
        .get("subjectPrefix")
        .filter(|p| *p != ":*:")
        .unwrap_or("");
    let subjects = app.read().subjects(params.filter(), prefix);
    Ok(ok(&params.page(subjects)))
}

async fn list_versions(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
    query: Q,
) -> Reply {
    let subject = one(subject)?;
    let params = Params::from(query);
    let versions = app.read().versions(&subject, params.filter())?;
    Ok(ok(&params.page(versions)))
}

async fn get_version(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Q,
) -> Reply {
    let (subject, version) = two(path)?;
    let spec = VersionSpec::parse(&version)?;
    let params = Params::from(query);
    let info = app
        .read()
        .version(&subject, spec, params.flag(&["deleted"]))?;
    Ok(ok(&version_body(info, &params)))
}

async fn get_raw_version(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Q,
) -> Reply {
    let (subject, version) = two(path)?;
    let spec = VersionSpec::parse(&version)?;
    let params = Params::from(query);
    let info = app
        .read()
        .version(&subject, spec, params.flag(&["deleted"]))?;
    Ok(raw(schema_text(info.schema_type, &info.schema, &params)))
}

async fn referenced_by(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Q,
) -> Reply {
    let (subject, version) = two(path)?;
    let spec = VersionSpec::parse(&version)?;
    let state = app.read();
    let info = state.version(&subject, spec, Params::from(query).flag(&["deleted"]))?;
    Ok(ok(&state.referenced_by(&subject, info.version)))
}

async fn register(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
    bytes: Bytes,
) -> Reply {
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

async fn lookup(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
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

async fn delete_subject(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
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

async fn delete_version(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Q,
) -> Reply {
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

async fn compatibility_all(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
    query: Q,
    bytes: Bytes,
) -> Reply {
    let subject = one(subject)?;
    let params = Params::from(query);
    let request: SchemaRequest = body(&bytes)?;
    let messages = app.read().check_compatibility(&subject, None, &request)?;
    Ok(compatibility_reply(messages, &params))
}

async fn compatibility_version(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
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

// ------------------------------------------------------------------- config and mode

fn level_from_body(bytes: &Bytes) -> Result<CompatibilityLevel> {
    let value: serde_json::Value = body(bytes)?;
    let level = value
        .get("compatibility")
        .or_else(|| value.get("compatibilityLevel"))
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::InvalidCompatibilityLevel("null".to_string()))?;
    CompatibilityLevel::parse(level)
}

fn mode_from_body(bytes: &Bytes) -> Result<Mode> {
    let value: serde_json::Value = body(bytes)?;
    let mode = value
        .get("mode")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::InvalidMode("null".to_string()))?;
    Mode::parse(mode)
}

fn level_reply(level: CompatibilityLevel) -> Response {
    ok(&json!({ "compatibilityLevel": level.as_str() }))
}

async fn get_global_config(State(app): State<AppState>) -> Reply {
    Ok(level_reply(app.read().global_config()))
}

async fn put_global_config(State(app): State<AppState>, bytes: Bytes) -> Reply {
    let level = level_from_body(&bytes)?;
    let level = app
        .write(|state| Ok(state.plan_set_config(None, level)))
        .await?;
    tracing::info!(%level, "global compatibility level set");
    Ok(ok(&json!({ "compatibility": level.as_str() })))
}

async fn delete_global_config(State(app): State<AppState>) -> Reply {
    let previous = app.write(|state| state.plan_delete_config(None)).await?;
    Ok(level_reply(previous))
}

async fn get_subject_config(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
    query: Q,
) -> Reply {
    let subject = one(subject)?;
    let state = app.read();
    let level = match state.subject_config(&subject) {
        Some(level) => level,
        None if Params::from(query).flag(&["defaultToGlobal"]) => state.global_config(),
        None => return Err(Error::SubjectConfigNotFound(subject)),
    };
    Ok(level_reply(level))
}

async fn put_subject_config(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
    bytes: Bytes,
) -> Reply {
    let subject = one(subject)?;
    let level = level_from_body(&bytes)?;
    let level = app
        .write(|state| Ok(state.plan_set_config(Some(&subject), level)))
        .await?;
    tracing::info!(%subject, %level, "subject compatibility level set");
    Ok(ok(&json!({ "compatibility": level.as_str() })))
}

async fn delete_subject_config(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
) -> Reply {
    let subject = one(subject)?;
    let previous = app
        .write(|state| state.plan_delete_config(Some(&subject)))
        .await?;
    Ok(level_reply(previous))
}

fn mode_reply(mode: Mode) -> Response {
    ok(&json!({ "mode": mode.as_str() }))
}

async fn get_global_mode(State(app): State<AppState>) -> Reply {
    Ok(mode_reply(app.read().global_mode()))
}

async fn put_global_mode(State(app): State<AppState>, bytes: Bytes) -> Reply {
    let mode = mode_from_body(&bytes)?;
    let mode = app
        .write(|state| Ok(state.plan_set_mode(None, mode)))
        .await?;
    tracing::info!(%mode, "global mode set");
    Ok(mode_reply(mode))
}

async fn delete_global_mode(State(app): State<AppState>) -> Reply {
    let previous = app.write(|state| state.plan_delete_mode(None)).await?;
    Ok(mode_reply(previous))
}

async fn get_subject_mode(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
    query: Q,
) -> Reply {
    let subject = one(subject)?;
    let state = app.read();
    let mode = match state.subject_mode(&subject) {
        Some(mode) => mode,
        None if Params::from(query).flag(&["defaultToGlobal"]) => state.global_mode(),
        None => return Err(Error::SubjectModeNotFound(subject)),
    };
    Ok(mode_reply(mode))
}

async fn put_subject_mode(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
    bytes: Bytes,
) -> Reply {
    let subject = one(subject)?;
    let mode = mode_from_body(&bytes)?;
    let mode = app
        .write(|state| Ok(state.plan_set_mode(Some(&subject), mode)))
        .await?;
    tracing::info!(%subject, %mode, "subject mode set");
    Ok(mode_reply(mode))
}

async fn delete_subject_mode(
    State(app): State<AppState>,
    subject: Result<Path<String>, PathRejection>,
) -> Reply {
    let subject = one(subject)?;
    let previous = app
        .write(|state| state.plan_delete_mode(Some(&subject)))
        .await?;
    Ok(mode_reply(previous))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(uri: &str) -> String {
        let request = Request::builder()
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        normalize_path(request).uri().to_string()
    }

    #[test]
    fn paths_are_normalised_before_routing() {
        assert_eq!(normalized("/subjects/"), "/subjects");
        assert_eq!(
            normalized("//subjects//a%2Fb/versions/?x=1"),
            "/subjects/a%2Fb/versions?x=1"
        );
        assert_eq!(normalized("/"), "/");
        assert_eq!(normalized("//"), "/");
        assert_eq!(normalized("/config"), "/config");
    }

    #[test]
    fn params_parse_leniently() {
        let mut map = HashMap::new();
        map.insert("deleted".to_string(), "True".to_string());
        map.insert("limit".to_string(), "-1".to_string());
        map.insert("offset".to_string(), "1".to_string());
        let params = Params(map);
        assert_eq!(params.filter(), Filter::All);
        assert_eq!(params.page(vec![1, 2, 3]), vec![2, 3]);
        assert!(!params.flag(&["permanent"]));
    }
}
