//! Base backups: what an operator asked for (`backup/request`), who takes
//! one now (`backup/assignment`, written by the leader), and the last one
//! (`backup/last`, written by the member that took it).

use serde::{Deserialize, Serialize};

use crate::typed::Record;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    Full,
    Incremental,
}

/// `pgwarden ctl backup run`: taken by the leader's next round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// `None`: full when the schedule says one is due, else incremental.
    #[serde(default)]
    pub kind: Option<BackupKind>,
    /// Take it even if the WAL has not moved since the last one.
    #[serde(default)]
    pub force: bool,
    pub requested_ms: u64,
}

impl Record for BackupRequest {
    const KIND: &'static str = "backup request";
}

/// The member taking a backup now; one at a time in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupAssignment {
    pub member: String,
    pub kind: BackupKind,
    pub assigned_ms: u64,
    /// The term of the leader that assigned it.
    pub term: u64,
}

impl Record for BackupAssignment {
    const KIND: &'static str = "backup assignment";
}

/// The last backup that completed, and when the schedule last looked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastBackup {
    /// The repository's name of the backup.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub member: Option<String>,
    pub done_ms: u64,
    pub full_done_ms: u64,
    /// The WAL position its end covers.
    pub stop_lsn: u64,
    /// When a scheduled backup was last skipped because nothing changed.
    #[serde(default)]
    pub checked_ms: u64,
}

impl Record for LastBackup {
    const KIND: &'static str = "last backup";
}
