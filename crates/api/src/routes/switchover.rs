//! Switchover and manual failover: checked against one snapshot, created
//! with compare-and-set against absence, then (when immediate) watched
//! until the agents have carried it out.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::json;
use store::cluster::Switchover;
use store::{Expect, StoreError};
use tokio::time::Instant;

use super::{json_body, AppState};
use crate::admission::{admit_failover, admit_switchover, finished, Refusal};
use crate::error::HttpError;
use crate::model::{ClusterView, FailoverRequest, SwitchoverDone, SwitchoverRequest};
use crate::time::now_ms;
use store::ClusterRecords;

/// How long an immediate switchover or failover call waits for the result.
const WAIT: Duration = Duration::from_secs(30);
/// How long after the record is gone the statuses may take to show the new
/// leader (they are published once per heartbeat).
const SETTLE: Duration = Duration::from_secs(5);

impl From<Refusal> for HttpError {
    fn from(r: Refusal) -> HttpError {
        HttpError::new(r.status, format!("{}; nothing was changed", r.message))
    }
}

async fn create(state: &AppState, planned: &Switchover) -> Result<i64, HttpError> {
    match state
        .keys
        .switchover()
        .compare_and_set(state.store.as_ref(), Expect::Absent, planned, None)
        .await
    {
        Ok(revision) => Ok(revision),
        Err(StoreError::Conflict { .. }) => {
            let pending = state.keys.switchover().get(state.store.as_ref()).await?;
            Err(HttpError::conflict(
                "a switchover or failover is already pending; wait for it, or cancel it with `pgwarden ctl switchover --cancel`",
            )
            .with("pending", json!(pending.map(|p| p.value))))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn request(State(state): State<AppState>, body: Bytes) -> Result<Response, HttpError> {
    let request: SwitchoverRequest = json_body(&body)?;
    for name in [&request.from, &request.to].into_iter().flatten() {
        store::cluster::check_name("member name", name)
            .map_err(|e| HttpError::bad_request(e.to_string()))?;
    }
    let records = ClusterRecords::read(state.store.as_ref(), &state.keys).await?;
    let planned = admit_switchover(&records, &request, now_ms())?;
    let revision = create(&state, &planned).await?;
    if planned.at_ms.is_some() {
        return Ok((StatusCode::ACCEPTED, Json(json!({ "scheduled": planned }))).into_response());
    }
    wait_done(&state, &planned, revision).await
}

pub async fn failover(State(state): State<AppState>, body: Bytes) -> Result<Response, HttpError> {
    let request: FailoverRequest = json_body(&body)?;
    let Some(to) = request.to else {
        return Err(HttpError::bad_request(
            "a failover needs `to`: the member to promote, e.g. {\"to\": \"db2\"}",
        ));
    };
    store::cluster::check_name("member name", &to)
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    let records = ClusterRecords::read(state.store.as_ref(), &state.keys).await?;
    let planned = admit_failover(&records, &to, now_ms())?;
    let revision = create(&state, &planned).await?;
    wait_done(&state, &planned, revision).await
}

/// Waits until [`finished`] says so, watching the cluster prefix.
async fn wait_done(
    state: &AppState,
    asked: &Switchover,
    revision: i64,
) -> Result<Response, HttpError> {
    let started = Instant::now();
    let deadline = started + WAIT;
    let mut watch = state.store.watch_prefix(state.keys.prefix(), revision + 1);
    let mut gone_since: Option<Instant> = None;
    loop {
        let records = ClusterRecords::read(state.store.as_ref(), &state.keys).await?;
        if let Some(leader) = finished(&records, asked) {
            let done = SwitchoverDone {
                from: asked.from.clone(),
                to: leader,
                took_ms: started.elapsed().as_millis() as u64,
            };
            return Ok(Json(done).into_response());
        }
        let now = Instant::now();
        if records.switchover.is_none() {
            gone_since.get_or_insert(now);
        }
        let give_up = gone_since.map_or(deadline, |since| (since + SETTLE).min(deadline));
        if now >= give_up {
            let view = json!(ClusterView::from_records(state.keys.cluster(), &records));
            let message = if records.switchover.is_some() {
                format!(
                    "the switchover did not complete within {} s; it is still pending and the agents may yet carry it out: watch `pgwarden ctl list`, or cancel it with `pgwarden ctl switchover --cancel`",
                    WAIT.as_secs()
                )
            } else {
                "the agents ended the switchover without the change of leader it asked for; see `pgwarden ctl events` for why".to_string()
            };
            return Err(HttpError::unavailable(message).with("cluster", view));
        }
        // Any change under the prefix may be the one; a quiet spell still
        // re-reads once a second in case the watch is reconnecting.
        let _ =
            tokio::time::timeout_at(give_up.min(now + Duration::from_secs(1)), watch.next()).await;
    }
}

pub async fn cancel(State(state): State<AppState>) -> Result<Json<serde_json::Value>, HttpError> {
    let Some(pending) = state.keys.switchover().get(state.store.as_ref()).await? else {
        return Err(HttpError::not_found("no switchover or failover is pending"));
    };
    if let Some(handoff) = &pending.value.handoff {
        return Err(HttpError::conflict(format!(
            "too late to cancel: the old primary has already stopped and handed over to {}; wait for the switchover to finish",
            handoff.to
        )));
    }
    match state
        .keys
        .switchover()
        .compare_and_delete(state.store.as_ref(), pending.mod_revision)
        .await
    {
        Ok(_) => Ok(Json(json!({ "cancelled": pending.value }))),
        Err(StoreError::Conflict { .. }) => Err(HttpError::conflict(
            "the switchover changed while cancelling (it may be under way); look at `pgwarden ctl list` and try again",
        )),
        Err(e) => Err(e.into()),
    }
}
