//! The Confluent REST API on axum. Handlers only translate HTTP to the state machine and
//! back; every rule lives in `state`. [`schemas`] serves schemas, subjects, versions and
//! compatibility checks; [`settings`] the compatibility level and mode (`/config`, `/mode`).

mod schemas;
mod settings;

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::state::{Filter, Plan, RegistryState};
use crate::store::KafkaStore;
use crate::types::{CompatibilityLevel, Mode};
use crate::{Error, Result};

use schemas::*;
use settings::setting;

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
        .route("/config", setting::<CompatibilityLevel>())
        .route("/config/{subject}", setting::<CompatibilityLevel>())
        .route("/mode", setting::<Mode>())
        .route("/mode/{subject}", setting::<Mode>())
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

/// A 200 answer with the registry's content type; `body` is JSON text or a raw schema.
fn answer(status: StatusCode, body: impl IntoResponse) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        body,
    )
        .into_response()
}

fn ok<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => answer(StatusCode::OK, body),
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
        answer(status, body.to_string())
    }
}

type Reply = Result<Response>;

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

// ------------------------------------------------------------------- request parts

/// Query parameters; unknown ones are ignored and a malformed query counts as empty.
#[derive(Debug, Default)]
struct Params(HashMap<String, String>);

impl Params {
    fn from(query: Q) -> Self {
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

    /// `subjectPrefix`; Confluent's "all contexts" wildcard `:*:` is no prefix.
    fn subject_prefix(&self) -> &str {
        self.get("subjectPrefix")
            .filter(|p| *p != ":*:")
            .unwrap_or("")
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

/// A path's parameters, as the route names them: `{subject}` or `{id}` ([`OnePath`]),
/// `{subject}` and `{version}` ([`TwoPaths`]). A parameter that does not decode as UTF-8 is
/// a route that does not exist.
type PathOf<T> = Result<Path<T>, PathRejection>;
type OnePath = PathOf<String>;
type TwoPaths = PathOf<(String, String)>;

fn one(path: OnePath) -> Result<String> {
    path.map(|Path(p)| p).map_err(|_| Error::RouteNotFound)
}

fn two(path: TwoPaths) -> Result<(String, String)> {
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
