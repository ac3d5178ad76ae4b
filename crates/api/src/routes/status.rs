//! Health checks for load balancers: answered from the agent's last round
//! alone, without a store read, so they stay cheap and work while the store
//! is down.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;

use super::AppState;
use crate::error::HttpError;
use crate::lag::{parse_max_lag, MaxLag};
use crate::local::LocalState;

type Check = Result<(StatusCode, Json<LocalState>), HttpError>;

fn answer(ok: bool, local: LocalState) -> Check {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(local)))
}

fn local(state: &AppState) -> LocalState {
    state.link.state.borrow().clone()
}

fn max_lag(query: &HashMap<String, String>) -> Result<Option<MaxLag>, HttpError> {
    query
        .get("lag")
        .map(|text| parse_max_lag(text).map_err(HttpError::bad_request))
        .transpose()
}

fn is_replica(local: &LocalState, max: Option<MaxLag>) -> bool {
    local.pg_running
        && !local.primary
        && local.streaming
        && max.is_none_or(|max| max.allows(local.lag_bytes, local.lag_ms))
}

pub async fn health(State(state): State<AppState>) -> Check {
    let local = local(&state);
    answer(local.pg_running, local)
}

pub async fn primary(State(state): State<AppState>) -> Check {
    let local = local(&state);
    answer(local.pg_running && local.primary && local.leader, local)
}

pub async fn replica(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Check {
    let max = max_lag(&query)?;
    let local = local(&state);
    answer(is_replica(&local, max), local)
}

pub async fn read_only(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Check {
    let max = max_lag(&query)?;
    let local = local(&state);
    let ok = (local.pg_running && local.primary && local.leader) || is_replica(&local, max);
    answer(ok, local)
}
