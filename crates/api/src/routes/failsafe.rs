//! `POST /failsafe`: a primary that cannot reach the store asks whether
//! this member still follows it. Yes is a promise, kept by this member's
//! agent: no leadership taken and nobody deposed for two TTLs.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{json_body, AppState};
use crate::error::HttpError;
use crate::local::{LocalState, Promise};
use crate::model::FailsafeRequest;

/// TTLs outside this range are not a real cluster's.
const TTL_RANGE_MS: std::ops::RangeInclusive<u64> = 1_000..=600_000;

/// How long to try the store before taking it for out of reach.
const STORE_CHECK: Duration = Duration::from_millis(300);

/// How long this member, as the agent last saw it, may promise `leader`
/// to follow it, or why it cannot. Only when the store is out of reach
/// here too: a member that reaches it sees the leader key expire and takes
/// part in the election instead, so the primary must step down.
pub fn answer(
    local: &LocalState,
    store_reachable: bool,
    request: &FailsafeRequest,
) -> Result<Duration, String> {
    if local.updated_ms == 0 {
        // Its agent has not looked at PostgreSQL yet: it might be a primary.
        return Err(format!("{} has not finished its first round", local.member));
    }
    if local.member == request.leader {
        return Err(format!("{} is this member", request.leader));
    }
    if local.primary {
        return Err(format!(
            "{} runs as a primary itself; it follows nobody",
            local.member
        ));
    }
    if (local.leader_name.as_deref(), local.leader_term)
        != (Some(request.leader.as_str()), Some(request.term))
    {
        return Err(format!(
            "{} last saw {} lead, not {} in term {}: {} is not the leader any more",
            local.member,
            match (&local.leader_name, local.leader_term) {
                (Some(name), Some(term)) => format!("{name} in term {term}"),
                _ => "nobody".to_string(),
            },
            request.leader,
            request.term,
            request.leader
        ));
    }
    if store_reachable {
        return Err(format!(
            "{} reaches the store: {} must step down, and an election follows in the store",
            local.member, request.leader
        ));
    }
    if let Some(problem) = ttl_problem(request.ttl_ms) {
        return Err(problem);
    }
    // Longer than the primary relies on the answer (one TTL from when it
    // asked), so it stops before this member could take over.
    Ok(Duration::from_millis(2 * request.ttl_ms))
}

fn ttl_problem(ttl_ms: u64) -> Option<String> {
    (!TTL_RANGE_MS.contains(&ttl_ms)).then(|| {
        format!(
            "ttl_ms = {ttl_ms} is outside {}..={}",
            TTL_RANGE_MS.start(),
            TTL_RANGE_MS.end()
        )
    })
}

pub async fn confirm(State(state): State<AppState>, body: Bytes) -> Result<Response, HttpError> {
    let request: FailsafeRequest = json_body(&body)?;
    store::cluster::check_name("member name", &request.leader)
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    // A malformed question is a 400, before anything is looked at.
    if let Some(problem) = ttl_problem(request.ttl_ms) {
        return Err(HttpError::bad_request(problem));
    }
    let local = state.link.state.borrow().clone();
    // Now, not as of the agent's last round: the primary asks just when
    // the store went away, before the agent may have noticed.
    let store_reachable = matches!(
        tokio::time::timeout(STORE_CHECK, state.keys.leader().get(state.store.as_ref())).await,
        Ok(Ok(_))
    );
    let hold = answer(&local, store_reachable, &request).map_err(HttpError::conflict)?;
    let promise = Promise {
        leader: request.leader.clone(),
        until: Instant::now() + hold,
    };
    *state.link.promise.lock().unwrap_or_else(|e| e.into_inner()) = Some(promise);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(leader: &str) -> FailsafeRequest {
        FailsafeRequest {
            leader: leader.to_string(),
            term: 7,
            ttl_ms: 3_000,
        }
    }

    fn standby() -> LocalState {
        LocalState {
            member: "db2".into(),
            pg_running: true,
            updated_ms: 1,
            leader_name: Some("db1".into()),
            leader_term: Some(7),
            ..LocalState::default()
        }
    }

    #[test]
    fn a_standby_cut_off_from_the_store_too_promises_two_ttls() {
        assert_eq!(
            answer(&standby(), false, &ask("db1")),
            Ok(Duration::from_secs(6))
        );
    }

    #[test]
    fn refusals_say_why() {
        let reaches = answer(&standby(), true, &ask("db1")).unwrap_err();
        assert!(reaches.contains("db1 must step down"), "{reaches}");
        let primary = LocalState {
            primary: true,
            ..standby()
        };
        assert!(answer(&primary, false, &ask("db1"))
            .unwrap_err()
            .contains("primary itself"));
        assert!(answer(&standby(), false, &ask("db2"))
            .unwrap_err()
            .contains("this member"));
        let mut stale = ask("db1");
        stale.term = 6;
        assert!(answer(&standby(), false, &stale)
            .unwrap_err()
            .contains("not the leader any more"));
        let starting = LocalState {
            updated_ms: 0,
            ..standby()
        };
        assert!(answer(&starting, false, &ask("db1"))
            .unwrap_err()
            .contains("first round"));
        let mut odd = ask("db1");
        odd.ttl_ms = 10;
        assert!(answer(&standby(), false, &odd)
            .unwrap_err()
            .contains("outside"));
    }
}
