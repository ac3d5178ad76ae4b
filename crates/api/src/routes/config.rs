//! The dynamic configuration: show, patch (JSON merge patch, optimistic
//! concurrency with `If-Match`), pause and resume.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};
use store::cluster::DynamicConfig;
use store::{Expect, StoreError};

use super::{json_body, AppState};
use crate::error::HttpError;
use crate::merge::{patch_config, Invalid};
use crate::model::ConfigView;

/// Read-merge-write attempts when no `If-Match` was given and another
/// writer got in between.
const ATTEMPTS: usize = 5;

async fn read(state: &AppState) -> Result<ConfigView, HttpError> {
    Ok(match state.keys.config().get(state.store.as_ref()).await? {
        Some(config) => ConfigView {
            revision: config.mod_revision,
            config: config.value,
        },
        // Never written: the defaults, and revision 0 means "absent" to a
        // compare-and-set.
        None => ConfigView {
            revision: 0,
            config: DynamicConfig::default(),
        },
    })
}

pub async fn show(State(state): State<AppState>) -> Result<Json<ConfigView>, HttpError> {
    Ok(Json(read(&state).await?))
}

fn if_match(headers: &HeaderMap) -> Result<Option<i64>, HttpError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_matches('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| {
            HttpError::bad_request(
                "If-Match must be the config revision, a number, as GET /config shows it",
            )
        })
}

/// Applies `patch`, guarded by `expected` (a revision) when given.
async fn apply(
    state: &AppState,
    patch: &Value,
    expected: Option<i64>,
) -> Result<Json<ConfigView>, HttpError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let ConfigView {
            revision,
            config: current,
        } = read(state).await?;
        if let Some(expected) = expected {
            if expected != revision {
                return Err(stale(expected, revision));
            }
        }
        let patched = patch_config(&current, patch).map_err(|Invalid(problems)| {
            HttpError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "the configuration would be invalid, nothing was changed: {}",
                    problems.join("; ")
                ),
            )
            .with("problems", json!(problems))
        })?;
        match state
            .keys
            .config()
            .compare_and_set(
                state.store.as_ref(),
                Expect::ModRevision(revision),
                &patched,
                None,
            )
            .await
        {
            Ok(written) => {
                return Ok(Json(ConfigView {
                    revision: written,
                    config: patched,
                }))
            }
            Err(StoreError::Conflict { .. }) if expected.is_some() => {
                let now = read(state).await?.revision;
                return Err(stale(revision, now));
            }
            Err(StoreError::Conflict { .. }) if attempt < ATTEMPTS => continue,
            Err(StoreError::Conflict { .. }) => {
                return Err(HttpError::conflict(
                    "the configuration kept changing while this edit was applied; try again",
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn stale(expected: i64, now: i64) -> HttpError {
    HttpError::new(
        StatusCode::PRECONDITION_FAILED,
        format!(
            "the configuration changed since revision {expected} (now {now}); nothing was changed: read it again and redo the edit"
        ),
    )
    .with("revision", json!(now))
}

pub async fn patch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ConfigView>, HttpError> {
    let expected = if_match(&headers)?;
    let patch: Value = json_body(&body)?;
    apply(&state, &patch, expected).await
}

pub async fn pause(State(state): State<AppState>) -> Result<Json<ConfigView>, HttpError> {
    apply(&state, &json!({"paused": true}), None).await
}

pub async fn resume(State(state): State<AppState>) -> Result<Json<ConfigView>, HttpError> {
    apply(&state, &json!({"paused": false}), None).await
}
