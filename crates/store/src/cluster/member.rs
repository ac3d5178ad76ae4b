//! What each member publishes about itself every heartbeat.

use serde::{Deserialize, Serialize};

use super::{parse_pg_url, PgAddress};
use crate::typed::Record;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Replica,
    Witness,
    Unknown,
}

/// What the member's PostgreSQL is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PgState {
    Bootstrapping,
    Cloning,
    Starting,
    Running,
    Stopping,
    Stopped,
    Crashed,
    Promoting,
    Demoting,
    Rewinding,
    Unknown,
}

/// Operator tags of a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tags {
    /// Never promote this member.
    pub nofailover: bool,
    /// Never make this member a synchronous standby.
    pub nosync: bool,
    /// Keep this member out of the proxy's read-only balancing.
    pub noloadbalance: bool,
    /// Among equally good candidates, the higher is promoted.
    pub priority: u32,
}

impl Default for Tags {
    fn default() -> Self {
        Tags {
            nofailover: false,
            nosync: false,
            noloadbalance: false,
            priority: 100,
        }
    }
}

/// What a member publishes about itself every heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub name: String,
    pub role: Role,
    pub state: PgState,
    pub timeline: Option<u32>,
    /// On a primary: WAL flushed locally (`pg_current_wal_flush_lsn()`).
    pub flush_lsn: Option<u64>,
    /// On a standby: WAL received (`pg_last_wal_receive_lsn()`).
    pub receive_lsn: Option<u64>,
    /// On a standby: WAL replayed (`pg_last_wal_replay_lsn()`).
    pub replay_lsn: Option<u64>,
    /// Bytes behind the primary's last published position.
    pub lag_bytes: Option<u64>,
    /// On a standby: how long ago the last replayed transaction committed
    /// on the primary, 0 when everything received is replayed.
    #[serde(default)]
    pub lag_ms: Option<u64>,
    /// The member's REST API, e.g. `http://10.0.0.2:8008`.
    pub api_url: String,
    /// How to reach its PostgreSQL, e.g. `postgres://10.0.0.2:5432/postgres`.
    pub pg_url: String,
    pub tags: Tags,
    pub updated_ms: u64,
    /// The member a standby streams from (as configured).
    #[serde(default)]
    pub upstream: Option<String>,
    /// Whether a standby's WAL receiver is streaming.
    #[serde(default)]
    pub streaming: bool,
    /// On the leader's primary: the term it leads in (the proxy routes
    /// writes only to the member whose key and status agree on it).
    #[serde(default)]
    pub term: Option<u64>,
    /// What its agent last decided, in words.
    #[serde(default)]
    pub note: String,
    /// It has a backup repository configured (`[backup]`), so the leader
    /// may ask it to take base backups.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub can_backup: bool,
    /// Parameters changed in its configuration that take effect only when
    /// its PostgreSQL restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_restart: Vec<String>,
    /// Settings its PostgreSQL could not apply: a bad value it ignores now
    /// and would refuse to start with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_errors: Vec<String>,
    /// On a primary that archives WAL: how that goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveHealth>,
    /// On a primary: the replication slots pgwarden keeps for the other
    /// members, with the WAL each holds back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<SlotStatus>,
    /// Its reachability check (`[member] reachability`); absent when it
    /// has no targets (or its agent predates the check): it counts as
    /// passing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachability: Option<Reachability>,
}

/// A replication slot on the primary, kept for a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStatus {
    /// The member it is kept for.
    pub member: String,
    /// A standby streams through it now.
    pub active: bool,
    /// The WAL the primary keeps for it: its current WAL position minus
    /// the slot's `restart_lsn` (`None`: the slot reserves none yet).
    pub retained_bytes: Option<u64>,
}

/// How a member's reachability check stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReachState {
    /// No check has finished yet.
    #[default]
    Pending,
    Passes,
    Fails,
}

/// A member's reachability check as it publishes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reachability {
    pub state: ReachState,
    /// How many targets answered of how many, and why the others did not.
    pub detail: String,
    /// When the state last changed (unix ms).
    pub since_ms: u64,
}

impl Reachability {
    /// What the decision core sees of it.
    pub fn to_ha(&self) -> ha::Reach {
        match self.state {
            ReachState::Pending => ha::Reach::Pending,
            ReachState::Passes => ha::Reach::Passes,
            ReachState::Fails => ha::Reach::Fails {
                detail: self.detail.clone(),
            },
        }
    }

    /// The record for what the core sees; `None` for no check.
    pub fn from_ha(reach: &ha::Reach, since_ms: u64) -> Option<Reachability> {
        let (state, detail) = match reach {
            ha::Reach::Unchecked => return None,
            ha::Reach::Pending => (ReachState::Pending, String::new()),
            ha::Reach::Passes => (ReachState::Passes, String::new()),
            ha::Reach::Fails { detail } => (ReachState::Fails, detail.clone()),
        };
        Some(Reachability {
            state,
            detail,
            since_ms,
        })
    }
}

/// A primary's WAL archiving, from `pg_stat_archiver` and the segments
/// waiting in pg_wal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ArchiveHealth {
    /// The last attempt failed.
    pub failing: bool,
    /// Segments and history files waiting to be archived.
    pub waiting: u64,
    pub waiting_bytes: u64,
    pub last_archived_wal: Option<String>,
    pub last_archived_ms: Option<u64>,
    /// Failed attempts since the statistics were reset.
    pub failed_count: u64,
    pub last_failed_wal: Option<String>,
    pub last_failed_ms: Option<u64>,
}

impl Record for MemberStatus {
    const KIND: &'static str = "member status";
}

impl MemberStatus {
    /// PostgreSQL runs read-write here, by its own account.
    pub fn is_running_primary(&self) -> bool {
        self.role == Role::Primary && self.state == PgState::Running
    }

    /// A standby whose WAL receiver streams, by its own account.
    pub fn is_streaming_standby(&self) -> bool {
        self.role == Role::Replica && self.state == PgState::Running && self.streaming
    }

    /// Where its PostgreSQL listens, from `pg_url`.
    pub fn pg_address(&self) -> Result<PgAddress, String> {
        parse_pg_url(&self.pg_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::{keys, member, store};
    use crate::typed::{decode, encode};
    use crate::Store;

    #[test]
    fn a_status_round_trips() {
        let status = member();
        assert_eq!(
            decode::<MemberStatus>("k", &encode("k", &status).unwrap()).unwrap(),
            status
        );
    }

    #[tokio::test]
    async fn a_bad_member_does_not_hide_the_others() {
        let store = store();
        let keys = keys();
        keys.member("db1")
            .unwrap()
            .put(&store, &member(), None)
            .await
            .unwrap();
        store
            .put("/pgwarden/main/members/db2", b"garbage".to_vec(), None)
            .await
            .unwrap();
        let members = keys.members().list(&store).await.unwrap();
        assert_eq!(members.entries.keys().collect::<Vec<_>>(), ["db1"]);
        assert_eq!(members.bad.len(), 1);
        assert!(members.bad[0]
            .to_string()
            .contains("/pgwarden/main/members/db2"));
    }
}
