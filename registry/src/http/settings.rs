//! `/config[/{subject}]` (the compatibility level) and `/mode[/{subject}]`: one generic
//! GET/PUT/DELETE triple serves all four routes, since the level and the mode follow the
//! same rules (see [`Setting`]); only their names on the wire differ ([`Served`]).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::{MethodRouter, get};

use super::{AppState, Params, Q, Reply, body, ok};
use crate::state::Setting;
use crate::types::{CompatibilityLevel, Mode};
use crate::{Error, Result};

/// How a [`Setting`] is spelt in the Confluent API.
pub(super) trait Served: Setting {
    /// For the log: "compatibility level", "mode".
    const NAME: &'static str;
    /// The field GET and DELETE answer with.
    const FIELD: &'static str;
    /// The field PUT answers with (Confluent answers PUT /config with another name).
    const PUT_FIELD: &'static str;
    /// The fields a PUT body may carry the value in, the first present one counting.
    const BODY_FIELDS: &'static [&'static str];

    fn parse(text: &str) -> Result<Self>;
}

impl Served for CompatibilityLevel {
    const NAME: &'static str = "compatibility level";
    const FIELD: &'static str = "compatibilityLevel";
    const PUT_FIELD: &'static str = "compatibility";
    const BODY_FIELDS: &'static [&'static str] = &["compatibility", "compatibilityLevel"];

    fn parse(text: &str) -> Result<Self> {
        CompatibilityLevel::parse(text)
    }
}

impl Served for Mode {
    const NAME: &'static str = "mode";
    const FIELD: &'static str = "mode";
    const PUT_FIELD: &'static str = "mode";
    const BODY_FIELDS: &'static [&'static str] = &["mode"];

    fn parse(text: &str) -> Result<Self> {
        Mode::parse(text)
    }
}

/// The routes of one setting, global (`/config`) or per subject (`/config/{subject}`).
pub(super) fn setting<S: Served>() -> MethodRouter<AppState> {
    get(get_setting::<S>)
        .put(put_setting::<S>)
        .delete(delete_setting::<S>)
}

/// The subject a route names, or none for the global value.
type ScopePath = Result<Option<Path<String>>, PathRejection>;

fn scope(path: ScopePath) -> Result<Option<String>> {
    path.map(|p| p.map(|Path(subject)| subject))
        .map_err(|_| Error::RouteNotFound)
}

fn reply<S: Served>(field: &str, value: S) -> Reply {
    Ok(ok(&BTreeMap::from([(field, value.to_string())])))
}

async fn get_setting<S: Served>(State(app): State<AppState>, path: ScopePath, query: Q) -> Reply {
    let subject = scope(path)?;
    let state = app.read();
    let global = || S::global(&state).unwrap_or_default();
    let value = match subject {
        None => global(),
        Some(subject) => match S::of_subject(&state, &subject) {
            Some(value) => value,
            None if Params::from(query).flag(&["defaultToGlobal"]) => global(),
            None => return Err(S::not_set(&subject)),
        },
    };
    reply(S::FIELD, value)
}

async fn put_setting<S: Served>(
    State(app): State<AppState>,
    path: ScopePath,
    bytes: Bytes,
) -> Reply {
    let subject = scope(path)?;
    let request: serde_json::Value = body(&bytes)?;
    // A body without the field is refused as Confluent does: as the value "null".
    let text = S::BODY_FIELDS
        .iter()
        .find_map(|field| request.get(field))
        .and_then(|v| v.as_str())
        .unwrap_or("null");
    let value = S::parse(text)?;
    let value = app
        .write(|state| Ok(state.plan_set(subject.as_deref(), value)))
        .await?;
    match &subject {
        Some(subject) => tracing::info!(%subject, "subject {} set to {value}", S::NAME),
        None => tracing::info!("global {} set to {value}", S::NAME),
    }
    reply(S::PUT_FIELD, value)
}

async fn delete_setting<S: Served>(State(app): State<AppState>, path: ScopePath) -> Reply {
    let subject = scope(path)?;
    let previous = app
        .write(|state| state.plan_delete::<S>(subject.as_deref()))
        .await?;
    reply(S::FIELD, previous)
}
