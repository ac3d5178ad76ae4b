//! What the agent is to do.

use std::fmt;

/// One step. The agent carries them out in order and stops at the first that
/// fails (a lost leader race fails `AcquireLeader`, so nothing after it runs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the initialize key naming this member (compare-and-set: only
    /// one member wins the right to run initdb).
    ClaimInitialize,
    /// initdb, start as primary, create the replication role.
    InitDb,
    /// Delete this member's removed record: its data directory is empty,
    /// so it rejoins as a new standby (it clones afresh).
    Readmit,
    /// Record the new cluster's system identifier in the initialize key.
    CompleteInitialize {
        system_id: u64,
    },
    /// Create the leader key bound to this member's lease, by
    /// compare-and-set against its absence.
    AcquireLeader,
    /// Delete another member's leader key, only if it and the synchronous
    /// set are still what this round read (one store transaction): the fast
    /// failover path, which does not wait for a dead primary's lease.
    DeposeLeader {
        leader: String,
    },
    /// Refresh the leader lease and publish the primary's WAL position.
    RenewLeader,
    /// Delete the leader key (this member's own, compare-and-set).
    ReleaseLeader,
    /// pg_basebackup from the leader into the empty data directory.
    CloneFrom {
        leader: String,
    },
    /// pg_rewind the stopped data directory onto the leader.
    Rewind {
        leader: String,
    },
    /// Move the data directory aside and clone afresh.
    Reclone {
        leader: String,
        reason: String,
    },
    /// Start without standby.signal (only ever as the leader).
    StartPrimary,
    /// Start with standby.signal, streaming from `upstream` if any.
    StartReplica {
        upstream: Option<String>,
    },
    /// Point a running standby at `upstream` (primary_conninfo and slot) and
    /// reload.
    Follow {
        upstream: Option<String>,
    },
    Promote,
    Stop {
        mode: StopMode,
    },
    /// Write synchronous_standby_names and reload: `ANY count (names)` with
    /// `quorum`, else `FIRST count (names)`; no names: asynchronous.
    ApplySynchronous {
        names: Vec<String>,
        count: u32,
        quorum: bool,
    },
    /// Publish the synchronous set: every commit acknowledged is on at
    /// least `quorum` of `members`.
    PublishSync {
        members: Vec<String>,
        quorum: u32,
    },
    /// Failsafe mode: publish the members this leader would ask if it lost
    /// the store (every member with a status, itself included).
    PublishFailsafe {
        members: Vec<String>,
    },
    /// Make sure these replication slots exist (one per other member), and
    /// drop `drop`: slots of members gone for longer than the retention.
    /// Slots pgwarden did not create (pg_basebackup's, an operator's) are
    /// never touched.
    KeepSlots {
        names: Vec<String>,
        drop: Vec<String>,
    },
    /// Append the timeline switch this promotion made to the history.
    RecordHistory {
        reason: String,
    },
    /// The old primary's half of a switchover, after a clean stop: in one
    /// store transaction guarded by the leader key and the switchover key,
    /// delete the leader key and record where its WAL ends, so that `to`
    /// (and only `to`) takes over once it has received that far.
    HandOff {
        to: String,
    },
    /// Ask for a switchover from this leader to `to` (create the
    /// switchover key, only if there is none), and say `reason` in an
    /// event: the leader's reachability check has failed for the grace and
    /// `to`'s passes. The next rounds carry it out as any switchover.
    AskSwitchover {
        to: String,
        reason: String,
    },
    /// Delete the switchover key and say how it ended (an event).
    ClearSwitchover {
        outcome: String,
    },
    /// Ask `member` to take a base backup (one store write, guarded by the
    /// leader key, against the absence of another assignment). Only members
    /// that publish `can_backup` are asked; none does until the agent's
    /// backup taker lands, so nothing is assigned yet.
    AssignBackup {
        member: String,
        kind: crate::backups::BackupKind,
    },
    /// A backup was due and is not taken (the WAL has not moved): record
    /// when the schedule looked, and drop a pending request.
    SkipBackup {
        reason: String,
    },
    /// End an assignment whose member went away, saying so (an event).
    EndBackup {
        outcome: String,
    },
}

impl Action {
    /// Expected to take longer than a heartbeat (minutes for a clone).
    pub fn is_long(&self) -> bool {
        matches!(
            self,
            Action::InitDb
                | Action::CloneFrom { .. }
                | Action::Rewind { .. }
                | Action::Reclone { .. }
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    Fast,
    /// Fencing: no shutdown checkpoint, no waiting for clients.
    Immediate,
}

/// This member's role, for log lines (`db2:replica …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogRole {
    Primary,
    Replica,
    Witness,
    Uninitialized,
    Stopped,
    /// Retired with `pgwarden ctl remove`: it publishes no status and
    /// keeps its PostgreSQL stopped.
    Removed,
}

impl fmt::Display for LogRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogRole::Primary => "primary",
            LogRole::Replica => "replica",
            LogRole::Witness => "witness",
            LogRole::Uninitialized => "uninitialized",
            LogRole::Stopped => "stopped",
            LogRole::Removed => "removed",
        })
    }
}

/// The decision of one round: what to do, and one line saying why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub role: LogRole,
    pub actions: Vec<Action>,
    pub note: String,
}

impl Plan {
    pub fn new(role: LogRole, note: impl Into<String>) -> Plan {
        Plan {
            role,
            actions: Vec::new(),
            note: note.into(),
        }
    }

    pub fn then(mut self, action: Action) -> Plan {
        self.actions.push(action);
        self
    }

    pub fn is_idle(&self) -> bool {
        self.actions.is_empty()
    }
}
