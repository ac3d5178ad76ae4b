//! Carrying out the decision core's actions against PostgreSQL and the
//! store, and the events they make.

use ha::{Action, Local, Plan};
use pg::Endpoint;
use store::cluster::{
    FailsafeMembers, Handoff, HistoryEntry, Initialize, Leader, PrimaryPosition, SyncState,
};
use store::{Condition, Expect, StoreError, Write};

use super::{ActionError, Member, Now};
use crate::postgres::Upstream;

impl Member {
    /// The event an action that succeeded makes, if it changes the role or
    /// state of the member or cluster.
    pub(super) fn record_event(&mut self, action: &Action, plan: &Plan) {
        let term = self.records.term().unwrap_or(0);
        let (kind, details) = match action {
            Action::InitDb => ("initialized", "ran initdb: a new cluster".to_string()),
            Action::AcquireLeader => ("leader", format!("took the leader key (term {term})")),
            Action::DeposeLeader { leader } => {
                ("deposed", format!("deposed the silent primary {leader}"))
            }
            Action::ReleaseLeader => ("leader_released", plan.note.clone()),
            Action::CloneFrom { leader } => ("cloned", format!("cloned from {leader}")),
            Action::Rewind { leader } => ("rewound", format!("rewound onto {leader}")),
            Action::Reclone { leader, reason } => {
                ("recloned", format!("re-cloned from {leader}: {reason}"))
            }
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
            Action::PublishSync { members } => (
                "synchronous",
                if members.is_empty() {
                    "no synchronous standby".to_string()
                } else {
                    format!("synchronous standbys: {}", members.join(", "))
                },
            ),
            Action::HandOff { to } => (
                "switchover",
                format!("stopped cleanly and handed over to {to}"),
            ),
            Action::ClearSwitchover { outcome } => ("switchover", outcome.clone()),
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

    /// Writes `value` to `key` only while this member still holds the
    /// leader key it read and `key` is as it was read (`read`: its
    /// revision, `None` for absent): a deposed primary must not change what
    /// its successor relies on.
    async fn put_as_leader<T: store::Record>(
        &self,
        doing: &str,
        key: &store::TypedKey<T>,
        read: Option<i64>,
        value: &T,
    ) -> Result<(), ActionError> {
        let leader = self.own_leader(doing)?;
        let conditions = [
            unchanged(self.keys.leader().key(), leader.mod_revision),
            Condition {
                key: key.key().to_string(),
                expect: read.map_or(Expect::Absent, Expect::ModRevision),
            },
        ];
        self.store
            .transaction(&conditions, &[put(key, value)?])
            .await?;
        Ok(())
    }

    /// This member's leader key as this round read it; acting as the leader
    /// without it is refused.
    pub(super) fn own_leader(&self, doing: &str) -> Result<&store::Versioned<Leader>, ActionError> {
        self.records
            .leader
            .as_ref()
            .filter(|l| l.value.member == self.spec.name)
            .ok_or_else(|| {
                ActionError::Impossible(format!(
                    "cannot {doing}: this member no longer holds the leader key"
                ))
            })
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

    pub(super) async fn execute(&mut self, action: &Action, now: Now) -> Result<(), ActionError> {
        let store = self.store.as_ref();
        match action {
            Action::ClaimInitialize => {
                let claim = Initialize {
                    member: self.spec.name.clone(),
                    system_identifier: None,
                };
                match self.keys.initialize().create(store, &claim, None).await {
                    // Another member won the right to run initdb: nothing
                    // failed, the next round follows it.
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            Action::InitDb => self.pg.initdb().await?,
            Action::CompleteInitialize { system_id } => {
                let current =
                    self.keys.initialize().get(store).await?.ok_or_else(|| {
                        ActionError::Impossible("the initialize key vanished".into())
                    })?;
                let done = Initialize {
                    member: self.spec.name.clone(),
                    system_identifier: Some(*system_id),
                };
                self.keys
                    .initialize()
                    .compare_and_set(
                        store,
                        Expect::ModRevision(current.mod_revision),
                        &done,
                        None,
                    )
                    .await?;
            }
            Action::AcquireLeader => {
                let lease = self.lease_id()?;
                let leader = Leader {
                    member: self.spec.name.clone(),
                };
                match self.keys.leader().create(store, &leader, Some(lease)).await {
                    Ok(revision) => {
                        self.records.leader = Some(store::Versioned {
                            value: leader,
                            mod_revision: revision,
                            create_revision: revision,
                            lease: Some(lease),
                        });
                    }
                    Err(StoreError::Conflict { current, .. }) => {
                        let winner = current
                            .and_then(|kv| store::typed::decode_kv::<Leader>(&kv).ok())
                            .map_or_else(|| "another member".to_string(), |l| l.value.member);
                        return Err(ActionError::LostRace(winner));
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            Action::RenewLeader => {
                // The lease was refreshed at the start of the round; publish
                // how far the primary has written, which outlives it — only
                // while this member still holds the leader key it read, so a
                // deposed primary cannot overwrite its successor's position.
                if let (Local::Running(running), Some(leader)) = (&self.local, &self.records.leader)
                {
                    let position = PrimaryPosition {
                        member: self.spec.name.clone(),
                        timeline: running.timeline,
                        lsn: running.lsn,
                        term: self.records.term().unwrap_or(0),
                    };
                    let condition = unchanged(self.keys.leader().key(), leader.mod_revision);
                    let write = put(&self.keys.primary_position(), &position)?;
                    store.transaction(&[condition], &[write]).await?;
                }
            }
            Action::ReleaseLeader => {
                if let Some(leader) = &self.records.leader {
                    if leader.value.member == self.spec.name {
                        self.keys
                            .leader()
                            .compare_and_delete(store, leader.mod_revision)
                            .await?;
                    }
                }
            }
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
                let upstream = upstream
                    .as_deref()
                    .map(|name| self.upstream(name))
                    .transpose()?;
                self.pg.start_replica(upstream.as_ref()).await?;
            }
            Action::Follow { upstream } => {
                let upstream = upstream
                    .as_deref()
                    .map(|name| self.upstream(name))
                    .transpose()?;
                self.pg.follow(upstream.as_ref()).await?;
            }
            Action::Promote => self.pg.promote().await?,
            Action::Stop { mode } => self.pg.stop(*mode).await?,
            Action::ApplySynchronous { names, count } => {
                self.pg.apply_synchronous(names, *count).await?
            }
            Action::PublishSync { members } => {
                let sync = SyncState {
                    leader: self.spec.name.clone(),
                    members: members.clone(),
                    term: self.records.term().unwrap_or(0),
                };
                let read = self.records.sync.as_ref().map(|s| s.mod_revision);
                self.put_as_leader(
                    "publish the synchronous set",
                    &self.keys.sync(),
                    read,
                    &sync,
                )
                .await?;
            }
            Action::PublishFailsafe { members } => {
                let list = FailsafeMembers {
                    leader: self.spec.name.clone(),
                    members: members
                        .iter()
                        .filter_map(|name| {
                            let status = self.records.members.get(name)?;
                            Some((name.clone(), status.value.api_url.clone()))
                        })
                        .collect(),
                };
                let read = self.records.failsafe.as_ref().map(|f| f.mod_revision);
                self.put_as_leader(
                    "publish the failsafe list",
                    &self.keys.failsafe(),
                    read,
                    &list,
                )
                .await?;
            }
            Action::DeposeLeader { leader } => {
                let current = self
                    .records
                    .leader
                    .as_ref()
                    .filter(|l| l.value.member == *leader)
                    .ok_or_else(|| {
                        ActionError::Impossible(format!("{leader} no longer holds the leader key"))
                    })?;
                let sync = self.records.sync.as_ref().ok_or_else(|| {
                    ActionError::Impossible("no synchronous set to depose against".into())
                })?;
                let conditions = [
                    unchanged(self.keys.leader().key(), current.mod_revision),
                    unchanged(self.keys.sync().key(), sync.mod_revision),
                ];
                let delete = Write::Delete {
                    key: self.keys.leader().key().to_string(),
                };
                store.transaction(&conditions, &[delete]).await?;
                tracing::warn!("{}: deposed the silent primary {leader}", self.spec.name);
                self.records.leader = None;
            }
            Action::KeepSlots { names, drop } => self.pg.keep_slots(names, drop).await?,
            Action::HandOff { to } => {
                let (final_lsn, timeline) = self.pg.shutdown_checkpoint().await?;
                let leader = self.own_leader("hand over")?;
                let request = self.records.switchover.as_ref().ok_or_else(|| {
                    ActionError::Impossible("the switchover was cancelled".into())
                })?;
                let mut record = request.value.clone();
                record.handoff = Some(Handoff {
                    to: to.clone(),
                    final_lsn,
                    timeline,
                    released_ms: now.wall_ms,
                });
                let key = self.keys.switchover();
                // Both or neither: the key is released only with the
                // record saying who may take it.
                let conditions = [
                    unchanged(self.keys.leader().key(), leader.mod_revision),
                    unchanged(key.key(), request.mod_revision),
                ];
                let writes = [
                    Write::Delete {
                        key: self.keys.leader().key().to_string(),
                    },
                    put(&key, &record)?,
                ];
                store.transaction(&conditions, &writes).await?;
                self.records.leader = None;
            }
            Action::ClearSwitchover { .. } => {
                if let Some(request) = &self.records.switchover {
                    match self
                        .keys
                        .switchover()
                        .compare_and_delete(store, request.mod_revision)
                        .await
                    {
                        Ok(_) | Err(StoreError::Conflict { .. }) => {}
                        Err(err) => return Err(err.into()),
                    }
                }
            }
            Action::RecordHistory { reason } => {
                let Local::Running(running) = self.pg.observe().await else {
                    return Err(ActionError::Impossible(
                        "PostgreSQL stopped right after promotion".into(),
                    ));
                };
                let history = self.keys.history().get(store).await?;
                let mut entries = history
                    .as_ref()
                    .map(|h| h.value.entries.clone())
                    .unwrap_or_default();
                let from = self
                    .records
                    .primary_position
                    .as_ref()
                    .map(|p| p.value.member.clone())
                    .filter(|m| *m != self.spec.name);
                entries.push(HistoryEntry {
                    timeline: running.timeline,
                    switch_lsn: running.lsn,
                    reason: reason.clone(),
                    time_ms: now.wall_ms,
                    from,
                    to: Some(self.spec.name.clone()),
                    duration_ms: self
                        .failover_started_ms()
                        .map(|t| now.wall_ms.saturating_sub(t)),
                });
                let record = store::cluster::History { entries };
                match history {
                    Some(h) => {
                        self.keys
                            .history()
                            .compare_and_set(
                                store,
                                Expect::ModRevision(h.mod_revision),
                                &record,
                                None,
                            )
                            .await?
                    }
                    None => self.keys.history().create(store, &record, None).await?,
                };
            }
        }
        Ok(())
    }

    /// When the failover or switchover this member just finished began
    /// (unix ms): the request's due time for a switchover, else when it
    /// first saw no leader.
    pub(super) fn failover_started_ms(&self) -> Option<u64> {
        let request = self.records.switchover.as_ref().map(|s| &s.value);
        match request {
            Some(request) if request.from.is_some() => {
                Some(request.at_ms.unwrap_or(0).max(request.requested_ms))
            }
            _ => self.leaderless_since_ms,
        }
    }
}

/// A transaction condition: `key` is still as this round read it.
fn unchanged(key: &str, revision: i64) -> Condition {
    Condition {
        key: key.to_string(),
        expect: Expect::ModRevision(revision),
    }
}

/// A transaction write of a record, unleased.
fn put<T: store::Record>(key: &store::TypedKey<T>, value: &T) -> Result<Write, StoreError> {
    Ok(Write::Put {
        key: key.key().to_string(),
        value: store::typed::encode(key.key(), value)?,
        lease: None,
    })
}
