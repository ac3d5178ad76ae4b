//! `POST /failsafe`: a primary that cannot reach the store asks whether
//! this member still follows it. Yes is a promise, kept by this member's
//! agent: no leadership taken and nobody deposed for two of this member's
//! TTLs (not the caller's), and never shortened by a later call. The rule
//! is the core's (`ha::failsafe`); this route translates.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use ha::failsafe::{self, Answerer, Question};

use super::{json_body, AppState};
use crate::error::HttpError;
use crate::local::{LocalState, Promise};
use crate::model::FailsafeRequest;

/// How long to try the store before taking it for out of reach.
const STORE_CHECK: Duration = Duration::from_millis(300);

/// The question as the core reads it.
fn question(request: &FailsafeRequest) -> Question {
    Question {
        leader: request.leader.clone(),
        term: request.term,
        ttl_ms: request.ttl_ms,
    }
}

/// This member as the core's failsafe rule reads it.
fn answerer(local: &LocalState, store_reachable: bool) -> Answerer {
    Answerer {
        member: local.member.clone(),
        // Without the TTL it read, it cannot say how long it promises.
        observed: local.updated_ms != 0 && local.ttl_ms.is_some(),
        primary: local.primary,
        leader: local.leader_name.clone().zip(local.leader_term),
        store_reachable,
        ttl_ms: local.ttl_ms.unwrap_or(0),
    }
}

pub async fn confirm(State(state): State<AppState>, body: Bytes) -> Result<Response, HttpError> {
    let request: FailsafeRequest = json_body(&body)?;
    store::cluster::check_name("member name", &request.leader)
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    // A malformed question is a 400, before anything is looked at.
    if let Some(problem) = failsafe::question_problem(&question(&request)) {
        return Err(HttpError::bad_request(problem));
    }
    let local = state.link.state.borrow().clone();
    // Now, not as of the agent's last round: the primary asks just when
    // the store went away, before the agent may have noticed.
    let store_reachable = matches!(
        tokio::time::timeout(STORE_CHECK, state.keys.leader().get(state.store.as_ref())).await,
        Ok(Ok(_))
    );
    let hold = failsafe::answer(&answerer(&local, store_reachable), &question(&request))
        .map(Duration::from_millis)
        .map_err(HttpError::conflict)?;
    let mut slot = state.link.promise.lock().unwrap_or_else(|e| e.into_inner());
    // A later answer never shortens the word given: the primary relies on
    // the earlier one until its own end.
    let fresh = Instant::now() + hold;
    let until = slot.as_ref().map_or(fresh, |given| given.until.max(fresh));
    *slot = Some(Promise {
        leader: request.leader.clone(),
        until,
    });
    drop(slot);
    tracing::warn!(
        "failsafe: {} asked, store unreachable here too: following it, taking over from nobody for {} ms",
        request.leader,
        hold.as_millis()
    );
    Ok(Json(json!({
        "member": local.member,
        "follows": request.leader,
        "promised_ms": hold.as_millis() as u64,
    }))
    .into_response())
}
