//! The cluster records turned into the decision core's view: a plain
//! translation, the agent's every round and the API's admission of a
//! switchover read the same one.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{BackupKind, DynamicConfig, MemberStatus, PgState, Role};
use crate::ClusterRecords;

/// What the decision core sees of the records.
pub trait HaView {
    /// The dynamic settings, defaults where the key is missing.
    fn settings(&self) -> ha::Settings;
    /// The view `ha` decides on.
    fn to_ha(&self) -> ha::Cluster;
}

impl HaView for ClusterRecords {
    fn settings(&self) -> ha::Settings {
        settings(&self.config())
    }

    fn to_ha(&self) -> ha::Cluster {
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
                quorum: s.value.quorum(),
            }),
            failsafe_list: self.failsafe.as_ref().map(|f| ha::FailsafeList {
                leader: f.value.leader.clone(),
                members: f.value.members.keys().cloned().collect(),
            }),
            backups: self.backups(),
            removed: self
                .removed
                .iter()
                .map(|(name, r)| {
                    let r = &r.value;
                    let removed = ha::Removed {
                        system_id: r.system_identifier,
                        timeline: r.timeline,
                        removed_ms: r.removed_ms,
                    };
                    (name.clone(), removed)
                })
                .collect(),
            latest_timeline: history_timeline.max(member_timeline),
            last_primary_lsn: self.primary_position.as_ref().map(|p| p.value.lsn),
            switchover: self.switchover.as_ref().map(|s| {
                let s = &s.value;
                ha::SwitchoverRequest {
                    from: s.from.clone(),
                    to: s.to.clone(),
                    requested_ms: s.requested_ms,
                    at_ms: s.at_ms,
                    handoff: s.handoff.as_ref().map(|h| ha::Handoff {
                        from: s.from.clone().unwrap_or_default(),
                        to: h.to.clone(),
                        final_lsn: h.final_lsn,
                        timeline: h.timeline,
                        released_ms: h.released_ms,
                    }),
                }
            }),
        }
    }
}

impl ClusterRecords {
    fn backups(&self) -> ha::backups::Backups {
        use ha::backups as hb;
        let kind = |kind: BackupKind| match kind {
            BackupKind::Full => hb::BackupKind::Full,
            BackupKind::Incremental => hb::BackupKind::Incremental,
        };
        hb::Backups {
            request: self.backup_request.as_ref().map(|r| hb::BackupRequest {
                kind: r.value.kind.map(kind),
                force: r.value.force,
            }),
            assignment: self
                .backup_assignment
                .as_ref()
                .map(|a| hb::BackupAssignment {
                    member: a.value.member.clone(),
                    kind: kind(a.value.kind),
                    assigned_ms: a.value.assigned_ms,
                }),
            last: self.last_backup.as_ref().map(|l| hb::LastBackup {
                done_ms: l.value.done_ms,
                full_done_ms: l.value.full_done_ms,
                stop_lsn: l.value.stop_lsn,
                checked_ms: l.value.checked_ms,
            }),
        }
    }
}

pub fn settings(config: &DynamicConfig) -> ha::Settings {
    ha::Settings {
        ttl_ms: config.ttl_ms,
        heartbeat_ms: config.heartbeat_ms,
        maximum_lag_on_failover: config.maximum_lag_on_failover,
        synchronous_mode: config.synchronous_mode.to_ha(),
        synchronous_count: config.synchronous_count,
        synchronous_strict: config.synchronous_strict,
        failsafe: config.failsafe,
        paused: config.paused,
        restart_grace_ms: config.restart_grace_ms,
        reachability_grace_ms: config.reachability_grace_ms,
        backup: ha::backups::Schedule {
            interval_ms: config.backup_interval_ms,
            full_interval_ms: config.backup_full_interval_ms,
        },
        slot_retention_ms: config.slot_retention_ms,
    }
}

fn member_view(status: &MemberStatus) -> ha::MemberView {
    ha::MemberView {
        witness: status.role == Role::Witness,
        nofailover: status.tags.nofailover,
        nosync: status.tags.nosync,
        priority: status.tags.priority,
        running: status.state == PgState::Running,
        primary: status.is_running_primary(),
        timeline: status.timeline,
        lsn: [status.flush_lsn, status.receive_lsn, status.replay_lsn]
            .into_iter()
            .flatten()
            .max(),
        upstream: status.upstream.clone(),
        streaming: status.streaming,
        can_backup: status.can_backup,
        reach: status
            .reachability
            .as_ref()
            .map_or(ha::Reach::Unchecked, |r| r.to_ha()),
        revision: 0,
    }
}
