//! Base backups: what an operator asked for (`backup/request`), who takes
//! one now (`backup/assignment`, written by the leader), and the last one
//! (`backup/last`, written by the member that took it), and the logical
//! dumps taken after backups (`backup/dumps`, likewise).

use std::collections::BTreeMap;

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
pub struct LastBackup {
    /// The repository's name of the backup.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub member: Option<String>,
    /// Full, or incremental on an earlier one.
    #[serde(default)]
    pub kind: Option<BackupKind>,
    /// When it started (unix ms).
    #[serde(default)]
    pub started_ms: u64,
    pub done_ms: u64,
    pub full_done_ms: u64,
    /// The primary's WAL position once it ended (past the segment switch
    /// that ends a backup, once an idle primary stopped writing): the
    /// schedule skips the next one while the primary is still there.
    pub stop_lsn: u64,
    /// The bytes of the data directory it covers, and the bytes it wrote
    /// to the repository (compressed; unchanged chunks not again).
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub stored_bytes: u64,
    /// When the schedule last looked without a backup completing: skipped
    /// because nothing changed, or failed. The next scheduled one is due an
    /// interval later, so a failing backup is not retried in a loop.
    #[serde(default)]
    pub checked_ms: u64,
    /// The last backup that failed, if any (it may be older than the last
    /// one that completed).
    #[serde(default)]
    pub failure: Option<BackupFailure>,
    /// Backups that failed, ever (a counter for the metrics).
    #[serde(default)]
    pub failures: u64,
}

/// A backup that ended without completing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFailure {
    pub member: String,
    pub kind: BackupKind,
    /// When it ended (unix ms).
    pub at_ms: u64,
    /// What went wrong and what to do.
    pub reason: String,
}

impl Record for LastBackup {
    const KIND: &'static str = "last backup";
}

/// The logical dumps (`dump_databases`) the members that took base backups
/// took after them: how each database's last run went, for the metrics.
/// Only the databases the configuration names when it is written are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastDumps {
    #[serde(default)]
    pub databases: BTreeMap<String, LastDump>,
}

/// One database's dumps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastDump {
    /// The newest dump taken (its id in the repository), once one was.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub member: Option<String>,
    /// When it completed (unix ms).
    #[serde(default)]
    pub done_ms: u64,
    /// When a run last found nothing changed since it (unix ms).
    #[serde(default)]
    pub checked_ms: u64,
    /// Why the last run failed, until one succeeds.
    #[serde(default)]
    pub failure: Option<String>,
    /// Dumps of it that failed, ever (a counter for the metrics).
    #[serde(default)]
    pub failures: u64,
}

impl Record for LastDumps {
    const KIND: &'static str = "last dumps";
}
