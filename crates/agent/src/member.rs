//! One member's agent core: one round observes, decides and acts. The
//! runtime calls it on every heartbeat and store change; the simulation
//! calls it with virtual time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::Either;

use ha::{Action, FailsafePromise, Ha, Local, LogRole, Me, Millis, Observation, Plan, StoreView};
use pg::Endpoint;
use store::cluster::{ClusterKeys, MemberStatus};
use store::{Lease, Store, StoreError};

mod actions;
mod archive_health;
mod requests;
mod status;

use crate::failsafe::FailsafePeers;
use crate::postgres::LocalPostgres;
use store::ClusterRecords;
use store::HaView;

/// How long before the leader lease could expire the lease guard stops
/// PostgreSQL: time for an immediate stop to take effect.
pub const FENCE_BEFORE_EXPIRY_MS: Millis = 500;

/// The lease guard's deadline for writes safe until `until`.
pub fn fence_before(until: Millis) -> Millis {
    until.saturating_sub(FENCE_BEFORE_EXPIRY_MS)
}

/// What a member is, fixed for its life.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    pub name: String,
    pub nofailover: bool,
    pub nosync: bool,
    pub noloadbalance: bool,
    pub priority: u32,
    pub witness: bool,
    /// Where others reach this member's PostgreSQL.
    pub pg_endpoint: Endpoint,
    pub api_url: String,
    /// A backup repository is configured: it may take base backups.
    pub can_backup: bool,
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
    /// Whether timers run beside the round's awaits: they keep the lease
    /// and status fresh during long actions and ask the failsafe peers
    /// early when the store is slow.
    timers: Timers,
    /// The cluster-wide parameters last written to PostgreSQL's
    /// configuration; `None` before the first round that read them.
    cluster_parameters: Option<BTreeMap<String, String>>,
    /// Failsafe: who to ask when the store is out of reach (`None` until
    /// [`Member::ask_failsafe_with`]: the agent asks the other members'
    /// APIs, the simulation its simulated members), the confirmations of
    /// the last round that asked, and the promise this member's API gave a
    /// primary.
    failsafe_peers: Option<Arc<dyn FailsafePeers>>,
    /// Told as soon as the answers extend how long writes are safe, not
    /// at the end of a round that waits out a dead store's timeout.
    fence: Option<Arc<dyn Fn(Millis) + Send + Sync>>,
    store_reachable: bool,
    failsafe_confirmed_by: BTreeSet<String>,
    failsafe_valid_until: Option<Millis>,
    failsafe_promise: Option<FailsafePromise>,
    /// [`Observation::statuses_seen`], from the runtime's store watch.
    statuses_seen: std::collections::BTreeMap<String, (u64, Millis)>,
    /// The store keys that did not decode in the last read, with why: each
    /// is said once (error log, event) when it appears or changes.
    undecodable: BTreeMap<String, String>,
    /// The dynamic configuration's parameters left out of PostgreSQL's
    /// configuration, with why: each is said once.
    refused_parameters: BTreeMap<String, String>,
    /// This member's reachability check as last told
    /// ([`Member::set_reach`]), and since when (unix ms) it has stood so.
    reach: ha::Reach,
    reach_since_ms: Option<u64>,
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
            timers: Timers::Virtual,
            cluster_parameters: None,
            failsafe_peers: None,
            fence: None,
            store_reachable: true,
            failsafe_confirmed_by: BTreeSet::new(),
            failsafe_valid_until: None,
            failsafe_promise: None,
            statuses_seen: Default::default(),
            undecodable: BTreeMap::new(),
            refused_parameters: BTreeMap::new(),
            reach: ha::Reach::Unchecked,
            reach_since_ms: None,
        }
    }

    /// The latest result of this member's reachability check, for the
    /// next rounds (the runtime's checker runs off the rounds; the
    /// simulation sets it from its faults). A change of state is an event.
    pub fn set_reach(&mut self, reach: ha::Reach) {
        let changed = std::mem::discriminant(&reach) != std::mem::discriminant(&self.reach);
        if changed {
            self.reach_since_ms = None;
            match &reach {
                ha::Reach::Fails { detail } => self.event(
                    "reachability",
                    format!(
                        "reachability check fails: {detail}; this member is no failover candidate nor switchover \
                         target while it fails"
                    ),
                ),
                ha::Reach::Passes if matches!(self.reach, ha::Reach::Fails { .. }) => {
                    self.event("reachability", "reachability check passes again")
                }
                _ => {}
            }
        }
        self.reach = reach;
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

    /// Until when PostgreSQL may keep accepting writes without a new
    /// round: the leader lease, or in failsafe mode the other members'
    /// confirmations. The runtime's fence stops PostgreSQL past it.
    pub fn writes_valid_until(&self) -> Option<Millis> {
        self.lease_valid_until().max(self.failsafe_valid_until)
    }

    /// When the runtime's lease guard stops PostgreSQL unless a later
    /// round moves it: [`FENCE_BEFORE_EXPIRY_MS`] before
    /// [`Member::writes_valid_until`]; `None` disarms it.
    pub fn fence_deadline(&self) -> Option<Millis> {
        self.writes_valid_until().map(fence_before)
    }

    /// Asks `peers` in failsafe mode when this primary cannot reach the
    /// store.
    /// `fence` is called with a later [`Member::writes_valid_until`] as
    /// soon as the answers give one, or a keepalive renewed the leader
    /// lease while a long request holds up the rounds.
    pub fn ask_failsafe_with(
        &mut self,
        peers: Arc<dyn FailsafePeers>,
        fence: Arc<dyn Fn(Millis) + Send + Sync>,
    ) {
        self.failsafe_peers = Some(peers);
        self.fence = Some(fence);
    }

    /// The promise this member's API gave, for the next rounds to keep.
    pub fn keep_failsafe_promise(&mut self, promise: Option<FailsafePromise>) {
        self.failsafe_promise = promise;
    }

    /// The cluster records of the last round.
    pub fn records(&self) -> &ClusterRecords {
        &self.records
    }

    /// A real agent, whose clock runs while a round waits: a keepalive
    /// keeps the member's lease and status fresh while a clone, rewind or
    /// initdb holds up its rounds, so it stays listed (`ctl list`, the API,
    /// the proxy) with what it is doing instead of vanishing for minutes;
    /// and a store slow to answer prompts the failsafe question before the
    /// request times out.
    pub fn use_real_timers(&mut self) {
        self.timers = Timers::Real;
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

    /// The store watch delivered `member`'s status at `revision` at `at`
    /// (ms of the agent's monotonic clock); `None` when it was deleted.
    pub fn note_status_seen(&mut self, member: &str, revision: Option<u64>, at: Millis) {
        match revision {
            Some(revision) => {
                self.statuses_seen
                    .insert(member.to_string(), (revision, at));
            }
            None => {
                self.statuses_seen.remove(member);
            }
        }
    }

    /// When the fast path's silence timers run out ([`Ha::fast_path_due`]),
    /// in ms of the agent's monotonic clock.
    pub fn fast_path_due(&self) -> Option<u64> {
        self.ha
            .fast_path_due(self.records().settings().heartbeat_ms)
    }

    /// Whether another member's new status is worth a round now
    /// ([`Ha::awaits_member_news`]).
    pub fn awaits_member_news(&self) -> bool {
        self.ha.awaits_member_news()
    }

    /// The event of a failed action. One that keeps failing (and backs
    /// off, [`ha::retry`]) is told on its first failure and then each time
    /// its count doubles, with the count: a failure that lasts a day makes
    /// a handful of events, not one per attempt.
    fn action_failed(&mut self, action: &Action, error: &str) {
        let failing = self.ha.failing().filter(|_| ha::retry::backs_off(action));
        match failing {
            None => self.event("action_failed", format!("{action:?} failed: {error}")),
            Some(f) if !f.worth_telling() => {}
            Some(f) if f.count == 1 => self.event(
                "action_failed",
                format!(
                    "{action:?} failed (next attempt in {} ms, waiting longer after each failure): {error}",
                    ha::retry::delay(1)
                ),
            ),
            Some(f) => self.event(
                "action_failed",
                format!(
                    "{action:?} failed {} times in a row (next attempt in {} ms; next told at {} failures): {error}",
                    f.count,
                    ha::retry::delay(f.count),
                    f.count.saturating_mul(2)
                ),
            ),
        }
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
        // Failsafe questions go alongside the store request, not after it:
        // at once when the last round had no store, else (a real agent)
        // once the store is slow to answer, as a partition fails only at
        // the request timeout, which may be most of the lease.
        let ask = if !self.store_reachable {
            Ask::Now
        } else if self.timers == Timers::Real {
            Ask::After(SPECULATIVE_QUESTION)
        } else {
            Ask::Never
        };
        let question = self.failsafe_question(clock, ask);
        let sent = clock();
        let (refreshed, mut failsafe_confirmed) = {
            let refresh = self.refresh(sent);
            futures::pin_mut!(refresh, question);
            match futures::future::select(refresh, question).await {
                // The store answered: no question matters.
                Either::Left((Ok(records), _)) => (Ok(records), BTreeMap::new()),
                Either::Left((Err(err), question)) => (Err(err), question.await),
                Either::Right((answers, refresh)) => (refresh.await, answers),
            }
        };
        let store = match refreshed {
            Ok(records) if !records.blocking.is_empty() => {
                self.report_undecodable(&records);
                // A record the decisions need is unreadable: as when the
                // store is out of reach, nobody races, bootstraps or
                // promotes on a guess, and the last good view stays.
                tracing::debug!(
                    "deciding as if the store were unreachable: {} does not decode",
                    records.blocking.join(", ")
                );
                StoreView::Unreachable
            }
            Ok(records) => {
                self.report_undecodable(&records);
                self.records = records;
                if let (Some(fence), Some(until)) = (&self.fence, self.lease_valid_until()) {
                    // Renewed and still the leader key's holder: the guard
                    // need not wait for the end of a round the store slows
                    // down (with 400 ms per request it fired mid-round).
                    fence(until);
                }
                if self.records.leader.is_some() {
                    self.leaderless_since_ms = None;
                } else {
                    self.leaderless_since_ms.get_or_insert(sent.wall_ms);
                }
                StoreView::Reachable(self.records.to_ha())
            }
            Err(err) => {
                tracing::debug!("store unreachable: {err}");
                StoreView::Unreachable
            }
        };
        let reachable = matches!(store, StoreView::Reachable(_));
        if !reachable && ask == Ask::Never {
            // The first round without the store, with no timer to ask early
            // (virtual time, where nothing is slow): ask now rather than
            // next round.
            failsafe_confirmed = self.failsafe_question(clock, Ask::Now).await;
        }
        self.store_reachable = reachable;
        if reachable {
            self.apply_cluster_parameters().await;
        }
        self.log_failsafe_answers(reachable, &failsafe_confirmed);
        let now = clock();
        let observation = Observation {
            now: now.mono,
            wall_ms: now.wall_ms,
            local: local.clone(),
            store,
            lease_valid_until: self.lease_valid_until(),
            lease_ttl_ms: self.lease.map(|l| l.ttl.as_millis() as Millis),
            failsafe_confirmed,
            failsafe_promise: self.failsafe_promise.clone(),
            statuses_seen: self.statuses_seen.clone(),
            reach: self.reach.clone(),
        };
        let mut plan = self.ha.decide(&observation);
        if plan.role == LogRole::Removed {
            if let Some(dir) = self.pg.data_dir() {
                plan.note = format!("{} (data directory {dir})", plan.note);
            }
        }
        self.failsafe_valid_until = if reachable {
            None
        } else {
            self.ha.failsafe_valid_until(&observation)
        };
        let slow = plan
            .actions
            .iter()
            .any(|a| a.is_long() || matches!(a, Action::StartPrimary | Action::Promote));
        if reachable && slow {
            // Say so before a start, promotion or clone that may take a
            // while: a status that stops changing reads as a dead agent to
            // the fast failover path, which would depose a primary
            // restarting in place; and an operator sees what it is doing.
            if let Err(err) = self.publish(now, &plan).await {
                tracing::debug!("could not publish member status: {err}");
            }
        }
        let mut failed = None;
        for action in &plan.actions {
            let started = std::time::Instant::now();
            let restarting_in_place = matches!(action, Action::StartPrimary) && self.is_leader();
            let result = if self.timers == Timers::Real && (action.is_long() || restarting_in_place)
            {
                // A leader restarting a crashed PostgreSQL keeps its lease
                // through crash recovery, for the restart grace at most.
                let until = restarting_in_place
                    .then(|| now.mono + self.records.settings().restart_grace_ms);
                let keepalive = self.keepalive_until(plan.note.clone(), now, until);
                tokio::select! {
                    result = self.execute(action, now) => result,
                    _ = keepalive => unreachable!("the keepalive never ends"),
                }
            } else {
                self.execute(action, now).await
            };
            tracing::debug!(
                "{} {action:?} took {} ms",
                self.spec.name,
                started.elapsed().as_millis()
            );
            match result {
                Ok(()) => {
                    self.ha.outcome(now.mono, action, Ok(()));
                    self.record_event(action, &plan);
                }
                Err(err) => {
                    let error = err.to_string();
                    self.ha.outcome(now.mono, action, Err(&error));
                    self.action_failed(action, &error);
                    failed = Some((action.clone(), error));
                    break;
                }
            }
        }
        if !plan.actions.is_empty() {
            // The actions changed PostgreSQL: publish what it is now.
            self.local = self.observe().await;
        }
        if reachable && plan.role == LogRole::Removed {
            // Retired: no status, so nothing counts it or routes to it.
            if self.records.members.contains_key(&self.spec.name) || self.last_status.is_some() {
                if let Err(err) = self.withdraw().await {
                    tracing::debug!("could not delete member status: {err}");
                }
            }
        } else if reachable {
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

    /// Failsafe, on a primary that may not reach the store: asks every
    /// member that may take over ([`Member::failsafe_members`]) whether it
    /// still follows this one. The answers hold a TTL from when the
    /// question was sent; once all are in, the fence is moved to then.
    fn failsafe_question<'c>(
        &self,
        clock: &'c (dyn Fn() -> Now + Send + Sync),
        ask: Ask,
    ) -> impl std::future::Future<Output = BTreeMap<String, Millis>> + 'c {
        let config = self.records.config();
        let primary = matches!(&self.local, Local::Running(r) if r.primary);
        let asks = ask != Ask::Never
            && config.failsafe
            && primary
            && self.records.leader_name() == Some(self.spec.name.as_str());
        let peers = self.failsafe_peers.clone().filter(|_| asks);
        let fence = self.fence.clone();
        let me = self.spec.name.clone();
        let members: Vec<(String, String)> = self.failsafe_members().into_iter().collect();
        let term = self.records.term().unwrap_or(0);
        async move {
            let Some(peers) = peers else {
                return BTreeMap::new();
            };
            if let Ask::After(delay) = ask {
                tokio::time::sleep(delay).await;
            }
            let sent = clock().mono;
            let confirmed = peers.confirm(&me, term, config.ttl_ms, &members).await;
            let all = !members.is_empty() && members.iter().all(|(n, _)| confirmed.contains(n));
            if let (true, Some(fence)) = (all, fence) {
                fence(sent + config.ttl_ms);
            }
            confirmed.into_iter().map(|name| (name, sent)).collect()
        }
    }

    /// The other members a primary asks in failsafe mode, with their APIs:
    /// the list its leader published (those may take over) and those with
    /// a status, which this round's list may have added.
    fn failsafe_members(&self) -> BTreeMap<String, String> {
        let mut members: BTreeMap<String, String> = self
            .records
            .failsafe
            .iter()
            .flat_map(|f| f.value.members.clone())
            .collect();
        for status in self.records.members.values() {
            members.insert(status.value.name.clone(), status.value.api_url.clone());
        }
        members.remove(&self.spec.name);
        members
    }

    /// Says who confirmed when that changes, not every round.
    fn log_failsafe_answers(&mut self, reachable: bool, confirmed: &BTreeMap<String, Millis>) {
        if reachable {
            self.failsafe_confirmed_by.clear();
            return;
        }
        let by: BTreeSet<String> = confirmed.keys().cloned().collect();
        if by == self.failsafe_confirmed_by || self.failsafe_peers.is_none() {
            return;
        }
        let missing: Vec<String> = self
            .failsafe_members()
            .into_keys()
            .filter(|n| !by.contains(n))
            .collect();
        let by_list = by.iter().cloned().collect::<Vec<_>>().join(", ");
        if missing.is_empty() && !by.is_empty() {
            tracing::warn!(
                "{}: failsafe: store unreachable; every other member ({by_list}) confirms it follows me: \
                 serving on their word until the store is back",
                self.spec.name
            );
        } else {
            tracing::warn!(
                "{}: failsafe: store unreachable; confirmed by [{by_list}], not by [{}]: PostgreSQL stops \
                 when the lease (or the last unanimous answers) runs out unless they answer (check that \
                 their agents run and that this host reaches their REST APIs) or the store comes back",
                self.spec.name,
                missing.join(", ")
            );
        }
        self.failsafe_confirmed_by = by;
    }

    /// Brings PostgreSQL's configuration in line with the dynamic
    /// configuration's parameters. Not a decision of the core: it changes
    /// no role, and a failure only delays it to the next round.
    async fn apply_cluster_parameters(&mut self) {
        let config = self.records.config();
        self.report_refused_parameters(config.refused_parameters());
        let wanted = config.applicable_parameters();
        if self.cluster_parameters.as_ref() == Some(&wanted) {
            return;
        }
        match self.pg.apply_cluster_parameters(&wanted).await {
            Ok(()) => {
                if let Some(before) = &self.cluster_parameters {
                    let change = parameter_change(before, &wanted);
                    tracing::info!("{}: cluster parameters applied: {change}", self.spec.name);
                    self.event("parameters_changed", change);
                }
                self.cluster_parameters = Some(wanted);
            }
            Err(err) => tracing::warn!(
                "{}: could not apply the cluster's parameters (retried next round): {err}",
                self.spec.name
            ),
        }
    }

    /// Says once (error log, event) each parameter of the dynamic
    /// configuration left out of PostgreSQL's configuration, when it
    /// appears or its reason changes: a record written into the store
    /// without `ctl config` or the API, which refuse them.
    fn report_refused_parameters(&mut self, now: BTreeMap<String, String>) {
        for (name, why) in &now {
            if self.refused_parameters.get(name) == Some(why) {
                continue;
            }
            tracing::error!(
                "{}: parameter left out of PostgreSQL's configuration (the other parameters are \
                 applied); remove it with `pgwarden ctl config edit`: {why}",
                self.spec.name
            );
            self.event("parameters_refused", why.clone());
        }
        if now.is_empty() && !self.refused_parameters.is_empty() {
            tracing::info!(
                "{}: the dynamic configuration holds no refused parameter any more",
                self.spec.name
            );
        }
        self.refused_parameters = now;
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
        // The renewal and the read go out together: a slow store costs a
        // round one request time, not two.
        let renewal = async {
            match self.lease {
                Some(lease) => Some(self.store.refresh_lease(lease.id).await),
                None => None,
            }
        };
        let (renewal, read) = tokio::join!(renewal, self.read());
        if let (Some(lease), Some(renewal)) = (self.lease, renewal) {
            match renewal {
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
        let mut records = read?;
        if !records.blocking.is_empty() {
            // The TTL may be in an unreadable config, and this round acts
            // as if the store were unreachable anyway.
            return Ok(records);
        }
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

    /// The cluster; keys that do not decode are left out and listed
    /// ([`ClusterRecords::problems`], [`ClusterRecords::blocking`]).
    async fn read(&self) -> Result<ClusterRecords, StoreError> {
        ClusterRecords::read(self.store.as_ref(), &self.keys).await
    }

    /// The keys that did not decode in the last read.
    pub fn undecodable_keys(&self) -> Vec<String> {
        self.undecodable.keys().cloned().collect()
    }

    /// Says loudly, once per key and change, which keys do not decode and
    /// what that costs; and when one is readable again.
    fn report_undecodable(&mut self, records: &ClusterRecords) {
        let now: BTreeMap<String, String> = records.undecodable().into_iter().collect();
        for (key, error) in &now {
            if self.undecodable.get(key) == Some(error) {
                continue;
            }
            let effect = if records.blocking.contains(key) {
                "no failover, promotion or bootstrap until it is fixed: this member decides as if \
                 the store were unreachable"
            } else {
                "the record is left out of this member's view (a member status: that member is \
                 absent and never a candidate)"
            };
            tracing::error!(
                "{}: store key {key} does not decode; {effect}: {error}",
                self.spec.name
            );
            self.event("store_key_undecodable", format!("{key}: {error}"));
        }
        for key in self.undecodable.keys() {
            if !now.contains_key(key) {
                tracing::info!(
                    "{}: store key {key} decodes again (or is gone)",
                    self.spec.name
                );
            }
        }
        self.undecodable = now;
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

/// Whether a member's clock runs on its own while a round waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timers {
    /// The simulation's virtual time moves only between rounds: nothing
    /// can fire during an action or a store request.
    Virtual,
    /// A real agent's: tokio timers fire while a round waits.
    Real,
}

/// When a primary asks the others in failsafe mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ask {
    Now,
    /// If the store has not answered by then.
    After(Duration),
    Never,
}

/// A store that answers later than this is asked around (failsafe).
const SPECULATIVE_QUESTION: Duration = Duration::from_millis(250);

/// `work_mem=8MB, shared_buffers removed`: what changed, for the event log.
fn parameter_change(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> String {
    let set = after
        .iter()
        .filter(|(name, value)| before.get(*name) != Some(value))
        .map(|(name, value)| format!("{name}={value}"));
    let removed = before
        .keys()
        .filter(|name| !after.contains_key(*name))
        .map(|name| format!("{name} removed"));
    let all: Vec<String> = set.chain(removed).collect();
    format!(
        "{} (reloaded; `pgwarden ctl list` shows what waits for a restart)",
        all.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_change_names_what_was_set_and_removed() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let change = parameter_change(
            &map(&[("work_mem", "4MB"), ("old", "1"), ("same", "x")]),
            &map(&[("work_mem", "8MB"), ("new", "on"), ("same", "x")]),
        );
        assert!(
            change.starts_with("new=on, work_mem=8MB, old removed (reloaded;"),
            "{change}"
        );
    }
}
