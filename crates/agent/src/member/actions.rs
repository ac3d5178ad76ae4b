//! Carrying out the decision core's actions against PostgreSQL and the
//! store, and the events they make.

use ha::{Action, Local, Plan};
use pg::Endpoint;

use super::{ActionError, Member, Now};
use crate::postgres::Upstream;

mod backups;
mod transactions;

impl Member {
    /// The event an action that succeeded makes, if it changes the role or
    /// state of the member or cluster.
    pub(super) fn record_event(&mut self, action: &Action, plan: &Plan) {
        let term = self.records.term().unwrap_or(0);
        let (kind, details) = match action {
            Action::InitDb => ("initialized", self.pg.initdb_note()),
            Action::AcquireLeader => ("leader", format!("took the leader key (term {term})")),
            Action::DeposeLeader { leader } => {
                ("deposed", format!("deposed the silent primary {leader}"))
            }
            Action::ReleaseLeader => ("leader_released", plan.note.clone()),
            Action::CloneFrom { leader } => (
                "cloned",
                format!("cloned from {leader} {}", self.pg.clone_method()),
            ),
            Action::Rewind { leader } => ("rewound", format!("rewound onto {leader}")),
            Action::Reclone { leader, reason } => (
                "recloned",
                format!(
                    "re-cloned from {leader} {}: {reason}",
                    self.pg.clone_method()
                ),
            ),
            Action::StartPrimary => ("started", "started PostgreSQL as primary".to_string()),
            Action::StartReplica { upstream } => (
                "started",
                match upstream {
                    Some(name) => format!("started PostgreSQL as a standby of {name}"),
                    None => "started PostgreSQL as a standby".to_string(),
                },
            ),
            Action::Follow { upstream } => (
                "following",
                match upstream {
                    Some(name) => format!("now streams from {name}"),
                    None => "streams from nobody".to_string(),
                },
            ),
            Action::Promote => ("promoted", plan.note.clone()),
            Action::Stop { mode } => (
                "stopped",
                format!("stopped PostgreSQL ({mode:?}): {}", plan.note),
            ),
            Action::PublishSync { members, quorum } => {
                let waited_for = match &self.local {
                    Local::Running(running) => running.sync_applied.clone(),
                    _ => Vec::new(),
                };
                (
                    "synchronous",
                    sync_event(members, *quorum, plan, &waited_for),
                )
            }
            Action::HandOff { to } => (
                "switchover",
                format!("stopped cleanly and handed over to {to}"),
            ),
            Action::ClearSwitchover { outcome } => ("switchover", outcome.clone()),
            Action::AskSwitchover { reason, .. } => ("reachability", reason.clone()),
            Action::AssignBackup { member, kind } => (
                "backup_assigned",
                format!(
                    "{member} is to take a {} backup",
                    format!("{kind:?}").to_lowercase()
                ),
            ),
            Action::SkipBackup { reason } => ("backup_skipped", reason.clone()),
            Action::Readmit => ("member_readmitted", plan.note.clone()),
            Action::EndBackup { outcome } => ("backup_failed", outcome.clone()),
            Action::ClaimInitialize
            | Action::CompleteInitialize { .. }
            | Action::RenewLeader
            | Action::ApplySynchronous { .. }
            | Action::KeepSlots { .. }
            | Action::PublishFailsafe { .. }
            | Action::RecordHistory { .. } => return,
        };
        self.event(kind, details);
    }

    pub(super) fn lease_id(&self) -> Result<store::LeaseId, ActionError> {
        self.lease
            .map(|l| l.id)
            .ok_or_else(|| ActionError::Impossible("no lease: the store is unreachable".into()))
    }

    pub(super) fn upstream(&self, name: &str) -> Result<Upstream, ActionError> {
        let status =
            self.records.members.get(name).ok_or_else(|| {
                ActionError::Impossible(format!(
                    "{name} has no status in the store: its agent is not running or its lease expired; \
                     start `pgwarden agent` on {name}"
                ))
            })?;
        let address = status
            .value
            .pg_address()
            .map_err(|e| ActionError::Impossible(format!("{name} publishes an {e}")))?;
        Ok(Upstream {
            name: name.to_string(),
            endpoint: Endpoint::new(address.host, address.port),
        })
    }

    /// The upstream named, if one is.
    fn upstream_if_any(&self, name: Option<&str>) -> Result<Option<Upstream>, ActionError> {
        name.map(|name| self.upstream(name)).transpose()
    }

    /// Carries out one action: PostgreSQL's part through `self.pg`, the
    /// store's through the named transactions of [`transactions`], each
    /// guarded by what this round read.
    pub(super) async fn execute(&mut self, action: &Action, now: Now) -> Result<(), ActionError> {
        match action {
            Action::ClaimInitialize => self.claim_initialize().await?,
            Action::Readmit => {
                let key = self.keys.removed(&self.spec.name)?;
                key.delete(self.store.as_ref()).await?;
            }
            Action::InitDb => self.pg.initdb().await?,
            Action::CompleteInitialize { system_id } => {
                self.complete_initialize(*system_id).await?
            }
            Action::AcquireLeader => self.acquire_leader().await?,
            Action::RenewLeader => self.publish_primary_position().await?,
            Action::ReleaseLeader => self.release_leader().await?,
            Action::CloneFrom { leader } => {
                let upstream = self.upstream(leader)?;
                self.pg.clone_data_from(&upstream).await?;
            }
            Action::Rewind { leader } => {
                let upstream = self.upstream(leader)?;
                self.pg.rewind(&upstream).await?;
            }
            Action::Reclone { leader, .. } => {
                let upstream = self.upstream(leader)?;
                self.pg.reclone(&upstream).await?;
            }
            Action::StartPrimary => self.pg.start_primary().await?,
            Action::StartReplica { upstream } => {
                let upstream = self.upstream_if_any(upstream.as_deref())?;
                self.pg.start_replica(upstream.as_ref()).await?;
            }
            Action::Follow { upstream } => {
                let upstream = self.upstream_if_any(upstream.as_deref())?;
                self.pg.follow(upstream.as_ref()).await?;
            }
            Action::Promote => self.pg.promote().await?,
            Action::Stop { mode } => self.pg.stop(*mode).await?,
            Action::ApplySynchronous {
                names,
                count,
                quorum,
            } => self.pg.apply_synchronous(names, *count, *quorum).await?,
            Action::PublishSync { members, quorum } => self.publish_sync(members, *quorum).await?,
            Action::PublishFailsafe { members } => self.publish_failsafe(members).await?,
            Action::DeposeLeader { leader } => self.depose_leader(leader).await?,
            Action::KeepSlots { names, drop } => self.pg.keep_slots(names, drop).await?,
            Action::HandOff { to } => {
                let (final_lsn, timeline) = self.pg.shutdown_checkpoint().await?;
                self.hand_off(to, final_lsn, timeline, now.wall_ms).await?;
            }
            Action::ClearSwitchover { .. } => self.clear_switchover().await?,
            Action::AskSwitchover { to, reason } => {
                self.ask_switchover(to, reason, now.wall_ms).await?
            }
            Action::AssignBackup { member, kind } => {
                self.assign_backup(member, *kind, now.wall_ms).await?
            }
            Action::SkipBackup { .. } => self.skip_backup(now.wall_ms).await?,
            Action::EndBackup { .. } => self.end_backup().await?,
            Action::RecordHistory { reason } => {
                let Local::Running(running) = self.pg.observe().await else {
                    return Err(ActionError::Impossible(
                        "PostgreSQL stopped right after promotion".into(),
                    ));
                };
                self.record_history(reason, running.timeline, running.lsn, now.wall_ms)
                    .await?;
            }
        }
        Ok(())
    }
}

/// The event of a published synchronous set. An empty set published just
/// before PostgreSQL is told whom to wait for (synchronous mode turned on,
/// a promotion) or while PostgreSQL already waits for standbys that have
/// not confirmed yet (`waited_for`) is a step of naming them, not a loss:
/// it says so.
fn sync_event(members: &[String], quorum: u32, plan: &Plan, waited_for: &[String]) -> String {
    if members.is_empty() {
        let next = plan
            .actions
            .iter()
            .find_map(|a| match a {
                Action::ApplySynchronous { names, .. } if !names.is_empty() => {
                    Some(names.as_slice())
                }
                _ => None,
            })
            .or((!waited_for.is_empty()).then_some(waited_for));
        return match next {
            Some(names) if names.iter().any(|n| n == ha::ANY_STANDBY) => {
                "no synchronous standby yet: PostgreSQL waits for any standby, named here once one holds every commit".to_string()
            }
            Some(names) => format!(
                "no synchronous standby yet: PostgreSQL now waits for {}, each named here once it holds every commit",
                names.join(", ")
            ),
            None => "no synchronous standby".to_string(),
        };
    }
    if quorum as usize == members.len() {
        format!("synchronous standbys: {}", members.join(", "))
    } else if quorum == 0 {
        format!(
            "joining the synchronous standbys: {} (none holds every commit yet)",
            members.join(", ")
        )
    } else {
        format!(
            "synchronous standbys: {} (each commit on at least {quorum} of them)",
            members.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_set_published_before_naming_standbys_says_they_are_coming() {
        let turning_on = Plan::new(ha::LogRole::Primary, "leading")
            .then(Action::PublishSync {
                members: vec![],
                quorum: 0,
            })
            .then(Action::ApplySynchronous {
                names: vec!["db2".into()],
                count: 1,
                quorum: false,
            });
        assert_eq!(
            sync_event(&[], 0, &turning_on, &[]),
            "no synchronous standby yet: PostgreSQL now waits for db2, each named here once it holds every commit"
        );
        let off = Plan::new(ha::LogRole::Primary, "leading").then(Action::PublishSync {
            members: vec![],
            quorum: 0,
        });
        assert_eq!(sync_event(&[], 0, &off, &[]), "no synchronous standby");
        assert_eq!(
            sync_event(&[], 0, &off, &["db2".into(), "db3".into()]),
            "no synchronous standby yet: PostgreSQL now waits for db2, db3, each named here once it holds every commit"
        );
        assert_eq!(
            sync_event(&["db2".into(), "db3".into()], 1, &off, &[]),
            "synchronous standbys: db2, db3 (each commit on at least 1 of them)"
        );
    }
}
