//! The decision core of one member: a state machine with a pure planning
//! step. Each round the agent tells it what it saw ([`Ha::observe`]: timers
//! and memory), asks what to do ([`Ha::plan`]: no mutation), and reports
//! how each action it carried out ended ([`Ha::outcome`]): memory that
//! depends on an action taking effect changes only once it has.

use std::collections::BTreeMap;

use crate::backups;
use crate::candidates::{rank_candidates, switchover_target, switchover_targets, Readiness};
use crate::observation::{
    Cluster, FailsafeList, FailsafePromise, Handoff, Initialize, Leader, Local, Me, MemberView,
    Millis, Observation, Removed, Running, Settings, StoreView, SwitchoverRequest, SyncMode,
};
use crate::plan::{Action, LogRole, Plan, StopMode};
use crate::retry::{self, Failing};
use crate::sync::{self, ANY_STANDBY};
use crate::wal::Position;

/// The decision core of one member. Deterministic: the same observations
/// and outcomes in the same order give the same plans.
#[derive(Clone, Debug)]
pub struct Ha {
    me: Me,
    /// Since when the local PostgreSQL has been down while this member leads.
    pg_down_since: Option<Millis>,
    /// The leader's status revision and since when it has not changed.
    leader_silent: Option<(String, u64, Millis)>,
    /// Since when this member has seen no leader.
    leaderless_since: Option<Millis>,
    /// Since when this standby has not been streaming.
    /// (the upstream it was configured with, since when), so following a
    /// new primary starts the count afresh.
    not_streaming_since: Option<(Option<String>, Millis)>,
    /// When this standby's WAL receiver last heard from its upstream, as
    /// PostgreSQL reported it: (the upstream, when). A receiver that gives
    /// up and starts again forgets it; this does not.
    last_heard: Option<(Option<String>, Millis)>,
    /// Since when this standby, not streaming, has not replayed further:
    /// (its upstream, the furthest WAL position seen, since when). One that
    /// catches up from the archive (restore_command) is not stuck, however
    /// long that takes; a repair waits until it stops moving.
    stalled_since: Option<(Option<String>, u64, Millis)>,
    /// Why the last pg_rewind failed: the next repair re-clones instead.
    rewind_failed: Option<String>,
    /// Why this standby was stopped to be re-cloned: it could not stream
    /// from the leader on a timeline pg_rewind takes for the leader's.
    diverged: Option<String>,
    /// When this member last gave up the leader key because its PostgreSQL
    /// would not come back: it does not race again for a while.
    released_at: Option<Millis>,
    /// The first round's time: a promise given by an earlier run of this
    /// agent died with it, so in failsafe mode one is assumed for a while.
    started_at: Option<Millis>,
    /// The last cluster view and settings, for rounds when the store is
    /// unreachable.
    last_cluster: Option<Cluster>,
    /// Members with slots, and when their status key was last seen.
    slot_members: BTreeMap<String, Millis>,
    /// Where the WAL was when PostgreSQL began waiting for the applied
    /// synchronous names (a primary's memory, see `sync::Floor`).
    sync_floor: Option<sync::Floor>,
    /// The member this one handed over to in a switchover: once it leads,
    /// this cleanly stopped old primary follows it without pg_rewind.
    handed_off: Option<String>,
    /// Why the last hand-over failed: the switchover is given up.
    handoff_failed: Option<String>,
    /// The hand-over in the store and since when this member has seen it.
    handoff_seen: Option<(Handoff, Millis)>,
    /// The switchover request (by when it was asked) and since when, on
    /// this member's own clock, it has been due: the wait for a target
    /// catching up is timed here, not against another host's wall clock.
    switchover_due_seen: Option<(u64, Millis)>,
    /// Since when the member assigned a backup has had no running status.
    backup_taker_missing_since: Option<Millis>,
    /// The action that keeps failing, backed off ([`crate::retry`]).
    failing: Option<Failing>,
    /// Since when this member's own reachability check has failed, without
    /// a pause.
    reach_failing_since: Option<Millis>,
    /// Since when this member has led with its PostgreSQL running as
    /// primary: a reachability grace counts from then at the earliest.
    leading_since: Option<Millis>,
    /// When this leader last asked for a switchover because its check
    /// failed: it asks again no sooner than a grace later.
    reach_asked_at: Option<Millis>,
}

impl Ha {
    pub fn new(me: Me) -> Ha {
        Ha {
            me,
            pg_down_since: None,
            leaderless_since: None,
            not_streaming_since: None,
            last_heard: None,
            stalled_since: None,
            leader_silent: None,
            rewind_failed: None,
            diverged: None,
            released_at: None,
            started_at: None,
            last_cluster: None,
            slot_members: BTreeMap::new(),
            sync_floor: None,
            handed_off: None,
            handoff_failed: None,
            handoff_seen: None,
            switchover_due_seen: None,
            backup_taker_missing_since: None,
            failing: None,
            reach_failing_since: None,
            leading_since: None,
            reach_asked_at: None,
        }
    }

    pub fn me(&self) -> &Me {
        &self.me
    }

    /// How an action of the last plan ended, at `now`: every action the
    /// agent carried out is reported, the one that failed with its error
    /// (the actions after it did not run and are not reported).
    pub fn outcome(&mut self, now: Millis, action: &Action, result: Result<(), &str>) {
        retry::record(&mut self.failing, now, action, result);
        match (action, result) {
            (Action::ReleaseLeader, Ok(())) => self.released_at = Some(now),
            (Action::HandOff { to }, Ok(())) => self.handed_off = Some(to.clone()),
            (Action::AskSwitchover { .. }, Ok(())) => self.reach_asked_at = Some(now),
            // The failure was about the request just deleted, not a next one.
            (Action::ClearSwitchover { .. }, Ok(())) => self.handoff_failed = None,
            (Action::HandOff { .. }, Err(error)) => {
                self.handed_off = None;
                self.handoff_failed = Some(error.to_string());
            }
            (Action::Rewind { .. }, Err(error)) => self.rewind_failed = Some(error.to_string()),
            (Action::Reclone { .. }, Ok(())) => {
                self.diverged = None;
                self.rewind_failed = None;
            }
            // The divergence is still there: the next round re-clones
            // again rather than merely restarting the standby.
            (Action::Reclone { reason, .. }, Err(_)) => self.diverged = Some(reason.clone()),
            (Action::KeepSlots { drop, .. }, Ok(())) => {
                for name in drop {
                    self.slot_members.remove(name);
                }
            }
            _ => {}
        }
    }

    /// One round without the outcomes: [`Ha::observe`], then [`Ha::plan`].
    pub fn decide(&mut self, obs: &Observation) -> Plan {
        self.observe(obs);
        self.plan(obs)
    }

    /// Takes in what this round saw: timers, and the memory that follows
    /// from it alone.
    pub fn observe(&mut self, obs: &Observation) {
        self.started_at.get_or_insert(obs.now);
        self.track(obs);
        if let StoreView::Reachable(cluster) = &obs.store {
            let active = cluster.without_removed();
            self.track_leading(obs, &active);
            self.last_cluster = Some(active);
        }
    }

    /// The action that failed in a row and waits before its next attempt
    /// (initdb, a clone, starting a standby), with its last error.
    pub fn failing(&self) -> Option<&Failing> {
        self.failing.as_ref()
    }

    /// What to do now, given what [`Ha::observe`] took in. An action that
    /// keeps failing waits its turn ([`crate::retry`]).
    pub fn plan(&self, obs: &Observation) -> Plan {
        retry::hold_back(self.failing.as_ref(), obs.now, self.plan_unheld(obs))
    }

    fn plan_unheld(&self, obs: &Observation) -> Plan {
        let role = role_of(&obs.local);
        if let StoreView::Reachable(cluster) = &obs.store {
            if let Some(removed) = cluster.removed.get(&self.me.name) {
                return self.retired(obs, removed);
            }
        }
        if obs.local == Local::Witness {
            return Plan::new(LogRole::Witness, "witness: observing, never a candidate");
        }
        let active = match &obs.store {
            StoreView::Unreachable => return self.store_unreachable(obs, role),
            StoreView::Reachable(cluster) => cluster.without_removed(),
        };
        let cluster = &active;

        if let Some(plan) = self.bootstrap(obs, cluster, role) {
            return plan;
        }
        if let (Some(Initialize::Done { system_id }), Some(local_id)) =
            (&cluster.initialize, system_id(&obs.local))
        {
            if *system_id != local_id {
                return Plan::new(
                    role,
                    format!(
                        "refusing to join: this data directory has system identifier {local_id}, the cluster has {system_id}; \
                         it belongs to another cluster. Move it away and pgwarden will clone this member afresh"
                    ),
                );
            }
        }
        if cluster.settings.paused {
            return self.paused(obs, cluster, role);
        }
        match &cluster.leader {
            Some(leader) if leader.member == self.me.name => self.lead(obs, cluster, leader),
            Some(leader) => self.follow(obs, cluster, leader, role),
            None => self.leaderless(obs, cluster, role),
        }
    }

    /// Timers kept across rounds.
    fn track(&mut self, obs: &Observation) {
        let leader = match &obs.store {
            StoreView::Reachable(cluster) => cluster.leader.as_ref().map(|l| l.member.as_str()),
            StoreView::Unreachable => Some(""),
        };
        match leader {
            None => {
                self.leaderless_since.get_or_insert(obs.now);
            }
            Some(_) => self.leaderless_since = None,
        }
        if let StoreView::Reachable(cluster) = &obs.store {
            let status = cluster.leader.as_ref().map(|l| {
                let revision = cluster.members.get(&l.member).map_or(0, |m| m.revision);
                (l.member.clone(), revision)
            });
            match (status, &self.leader_silent) {
                (Some((name, revision)), Some((seen, seen_revision, _)))
                    if name == *seen && revision == *seen_revision => {}
                (Some((name, revision)), _) => {
                    let seen = obs
                        .statuses_seen
                        .get(&name)
                        .filter(|(seen_revision, at)| *seen_revision == revision && *at <= obs.now)
                        .map_or(obs.now, |(_, at)| *at);
                    self.leader_silent = Some((name, revision, seen));
                }
                (None, _) => self.leader_silent = None,
            }
        }
        match &obs.local {
            Local::Running(running) if !running.primary => {
                if let Some(quiet) = running.receiver_quiet_ms {
                    self.last_heard =
                        Some((running.upstream.clone(), obs.now.saturating_sub(quiet)));
                }
            }
            _ => self.last_heard = None,
        }
        match &obs.local {
            Local::Running(running) if !running.primary && !running.streaming => {
                let same_upstream = self
                    .not_streaming_since
                    .as_ref()
                    .is_some_and(|(upstream, _)| *upstream == running.upstream);
                if !same_upstream {
                    // A receiver still connected but quiet, or one that
                    // gave up on a silent upstream, stopped receiving when
                    // it last heard something.
                    let since = match &self.last_heard {
                        Some((upstream, heard)) if *upstream == running.upstream => *heard,
                        _ => obs.now,
                    };
                    self.not_streaming_since = Some((running.upstream.clone(), since));
                }
                let moving = self
                    .stalled_since
                    .as_ref()
                    .is_none_or(|(upstream, lsn, _)| {
                        *upstream != running.upstream || running.lsn > *lsn
                    });
                if moving {
                    self.stalled_since = Some((running.upstream.clone(), running.lsn, obs.now));
                }
            }
            _ => {
                self.not_streaming_since = None;
                self.stalled_since = None;
            }
        }
        if let Local::Running(running) = &obs.local {
            if !running.primary && running.streaming {
                self.rewind_failed = None;
                self.diverged = None;
                self.handed_off = None;
            }
        }
        if matches!(obs.local, Local::Running(_)) {
            self.pg_down_since = None;
        }
        match obs.reach.fails() {
            Some(_) => {
                self.reach_failing_since.get_or_insert(obs.now);
            }
            None => self.reach_failing_since = None,
        }
        if let StoreView::Reachable(cluster) = &obs.store {
            let handoff = live_handoff(obs, cluster);
            match (handoff, &self.handoff_seen) {
                (Some(handoff), Some((seen, _))) if handoff == seen => {}
                (Some(handoff), _) => self.handoff_seen = Some((handoff.clone(), obs.now)),
                (None, _) => self.handoff_seen = None,
            }
            if cluster.switchover.is_none() {
                self.handoff_failed = None;
            }
            match cluster
                .switchover
                .as_ref()
                .filter(|s| s.is_due(obs.wall_ms))
            {
                Some(due) => {
                    if self
                        .switchover_due_seen
                        .is_none_or(|(asked, _)| asked != due.requested_ms)
                    {
                        self.switchover_due_seen = Some((due.requested_ms, obs.now));
                    }
                }
                None => self.switchover_due_seen = None,
            }
            let taker_missing = cluster
                .backups
                .assignment
                .as_ref()
                .is_some_and(|a| cluster.members.get(&a.member).is_none_or(|m| !m.running));
            match taker_missing {
                true => {
                    self.backup_taker_missing_since.get_or_insert(obs.now);
                }
                false => self.backup_taker_missing_since = None,
            }
        }
    }

    /// What a leading primary remembers: where its WAL was when PostgreSQL
    /// began waiting for the synchronous names it applied, the members it
    /// keeps slots for; and since when its PostgreSQL has been down.
    fn track_leading(&mut self, obs: &Observation, cluster: &Cluster) {
        let leads = cluster
            .leader
            .as_ref()
            .is_some_and(|l| l.member == self.me.name);
        match &obs.local {
            Local::Running(running) if leads && running.primary => {
                self.leading_since.get_or_insert(obs.now);
            }
            _ => self.leading_since = None,
        }
        match &obs.local {
            Local::Running(running) if leads && running.primary && !cluster.settings.paused => {
                sync::observe_floor(cluster, running, &mut self.sync_floor);
                for (name, member) in &cluster.members {
                    if *name != self.me.name && !member.witness {
                        self.slot_members.insert(name.clone(), obs.now);
                    }
                }
            }
            // Paused, the leader keeps its key whatever PostgreSQL does:
            // the grace counts from the resume.
            Local::Starting { .. } | Local::Stopped(_) if leads && !cluster.settings.paused => {
                self.pg_down_since.get_or_insert(obs.now);
            }
            _ => {}
        }
    }

    fn store_unreachable(&self, obs: &Observation, role: LogRole) -> Plan {
        let may_write = match &obs.local {
            Local::Running(running) => running.primary,
            // Not answering the probe does not mean not serving clients.
            Local::Starting { was_primary } => *was_primary,
            _ => {
                return Plan::new(
                    role,
                    "store unreachable: waiting for it; nothing changes without it",
                )
            }
        };
        if !may_write {
            return Plan::new(
                role,
                "store unreachable: keep following, never promote without it",
            );
        }
        let settings = self.settings();
        let margin = demote_margin(&settings, obs.lease_ttl_ms);
        if let Some(valid_until) = obs.lease_valid_until {
            if obs.now + margin < valid_until {
                return Plan::new(
                    role,
                    format!(
                        "store unreachable; leader lease holds {} ms more",
                        valid_until - obs.now
                    ),
                );
            }
        }
        if settings.failsafe {
            if let Some(valid_until) = self.failsafe_valid_until(obs) {
                if obs.now + margin < valid_until {
                    return Plan::new(
                        role,
                        format!(
                            "failsafe: store unreachable and the leader lease running out, but every other member \
                             confirms it follows me (for {} ms more): keep serving writes",
                            valid_until - obs.now
                        ),
                    );
                }
            }
        }
        Plan::new(
            role,
            "store unreachable and the leader lease is running out: demoting (stop accepting writes)",
        )
        .then(Action::Stop {
            mode: StopMode::Immediate,
        })
    }

    /// Until when every other member's failsafe confirmation holds (the
    /// oldest question sent, plus a TTL); `None` unless all confirmed.
    /// "Every other member" is every member of the failsafe list this
    /// leader published: only they may take over while failsafe is on.
    pub fn failsafe_valid_until(&self, obs: &Observation) -> Option<Millis> {
        let cluster = self.last_cluster.as_ref()?;
        let ttl = obs.lease_ttl_ms.map_or(cluster.settings.ttl_ms, |held| {
            held.min(cluster.settings.ttl_ms)
        });
        // The list as read, and the members this round's list may have
        // added: a member on either may take over, so must have confirmed.
        let list = &cluster.failsafe_list.as_ref()?.members;
        let members: std::collections::BTreeSet<&String> =
            list.iter().chain(cluster.members.keys()).collect();
        let mut oldest: Option<Millis> = None;
        for name in members.into_iter().filter(|n| **n != self.me.name) {
            let sent = *obs.failsafe_confirmed.get(name)?;
            oldest = Some(oldest.map_or(sent, |o| o.min(sent)));
        }
        oldest.map(|sent| sent + ttl)
    }

    /// The primary this member promised, in failsafe mode, not to take
    /// over from, while the promise holds. An agent that started less than
    /// two TTLs ago may have promised in its previous run (the promise
    /// lives in the agent's memory), so it assumes it did.
    fn promised(&self, obs: &Observation, settings: &Settings) -> Option<FailsafePromise> {
        if let Some(p) = obs
            .failsafe_promise
            .as_ref()
            .filter(|p| p.leader != self.me.name && obs.now < p.until)
        {
            return Some(p.clone());
        }
        let until = self.started_at? + 2 * settings.ttl_ms;
        (settings.failsafe && obs.now < until).then(|| FailsafePromise {
            leader: "a primary in failsafe mode (this agent may have promised before it restarted)"
                .to_string(),
            until,
        })
    }

    /// Failsafe mode: why this member may not take over. A primary cut off
    /// from the store asks only the members its leader published; another
    /// taking over could not have been asked, so would not have promised.
    /// The list binds only while the leader that published it could be
    /// serving in failsafe mode: not once its status shows it stopped or a
    /// standby (it got there through the store, and becomes a primary
    /// again only through the store).
    fn not_on_failsafe_list(&self, cluster: &Cluster) -> Option<String> {
        let list = cluster.failsafe_list.as_ref()?;
        let stepped_down = cluster
            .members
            .get(&list.leader)
            .is_some_and(|m| !m.primary);
        (cluster.settings.failsafe && !stepped_down && !list.members.contains(&self.me.name)).then(|| {
            format!(
                "not on the failsafe list {} published ({}): if it serves in failsafe mode it would not ask me, \
                 so I may not take over until it has stepped down or a leader lists me",
                list.leader,
                list.members.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    fn settings(&self) -> Settings {
        self.last_cluster
            .as_ref()
            .map(|c| c.settings.clone())
            .unwrap_or_default()
    }

    /// initdb by the member that wins the initialize key; the others wait
    /// for the leader and clone.
    fn bootstrap(&self, obs: &Observation, cluster: &Cluster, role: LogRole) -> Option<Plan> {
        match (&cluster.initialize, &obs.local) {
            // The first primary could never fail back to a nofailover
            // member: once it lost the key, nobody else might take over.
            (None, _) if self.me.nofailover => Some(Plan::new(
                role,
                "no cluster yet: tagged nofailover, waiting for another member to initialise it",
            )),
            (None, Local::Empty) => Some(
                Plan::new(role, "no cluster yet: claiming the right to initialise it")
                    .then(Action::ClaimInitialize),
            ),
            (None, _) => Some(
                Plan::new(
                    role,
                    "no cluster yet: adopting the existing data directory as its first member",
                )
                .then(Action::ClaimInitialize),
            ),
            (Some(Initialize::Claimed { by }), local) if *by == self.me.name => Some(match local {
                Local::Empty => {
                    Plan::new(role, "initialising the cluster (initdb)").then(Action::InitDb)
                }
                Local::Running(running) if running.primary => {
                    let plan = Plan::new(
                        LogRole::Primary,
                        "cluster initialised: taking the leader key",
                    );
                    let plan = if cluster.leader.is_none() {
                        plan.then(Action::AcquireLeader)
                    } else {
                        plan
                    };
                    // Before anyone can clone: the synchronous set names
                    // this primary, so no standby is promoted over it
                    // without having been synchronous.
                    let plan = if cluster.settings.synchronous_mode.on() && cluster.sync.is_none() {
                        plan.then(Action::PublishSync {
                            members: Vec::new(),
                            quorum: 0,
                        })
                    } else {
                        plan
                    };
                    plan.then(Action::CompleteInitialize {
                        system_id: running.system_id,
                    })
                }
                Local::Stopped(_) => {
                    Plan::new(role, "starting the adopted data directory as primary")
                        .then(Action::StartPrimary)
                }
                _ => Plan::new(role, "waiting for PostgreSQL to come up after initdb"),
            }),
            (Some(Initialize::Claimed { by }), _) => Some(Plan::new(
                role,
                format!("waiting for {by} to initialise the cluster"),
            )),
            (Some(Initialize::Done { .. }), _) => None,
        }
    }

    fn paused(&self, obs: &Observation, cluster: &Cluster, role: LogRole) -> Plan {
        let leads = cluster
            .leader
            .as_ref()
            .is_some_and(|l| l.member == self.me.name);
        let plan = Plan::new(
            role,
            "paused: observing and publishing, no automatic action",
        );
        // A manual failover is the operator's action, not an automatic
        // one: it is what pause leaves them to do.
        let failover_to = match &cluster.switchover {
            Some(SwitchoverRequest {
                from: None,
                to: Some(to),
                ..
            }) => Some(to.as_str()),
            _ => None,
        };
        match &obs.local {
            Local::Running(running) if leads && running.primary => {
                let mut plan = plan.then(Action::RenewLeader);
                if cluster.removed.keys().any(|name| *name != self.me.name) {
                    // Removing a member is the operator's action, not an
                    // automatic one: its slot goes even while paused (and
                    // only its slot: retention waits for the resume).
                    let names = self
                        .slot_members
                        .keys()
                        .filter(|name| !cluster.removed.contains_key(*name))
                        .cloned()
                        .collect();
                    let drop = cluster
                        .removed
                        .keys()
                        .filter(|name| **name != self.me.name)
                        .cloned()
                        .collect();
                    plan = plan.then(Action::KeepSlots { names, drop });
                }
                match failover_to {
                    Some(to) => {
                        let outcome = if to == self.me.name {
                            format!("manual failover to {to} done")
                        } else {
                            format!(
                                "manual failover to {to} not carried out: {} leads and serves",
                                self.me.name
                            )
                        };
                        plan.then(Action::ClearSwitchover { outcome })
                    }
                    None => plan,
                }
            }
            Local::Running(running)
                if cluster.leader.is_none()
                    && !running.primary
                    && failover_to == Some(self.me.name.as_str())
                    && !obs.reach.may_take_over() =>
            {
                Plan::new(
                    LogRole::Replica,
                    "paused, and a manual failover names me, but my reachability check does not pass: not taking over",
                )
            }
            Local::Running(running)
                if cluster.leader.is_none()
                    && !running.primary
                    && failover_to == Some(self.me.name.as_str()) =>
            {
                let plan = Plan::new(
                    LogRole::Replica,
                    "paused, but a manual failover names me: taking over",
                )
                .then(Action::AcquireLeader);
                self.promote_plan(cluster, plan, "manual failover")
            }
            _ => plan,
        }
    }

    /// This member holds the leader key.
    fn lead(&self, obs: &Observation, cluster: &Cluster, leader: &Leader) -> Plan {
        let settings = &cluster.settings;
        let serving = matches!(&obs.local, Local::Running(running) if running.primary);
        if let Some(SwitchoverRequest {
            from: None,
            to: Some(to),
            ..
        }) = &cluster.switchover
        {
            if *to != self.me.name && !serving {
                return Plan::new(
                    role_of(&obs.local),
                    format!("manual failover to {to} asked while my PostgreSQL does not serve: giving up the leader key"),
                )
                .then(Action::Stop {
                    mode: StopMode::Immediate,
                })
                .then(Action::ReleaseLeader);
            }
        }
        match &obs.local {
            Local::Running(running) if running.primary => {
                let margin = demote_margin(settings, obs.lease_ttl_ms);
                let lease_ok = obs
                    .lease_valid_until
                    .is_some_and(|until| obs.now + margin < until);
                if !lease_ok {
                    return Plan::new(
                        LogRole::Primary,
                        format!("cannot confirm the leader lease (term {}): demoting before it can expire", leader.term),
                    )
                    .then(Action::Stop {
                        mode: StopMode::Immediate,
                    });
                }
                let clear = match self.switchover_as_leader(obs, cluster, running) {
                    Some(SwitchoverStep::HandOff(plan)) => return plan,
                    Some(SwitchoverStep::Clear(outcome)) => Some(outcome),
                    Some(SwitchoverStep::Wait) | None => None,
                };
                let mut plan =
                    Plan::new(LogRole::Primary, format!("leading (term {})", leader.term))
                        .then(Action::RenewLeader);
                for action in
                    sync::manage(&self.me.name, cluster, running, self.sync_floor.as_ref())
                {
                    plan = plan.then(action);
                }
                let (names, drop) = self.slot_names(obs.now, cluster);
                plan = plan.then(Action::KeepSlots { names, drop });
                let list = FailsafeList {
                    leader: self.me.name.clone(),
                    members: cluster.members.keys().cloned().collect(),
                };
                if cluster.settings.failsafe && cluster.failsafe_list.as_ref() != Some(&list) {
                    plan = plan.then(Action::PublishFailsafe {
                        members: list.members.into_iter().collect(),
                    });
                }
                if let Some(outcome) = clear {
                    plan.note = format!("{}; {outcome}", plan.note);
                    plan = plan.then(Action::ClearSwitchover { outcome });
                } else if cluster.switchover.is_none() {
                    match self.reach_handover(obs, cluster, running) {
                        Some(Ok(action)) => {
                            if let Action::AskSwitchover { reason, .. } = &action {
                                plan.note = format!("{}; {reason}", plan.note);
                            }
                            plan = plan.then(action);
                        }
                        Some(Err(note)) => plan.note = format!("{}; {note}", plan.note),
                        None => {}
                    }
                }
                let taker_missing_for = self
                    .backup_taker_missing_since
                    .map_or(0, |since| obs.now.saturating_sub(since));
                let (backup, waiting) = backups::plan(
                    &self.me.name,
                    cluster,
                    running,
                    obs.wall_ms,
                    taker_missing_for,
                );
                if let Some(why) = waiting {
                    plan.note = format!("{}; {why}", plan.note);
                }
                plan.actions.extend(backup);
                plan
            }
            Local::Running(_) if !obs.reach.may_take_over() => Plan::new(
                LogRole::Replica,
                format!(
                    "holding the leader key (term {}) as a standby, but my reachability check does not pass: \
                     giving it up, so that a member the clients reach takes over",
                    leader.term
                ),
            )
            .then(Action::ReleaseLeader),
            Local::Running(_) => self.promote_plan(
                cluster,
                Plan::new(
                    LogRole::Replica,
                    format!("holding the leader key (term {}): promoting", leader.term),
                ),
                "promoted after winning the leader race",
            ),
            Local::Starting { .. } => {
                let down_for = self.pg_down_since.map_or(0, |since| obs.now - since);
                if down_for < settings.restart_grace_ms {
                    Plan::new(
                        LogRole::Primary,
                        "PostgreSQL does not accept connections yet",
                    )
                    .then(Action::RenewLeader)
                } else {
                    Plan::new(
                        LogRole::Stopped,
                        format!(
                            "PostgreSQL has not accepted connections for {down_for} ms: stopping it and \
                             releasing the leader key so a standby takes over now"
                        ),
                    )
                    .then(Action::Stop {
                        mode: StopMode::Immediate,
                    })
                    .then(Action::ReleaseLeader)
                }
            }
            Local::Stopped(stopped) => {
                let down_for = self.pg_down_since.map_or(0, |since| obs.now - since);
                if stopped.was_primary && down_for < settings.restart_grace_ms {
                    Plan::new(
                        LogRole::Primary,
                        format!(
                            "PostgreSQL is down ({} ms): restarting it in place",
                            down_for
                        ),
                    )
                    .then(Action::RenewLeader)
                    .then(Action::StartPrimary)
                } else {
                    Plan::new(
                        LogRole::Stopped,
                        format!(
                            "PostgreSQL is still down after {} ms: releasing the leader key so a standby takes over now",
                            down_for
                        ),
                    )
                    .then(Action::ReleaseLeader)
                    .then(Action::Stop {
                        mode: StopMode::Immediate,
                    })
                }
            }
            Local::Empty | Local::Witness => Plan::new(
                role_of(&obs.local),
                "holding the leader key without data: releasing it",
            )
            .then(Action::ReleaseLeader),
        }
    }

    /// Whether this member should decide again as soon as another
    /// member's status changes, not at its next heartbeat: a standby that
    /// receives nothing, or a member without a leader, waits on what the
    /// others publish (that they receive nothing either, their final
    /// positions) to take over.
    pub fn awaits_member_news(&self) -> bool {
        self.not_streaming_since.is_some() || self.leaderless_since.is_some()
    }

    /// When the silence timers of the fast path ([`Self::quiet_leader`])
    /// next run out, on the observation clock: a standby that receives
    /// nothing from a leader that has fallen silent decides then, not up to
    /// a heartbeat later. `None` when no such timer runs. Only when to look
    /// again: the decision itself is the round's, as always.
    pub fn fast_path_due(&self, heartbeat_ms: Millis) -> Option<Millis> {
        // Not receiving while not listening: the receiver was let go.
        self.not_streaming_since.as_ref()?;
        let stopped_listening = matches!(&self.not_streaming_since, Some((None, _)));
        self.silence_ends(heartbeat_ms, stopped_listening)
    }

    /// When the leader has been silent for two heartbeats and — unless
    /// this standby stopped listening to it — this standby has received
    /// nothing for one (no blip, no mere reconnect).
    fn silence_ends(&self, heartbeat_ms: Millis, stopped_listening: bool) -> Option<Millis> {
        let (_, _, silent_since) = self.leader_silent.as_ref()?;
        let silent_enough = silent_since + 2 * heartbeat_ms;
        if stopped_listening {
            return Some(silent_enough);
        }
        let (_, not_streaming_since) = self.not_streaming_since.as_ref()?;
        Some(silent_enough.max(not_streaming_since + heartbeat_ms))
    }

    /// The fast path of synchronous mode. A primary acknowledges a commit
    /// only after a synchronous standby has it; once no synchronous standby
    /// (and no standby at all) receives from it and its agent has fallen
    /// silent in the store, it can acknowledge nothing more. The most
    /// advanced synchronous standby then deposes it without waiting out its
    /// lease: the store transaction holds only while the leader key and the
    /// synchronous set are unchanged, so a primary that is alive after all
    /// can neither change the set nor keep the key unnoticed.
    fn fast_failover(
        &self,
        obs: &Observation,
        cluster: &Cluster,
        leader: &Leader,
        running: &Running,
        role: LogRole,
    ) -> Option<Plan> {
        let name = &leader.member;
        let silent_for = self.quiet_leader(obs, cluster, leader, running)?;
        let sync = cluster.sync.as_ref().filter(|s| s.leader == *name)?;
        if !sync.members.contains(&self.me.name) {
            return None;
        }
        let mut view = self.with_fresh_self(obs, cluster, running);
        view.members.remove(name);
        let (ranked, _) = rank_candidates(&view);
        if ranked.first().map(|c| c.name.as_str()) != Some(self.me.name.as_str()) {
            return None;
        }
        let plan = Plan::new(
            role,
            format!(
                "primary {name} silent for {silent_for} ms and no standby receives from it: it can acknowledge \
                 nothing more, deposing it (term {}) and taking over",
                leader.term
            ),
        )
        .then(Action::DeposeLeader { leader: name.clone() })
        .then(Action::AcquireLeader);
        Some(self.promote_plan(
            cluster,
            plan,
            "fast failover: the synchronous primary went silent",
        ))
    }

    /// In synchronous mode, how long the leader has been silent in the
    /// store while no standby receives from it — this one neither for a
    /// heartbeat (or it stopped listening) — when that is no blip and no
    /// promise or switchover explains it: the primary cannot acknowledge
    /// anything more.
    fn quiet_leader(
        &self,
        obs: &Observation,
        cluster: &Cluster,
        leader: &Leader,
        running: &Running,
    ) -> Option<Millis> {
        let settings = &cluster.settings;
        let name = &leader.member;
        if !settings.synchronous_mode.on() || running.streaming {
            return None;
        }
        if self.promised(obs, settings).is_some() || self.not_on_failsafe_list(cluster).is_some() {
            // It may be serving on my word: silent in the store is expected.
            return None;
        }
        let switching_over = cluster
            .switchover
            .as_ref()
            .is_some_and(|s| s.from.as_deref() == Some(name.as_str()) && s.is_due(obs.wall_ms));
        if switching_over {
            // It stops on purpose and hands over to the switchover's target;
            // silence is expected (a shutdown waits for the archiver, for
            // one). Should it die instead, its lease still runs out.
            return None;
        }
        if cluster.members.get(name).is_some_and(|view| !view.running) {
            // It said its PostgreSQL is down: it is starting it again in
            // place (quiet while pg_ctl waits for crash recovery), or it
            // gives up the key after the restart grace; its lease covers
            // an agent that died meanwhile.
            return None;
        }
        let someone_streams = cluster.members.iter().any(|(member, view)| {
            member != name
                && *member != self.me.name
                && view.streaming
                && view.upstream.as_deref() == Some(name)
        });
        if someone_streams {
            return None;
        }
        let since = match &self.leader_silent {
            Some((silent, _, since)) if silent == name => *since,
            _ => return None,
        };
        let due = self.silence_ends(settings.heartbeat_ms, running.upstream.is_none())?;
        (obs.now >= due).then(|| obs.now - since)
    }

    /// Quorum commit: a member of the synchronous set stops receiving from
    /// a primary that has fallen silent, so that its position is final and
    /// a candidate may count it ([`crate::candidates`]); it follows the
    /// primary again as soon as that publishes its status again.
    fn detach_from_quiet_leader(
        &self,
        obs: &Observation,
        cluster: &Cluster,
        leader: &Leader,
        running: &Running,
        role: LogRole,
    ) -> Option<Plan> {
        if cluster.settings.synchronous_mode != SyncMode::Quorum {
            return None;
        }
        let name = &leader.member;
        cluster
            .sync
            .as_ref()
            .filter(|s| s.leader == *name && s.members.contains(&self.me.name))?;
        let silent_for = self.quiet_leader(obs, cluster, leader, running)?;
        let plan = match &running.upstream {
            Some(_) => Plan::new(
                role,
                format!(
                    "primary {name} silent for {silent_for} ms and no standby receives from it: \
                     no longer listening to it, so that the synchronous set can choose who takes over"
                ),
            )
            .then(Action::Follow { upstream: None }),
            None => Plan::new(
                role,
                format!(
                    "primary {name} silent for {silent_for} ms: not listening to it, waiting for the synchronous set \
                     to choose who takes over"
                ),
            ),
        };
        Some(plan)
    }

    /// Promotion, in synchronous mode with the published set reset to this
    /// leader first and PostgreSQL waiting for any standby until the
    /// synchronous set is named again.
    fn promote_plan(&self, cluster: &Cluster, mut plan: Plan, reason: &str) -> Plan {
        if cluster.settings.synchronous_mode.on() {
            plan = plan
                .then(Action::PublishSync {
                    members: Vec::new(),
                    quorum: 0,
                })
                .then(Action::ApplySynchronous {
                    names: vec![ANY_STANDBY.to_string()],
                    count: 1,
                    quorum: cluster.settings.synchronous_mode == SyncMode::Quorum,
                });
        }
        // The standbys' slots at once: they follow the new leader as soon
        // as the key changes, and until their slot exists they cannot
        // stream, nor confirm the commits waiting for them.
        let slots = cluster
            .members
            .iter()
            .filter(|(name, member)| **name != self.me.name && !member.witness)
            .map(|(name, _)| name.clone())
            .collect();
        plan.then(Action::Promote)
            .then(Action::RecordHistory {
                reason: reason.to_string(),
            })
            .then(Action::KeepSlots {
                names: slots,
                drop: Vec::new(),
            })
    }

    /// Another member holds the leader key.
    fn follow(&self, obs: &Observation, cluster: &Cluster, leader: &Leader, role: LogRole) -> Plan {
        let name = &leader.member;
        let leader_running = cluster
            .members
            .get(name)
            .is_some_and(|m| m.running && m.primary);
        match &obs.local {
            Local::Running(running) if running.primary => Plan::new(
                LogRole::Primary,
                format!(
                    "{name} holds the leader key (term {}): demoting, no writes here any more",
                    leader.term
                ),
            )
            .then(Action::Stop {
                mode: StopMode::Immediate,
            }),
            Local::Running(running) => {
                if let Some(plan) = self.fast_failover(obs, cluster, leader, running, role) {
                    return plan;
                }
                if let Some(plan) =
                    self.detach_from_quiet_leader(obs, cluster, leader, running, role)
                {
                    return plan;
                }
                if running.upstream.as_deref() != Some(name) {
                    return Plan::new(role, format!("following the new primary {name}")).then(
                        Action::Follow {
                            upstream: Some(name.clone()),
                        },
                    );
                }
                // Not streaming and not replaying either: WAL fetched from
                // the archive moves the position, a fork does not.
                let stuck_for = self
                    .stalled_since
                    .as_ref()
                    .map_or(0, |(_, _, since)| obs.now - since);
                if running.timeline < cluster.latest_timeline && stuck_for > cluster.settings.ttl_ms
                {
                    return Plan::new(
                        role,
                        format!(
                            "on timeline {} and neither streaming from {name} nor replaying for {stuck_for} ms: stopping to rewind onto timeline {}",
                            running.timeline, cluster.latest_timeline
                        ),
                    )
                    .then(Action::Stop { mode: StopMode::Fast });
                }
                if leader_running && stuck_for > 2 * cluster.settings.ttl_ms {
                    // Two promotions picked the same timeline number (the
                    // first one's history never reached the store): pg_rewind
                    // sees one timeline and rewinds nothing.
                    let why = format!(
                        "neither streaming from {name} nor replaying for {stuck_for} ms although on timeline {} like the cluster: \
                         its WAL forked on a timeline of the same number, which pg_rewind cannot repair",
                        running.timeline
                    );
                    return Plan::new(role, format!("{why}; stopping to re-clone"))
                        .then(Action::Stop {
                            mode: StopMode::Fast,
                        })
                        .then(Action::Reclone {
                            leader: name.clone(),
                            reason: why,
                        })
                        .then(Action::StartReplica {
                            upstream: Some(name.clone()),
                        });
                }
                Plan::new(role, format!("following {name}"))
            }
            Local::Starting { was_primary: true } => Plan::new(
                role,
                format!("{name} leads but this primary does not answer and may still serve clients: stopping it"),
            )
            .then(Action::Stop {
                mode: StopMode::Immediate,
            }),
            Local::Starting { .. } => Plan::new(role, "PostgreSQL is starting"),
            _ if !leader_running => {
                Plan::new(role, format!("waiting for the primary {name} to run"))
            }
            Local::Stopped(_) if self.diverged.is_some() => {
                let why = self.diverged.clone().unwrap_or_default();
                Plan::new(role, format!("re-cloning from {name}: {why}"))
                    .then(Action::Reclone {
                        leader: name.clone(),
                        reason: why,
                    })
                    .then(Action::StartReplica {
                        upstream: Some(name.clone()),
                    })
            }
            Local::Stopped(stopped)
                if stopped.was_primary && self.handed_off.as_deref() == Some(name.as_str()) =>
            {
                Plan::new(
                    role,
                    format!("following {name}, which took over from me in a switchover: it has all my WAL, no rewind needed"),
                )
                .then(Action::StartReplica {
                    upstream: Some(name.clone()),
                })
            }
            Local::Stopped(stopped)
                if stopped.was_primary || stopped.timeline < cluster.latest_timeline =>
            {
                let why = if stopped.was_primary {
                    "it ran as a primary and may hold WAL the new primary never had".to_string()
                } else {
                    format!(
                        "it is on timeline {}, the cluster on {}",
                        stopped.timeline, cluster.latest_timeline
                    )
                };
                match &self.rewind_failed {
                    Some(error) => Plan::new(
                        role,
                        format!("re-cloning from {name}: pg_rewind failed ({error})"),
                    )
                    .then(Action::Reclone {
                        leader: name.clone(),
                        reason: format!("pg_rewind failed: {error}"),
                    }),
                    None => Plan::new(role, format!("rewinding onto {name}: {why}")).then(
                        Action::Rewind {
                            leader: name.clone(),
                        },
                    ),
                }
                .then(Action::StartReplica {
                    upstream: Some(name.clone()),
                })
            }
            Local::Stopped(_) => Plan::new(role, format!("starting as a standby of {name}")).then(
                Action::StartReplica {
                    upstream: Some(name.clone()),
                },
            ),
            Local::Empty => Plan::new(role, format!("cloning from {name}"))
                .then(Action::CloneFrom {
                    leader: name.clone(),
                })
                .then(Action::StartReplica {
                    upstream: Some(name.clone()),
                }),
            Local::Witness => Plan::new(LogRole::Witness, "witness"),
        }
    }

    /// Nobody holds the leader key: fail over to the best candidate.
    fn leaderless(&self, obs: &Observation, cluster: &Cluster, role: LogRole) -> Plan {
        let running = match &obs.local {
            Local::Running(running) => running,
            Local::Stopped(stopped) => {
                let (others, _) = rank_candidates(cluster);
                if stopped.was_primary && others.iter().any(|c| c.name != self.me.name) {
                    return Plan::new(
                        role,
                        "no leader: a former primary waits for the new one, to rewind onto it",
                    );
                }
                return Plan::new(
                    role,
                    "no leader: starting as a standby so a candidate can be chosen",
                )
                .then(Action::StartReplica { upstream: None });
            }
            Local::Empty => return Plan::new(role, "no leader to clone from: waiting"),
            Local::Starting { was_primary: true } => {
                return Plan::new(
                    role,
                    "no leader, and this primary does not answer: stopping it rather than let it serve without the key",
                )
                .then(Action::Stop {
                    mode: StopMode::Immediate,
                })
            }
            Local::Starting { .. } | Local::Witness => return Plan::new(role, "no leader: waiting"),
        };
        // A primary that does not take the key now stops accepting writes:
        // whoever takes it will promote.
        let wait = |note: String| {
            if running.primary {
                Plan::new(
                    LogRole::Primary,
                    format!("{note}; demoting meanwhile: no writes without the leader key"),
                )
                .then(Action::Stop {
                    mode: StopMode::Immediate,
                })
            } else {
                Plan::new(role, note)
            }
        };
        if let Some(released) = self.released_at {
            if obs.now - released < 2 * cluster.settings.ttl_ms {
                return wait(
                    "no leader: I just gave up leadership, leaving the race to the others".into(),
                );
            }
        }
        if !running.primary {
            if let Some(why) = self.not_on_failsafe_list(cluster) {
                return wait(format!("no leader, but {why}"));
            }
            if let Some(promise) = self.promised(obs, &cluster.settings) {
                return wait(format!(
                    "no leader, but I confirmed to {} that I follow it (failsafe, store outage): not racing for {} ms more",
                    promise.leader,
                    promise.until - obs.now
                ));
            }
        }
        if cluster.settings.synchronous_mode == SyncMode::Quorum
            && !running.primary
            && running.upstream.is_some()
        {
            // Quorum commit: a candidate counts only members that can
            // receive nothing more from the old primary.
            return Plan::new(
                role,
                "no leader: no longer listening to the old primary, so that the synchronous set can choose who takes over",
            )
            .then(Action::Follow { upstream: None });
        }
        let view = self.with_fresh_self(obs, cluster, running);
        let (ranked, excluded) = rank_candidates(&view);
        if let Some(plan) = self.leaderless_by_request(obs, cluster, running, &ranked) {
            return match plan {
                Ok(plan) => plan,
                Err(note) => wait(note),
            };
        }
        let waited = self.leaderless_since.map_or(0, |since| obs.now - since);
        let Some(best) = ranked.first() else {
            let reasons: Vec<String> = excluded
                .iter()
                .map(|(name, why)| format!("{name}: {why}"))
                .collect();
            return wait(format!(
                "no leader and no member may take over ({})",
                reasons.join("; ")
            ));
        };
        let me_ranked = ranked.iter().position(|c| c.name == self.me.name);
        let race = match me_ranked {
            Some(0) => format!(
                "no leader: I am the best candidate (WAL position {}), taking over",
                Position(best.lsn)
            ),
            Some(_) if waited >= cluster.settings.ttl_ms => format!(
                "no leader for {waited} ms and {} has not taken over: racing for leadership",
                best.name
            ),
            Some(_) => {
                return wait(format!(
                    "no leader: {} is the better candidate, waiting for it",
                    best.name
                ))
            }
            None => {
                let why = excluded
                    .get(&self.me.name)
                    .map(|why| why.to_string())
                    .unwrap_or_default();
                return wait(format!(
                    "no leader: I may not take over ({why}); waiting for {}",
                    best.name
                ));
            }
        };
        let plan = Plan::new(role, race).then(Action::AcquireLeader);
        if running.primary {
            plan
        } else {
            self.promote_plan(cluster, plan, "failover: the leader key expired")
        }
    }

    /// A switchover asked of this leader: when it is due and the target
    /// can take over, stop cleanly and hand over; a request that no longer
    /// applies is cleared, saying why.
    fn switchover_as_leader(
        &self,
        obs: &Observation,
        cluster: &Cluster,
        running: &Running,
    ) -> Option<SwitchoverStep> {
        let request = cluster.switchover.as_ref()?;
        let me = self.me.name.as_str();
        if let Some(handoff) = &request.handoff {
            let outcome = if handoff.to == me {
                format!("switchover from {} to {me} done", handoff.from)
            } else {
                format!(
                    "switchover from {} to {} did not finish: {} did not take over in time, {me} leads now",
                    handoff.from, handoff.to, handoff.to
                )
            };
            return Some(SwitchoverStep::Clear(outcome));
        }
        let Some(from) = &request.from else {
            let outcome = match &request.to {
                Some(to) if to == me => format!("manual failover to {me} done"),
                Some(to) => {
                    format!("manual failover to {to} not carried out: {me} leads and serves")
                }
                None => format!("manual failover done: {me} leads"),
            };
            return Some(SwitchoverStep::Clear(outcome));
        };
        if from != me {
            let outcome =
                format!("switchover from {from} dropped: {from} no longer leads, {me} does");
            return Some(SwitchoverStep::Clear(outcome));
        }
        if let Some(error) = &self.handoff_failed {
            let outcome = format!("switchover from {me} failed and was given up: {error}");
            return Some(SwitchoverStep::Clear(outcome));
        }
        if !request.is_due(obs.wall_ms) {
            return None;
        }
        let to = match self.switchover_target(cluster, running, request.to.as_deref()) {
            Ok(Some(to)) => to,
            Ok(None) => {
                let waited = self
                    .switchover_due_seen
                    .filter(|(asked, _)| *asked == request.requested_ms)
                    .map_or(0, |(_, since)| obs.now.saturating_sub(since));
                let bound = crate::switchover::catch_up_bound_ms(cluster.settings.ttl_ms);
                if waited < bound {
                    return Some(SwitchoverStep::Wait);
                }
                let outcome = format!(
                    "switchover from {me} cancelled: {} has not replayed the switch to timeline {} within {bound} ms",
                    request.to.as_deref().unwrap_or("no standby"),
                    running.timeline
                );
                return Some(SwitchoverStep::Clear(outcome));
            }
            Err(why) => {
                let outcome = format!("switchover from {me} cancelled: {why}");
                return Some(SwitchoverStep::Clear(outcome));
            }
        };
        Some(SwitchoverStep::HandOff(
            Plan::new(
                LogRole::Primary,
                format!(
                    "switchover to {to}: stopping cleanly, {to} takes over once it has received all my WAL"
                ),
            )
            .then(Action::Stop {
                mode: StopMode::Fast,
            })
            .then(Action::HandOff { to }),
        ))
    }

    /// A leader whose reachability check fails: once it has failed for
    /// the grace (counted from when this member began to lead at the
    /// earliest, and a grace after its last such request), it asks for a
    /// switchover to the best standby that streams from it, is caught up
    /// (within `maximum_lag_on_failover`) and passes its own check. With
    /// none, it stays: a primary its clients may not reach beats none.
    /// `None`: its check does not fail; `Err`: waiting, saying why.
    fn reach_handover(
        &self,
        obs: &Observation,
        cluster: &Cluster,
        running: &Running,
    ) -> Option<Result<Action, String>> {
        let detail = obs.reach.fails()?;
        let settings = &cluster.settings;
        let grace = settings.reachability_grace_ms;
        let since = self
            .reach_failing_since
            .unwrap_or(obs.now)
            .max(self.leading_since.unwrap_or(obs.now));
        let failing_for = obs.now.saturating_sub(since);
        let me = self.me.name.as_str();
        if failing_for < grace {
            return Some(Err(format!(
                "my reachability check fails ({detail}) for {failing_for} ms: handing over to a standby \
                 that passes once it has failed for {grace} ms"
            )));
        }
        if let Some(asked) = self
            .reach_asked_at
            .filter(|asked| obs.now.saturating_sub(*asked) < grace)
        {
            return Some(Err(format!(
                "my reachability check fails ({detail}); a switchover asked {} ms ago did not happen, \
                 asking again once {grace} ms have passed",
                obs.now - asked
            )));
        }
        let caught_up = |name: &String| {
            cluster.members.get(name).is_some_and(|m| {
                m.lsn.is_some_and(|lsn| {
                    running.lsn.saturating_sub(lsn) <= settings.maximum_lag_on_failover
                })
            })
        };
        let target = switchover_targets(me, running.timeline, &cluster.members)
            .into_iter()
            .find(|(name, readiness)| *readiness == Readiness::Ready && caught_up(name));
        let Some((to, _)) = target else {
            return Some(Err(format!(
                "my reachability check fails ({detail}) for {failing_for} ms, but no standby that streams \
                 from me and is caught up passes its own: staying primary (a primary the clients may not \
                 reach beats none)"
            )));
        };
        let reason = format!(
            "my reachability check has failed for {failing_for} ms ({detail}) and {to} passes its own: \
             asking for a switchover to {to}"
        );
        Some(Ok(Action::AskSwitchover { to, reason }))
    }

    /// Who takes over in a switchover: `to` if it may, else the best
    /// standby streaming from this primary. `Ok(None)`: a target streams
    /// from me but is still catching up to my timeline, so wait for it.
    fn switchover_target(
        &self,
        cluster: &Cluster,
        running: &Running,
        to: Option<&str>,
    ) -> Result<Option<String>, String> {
        let me = self.me.name.as_str();
        if let Some(to) = to {
            let view = cluster
                .members
                .get(to)
                .ok_or_else(|| format!("{to} has no status in the store"))?;
            return match switchover_target(me, running.timeline, to, view) {
                Ok(Readiness::Ready) => Ok(Some(to.to_string())),
                Ok(Readiness::CatchingUp) => Ok(None),
                Err(why) => Err(format!("{to} may not take over: {why}")),
            };
        }
        match switchover_targets(me, running.timeline, &cluster.members).first() {
            Some((best, Readiness::Ready)) => Ok(Some(best.clone())),
            Some((_, Readiness::CatchingUp)) => Ok(None),
            None => Err(format!("no standby may take over from {me}")),
        }
    }

    /// With no leader: a hand-over in progress, or a manual failover, says
    /// who takes the key. `Ok`: the plan; `Err`: wait, saying why; `None`:
    /// no request applies (any more), the usual race decides.
    fn leaderless_by_request(
        &self,
        obs: &Observation,
        cluster: &Cluster,
        running: &Running,
        ranked: &[crate::candidates::Candidate],
    ) -> Option<Result<Plan, String>> {
        let request = cluster.switchover.as_ref()?;
        let me = self.me.name.as_str();
        if let Some(handoff) = live_handoff(obs, cluster) {
            // Someone was promoted, or wrote, after the hand-over: it is
            // over, and honouring it could pass over acknowledged commits.
            let moved_on = cluster.latest_timeline > handoff.timeline
                || cluster
                    .last_primary_lsn
                    .is_some_and(|lsn| lsn > handoff.final_lsn);
            if moved_on {
                return None;
            }
            let since = self
                .handoff_seen
                .as_ref()
                .filter(|(seen, _)| seen == handoff)
                .map_or(obs.now, |(_, since)| *since);
            let waited = obs.now - since;
            // A candidate that died midway must not block the cluster: past
            // a TTL the usual failover takes over.
            if waited >= cluster.settings.ttl_ms {
                return None;
            }
            if handoff.to != me {
                return Some(Err(format!(
                    "switchover from {} to {} under way: not racing",
                    handoff.from, handoff.to
                )));
            }
            if !obs.reach.may_take_over() {
                return Some(Err(format!(
                    "switchover from {} to me under way, but my reachability check does not pass: \
                     not taking over (past a TTL a member that passes does)",
                    handoff.from
                )));
            }
            if running.lsn <= handoff.final_lsn {
                return Some(Err(format!(
                    "switchover from {}: waiting to receive its WAL up to {} (at {})",
                    handoff.from,
                    Position(handoff.final_lsn),
                    Position(running.lsn)
                )));
            }
            let plan = Plan::new(
                LogRole::Replica,
                format!(
                    "switchover from {}: I have all its WAL (up to {}), taking over",
                    handoff.from,
                    Position(handoff.final_lsn)
                ),
            )
            .then(Action::AcquireLeader);
            return Some(Ok(self.promote_plan(
                cluster,
                plan,
                &format!("switchover from {}", handoff.from),
            )));
        }
        let (None, Some(to)) = (&request.from, &request.to) else {
            return None;
        };
        if !ranked.iter().any(|c| c.name == *to) {
            // It may not take over: the usual race decides, and the new
            // leader clears the request saying so.
            return None;
        }
        if to != me {
            return Some(Err(format!("manual failover to {to}: waiting for it")));
        }
        let plan = Plan::new(LogRole::Replica, "manual failover to me: taking over")
            .then(Action::AcquireLeader);
        Some(Ok(self.promote_plan(cluster, plan, "manual failover")))
    }

    /// The cluster view with this member's own entry from its fresh local
    /// observation rather than its last published status.
    fn with_fresh_self(&self, obs: &Observation, cluster: &Cluster, running: &Running) -> Cluster {
        let obs_reach = &obs.reach;
        let mut view = cluster.clone();
        let published = cluster.members.get(&self.me.name);
        view.members.insert(
            self.me.name.clone(),
            MemberView {
                witness: false,
                nofailover: self.me.nofailover,
                nosync: published.is_some_and(|m| m.nosync),
                priority: self.me.priority,
                running: true,
                primary: running.primary,
                timeline: Some(running.timeline),
                lsn: Some(running.lsn),
                upstream: running.upstream.clone(),
                streaming: running.streaming,
                can_backup: published.is_some_and(|m| m.can_backup),
                reach: obs_reach.clone(),
                revision: published.map_or(0, |m| m.revision),
            },
        );
        view
    }

    /// Slots for every other member with PostgreSQL, kept for
    /// `slot_retention` after its status key disappears; and the ones to
    /// drop: those whose retention has ended, and at once those of removed
    /// members.
    fn slot_names(&self, now: Millis, cluster: &Cluster) -> (Vec<String>, Vec<String>) {
        let retention = cluster.settings.slot_retention_ms;
        let mut kept = Vec::new();
        let mut drop = Vec::new();
        for (name, seen) in &self.slot_members {
            if cluster.removed.contains_key(name) || now.saturating_sub(*seen) > retention {
                drop.push(name.clone());
            } else {
                kept.push(name.clone());
            }
        }
        for name in cluster.removed.keys() {
            if *name != self.me.name && !drop.contains(name) {
                drop.push(name.clone());
            }
        }
        drop.sort();
        (kept, drop)
    }

    /// This member was removed (`pgwarden ctl remove`): it keeps its
    /// PostgreSQL stopped and stays out, until its data directory is
    /// empty (it is then re-admitted and clones afresh) or an operator
    /// re-admits it.
    fn retired(&self, obs: &Observation, removed: &Removed) -> Plan {
        let me = &self.me.name;
        let stop = |immediate: bool, what: &str| {
            Plan::new(
                LogRole::Removed,
                format!(
                    "{me} was removed from the cluster (`pgwarden ctl remove`): stopping {what}; it stays stopped"
                ),
            )
            .then(Action::Stop {
                mode: if immediate {
                    StopMode::Immediate
                } else {
                    StopMode::Fast
                },
            })
        };
        match &obs.local {
            Local::Empty => Plan::new(
                LogRole::Uninitialized,
                format!(
                    "{me} was removed from the cluster and its data directory is empty now: \
                     re-admitting it, it clones afresh as a new standby"
                ),
            )
            .then(Action::Readmit),
            Local::Witness => Plan::new(
                LogRole::Removed,
                format!(
                    "refusing to rejoin: {me} was removed from the cluster (`pgwarden ctl remove`); \
                     this witness stays out until `pgwarden ctl readmit {me}`"
                ),
            ),
            Local::Running(running) => stop(running.primary, "its PostgreSQL"),
            Local::Starting { was_primary } => stop(*was_primary, "its PostgreSQL"),
            Local::Stopped(stopped) => {
                let same = removed.system_id == Some(stopped.system_id)
                    && removed.timeline.is_none_or(|t| t == stopped.timeline);
                let which = if same { "still the one it had then" } else { "not re-cloned" };
                Plan::new(
                    LogRole::Removed,
                    format!(
                        "refusing to rejoin: {me} was removed from the cluster (`pgwarden ctl remove`) and its \
                         replication slot dropped, and this data directory (system identifier {}, timeline {}) is \
                         {which}. To bring {me} back, re-clone it: stop this agent, move the data directory away \
                         (or empty it) and start the agent again, it then clones afresh; or run \
                         `pgwarden ctl readmit {me}` to let it rejoin with this data directory as it is",
                        stopped.system_id, stopped.timeline
                    ),
                )
            }
        }
    }
}

/// What a leader does about a switchover request.
enum SwitchoverStep {
    /// Stop and hand over: the whole plan of the round.
    HandOff(Plan),
    /// The request no longer applies: delete it, with this outcome, along
    /// with the round's usual work.
    Clear(String),
    /// The target is catching up: the round's usual work, and ask again.
    Wait,
}

/// Stop accepting writes this long before the lease could expire in the
/// store: time for an immediate stop, and for clock drift.
fn demote_margin(settings: &Settings, lease_ttl: Option<Millis>) -> Millis {
    // The lease actually held counts: a raised TTL applies to the next one.
    let ttl = lease_ttl.map_or(settings.ttl_ms, |held| held.min(settings.ttl_ms));
    (ttl / 3).max(settings.heartbeat_ms).min(ttl / 2)
}

/// The hand-over of the switchover in the store, unless it is over.
fn live_handoff<'c>(obs: &Observation, cluster: &'c Cluster) -> Option<&'c Handoff> {
    cluster
        .switchover
        .as_ref()?
        .live_handoff(obs.wall_ms, cluster.settings.ttl_ms)
}

fn role_of(local: &Local) -> LogRole {
    match local {
        Local::Witness => LogRole::Witness,
        Local::Empty => LogRole::Uninitialized,
        Local::Stopped(_) | Local::Starting { .. } => LogRole::Stopped,
        Local::Running(running) if running.primary => LogRole::Primary,
        Local::Running(_) => LogRole::Replica,
    }
}

fn system_id(local: &Local) -> Option<u64> {
    match local {
        Local::Stopped(stopped) => Some(stopped.system_id),
        Local::Running(running) => Some(running.system_id),
        _ => None,
    }
}
