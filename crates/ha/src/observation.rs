//! What the agent sees, as plain data.

use std::collections::{BTreeMap, BTreeSet};

use crate::backups::{Backups, Schedule};

/// Milliseconds on the agent's monotonic clock.
pub type Millis = u64;

/// The member this core decides for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Me {
    pub name: String,
    /// Never becomes primary on its own.
    pub nofailover: bool,
    /// Higher wins among equally advanced candidates.
    pub priority: u32,
}

/// One round of observation.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub now: Millis,
    /// The wall clock (unix ms), for what the store records in wall time:
    /// a switchover's scheduled time, when a hand-over began.
    pub wall_ms: u64,
    pub local: Local,
    pub store: StoreView,
    /// Until when this member's leader lease surely holds in the store:
    /// when its last successful renewal was *sent*, plus the TTL. `None`
    /// when it holds no lease.
    pub lease_valid_until: Option<Millis>,
    /// The TTL of the lease it holds (it may differ from the configured one
    /// after a configuration change).
    pub lease_ttl_ms: Option<Millis>,
    /// Failsafe, on a primary that cannot reach the store: the members
    /// that confirmed, agent to agent, that they still follow it and will
    /// not take over, with when the question was *sent* (the answer holds
    /// for a TTL from then, as a lease renewal does).
    pub failsafe_confirmed: BTreeMap<String, Millis>,
    /// Failsafe, on the other side: this member answered `leader` that it
    /// follows it, and so takes no leadership and deposes nobody before
    /// `until`.
    pub failsafe_promise: Option<FailsafePromise>,
    /// This member's own reachability check, as of this round (fresher
    /// than the status it last published).
    pub reach: Reach,
    /// When this agent's store watch delivered each member's latest status:
    /// its store revision and the time, sooner than a round reads it. A
    /// silent leader counts as silent from there ([`crate::Ha`] falls back
    /// to the round's time for a status the watch has not delivered).
    pub statuses_seen: BTreeMap<String, (u64, Millis)>,
}

/// A member's reachability check (`[member] reachability`): whether the
/// network its clients live on answers it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Reach {
    /// No targets configured, or an agent too old to check: it behaves as
    /// if the check passed (as before the check existed).
    #[default]
    Unchecked,
    /// Targets configured, no check finished yet.
    Pending,
    /// Enough targets answered.
    Passes,
    /// Too few targets answered; `detail` says which did not and why.
    Fails { detail: String },
}

impl Reach {
    /// It may take over: its check passes, or it has none.
    pub fn may_take_over(&self) -> bool {
        matches!(self, Reach::Unchecked | Reach::Passes)
    }

    /// Its check finished and failed (not merely pending).
    pub fn fails(&self) -> Option<&str> {
        match self {
            Reach::Fails { detail } => Some(detail),
            _ => None,
        }
    }
}

/// A member's word to a primary in failsafe mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailsafePromise {
    pub leader: String,
    pub until: Millis,
}

/// The local PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Local {
    /// A witness: no PostgreSQL at all.
    Witness,
    /// No data directory (or an empty one).
    Empty,
    /// A data directory, no server running.
    Stopped(Stopped),
    /// A postmaster that does not accept connections (starting, recovering,
    /// stopping, or hung). `was_primary`: pg_control says it runs, or last
    /// ran, as a primary — one that may still be serving its clients.
    Starting {
        was_primary: bool,
    },
    Running(Running),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    pub system_id: u64,
    pub timeline: u32,
    /// pg_control says it last ran as a primary ("shut down" or "in
    /// production"), so it may hold WAL no standby has.
    pub was_primary: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    pub system_id: u64,
    pub timeline: u32,
    /// Not in recovery: accepts writes.
    pub primary: bool,
    /// The furthest WAL position: written on a primary, received or replayed
    /// on a standby.
    pub lsn: u64,
    /// The member a standby is configured to stream from.
    pub upstream: Option<String>,
    /// Whether a standby's WAL receiver is streaming (and has heard from
    /// its upstream lately).
    pub streaming: bool,
    /// How long a standby's WAL receiver has heard nothing from its
    /// upstream, when it has a receiver that heard something once.
    pub receiver_quiet_ms: Option<Millis>,
    /// synchronous_standby_names as this agent last applied it (primary):
    /// the names, and `Some(k)` for `ANY k (…)` (quorum commit), `None` for
    /// `FIRST n (…)` of exactly those n names.
    pub sync_applied: Vec<String>,
    pub sync_applied_any: Option<u32>,
    /// pg_stat_replication (primary).
    pub replicas: Vec<Replica>,
}

/// A standby as its primary sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    pub name: String,
    pub streaming: bool,
    /// sync_state is `sync` or `quorum`.
    pub synchronous: bool,
    pub flush_lsn: u64,
}

/// The store, if it answers.
#[derive(Clone, Debug, PartialEq)]
// One per round, moved once: boxing the cluster would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum StoreView {
    /// No answer (timeout, no quorum): nothing read is trustworthy.
    Unreachable,
    Reachable(Cluster),
}

/// The cluster as the store shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cluster {
    pub settings: Settings,
    pub initialize: Option<Initialize>,
    pub leader: Option<Leader>,
    /// Every member with a live status key, this one included.
    pub members: BTreeMap<String, MemberView>,
    /// The synchronous set the primary has actually applied.
    pub sync: Option<SyncSet>,
    /// The newest timeline any member or the history reports.
    pub latest_timeline: u32,
    /// The last WAL position the primary published (kept after it dies).
    pub last_primary_lsn: Option<u64>,
    /// A switchover or manual failover asked for.
    pub switchover: Option<SwitchoverRequest>,
    /// Failsafe mode: the members the leader published it would ask.
    pub failsafe_list: Option<FailsafeList>,
    /// Base backups: asked for, under way, the last one.
    pub backups: Backups,
    /// Members retired with `pgwarden ctl remove`: never candidates, never
    /// in a synchronous set or the failsafe list, no slot kept for them;
    /// their own agents refuse to rejoin until re-cloned.
    pub removed: BTreeMap<String, Removed>,
}

/// A member retired from the cluster (`pgwarden ctl remove`), as its
/// record in the store says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// The system identifier and timeline of its data directory when it
    /// was removed, as far as known: what its agent names when it refuses
    /// to rejoin.
    pub system_id: Option<u64>,
    pub timeline: Option<u32>,
    /// When it was removed (unix ms).
    pub removed_ms: u64,
}

impl Cluster {
    /// The cluster without its removed members: what every decision but
    /// a removed member's own is made on. A removed member's status (its
    /// agent may still publish for a moment) and its place on the failsafe
    /// list count for nothing. The published synchronous set is kept as
    /// it is: it says where acknowledged commits may lie, and only the
    /// primary changes it, in its safe order.
    pub fn without_removed(&self) -> Cluster {
        let mut view = self.clone();
        if self.removed.is_empty() {
            return view;
        }
        view.members
            .retain(|name, _| !self.removed.contains_key(name));
        if let Some(list) = &mut view.failsafe_list {
            list.members.retain(|name| !self.removed.contains_key(name));
        }
        view
    }
}

/// The `failsafe` key: whom `leader` would ask if it lost the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailsafeList {
    pub leader: String,
    pub members: BTreeSet<String>,
}

/// The `switchover` key: a planned switchover (`from` set) or a manual
/// failover (`from` unset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchoverRequest {
    /// The leader it was asked of; `None`: a manual failover.
    pub from: Option<String>,
    /// Who is to take over; `None`: the best candidate.
    pub to: Option<String>,
    /// When it was asked for (unix ms).
    pub requested_ms: u64,
    /// When it is scheduled (unix ms); `None`: at once.
    pub at_ms: Option<u64>,
    /// The old primary has stopped and handed over.
    pub handoff: Option<Handoff>,
}

impl SwitchoverRequest {
    /// Since when (unix ms) it is to be carried out.
    pub fn due_since(&self) -> u64 {
        self.at_ms.unwrap_or(0).max(self.requested_ms)
    }

    /// Its scheduled time has come.
    pub fn is_due(&self, wall_ms: u64) -> bool {
        self.at_ms.is_none_or(|at| at <= wall_ms)
    }

    /// The hand-over, unless it began more than two TTLs ago: then it is
    /// over, even for an agent that has just started and never saw it begin.
    pub fn live_handoff(&self, wall_ms: u64, ttl_ms: Millis) -> Option<&Handoff> {
        self.handoff
            .as_ref()
            .filter(|h| wall_ms <= h.released_ms + 2 * ttl_ms)
    }
}

/// The old primary stopped cleanly at `final_lsn` and released the key;
/// `to` takes it once it has received that far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handoff {
    pub from: String,
    pub to: String,
    pub final_lsn: u64,
    /// The old primary's timeline: a later one in the cluster means the
    /// hand-over is history, whatever the key still says.
    pub timeline: u32,
    /// When the old primary released the key (unix ms).
    pub released_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Initialize {
    /// A member won the right to run initdb and has not finished.
    Claimed {
        by: String,
    },
    Done {
        system_id: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    pub member: String,
    pub term: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSet {
    /// The primary that applied it.
    pub leader: String,
    pub members: BTreeSet<String>,
    /// Every commit the leader acknowledged is on at least this many of
    /// `members`: all of them with `FIRST n`, `k` with `ANY k`, fewer while
    /// the set changes; 0: on none of them necessarily.
    pub quorum: u32,
}

impl SyncSet {
    /// How many members of the set a candidate must hear from — itself
    /// included, none ahead of it — to be sure it holds every acknowledged
    /// commit: any `n - quorum + 1` of `n` include one that holds each.
    /// More than `n` when nobody but the leader may take over.
    pub fn must_hear(&self) -> usize {
        let n = self.members.len();
        if self.quorum == 0 {
            return n + 1;
        }
        n + 1 - (self.quorum as usize).min(n)
    }
}

/// How commits wait for standbys (`synchronous_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// Asynchronous: a commit waits for no standby, so a failover loses
    /// what the new primary had not received.
    #[default]
    Off,
    /// `FIRST n (…)` over exactly n standbys: each of them holds every
    /// acknowledged commit, so any of them may take over alone.
    First,
    /// `ANY k (…)` over every healthy standby: k of them hold each
    /// acknowledged commit, so a candidate takes over only once it has
    /// heard from enough of them to know none is ahead of it.
    Quorum,
}

impl SyncMode {
    /// Commits wait for standbys.
    pub fn on(self) -> bool {
        self != SyncMode::Off
    }
}

/// Another member as its own agent last published it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberView {
    pub witness: bool,
    pub nofailover: bool,
    /// Never made a synchronous standby.
    pub nosync: bool,
    pub priority: u32,
    /// PostgreSQL accepts connections.
    pub running: bool,
    pub primary: bool,
    pub timeline: Option<u32>,
    pub lsn: Option<u64>,
    pub upstream: Option<String>,
    pub streaming: bool,
    /// It has a backup repository configured, so it can take backups.
    pub can_backup: bool,
    /// Its reachability check, as it last published it.
    pub reach: Reach,
    /// The store revision of its status: it changes every time the member's
    /// agent publishes, so an unchanged one means a silent agent.
    pub revision: u64,
}

/// Dynamic, cluster-wide settings (from the store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub ttl_ms: Millis,
    pub heartbeat_ms: Millis,
    /// Bytes a standby may be behind the last published primary position
    /// and still be promoted.
    pub maximum_lag_on_failover: u64,
    pub synchronous_mode: SyncMode,
    pub synchronous_count: u32,
    /// With no synchronous standby left: block writes (true) or keep
    /// accepting them unprotected (false).
    pub synchronous_strict: bool,
    pub failsafe: bool,
    pub paused: bool,
    /// How long a crashed primary may take to come back in place before it
    /// gives up the leader key.
    pub restart_grace_ms: Millis,
    /// When base backups are taken.
    pub backup: Schedule,
    /// How long the primary keeps a replication slot for a member whose
    /// status has disappeared (its agent stopped, for maintenance say):
    /// back within it, the member finds its WAL; the slot holds that WAL on
    /// the primary meanwhile.
    pub slot_retention_ms: Millis,
    /// How long a primary's reachability check must have failed, without
    /// a pause, before it hands over to a standby whose check passes.
    pub reachability_grace_ms: Millis,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ttl_ms: 3_000,
            heartbeat_ms: 500,
            maximum_lag_on_failover: 16 * 1024 * 1024,
            synchronous_mode: SyncMode::Off,
            synchronous_count: 1,
            synchronous_strict: false,
            failsafe: false,
            paused: false,
            restart_grace_ms: 2_000,
            backup: Schedule::default(),
            slot_retention_ms: 10 * 60 * 1000,
            reachability_grace_ms: 10_000,
        }
    }
}
