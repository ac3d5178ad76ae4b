//! The cluster as the store holds it, turned into the decision core's view.

use std::collections::{BTreeMap, BTreeSet};

use store::cluster::{
    ClusterKey, ClusterKeys, DynamicConfig, History, Initialize, Leader, MemberStatus, PgState,
    PrimaryPosition, Role, Switchover, SyncState,
};
use store::typed::decode_kv;
use store::{Snapshot, StoreError, Versioned};

/// Everything under the cluster prefix, decoded.
#[derive(Clone, Debug, Default)]
pub struct ClusterRecords {
    pub revision: i64,
    pub config: Option<Versioned<DynamicConfig>>,
    pub initialize: Option<Versioned<Initialize>>,
    pub leader: Option<Versioned<Leader>>,
    pub members: BTreeMap<String, Versioned<MemberStatus>>,
    pub sync: Option<Versioned<SyncState>>,
    pub history: Option<Versioned<History>>,
    pub primary_position: Option<Versioned<PrimaryPosition>>,
    pub switchover: Option<Versioned<Switchover>>,
}

impl ClusterRecords {
    /// Decodes a snapshot of the cluster prefix. A key holding garbage is an
    /// error naming it: deciding on half a cluster would be worse.
    pub fn decode(keys: &ClusterKeys, snapshot: &Snapshot) -> Result<ClusterRecords, StoreError> {
        let mut records = ClusterRecords {
            revision: snapshot.revision,
            ..ClusterRecords::default()
        };
        for kv in &snapshot.kvs {
            match keys.classify(&kv.key) {
                Some(ClusterKey::Config) => records.config = Some(decode_kv(kv)?),
                Some(ClusterKey::Initialize) => records.initialize = Some(decode_kv(kv)?),
                Some(ClusterKey::Leader) => records.leader = Some(decode_kv(kv)?),
                Some(ClusterKey::Member(name)) => {
                    records.members.insert(name, decode_kv(kv)?);
                }
                Some(ClusterKey::Sync) => records.sync = Some(decode_kv(kv)?),
                Some(ClusterKey::History) => records.history = Some(decode_kv(kv)?),
                Some(ClusterKey::PrimaryPosition) => {
                    records.primary_position = Some(decode_kv(kv)?)
                }
                Some(ClusterKey::Switchover) => records.switchover = Some(decode_kv(kv)?),
                // Events are not decisions of the core.
                _ => {}
            }
        }
        Ok(records)
    }

    /// The leader's term: the revision that created its key, which the store
    /// increments on every write, so a later leader always has a larger one.
    pub fn term(&self) -> Option<u64> {
        self.leader.as_ref().map(|l| l.create_revision as u64)
    }

    pub fn settings(&self) -> ha::Settings {
        settings(
            &self
                .config
                .as_ref()
                .map(|c| c.value.clone())
                .unwrap_or_default(),
        )
    }

    /// The view `ha::decide` takes; `wall_ms` (unix ms) tells whether a
    /// scheduled switchover is due.
    pub fn to_ha(&self, wall_ms: u64) -> ha::Cluster {
        let members: BTreeMap<String, ha::MemberView> = self
            .members
            .iter()
            .map(|(name, status)| {
                let mut view = member_view(&status.value);
                view.revision = status.mod_revision as u64;
                (name.clone(), view)
            })
            .collect();
        let history_timeline = self
            .history
            .as_ref()
            .and_then(|h| h.value.entries.iter().map(|e| e.timeline).max())
            .unwrap_or(1);
        let member_timeline = members
            .values()
            .filter_map(|m| m.timeline)
            .max()
            .unwrap_or(1);
        ha::Cluster {
            settings: self.settings(),
            initialize: self
                .initialize
                .as_ref()
                .map(|i| match i.value.system_identifier {
                    Some(system_id) => ha::Initialize::Done { system_id },
                    None => ha::Initialize::Claimed {
                        by: i.value.member.clone(),
                    },
                }),
            leader: self.leader.as_ref().map(|l| ha::Leader {
                member: l.value.member.clone(),
                term: l.create_revision as u64,
            }),
            members,
            sync: self.sync.as_ref().map(|s| ha::SyncSet {
                leader: s.value.leader.clone(),
                members: s.value.members.iter().cloned().collect::<BTreeSet<_>>(),
            }),
            latest_timeline: history_timeline.max(member_timeline),
            last_primary_lsn: self.primary_position.as_ref().map(|p| p.value.lsn),
            switchover: self.switchover.as_ref().map(|s| {
                let s = &s.value;
                ha::SwitchoverRequest {
                    from: s.from.clone(),
                    to: s.to.clone(),
                    due: s.at_ms.is_none_or(|at| at <= wall_ms),
                    // A hand-over older than two TTLs is over, even for an
                    // agent that has just started and never saw it begin.
                    handoff: s
                        .handoff
                        .as_ref()
                        .filter(|h| wall_ms <= h.released_ms + 2 * self.settings().ttl_ms)
                        .map(|h| ha::Handoff {
                            from: s.from.clone().unwrap_or_default(),
                            to: h.to.clone(),
                            final_lsn: h.final_lsn,
                            timeline: h.timeline,
                        }),
                }
            }),
        }
    }
}

pub fn settings(config: &DynamicConfig) -> ha::Settings {
    ha::Settings {
        ttl_ms: config.ttl_ms,
        heartbeat_ms: config.heartbeat_ms,
        maximum_lag_on_failover: config.maximum_lag_on_failover,
        synchronous_mode: config.synchronous_mode,
        synchronous_count: config.synchronous_count,
        synchronous_strict: config.synchronous_strict,
        failsafe: config.failsafe,
        paused: config.paused,
        restart_grace_ms: config.restart_grace_ms,
    }
}

fn member_view(status: &MemberStatus) -> ha::MemberView {
    ha::MemberView {
        witness: status.role == Role::Witness,
        nofailover: status.tags.nofailover,
        priority: status.tags.priority,
        running: status.state == PgState::Running,
        primary: status.role == Role::Primary && status.state == PgState::Running,
        timeline: status.timeline,
        lsn: [status.flush_lsn, status.receive_lsn, status.replay_lsn]
            .into_iter()
            .flatten()
            .max(),
        upstream: status.upstream.clone(),
        streaming: status.streaming,
        revision: 0,
    }
}
