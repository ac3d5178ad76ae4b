//! The JSON the API answers with and takes, shared with `pgwarden ctl`.

use serde::{Deserialize, Serialize};
use store::cluster::{
    ArchiveHealth, BackupAssignment, BackupRequest, DynamicConfig, Event, HistoryEntry, LastBackup,
    PgState, Reachability, RemovedMember, Role, SlotStatus, Switchover, Tags,
};

use store::ClusterRecords;

/// `GET /cluster`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub cluster: String,
    /// The store revision the view was read at.
    pub revision: i64,
    pub leader: Option<String>,
    pub term: Option<u64>,
    /// The synchronous standbys the primary has applied.
    pub sync: Vec<String>,
    pub paused: bool,
    pub switchover: Option<Switchover>,
    pub members: Vec<MemberView>,
    /// Keys the store holds that this member cannot read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Members retired with `pgwarden ctl remove` (until re-admitted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<RemovedMember>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub name: String,
    /// `host:port` of its PostgreSQL, from `pg_url`.
    pub host: String,
    pub role: Role,
    pub state: PgState,
    pub leader: bool,
    pub sync: bool,
    pub streaming: bool,
    pub timeline: Option<u32>,
    pub lsn: Option<u64>,
    pub lag_bytes: Option<u64>,
    pub lag_ms: Option<u64>,
    pub tags: Tags,
    pub api_url: String,
    pub pg_url: String,
    pub upstream: Option<String>,
    pub note: String,
    pub updated_ms: u64,
    /// Parameters that wait for a restart of its PostgreSQL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_restart: Vec<String>,
    /// Settings its PostgreSQL could not apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_errors: Vec<String>,
    /// On a primary that archives WAL: how that goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveHealth>,
    /// On the primary: the replication slots it keeps for the members,
    /// with the WAL each holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<SlotStatus>,
    /// Its reachability check; absent: it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachability: Option<Reachability>,
}

impl ClusterView {
    pub fn from_records(cluster: &str, records: &ClusterRecords) -> ClusterView {
        let leader = records.leader_name().map(str::to_string);
        let sync = records.sync_members();
        let members = records
            .members
            .values()
            .map(|m| {
                let m = &m.value;
                MemberView {
                    name: m.name.clone(),
                    host: host_of(&m.pg_url),
                    role: m.role,
                    state: m.state,
                    leader: leader.as_deref() == Some(m.name.as_str()),
                    sync: sync.contains(&m.name),
                    streaming: m.streaming,
                    timeline: m.timeline,
                    lsn: [m.flush_lsn, m.receive_lsn, m.replay_lsn]
                        .into_iter()
                        .flatten()
                        .max(),
                    lag_bytes: m.lag_bytes,
                    lag_ms: m.lag_ms,
                    tags: m.tags.clone(),
                    api_url: m.api_url.clone(),
                    pg_url: m.pg_url.clone(),
                    upstream: m.upstream.clone(),
                    note: m.note.clone(),
                    updated_ms: m.updated_ms,
                    pending_restart: m.pending_restart.clone(),
                    config_errors: m.config_errors.clone(),
                    archive: m.archive.clone(),
                    slots: m.slots.clone(),
                    reachability: m.reachability.clone(),
                }
            })
            .collect();
        ClusterView {
            cluster: cluster.to_string(),
            revision: records.revision,
            leader,
            term: records.term(),
            sync,
            paused: records.config().paused,
            switchover: records.switchover.as_ref().map(|s| s.value.clone()),
            members,
            problems: records.problems.iter().map(|p| p.to_string()).collect(),
            removed: records.removed.values().map(|r| r.value.clone()).collect(),
        }
    }
}

/// `postgres://user@10.0.0.2:5432/postgres` → `10.0.0.2:5432`; an
/// unusable URL is shown as it is.
pub fn host_of(pg_url: &str) -> String {
    store::cluster::parse_pg_url(pg_url).map_or_else(|_| pg_url.to_string(), |a| a.to_string())
}

/// `GET /history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryView {
    pub entries: Vec<HistoryEntry>,
}

/// `GET /events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventsView {
    pub events: Vec<Event>,
    /// The highest sequence number seen: pass it as `after` next time.
    pub last_seq: u64,
}

/// `GET /config`, and the answer of `PATCH /config`, `/pause`, `/resume`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigView {
    /// The config key's store revision (0: never written); `If-Match`
    /// takes it.
    pub revision: i64,
    pub config: DynamicConfig,
}

/// `POST /switchover` (and the target of `POST /failover`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    pub from: Option<String>,
    pub to: Option<String>,
    pub at: Option<At>,
}

/// `at`: an RFC 3339 time or unix seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum At {
    UnixSeconds(u64),
    Rfc3339(String),
}

impl At {
    pub fn unix_ms(&self) -> Result<u64, String> {
        match self {
            At::UnixSeconds(s) => s
                .checked_mul(1000)
                .ok_or_else(|| format!("`at` = {s} is too large for unix seconds")),
            At::Rfc3339(text) => crate::time::parse_rfc3339(text).map_err(|e| e.to_string()),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    pub to: Option<String>,
}

/// `POST /restart`, `POST /reinit`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    pub member: Option<String>,
}

/// `POST /remove`: retire a member (`pgwarden ctl remove`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    pub member: String,
    /// Also when its agent runs: that agent stops PostgreSQL first.
    #[serde(default)]
    pub force: bool,
}

/// `POST /readmit`: let a removed member rejoin with its data directory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadmitRequest {
    pub member: String,
}

/// `POST /backup`: ask for a base backup now.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRunRequest {
    /// A full backup; else the schedule's choice (incremental unless a
    /// full one is due).
    #[serde(default)]
    pub full: bool,
    /// Take it even if the WAL has not moved since the last one.
    #[serde(default)]
    pub force: bool,
}

/// `GET /backup` (and the answer of `POST /backup`): the pending request,
/// the running backup, the last one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupView {
    pub request: Option<BackupRequest>,
    pub running: Option<RunningBackup>,
    pub last: Option<LastBackup>,
}

/// The backup a member is taking now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunningBackup {
    #[serde(flatten)]
    pub assignment: BackupAssignment,
    /// The member's REST API, whose `/health` shows the progress
    /// (`activity`).
    pub api_url: Option<String>,
}

/// `POST /failsafe`: a primary that cannot reach the store asks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailsafeRequest {
    /// The member asking, which runs as the primary.
    pub leader: String,
    /// Its leader key's term, as it last read it.
    pub term: u64,
    /// Its cluster's lease TTL: the promise lasts two.
    pub ttl_ms: u64,
}

/// The answer of a completed switchover or failover.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwitchoverDone {
    pub from: Option<String>,
    pub to: String,
    pub took_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_from_pg_url() {
        assert_eq!(
            host_of("postgres://10.0.0.2:5432/postgres"),
            "10.0.0.2:5432"
        );
        assert_eq!(
            host_of("postgresql://u@[::1]:5433?sslmode=off"),
            "[::1]:5433"
        );
        assert_eq!(host_of("db1:5432"), "db1:5432");
    }
}
