//! Reads of the store: the cluster, the timeline history, the event log,
//! metrics.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use futures::StreamExt;
use store::cluster::{ClusterKey, Event};
use store::typed::decode_kv;
use store::EventKind;
use tokio::time::Instant;

use super::AppState;
use crate::error::HttpError;
use crate::model::{ClusterView, EventsView, HistoryView};
use store::ClusterRecords;

/// The longest a `/events?wait=` long poll holds.
const MAX_WAIT: Duration = Duration::from_secs(60);

pub async fn cluster(State(state): State<AppState>) -> Result<Json<ClusterView>, HttpError> {
    let records = ClusterRecords::read(state.store.as_ref(), &state.keys).await?;
    Ok(Json(ClusterView::from_records(
        state.keys.cluster(),
        &records,
    )))
}

pub async fn history(State(state): State<AppState>) -> Result<Json<HistoryView>, HttpError> {
    let history = state.keys.history().get(state.store.as_ref()).await?;
    Ok(Json(HistoryView {
        entries: history.map(|h| h.value.entries).unwrap_or_default(),
    }))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let local = state.link.state.borrow().clone();
    // Metrics of this member are worth serving while the store is down.
    let store = state.store.as_ref();
    let cluster = match (
        state.keys.history().get(store).await,
        state.keys.last_backup().get(store).await,
        state.keys.last_dumps().get(store).await,
    ) {
        (Ok(history), Ok(last_backup), Ok(last_dumps)) => Some(crate::metrics::ClusterFacts {
            history: history.map(|h| h.value).unwrap_or_default(),
            last_backup: last_backup.map(|l| l.value),
            last_dumps: last_dumps.map(|d| d.value),
            now_ms: crate::time::now_ms(),
        }),
        _ => None,
    };
    let text = crate::metrics::render(
        &local,
        cluster.as_ref(),
        &state.counters.snapshot(),
        &state.counters.refused(),
    );
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        text,
    )
}

async fn events_after(state: &AppState, after: u64) -> Result<(Vec<Event>, i64), HttpError> {
    let snapshot = state.store.get_prefix(state.keys.events().prefix()).await?;
    let mut events = Vec::new();
    for kv in &snapshot.kvs {
        if let Some(ClusterKey::Event(seq)) = state.keys.classify(&kv.key) {
            if seq > after {
                events.push(decode_kv::<Event>(kv)?.value);
            }
        }
    }
    events.sort_by_key(|e| e.seq);
    Ok((events, snapshot.revision))
}

/// `?after=SEQ&wait=30s`: the events after SEQ; with `wait`, when there are
/// none yet, holds the request until one is appended or the wait is over.
pub async fn events(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<EventsView>, HttpError> {
    let after = match query.get("after") {
        None => 0,
        Some(text) => text.parse::<u64>().map_err(|_| {
            HttpError::bad_request(format!(
                "after={text} is not an event sequence number; pass the last_seq of the previous answer"
            ))
        })?,
    };
    let wait = match query.get("wait") {
        None => Duration::ZERO,
        Some(text) => config::parse_duration(text)
            .map_err(|e| HttpError::bad_request(format!("bad wait: {e}; e.g. wait=30s")))?
            .min(MAX_WAIT),
    };
    let deadline = Instant::now() + wait;
    let (mut events, revision) = events_after(&state, after).await?;
    if events.is_empty() && !wait.is_zero() {
        // Held until the answer: each watcher is a store watch.
        let Ok(_watcher) = state.long_polls.clone().try_acquire_owned() else {
            state.counters.refuse_long_poll();
            return Err(HttpError::unavailable(format!(
                "too many long polls are waiting on this member (the limit is {}); retry later, ask without wait=, or ask another member",
                state.limits.long_polls
            )));
        };
        let mut watch = state
            .store
            .watch_prefix(state.keys.events().prefix(), revision + 1);
        loop {
            match tokio::time::timeout_at(deadline, watch.next()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(Ok(change))) if change.kind == EventKind::Put => {
                    events = events_after(&state, after).await?.0;
                    if !events.is_empty() {
                        break;
                    }
                }
                // Deletes are trimming; errors are reconnections the
                // stream handles itself.
                Ok(Some(_)) => {}
            }
        }
    }
    let last_seq = events.last().map_or(after, |e| e.seq);
    Ok(Json(EventsView { events, last_seq }))
}
