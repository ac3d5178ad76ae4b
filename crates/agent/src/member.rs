//! One member's agent core: one round observes, decides and acts. The
//! runtime calls it on every heartbeat and store change; the simulation
//! calls it with virtual time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ha::{Action, Ha, Local, Me, Millis, Observation, Plan, StoreView};
use pg::Endpoint;
use store::cluster::{
    ClusterKeys, Handoff, HistoryEntry, Initialize, Leader, MemberStatus, PgState, PrimaryPosition,
    Role, SyncState, Tags,
};
use store::{Condition, Expect, Lease, Store, StoreError, Write};

use crate::postgres::{LocalPostgres, Upstream};
use crate::view::HaView;
use store::ClusterRecords;

/// What a member is, fixed for its life.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    pub name: String,
    pub nofailover: bool,
    pub priority: u32,
    pub witness: bool,
    /// Where others reach this member's PostgreSQL.
    pub pg_endpoint: Endpoint,
    pub api_url: String,
}

/// The time of a round: monotonic for leases, wall clock for records.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono: Millis,
    pub wall_ms: u64,
}

/// What one round did.
#[derive(Clone, Debug)]
pub struct Round {
    pub plan: Plan,
    /// The action that failed, and why; the actions after it did not run.
    pub failed: Option<(Action, String)>,
    pub store_reachable: bool,
}

/// Something this member did or saw happen, for the event log and hooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberEvent {
    pub kind: &'static str,
    pub details: String,
}

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pg(#[from] pg::PgError),
    #[error("lost the leader race to {0}")]
    LostRace(String),
    #[error("{0}")]
    Impossible(String),
}

pub struct Member {
    spec: MemberSpec,
    keys: ClusterKeys,
    store: Arc<dyn Store>,
    pg: Arc<dyn LocalPostgres>,
    ha: Ha,
    lease: Option<Lease>,
    lease_valid_until: Option<Millis>,
    /// The last records read, for the actions of the same round.
    records: ClusterRecords,
    /// The local observation of this round.
    local: Local,
    /// The last plan's note, so the log says each decision once.
    last_note: String,
    /// The status last published.
    last_status: Option<MemberStatus>,
    /// Events of the rounds since the runtime last took them.
    events: Vec<MemberEvent>,
    /// Since when (unix ms) this member has seen no leader, for the
    /// duration of a failover.
    leaderless_since_ms: Option<u64>,
}

impl Member {
    pub fn new(
        spec: MemberSpec,
        keys: ClusterKeys,
        store: Arc<dyn Store>,
        pg: Arc<dyn LocalPostgres>,
    ) -> Member {
        let ha = Ha::new(Me {
            name: spec.name.clone(),
            nofailover: spec.nofailover || spec.witness,
            priority: spec.priority,
        });
        Member {
            spec,
            keys,
            store,
            pg,
            ha,
            lease: None,
            lease_valid_until: None,
            records: ClusterRecords::default(),
            local: Local::Empty,
            last_note: String::new(),
            last_status: None,
            events: Vec::new(),
            leaderless_since_ms: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Whether this member holds the leader key under the lease it holds
    /// now, as of the last round: a key bound to an earlier lease protects
    /// no leadership.
    pub fn is_leader(&self) -> bool {
        let (Some(lease), Some(leader)) = (self.lease, &self.records.leader) else {
            return false;
        };
        leader.value.member == self.spec.name && leader.lease == Some(lease.id)
    }

    /// Until when this member's *leader* lease surely holds (monotonic ms),
    /// as of its last successful refresh; `None` when it does not lead. This
    /// is what the decision core is told.
    pub fn lease_valid_until(&self) -> Option<Millis> {
        self.lease_valid_until.filter(|_| self.is_leader())
    }

    /// The cluster records of the last round.
    pub fn records(&self) -> &ClusterRecords {
        &self.records
    }

    /// The events since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<MemberEvent> {
        std::mem::take(&mut self.events)
    }

    fn event(&mut self, kind: &'static str, details: impl Into<String>) {
        self.events.push(MemberEvent {
            kind,
            details: details.into(),
        });
    }

    /// What the REST API shows of this member.
    pub fn local_state(&self, now: Now, store_reachable: bool) -> api::local::LocalState {
        let status = self.last_status.as_ref();
        let (pg_running, primary, streaming, timeline, lsn) = match &self.local {
            Local::Running(r) => (true, r.primary, r.streaming, Some(r.timeline), Some(r.lsn)),
            Local::Stopped(s) => (false, false, false, Some(s.timeline), None),
            _ => (false, false, false, None, None),
        };
        api::local::LocalState {
            member: self.spec.name.clone(),
            pg_running,
            primary,
            leader: self.is_leader(),
            streaming,
            timeline,
            lsn,
            lag_bytes: status.and_then(|s| s.lag_bytes),
            lag_ms: status.and_then(|s| s.lag_ms),
            lease_remaining_ms: self
                .lease_valid_until()
                .map(|until| until.saturating_sub(now.mono)),
            store_reachable,
            note: self.last_note.clone(),
            activity: self
                .pg
                .clone_progress()
                .map(|(done, total)| api::local::Activity {
                    what: "clone".to_string(),
                    done_bytes: done,
                    total_bytes: (total > 0).then_some(total),
                }),
            updated_ms: now.wall_ms,
        }
    }

    /// What keeps this member's lease and status alive while a long request
    /// (restart, reinit) holds up the rounds: a primary restarting on
    /// request must not look dead to the fast failover path.
    pub fn keepalive(
        &self,
        note: String,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let store = self.store.clone();
        let lease = self.lease;
        let key = self.keys.member(&self.spec.name).ok();
        let status = self.last_status.clone();
        let heartbeat = Duration::from_millis(self.records.settings().heartbeat_ms.max(50));
        async move {
            let mut tick = tokio::time::interval(heartbeat);
            loop {
                tick.tick().await;
                if let Some(lease) = lease {
                    let _ = store.refresh_lease(lease.id).await;
                }
                if let (Some(key), Some(mut status)) = (&key, status.clone()) {
                    status.note = note.clone();
                    status.updated_ms = api::time::now_ms();
                    let _ = key.put(store.as_ref(), &status, lease.map(|l| l.id)).await;
                }
            }
        }
    }

    /// Restarts PostgreSQL in its current role, on request.
    pub async fn restart(&mut self, now: Now) -> Result<String, String> {
        let local = self.observe().await;
        let leader = self.records.leader.as_ref().map(|l| l.value.member.clone());
        let steps = match &local {
            Local::Running(r) if r.primary && self.is_leader() => vec![
                Action::Stop { mode: ha::StopMode::Fast },
                Action::StartPrimary,
            ],
            Local::Running(r) if !r.primary => vec![
                Action::Stop { mode: ha::StopMode::Fast },
                Action::StartReplica {
                    upstream: leader.filter(|l| *l != self.spec.name),
                },
            ],
            Local::Running(_) => {
                return Err(format!(
                    "{} runs as a primary without the leader key; its agent is demoting it, not restarting it",
                    self.spec.name
                ))
            }
            other => {
                return Err(format!(
                    "PostgreSQL on {} does not run ({}); its agent starts it on its own when it should run",
                    self.spec.name,
                    describe(other)
                ))
            }
        };
        self.run_steps("restart", &steps, now).await?;
        self.event("restarted", "restarted PostgreSQL on request");
        Ok(format!("restarted PostgreSQL on {}", self.spec.name))
    }

    /// Whom a reinit would clone from, or why it is refused.
    pub fn reinit_source(&self) -> Result<String, String> {
        let leader = self.records.leader.as_ref().map(|l| l.value.member.clone());
        match leader {
            _ if self.spec.witness => Err(format!("{} is a witness: it has no data to re-clone", self.spec.name)),
            Some(leader) if leader == self.spec.name => Err(format!(
                "{} is the leader: switch over to another member first (`pgwarden ctl switchover`), then reinit it",
                self.spec.name
            )),
            Some(leader) => {
                let running = self
                    .records
                    .members
                    .get(&leader)
                    .is_some_and(|m| m.value.role == Role::Primary && m.value.state == PgState::Running);
                if running {
                    Ok(leader)
                } else {
                    Err(format!("the leader {leader} does not run as primary: nothing to clone from; try again after it does"))
                }
            }
            None => Err("there is no leader to clone from; try again once one is elected".to_string()),
        }
    }

    /// Throws the data directory away (moved aside) and clones afresh from
    /// `leader`, then starts as its standby.
    pub async fn reinit(&mut self, leader: &str, now: Now) -> Result<(), String> {
        let steps = [
            Action::Stop {
                mode: ha::StopMode::Fast,
            },
            Action::Reclone {
                leader: leader.to_string(),
                reason: "reinit on request".to_string(),
            },
            Action::StartReplica {
                upstream: Some(leader.to_string()),
            },
        ];
        self.run_steps("reinit", &steps, now).await?;
        self.event("recloned", format!("re-cloned from {leader} on request"));
        Ok(())
    }

    /// The steps of a request, stopping at the first that fails.
    async fn run_steps(&mut self, what: &str, steps: &[Action], now: Now) -> Result<(), String> {
        for action in steps {
            self.execute(action, now).await.map_err(|err| {
                format!("{what} of {} failed at {action:?}: {err}", self.spec.name)
            })?;
        }
        Ok(())
    }

    /// Whether the decision is new (for logging it once).
    pub fn note_changed(&mut self, plan: &Plan) -> bool {
        if plan.note == self.last_note {
            return false;
        }
        self.last_note = plan.note.clone();
        true
    }

    /// Observe, decide, act, publish.
    /// `clock` is read twice: before the lease refresh is sent (the lease
    /// is valid from then), and for the decision after the store answered,
    /// so a slow store cannot make the core judge the lease with a stale
    /// time.
    pub async fn round(&mut self, clock: &(dyn Fn() -> Now + Send + Sync)) -> Round {
        self.local = self.observe().await;
        let local = self.local.clone();
        let sent = clock();
        let store = match self.refresh(sent).await {
            Ok(records) => {
                self.records = records;
                if self.records.leader.is_some() {
                    self.leaderless_since_ms = None;
                } else {
                    self.leaderless_since_ms.get_or_insert(sent.wall_ms);
                }
                StoreView::Reachable(self.records.to_ha(sent.wall_ms))
            }
            Err(err) => {
                tracing::debug!("store unreachable: {err}");
                StoreView::Unreachable
            }
        };
        let reachable = matches!(store, StoreView::Reachable(_));
        let now = clock();
        let observation = Observation {
            now: now.mono,
            local: local.clone(),
            store,
            lease_valid_until: self.lease_valid_until(),
            lease_ttl_ms: self.lease.map(|l| l.ttl.as_millis() as Millis),
            failsafe_confirmations: BTreeSet::new(),
        };
        let plan = self.ha.decide(&observation);
        let slow = plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::StartPrimary | Action::Promote));
        if reachable && slow {
            // Say so before a start or promotion that may take a while: a
            // status that stops changing reads as a dead agent to the fast
            // failover path, which would depose a primary restarting in place.
            if let Err(err) = self.publish(now, &plan).await {
                tracing::debug!("could not publish member status: {err}");
            }
        }
        let mut failed = None;
        for action in &plan.actions {
            match self.execute(action, now).await {
                Ok(()) => self.record_event(action, &plan),
                Err(err) => {
                    let error = err.to_string();
                    self.ha.failed(action, &error);
                    self.event("action_failed", format!("{action:?} failed: {error}"));
                    failed = Some((action.clone(), error));
                    break;
                }
            }
        }
        if !plan.actions.is_empty() {
            // The actions changed PostgreSQL: publish what it is now.
            self.local = self.observe().await;
        }
        if reachable {
            if let Err(err) = self.publish(now, &plan).await {
                tracing::debug!("could not publish member status: {err}");
            }
        }
        Round {
            plan,
            failed,
            store_reachable: reachable,
        }
    }

    /// The event an action that succeeded makes, if it changes the role or
    /// state of the member or cluster.
    fn record_event(&mut self, action: &Action, plan: &Plan) {
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
            | Action::RecordHistory { .. } => return,
        };
        self.event(kind, details);
    }

    async fn observe(&self) -> Local {
        if self.spec.witness {
            Local::Witness
        } else {
            self.pg.observe().await
        }
    }

    /// Keeps this member's lease alive and reads the cluster.
    async fn refresh(&mut self, now: Now) -> Result<ClusterRecords, StoreError> {
        if let Some(lease) = self.lease {
            match self.store.refresh_lease(lease.id).await {
                Ok(_) => self.lease_valid_until = Some(now.mono + lease.ttl.as_millis() as Millis),
                Err(StoreError::LeaseNotFound { .. }) => {
                    // Everything bound to it, the leader key included, is gone.
                    tracing::warn!(
                        "{}: lease {} expired in the store (last confirmed valid until {:?}, now {}); taking a new one",
                        self.spec.name,
                        lease.id,
                        self.lease_valid_until,
                        now.mono
                    );
                    self.lease = None;
                    self.lease_valid_until = None;
                }
                Err(err) => return Err(err),
            }
        }
        let mut records = self.read().await?;
        if self.lease.is_none() {
            // The cluster's TTL, not a default: read before granting.
            let ttl = Duration::from_millis(records.settings().ttl_ms);
            let lease = self.store.grant_lease(ttl).await?;
            self.lease = Some(lease);
            self.lease_valid_until = Some(now.mono + lease.ttl.as_millis() as Millis);
        }
        let stale = records
            .leader
            .as_ref()
            .filter(|l| l.value.member == self.spec.name && l.lease != self.lease.map(|l| l.id));
        if let Some(stale) = stale {
            // A leader key naming this member under a lease it does not
            // hold: an earlier run of this agent. It would expire on its
            // own; delete it now so an election follows instead of two
            // writers.
            tracing::warn!(
                "{}: the leader key names this member but is bound to an earlier lease; deleting it, an election follows",
                self.spec.name
            );
            match self
                .store
                .compare_and_delete(self.keys.leader().key(), stale.mod_revision)
                .await
            {
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(err) => return Err(err),
            }
            records = self.read().await?;
        }
        Ok(records)
    }

    async fn read(&self) -> Result<ClusterRecords, StoreError> {
        let mut records = ClusterRecords::read(self.store.as_ref(), &self.keys).await?;
        // A key holding garbage fails the read: deciding on half a cluster
        // would be worse.
        match records.problems.pop() {
            Some(problem) => Err(problem),
            None => Ok(records),
        }
    }

    /// This member's leader key as this round read it; acting as the leader
    /// without it is refused.
    fn own_leader(&self, doing: &str) -> Result<&store::Versioned<Leader>, ActionError> {
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

    fn lease_id(&self) -> Result<store::LeaseId, ActionError> {
        self.lease
            .map(|l| l.id)
            .ok_or_else(|| ActionError::Impossible("no lease: the store is unreachable".into()))
    }

    fn upstream(&self, name: &str) -> Result<Upstream, ActionError> {
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

    async fn execute(&mut self, action: &Action, now: Now) -> Result<(), ActionError> {
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
                // Only while this member still holds the leader key it read:
                // a deposed primary must not change the set under its
                // successor.
                let leader = self.own_leader("publish the synchronous set")?;
                let conditions = [
                    unchanged(self.keys.leader().key(), leader.mod_revision),
                    Condition {
                        key: self.keys.sync().key().to_string(),
                        expect: self
                            .records
                            .sync
                            .as_ref()
                            .map_or(Expect::Absent, |s| Expect::ModRevision(s.mod_revision)),
                    },
                ];
                let write = put(&self.keys.sync(), &sync)?;
                store.transaction(&conditions, &[write]).await?;
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
    fn failover_started_ms(&self) -> Option<u64> {
        let request = self.records.switchover.as_ref().map(|s| &s.value);
        match request {
            Some(request) if request.from.is_some() => {
                Some(request.at_ms.unwrap_or(0).max(request.requested_ms))
            }
            _ => self.leaderless_since_ms,
        }
    }

    /// This member's status key, bound to its lease.
    async fn publish(&mut self, now: Now, plan: &Plan) -> Result<(), ActionError> {
        let lease = self.lease_id()?;
        let local = &self.local;
        let (role, state, timeline, flush, receive, upstream, streaming) = match local {
            Local::Witness => (
                Role::Witness,
                PgState::Unknown,
                None,
                None,
                None,
                None,
                false,
            ),
            Local::Empty => (
                Role::Unknown,
                PgState::Stopped,
                None,
                None,
                None,
                None,
                false,
            ),
            Local::Stopped(s) => (
                Role::Unknown,
                PgState::Stopped,
                Some(s.timeline),
                None,
                None,
                None,
                false,
            ),
            Local::Starting { .. } => (
                Role::Unknown,
                PgState::Starting,
                None,
                None,
                None,
                None,
                false,
            ),
            Local::Running(r) if r.primary => (
                Role::Primary,
                PgState::Running,
                Some(r.timeline),
                Some(r.lsn),
                None,
                None,
                false,
            ),
            Local::Running(r) => (
                Role::Replica,
                PgState::Running,
                Some(r.timeline),
                None,
                Some(r.lsn),
                r.upstream.clone(),
                r.streaming,
            ),
        };
        let lag_bytes = match (&self.records.primary_position, receive) {
            (Some(p), Some(lsn)) => Some(p.value.lsn.saturating_sub(lsn)),
            _ => None,
        };
        let status = MemberStatus {
            name: self.spec.name.clone(),
            role,
            state,
            timeline,
            flush_lsn: flush,
            receive_lsn: receive,
            replay_lsn: None,
            lag_bytes,
            lag_ms: if role == Role::Replica {
                self.pg.lag_ms()
            } else {
                None
            },
            api_url: self.spec.api_url.clone(),
            pg_url: format!("postgres://{}/postgres", self.spec.pg_endpoint),
            tags: Tags {
                nofailover: self.spec.nofailover,
                priority: self.spec.priority,
                ..Tags::default()
            },
            updated_ms: now.wall_ms,
            upstream,
            streaming,
            term: if role == Role::Primary && self.is_leader() {
                self.records.term()
            } else {
                None
            },
            note: plan.note.clone(),
        };
        if let Some(last) = &self.last_status {
            if (last.role, last.state) != (status.role, status.state) && plan.actions.is_empty() {
                let details = format!(
                    "PostgreSQL is now {:?} as {:?} (was {:?} as {:?})",
                    status.state, status.role, last.state, last.role
                );
                self.event("state", details);
            }
        }
        let key = self.keys.member(&self.spec.name)?;
        key.put(self.store.as_ref(), &status, Some(lease)).await?;
        self.last_status = Some(status);
        Ok(())
    }

    /// Gives up leadership and the lease at once (a planned stop), so a
    /// standby takes over without waiting for the lease to expire.
    pub async fn resign(&mut self) -> Result<(), ActionError> {
        if self.is_leader() {
            self.execute(
                &Action::ReleaseLeader,
                Now {
                    mono: 0,
                    wall_ms: 0,
                },
            )
            .await?;
        }
        if let Some(lease) = self.lease.take() {
            self.store.revoke_lease(lease.id).await?;
        }
        Ok(())
    }
}

fn describe(local: &Local) -> &'static str {
    match local {
        Local::Witness => "a witness",
        Local::Empty => "no data directory yet",
        Local::Stopped(_) => "stopped",
        Local::Starting { .. } => "starting or not answering",
        Local::Running(_) => "running",
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
