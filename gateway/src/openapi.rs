//! `GET /openapi.json`: the gateway's API as an OpenAPI 3.1 document (`gateway/openapi.json`,
//! written by hand and kept true by `tests/tests/openapi.rs`: every route here is in it with
//! its methods and back, and schemathesis fuzzes a live gateway against it).

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The document, as served.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

pub(crate) async fn document() -> Response {
    let mut response = OPENAPI_JSON.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
