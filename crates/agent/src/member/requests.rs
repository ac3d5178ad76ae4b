//! What only the agent can do, on request from the REST API: restart and
//! reinit, with a keepalive so a long request does not make the member look
//! dead.

use std::time::Duration;

use ha::{Action, Local, Millis};

use super::{Member, Now};
use store::HaView;

impl Member {
    /// What keeps this member's lease and status alive while a long request
    /// (restart, reinit) or action holds up the rounds: a primary
    /// restarting on request must not look dead to the fast failover path.
    /// On the leader it also moves the lease guard's deadline (the fence),
    /// which otherwise moves only after rounds and would crash-stop a
    /// restart taking longer than the lease: only after the lease was
    /// renewed *and* the leader key read back bound to it, as a round would
    /// have it, so a lost lease or key still stops PostgreSQL in time.
    /// `now` is the time of the round or request that starts it.
    pub fn keepalive(
        &self,
        note: String,
        now: Now,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.keepalive_until(note, now, None)
    }

    /// [`Member::keepalive`] that stops renewing at `until` (monotonic ms),
    /// and then only waits: the lease runs out and the guard stops
    /// PostgreSQL, as if no keepalive had run past it.
    pub fn keepalive_until(
        &self,
        note: String,
        now: Now,
        until: Option<Millis>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let store = self.store.clone();
        let lease = self.lease;
        let key = self.keys.member(&self.spec.name).ok();
        let leader_key = self.keys.leader();
        let me = self.spec.name.clone();
        let fence = self.fence.clone().filter(|_| self.is_leader());
        let status = self.last_status.clone();
        let heartbeat = Duration::from_millis(self.records.settings().heartbeat_ms.max(50));
        let started = std::time::Instant::now();
        async move {
            let mut tick = tokio::time::interval(heartbeat);
            loop {
                tick.tick().await;
                let sent = now.mono + started.elapsed().as_millis() as Millis;
                if until.is_some_and(|until| sent >= until) {
                    return std::future::pending().await;
                }
                if let Some(lease) = lease {
                    let renewed = store.refresh_lease(lease.id).await.is_ok();
                    if let (true, Some(fence)) = (renewed, &fence) {
                        let still_leads = matches!(
                            leader_key.get(store.as_ref()).await,
                            Ok(Some(l)) if l.value.member == me && l.lease == Some(lease.id)
                        );
                        if still_leads {
                            fence(sent + lease.ttl.as_millis() as Millis);
                        }
                    }
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

    /// Retires this member on request (`ctl remove --force`): with the
    /// core's rules for a removal ([`ha::retire`]), stops PostgreSQL, then
    /// records the removal in the store (its status, a request to it
    /// deleted), the history and the events. The rounds that follow keep
    /// PostgreSQL stopped and publish nothing.
    pub async fn retire(&mut self, now: Now) -> Result<String, String> {
        let me = self.spec.name.clone();
        let failed = |what: &str, err: &dyn std::fmt::Display| {
            format!("retiring {me} failed while {what}: {err}; nothing was recorded, try again")
        };
        let records = self
            .read()
            .await
            .map_err(|e| failed("reading the store", &e))?;
        let ask = ha::retire::Ask {
            member: me.clone(),
            force: true,
            has_slot: false,
            by_itself: true,
        };
        ha::retire::admit_removal(&records.to_ha(), &ask, now.wall_ms).map_err(|r| r.message)?;
        self.records = records;
        self.run_steps(
            "retirement",
            &[Action::Stop {
                mode: ha::StopMode::Fast,
            }],
            now,
        )
        .await?;
        let local = self.observe().await;
        let (system_identifier, timeline) = match &local {
            Local::Stopped(s) => (Some(s.system_id), Some(s.timeline)),
            _ => (None, None),
        };
        // Read again: the stop took a while, and the removal holds only
        // against what is current.
        let mut attempts = 0;
        let (records, record) = loop {
            attempts += 1;
            let records = self
                .read()
                .await
                .map_err(|e| failed("reading the store", &e))?;
            let cluster = records.to_ha();
            let removal = ha::retire::admit_removal(&cluster, &ask, now.wall_ms)
                .map_err(|r| format!("{me} stopped its PostgreSQL, but {}", r.message))?;
            let ha::retire::Removal::Record { clear_switchover } = removal else {
                unreachable!("asked of itself, a removal is recorded");
            };
            let record = store::cluster::RemovedMember {
                name: me.clone(),
                system_identifier,
                timeline,
                removed_ms: api::time::now_ms(),
                by: me.clone(),
            };
            let retirement =
                store::cluster::Retirement::against(&records, record.clone(), clear_switchover);
            match self.keys.retire(self.store.as_ref(), &retirement).await {
                Ok(()) => break (records, record),
                Err(store::StoreError::Conflict { .. }) if attempts < 5 => continue,
                Err(err) => return Err(failed("recording the removal", &err)),
            }
        };
        self.last_status = None;
        let cluster = records.to_ha();
        let lsn = cluster.last_primary_lsn.unwrap_or(0);
        if let Err(err) = self
            .keys
            .record_retirement(self.store.as_ref(), &record, cluster.latest_timeline, lsn)
            .await
        {
            tracing::warn!("{me}: removed, but the history entry could not be written: {err}");
        }
        let details = format!(
            "{me} removed from the cluster on request (`pgwarden ctl remove --force`): PostgreSQL stopped, \
             its slot is dropped by the primary; it rejoins only once its data directory is re-cloned"
        );
        self.event("member_removed", details);
        Ok(format!(
            "stopped PostgreSQL and removed {me} from the cluster; to bring it back, empty its data \
             directory{} and restart its agent (it clones afresh)",
            self.pg.data_dir().map(|d| format!(" ({d})")).unwrap_or_default()
        ))
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
                    .is_some_and(|m| m.value.is_running_primary());
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
        let how = self.pg.clone_method();
        self.event(
            "recloned",
            format!("re-cloned from {leader} {how} on request"),
        );
        Ok(())
    }

    /// The steps of a request, stopping at the first that fails.
    pub(super) async fn run_steps(
        &mut self,
        what: &str,
        steps: &[Action],
        now: Now,
    ) -> Result<(), String> {
        for action in steps {
            self.execute(action, now).await.map_err(|err| {
                format!("{what} of {} failed at {action:?}: {err}", self.spec.name)
            })?;
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
