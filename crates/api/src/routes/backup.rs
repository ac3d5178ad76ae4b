//! Base backups: `GET /backup` shows the pending request, the running
//! backup and the last one; `POST /backup` asks for one. The leader decides
//! who takes it and whether it is needed (`ha::backups`); this only writes
//! the request.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use store::cluster::{BackupKind, BackupRequest};
use store::{ClusterRecords, StoreError};

use super::{json_body, AppState};
use crate::error::HttpError;
use crate::model::{BackupRunRequest, BackupView, RunningBackup};

fn view(records: &ClusterRecords) -> BackupView {
    BackupView {
        request: records.backup_request.as_ref().map(|r| r.value.clone()),
        running: records.backup_assignment.as_ref().map(|a| RunningBackup {
            assignment: a.value.clone(),
            api_url: records
                .members
                .get(&a.value.member)
                .map(|m| m.value.api_url.clone()),
        }),
        last: records.last_backup.as_ref().map(|l| l.value.clone()),
    }
}

pub async fn show(State(state): State<AppState>) -> Result<Json<BackupView>, HttpError> {
    let records = ClusterRecords::read(state.store.as_ref(), &state.keys).await?;
    Ok(Json(view(&records)))
}

pub async fn run(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<BackupView>), HttpError> {
    let asked: BackupRunRequest = json_body(&body)?;
    let records = ClusterRecords::read(state.store.as_ref(), &state.keys).await?;
    if !records.members.values().any(|m| m.value.can_backup) {
        return Err(HttpError::conflict(
            "no member can take a backup: none has a [backup] table in its pgwarden.toml (or its \
             repository could not be opened: see the agents' logs); nothing was asked",
        ));
    }
    let request = BackupRequest {
        kind: asked.full.then_some(BackupKind::Full),
        force: asked.force,
        requested_ms: crate::time::now_ms(),
    };
    match state
        .keys
        .backup_request()
        .create(state.store.as_ref(), &request, None)
        .await
    {
        Ok(_) => {}
        Err(StoreError::Conflict { .. }) => return Err(HttpError::conflict(
            "a backup request is pending already (the leader takes it within a heartbeat, once \
                 no backup runs); `pgwarden ctl backup status` shows it",
        )),
        Err(e) => return Err(e.into()),
    }
    let records = ClusterRecords::read(state.store.as_ref(), &state.keys).await?;
    Ok((StatusCode::ACCEPTED, Json(view(&records))))
}
