//! Retiring a member (`POST /remove`) and re-admitting one
//! (`POST /readmit`): checked with the core's rules (`ha::retire`) against
//! one snapshot, then written in one store transaction guarded by what was
//! read. A member whose agent runs is asked (`--force`) to retire itself:
//! it stops PostgreSQL first, then records the same thing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use store::cluster::{RemovedMember, Retirement};
use store::{ClusterRecords, HaView, StoreError};

use super::agent::{ask_agent, forward_hops, forward_with};
use super::{json_body, AppState};
use crate::admission::Refusal;
use crate::error::HttpError;
use crate::local::Request;
use crate::model::{ReadmitRequest, RemoveRequest};
use crate::time::now_ms;

/// Whether the leader's primary keeps a slot for `member` (a member whose
/// agent is down is known by it).
fn has_slot(records: &ClusterRecords, member: &str) -> bool {
    let Some(leader) = records.leader_name().and_then(|l| records.member(l)) else {
        return false;
    };
    leader.slots.iter().any(|s| s.member == member)
}

pub async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let asked: RemoveRequest = json_body(&body)?;
    let member = asked.member;
    store::cluster::check_name("member name", &member)
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    for attempt in 1..=5 {
        let records = ClusterRecords::read(state.store.as_ref(), &state.keys).await?;
        let ask = ha::retire::Ask {
            member: member.clone(),
            force: asked.force,
            has_slot: has_slot(&records, &member),
            by_itself: false,
        };
        let cluster = records.to_ha();
        let removal = ha::retire::admit_removal(&cluster, &ask, now_ms())
            .map_err(|r| HttpError::from(Refusal::from(r)))?;
        let clear_switchover = match removal {
            ha::retire::Removal::AskAgent => {
                return ask_to_retire(&state, &headers, &records, &member).await
            }
            ha::retire::Removal::Record { clear_switchover } => clear_switchover,
        };
        // Recorded here only for a member without a status (its agent is
        // gone): nothing is known of its data directory.
        let record = RemovedMember {
            name: member.clone(),
            system_identifier: None,
            timeline: None,
            removed_ms: now_ms(),
            by: state.member.clone(),
        };
        let retirement = Retirement::against(&records, record.clone(), clear_switchover);
        match state.keys.retire(state.store.as_ref(), &retirement).await {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) if attempt < 5 => continue,
            Err(err) => return Err(err.into()),
        }
        let store = state.store.as_ref();
        let lsn = cluster.last_primary_lsn.unwrap_or(0);
        // The removal stands: a history entry that could not be written is
        // no reason to report it failed (a retry would say "already removed").
        if let Err(err) = state
            .keys
            .record_retirement(store, &record, cluster.latest_timeline, lsn)
            .await
        {
            tracing::warn!("{member} removed, but the history entry could not be written: {err}");
        }
        let details = format!(
            "{member} removed from the cluster (`pgwarden ctl remove`){}: the primary drops its slot; \
             its agent, if started again, refuses to rejoin until its data directory is re-cloned",
            if clear_switchover {
                ", and the switchover to it cancelled"
            } else {
                ""
            }
        );
        state
            .keys
            .append_event(
                store,
                record.removed_ms,
                &state.member,
                "member_removed",
                &details,
                store::cluster::EVENTS_KEPT,
            )
            .await?;
        return Ok(Json(json!({
            "member": member,
            "result": format!("removed {member} from the cluster; the primary drops its slot within a heartbeat"),
        }))
        .into_response());
    }
    unreachable!("the last attempt returns")
}

/// `--force` on a member whose agent runs: that agent stops PostgreSQL
/// and records its own removal. Asked here if it is this member, else
/// forwarded to its API once.
async fn ask_to_retire(
    state: &AppState,
    headers: &HeaderMap,
    records: &ClusterRecords,
    member: &str,
) -> Result<Response, HttpError> {
    if member == state.member {
        return ask_agent(state, Request::Retire).await;
    }
    let hops = forward_hops(headers, state, member)?;
    let status = records.member(member).ok_or_else(|| {
        HttpError::not_found(format!("{member} has no status any more; try again"))
    })?;
    let body = json!({ "member": member, "force": true });
    forward_with(
        state,
        headers,
        &status.api_url,
        member,
        Request::Retire,
        &body,
        hops + 1,
    )
    .await
}

pub async fn readmit(State(state): State<AppState>, body: Bytes) -> Result<Response, HttpError> {
    let asked: ReadmitRequest = json_body(&body)?;
    let member = asked.member;
    let key = state
        .keys
        .removed(&member)
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    let store = state.store.as_ref();
    let Some(removed) = key.get(store).await? else {
        return Err(HttpError::not_found(format!(
            "{member} is not a removed member; `pgwarden ctl list` shows the members"
        )));
    };
    match key.compare_and_delete(store, removed.mod_revision).await {
        Ok(_) => {}
        Err(StoreError::Conflict { .. }) => {
            return Err(HttpError::conflict(format!(
                "{member}'s removed record changed meanwhile (it re-admitted itself?); nothing was changed: `pgwarden ctl list` shows whether it is still removed; if so, run readmit again"
            )))
        }
        Err(err) => return Err(err.into()),
    }
    let details = format!(
        "{member} re-admitted (`pgwarden ctl readmit`): it rejoins with its data directory as it is"
    );
    state
        .keys
        .append_event(
            store,
            now_ms(),
            &state.member,
            "member_readmitted",
            &details,
            store::cluster::EVENTS_KEPT,
        )
        .await?;
    Ok(Json(json!({
        "member": member,
        "result": format!("{member} may rejoin: its agent starts it as a standby (rewinding or re-cloning it if it must)"),
    }))
    .into_response())
}
