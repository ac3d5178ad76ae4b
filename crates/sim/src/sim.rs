//! One seeded run: members, faults, invariants.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agent::member::{Member, MemberSpec, Now, Round};
use agent::postgres::LocalPostgres;
use futures::executor::block_on;
use ha::switchover;
use ha::Action;
use pg::Endpoint;
use store::cluster::{ClusterKeys, DynamicConfig, SynchronousMode};
use store::{ClusterRecords, HaView, ManualClock, MemoryStore, Store};

use crate::failsafe::{Board, SimPeers};
use crate::postgres::{lock, SimPostgres, SimStore};
use crate::rng::Rng;
use crate::script::{Fault, Script, Step};
use crate::world::{secs, Budget, Millis, World};

/// Virtual time per step of the loop (one world tick).
pub const STEP_MS: Millis = 50;
/// Once the last fault has healed, the cluster must have one primary with
/// every member following it within this long.
pub const LIVENESS_BOUND_MS: Millis = 30_000;
/// Faults start this late (the cluster bootstraps first, mostly).
const FAULTS_FROM_MS: Millis = 3_000;
/// The wall clock of the run's start (records carry wall-clock times).
const WALL_EPOCH_MS: u64 = 1_790_000_000_000;

/// What a seed runs: the cluster and its dynamic settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    pub members: usize,
    /// The member tagged nofailover, if any.
    pub nofailover: Option<usize>,
    pub synchronous_mode: SynchronousMode,
    pub synchronous_count: u32,
    pub synchronous_strict: bool,
    pub ttl_ms: u64,
    pub heartbeat_ms: u64,
    /// In records (the simulated LSN counts records).
    pub maximum_lag_on_failover: u64,
    pub restart_grace_ms: u64,
    /// Records a healthy stream copies per tick (the client writes one).
    pub stream_rate: usize,
    /// Faults start until then; afterwards only the running ones heal.
    pub faults_until_ms: Millis,
    pub mean_fault_interval_ms: Millis,
    /// The shortest time a crashed agent stays away.
    pub min_restart_ms: Millis,
    /// Whether a mid-round cut-off may fall between a new lease's grant and
    /// the read after it.
    pub cut_after_grant: bool,
    /// Failsafe mode: a primary cut off from the store serves on while
    /// every other member confirms it follows it.
    pub failsafe: bool,
    /// Members check their reachability (`[member] reachability`), and
    /// their client networks fail; off, no member has targets.
    pub reachability: bool,
    pub reachability_grace_ms: u64,
}

impl SimConfig {
    /// The configuration a seed runs (drawn from its own generator, so
    /// the run's choices do not shift it).
    pub fn for_seed(seed: u64) -> SimConfig {
        let mut rng = Rng::new(seed ^ 0x5EED_C0F1_6000_0000);
        let members = if rng.chance(3, 5) {
            3
        } else {
            rng.range(2, 5) as usize
        };
        let nofailover = if members >= 3 && rng.chance(1, 5) {
            Some(rng.below(members as u64) as usize)
        } else {
            None
        };
        let synchronous_mode = rng.chance(1, 2);
        let synchronous_count = if members >= 4 && rng.chance(1, 3) {
            2
        } else {
            1
        };
        let synchronous_strict = rng.chance(1, 3);
        let (ttl_ms, heartbeat_ms) = match rng.below(6) {
            0 => (5_000, 1_000),
            1 => (2_000, 500),
            _ => (3_000, 500),
        };
        let maximum_lag_on_failover = if rng.chance(2, 5) {
            1 << 20
        } else {
            rng.range(2, 30)
        };
        let mut config = SimConfig {
            members,
            nofailover,
            synchronous_mode: SynchronousMode::Off,
            synchronous_count,
            synchronous_strict,
            ttl_ms,
            heartbeat_ms,
            maximum_lag_on_failover,
            restart_grace_ms: 2_000,
            stream_rate: rng.range(2, 4) as usize,
            faults_until_ms: 60_000,
            mean_fault_interval_ms: rng.range(40, 160) * STEP_MS,
            // A crashed agent may come back at once, inside its
            // predecessor's lease (found agent bug 1, fixed).
            min_restart_ms: 0,
            // The store may fail between a lease grant and the next call
            // (found agent bug 2, fixed).
            cut_after_grant: true,
            failsafe: false,
            reachability: false,
            reachability_grace_ms: 10_000,
        };
        // Drawn last, so the earlier draws (and the seeds docs/simulation.md
        // names) keep their configurations.
        config.failsafe = rng.chance(1, 3);
        // Half of the synchronous seeds commit by quorum (`ANY k`).
        let quorum = rng.chance(1, 2);
        config.synchronous_mode = match (synchronous_mode, quorum) {
            (false, _) => SynchronousMode::Off,
            (true, false) => SynchronousMode::First,
            (true, true) => SynchronousMode::Quorum,
        };
        // Later still: a quarter of the seeds check reachability.
        config.reachability = rng.chance(1, 4);
        config.reachability_grace_ms = rng.range(3, 12) * 1_000;
        config
    }

    pub fn dynamic_config(&self) -> DynamicConfig {
        DynamicConfig {
            ttl_ms: self.ttl_ms,
            heartbeat_ms: self.heartbeat_ms,
            maximum_lag_on_failover: self.maximum_lag_on_failover,
            synchronous_mode: self.synchronous_mode,
            synchronous_count: self.synchronous_count,
            synchronous_strict: self.synchronous_strict,
            restart_grace_ms: self.restart_grace_ms,
            failsafe: self.failsafe,
            reachability_grace_ms: self.reachability_grace_ms,
            ..DynamicConfig::default()
        }
    }

    /// The cluster and its settings, without the random faults' rate.
    pub fn cluster(&self) -> ClusterShape<'_> {
        ClusterShape(self)
    }
}

/// Three members, asynchronous, ttl 3 s, heartbeat 0.5 s, no lag limit:
/// where a scripted scenario starts from (the fault rate applies only to
/// random runs).
impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            members: 3,
            nofailover: None,
            synchronous_mode: SynchronousMode::Off,
            synchronous_count: 1,
            synchronous_strict: false,
            ttl_ms: 3_000,
            heartbeat_ms: 500,
            maximum_lag_on_failover: 1 << 20,
            restart_grace_ms: 2_000,
            stream_rate: 2,
            faults_until_ms: 60_000,
            mean_fault_interval_ms: 100 * STEP_MS,
            min_restart_ms: 0,
            cut_after_grant: true,
            failsafe: false,
            reachability: false,
            reachability_grace_ms: 10_000,
        }
    }
}

impl fmt::Display for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_cluster(f)?;
        write!(
            f,
            ", a fault every {} s on average until {}",
            self.mean_fault_interval_ms as f64 / 1000.0,
            secs(self.faults_until_ms)
        )
    }
}

/// The cluster and its settings, without the random faults' rate (what a
/// scripted run describes itself by).
pub struct ClusterShape<'a>(&'a SimConfig);

impl fmt::Display for ClusterShape<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt_cluster(f)
    }
}

impl SimConfig {
    fn fmt_cluster(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} members", self.members)?;
        if let Some(n) = self.nofailover {
            write!(f, " (db{} nofailover)", n + 1)?;
        }
        if self.synchronous_mode != SynchronousMode::Off {
            write!(
                f,
                ", {} (count {}{})",
                if self.synchronous_mode == SynchronousMode::Quorum {
                    "quorum commit"
                } else {
                    "synchronous mode"
                },
                self.synchronous_count,
                if self.synchronous_strict {
                    ", strict"
                } else {
                    ""
                }
            )?;
        } else {
            write!(f, ", asynchronous")?;
        }
        if self.failsafe {
            write!(f, ", failsafe")?;
        }
        if self.reachability {
            write!(
                f,
                ", reachability checked (grace {} ms)",
                self.reachability_grace_ms
            )?;
        }
        write!(
            f,
            ", ttl {} ms, heartbeat {} ms, maximum lag {} records, stream {} records/tick",
            self.ttl_ms, self.heartbeat_ms, self.maximum_lag_on_failover, self.stream_rate,
        )
    }
}

/// How to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Print every history line as it happens.
    pub echo: bool,
    /// History lines a failure report carries.
    pub tail: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            echo: false,
            tail: 80,
        }
    }
}

/// A broken invariant: everything needed to understand and replay it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub step: u64,
    pub at: Millis,
    pub invariant: String,
    pub detail: String,
    pub config: String,
    /// The command that replays it.
    pub replay: String,
    pub history: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {} broke invariant {} at step {} (t={})",
            self.seed,
            self.invariant,
            self.step,
            secs(self.at)
        )?;
        writeln!(f, "  {}", self.detail)?;
        writeln!(f, "  config: {}", self.config)?;
        writeln!(f, "  replay: {}", self.replay)?;
        writeln!(f, "  the last {} events:", self.history.len())?;
        for line in &self.history {
            writeln!(f, "    {line}")?;
        }
        Ok(())
    }
}

/// What a passing run did.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub steps: u64,
    pub virtual_ms: Millis,
    pub faults: u64,
    pub rounds: u64,
    pub promotions: usize,
    pub acknowledged: u64,
    /// Asynchronous mode: acknowledgements of two primaries overlapped
    /// (allowed there; counted to show the simulation reaches the case).
    pub async_overlaps: u64,
    /// Asynchronous mode: writes acknowledged by a primary after one on a
    /// later timeline had acknowledged (invariant 1 bounds them).
    pub async_stale_acks: u64,
    /// Of those, by a primary without a lease guard: its agent dead, or
    /// restarted and not through its first round (no watchdog).
    pub unguarded_stale_acks: u64,
    /// Ticks at which two PostgreSQL servers accepted writes.
    pub two_writer_ticks: u64,
    /// Asynchronous mode without failsafe: leaders replaced while cut off
    /// from the store, and the longest time from the cut to such a
    /// primary's last acknowledged write (the loss window).
    pub async_cut_takeovers: u64,
    pub async_loss_window_ms: Option<Millis>,
    /// Switchovers leaders asked for because their reachability check
    /// failed.
    pub reach_switchovers: u64,
    /// A hash of the whole history: equal for two runs of one seed.
    pub fingerprint: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {} steps ({} virtual), {} faults, {} rounds, {} promotions, {} writes acknowledged, {} asynchronous overlaps, \
             {} acknowledged after a later timeline's ({} without a lease guard), {} ticks with two writers",
            self.seed,
            self.steps,
            secs(self.virtual_ms),
            self.faults,
            self.rounds,
            self.promotions,
            self.acknowledged,
            self.async_overlaps,
            self.async_stale_acks,
            self.unguarded_stale_acks,
            self.two_writer_ticks,
        )?;
        if self.reach_switchovers > 0 {
            write!(
                f,
                ", {} reachability switchovers asked",
                self.reach_switchovers
            )?;
        }
        if let Some(window) = self.async_loss_window_ms {
            write!(
                f,
                ", {} leaders replaced while cut off, loss window up to {}",
                self.async_cut_takeovers,
                secs(window)
            )?;
        }
        Ok(())
    }
}

/// Runs one seed with the configuration it draws.
pub fn run(seed: u64, options: &Options) -> Result<Report, Box<Failure>> {
    run_with(seed, SimConfig::for_seed(seed), options)
}

/// Runs one seed with a given configuration.
pub fn run_with(seed: u64, config: SimConfig, options: &Options) -> Result<Report, Box<Failure>> {
    Sim::new(seed, config, None, options.clone()).run()
}

/// Runs `script` instead of random faults; `seed` orders the rounds and
/// jitters their timing. The invariants are checked as in a seeded run,
/// liveness from when the last scripted fault has healed.
pub fn run_script(
    seed: u64,
    config: SimConfig,
    script: &Script,
    options: &Options,
) -> Result<Report, Box<Failure>> {
    Sim::new(seed, config, Some(script), options.clone()).run()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FaultKind {
    /// Agent and PostgreSQL die; the host comes back later with its data.
    HostCrash,
    /// The agent dies, PostgreSQL keeps running.
    AgentCrash,
    /// PostgreSQL dies, the agent keeps running (and may fail to start it
    /// for a while).
    PgCrash,
    /// Agent and PostgreSQL pause together.
    Freeze,
    /// The agent cannot reach the store.
    CutOff,
    /// The agent's store round trips take long and its replication crawls.
    Delay,
    /// The store has no quorum: nobody reaches it.
    StoreOutage,
    /// Not a fault: an operator asks for a switchover (or, with no leader,
    /// a manual failover), which must be as safe under faults as the rest.
    Switchover,
}

#[derive(Clone, Copy, Debug)]
struct Active {
    kind: FaultKind,
    until: Millis,
}

/// The agent process of one member.
struct Agent {
    member: Option<Member>,
    next_round: Millis,
    /// A delayed round: its clock reading when it started, and when its
    /// requests reach the store.
    delayed: Option<(Millis, Millis)>,
    delay_ms: Millis,
    /// Crash the host right after the next round (which a call budget cut
    /// short), down for this long.
    crash_after_round: Option<Millis>,
    last_note: String,
}

struct History {
    lines: VecDeque<String>,
    keep: usize,
    echo: bool,
    /// FNV-1a over every line, to compare two runs of a seed.
    fingerprint: u64,
}

impl History {
    fn push(&mut self, line: String) {
        for byte in line.bytes().chain([b'\n']) {
            self.fingerprint = (self.fingerprint ^ byte as u64).wrapping_mul(0x100_0000_01b3);
        }
        if self.echo {
            println!("{line}");
        }
        if self.lines.len() == self.keep {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

struct Sim {
    seed: u64,
    config: SimConfig,
    rng: Rng,
    clock: Arc<ManualClock>,
    store: MemoryStore,
    keys: ClusterKeys,
    world: Arc<Mutex<World>>,
    board: Arc<Mutex<Board>>,
    names: Vec<String>,
    agents: Vec<Agent>,
    faults: Vec<Option<Active>>,
    outage_until: Option<Millis>,
    history: History,
    now: Millis,
    step: u64,
    leader_seen: Option<(String, i64)>,
    healed_at: Option<Millis>,
    fault_count: u64,
    rounds: u64,
    /// A switchover the API's rule admitted while nothing was wrong, with
    /// the fault count then: until another fault, the leader carries it
    /// out (invariant 6).
    admitted_quietly: Option<u64>,
    /// Invariant 6 broken in a round, for the next check to report.
    disagreement: Option<String>,
    /// A scripted run's steps still to come (`None`: random faults).
    script: Option<VecDeque<(Millis, Step)>>,
    /// A script wrote raw bytes into the store: each round checks
    /// invariant 7 from then on.
    raw_writes: bool,
    /// Members removed by the script (`ctl remove`), for invariant 8.
    removed: std::collections::BTreeSet<String>,
    /// Each member's lease guard: when it stops PostgreSQL unless a round
    /// moves it (the runtime's `lease_guard`; the failsafe answers move it
    /// from inside a round).
    guards: Arc<Mutex<Vec<Option<Millis>>>>,
    /// `SIM_NO_GUARD` set: the guards never fire (to show what they
    /// prevent, docs/simulation.md "Proving it bites").
    no_guard: bool,
    /// The last member seen holding the leader key.
    last_holder: Option<usize>,
    /// Leaders replaced while cut off from the store: (member, cut off
    /// since, replaced when seen).
    cut_takeovers: Vec<(usize, Millis, Millis)>,
    /// Each member's client network fault (its reachability check fails).
    reach_faults: Vec<Option<ReachFault>>,
    /// When a leader last asked for a switchover because its reachability
    /// check failed (invariant 10).
    last_reach_ask: Option<(usize, Millis)>,
    /// Reachability switchovers asked for (the report).
    reach_asks: u64,
    /// Invariants 9 (a candidate failing its check promoted) and 10 (a
    /// second reachability switchover within the grace) broken in a round,
    /// for the next check to report.
    reach_promoted: Option<String>,
    reach_asked_twice: Option<String>,
}

/// A member's client network down from `since` until `until`; with
/// `flap`, down and up by turns, `flap` each.
#[derive(Clone, Copy, Debug)]
struct ReachFault {
    since: Millis,
    until: Millis,
    flap: Option<Millis>,
}

impl ReachFault {
    fn fails_at(&self, now: Millis) -> bool {
        now < self.until
            && self
                .flap
                .is_none_or(|period| (now.saturating_sub(self.since) / period.max(1)) % 2 == 0)
    }
}

impl Sim {
    fn new(seed: u64, config: SimConfig, script: Option<&Script>, options: Options) -> Sim {
        let mut rng = Rng::new(seed);
        let clock = Arc::new(ManualClock::new(Duration::ZERO));
        let store = MemoryStore::new(clock.clone());
        let keys = ClusterKeys::new(store::cluster::DEFAULT_NAMESPACE, "sim")
            .expect("a valid cluster name");
        block_on(keys.config().put(&store, &config.dynamic_config(), None))
            .expect("the in-memory store takes the config");
        let names: Vec<String> = (1..=config.members).map(|i| format!("db{i}")).collect();
        let mut world = World::new(
            &names,
            config.stream_rate,
            config.synchronous_mode != SynchronousMode::Off,
            config.maximum_lag_on_failover,
            rng.split(),
        );
        world.cut_after_grant = config.cut_after_grant;
        let mut sim = Sim {
            seed,
            rng,
            clock,
            store,
            keys,
            world: Arc::new(Mutex::new(world)),
            board: Arc::new(Mutex::new(Board {
                promises: vec![None; config.members],
                known_leader: vec![None; config.members],
                known_ttl_ms: vec![config.ttl_ms; config.members],
            })),
            names,
            agents: Vec::new(),
            faults: vec![None; config.members],
            outage_until: None,
            history: History {
                lines: VecDeque::new(),
                keep: options.tail.max(1),
                echo: options.echo,
                fingerprint: 0xcbf2_9ce4_8422_2325,
            },
            now: 0,
            step: 0,
            leader_seen: None,
            healed_at: None,
            fault_count: 0,
            rounds: 0,
            admitted_quietly: None,
            disagreement: None,
            raw_writes: false,
            removed: Default::default(),
            guards: Arc::new(Mutex::new(vec![None; config.members])),
            no_guard: std::env::var_os("SIM_NO_GUARD").is_some(),
            last_holder: None,
            cut_takeovers: Vec::new(),
            reach_faults: vec![None; config.members],
            last_reach_ask: None,
            reach_asks: 0,
            reach_promoted: None,
            reach_asked_twice: None,
            script: script.map(|s| s.steps.iter().cloned().collect()),
            config,
        };
        match script {
            None => sim.event(format!("seed {seed}: {}", sim.config)),
            Some(script) => sim.event(format!(
                "seed {seed}: {}; scripted: {script}",
                sim.config.cluster()
            )),
        }
        for i in 0..sim.config.members {
            let member = sim.spawn(i);
            let next_round = sim.rng.below(sim.config.heartbeat_ms / STEP_MS) * STEP_MS;
            sim.agents.push(Agent {
                member: Some(member),
                next_round,
                delayed: None,
                delay_ms: 0,
                crash_after_round: None,
                last_note: String::new(),
            });
        }
        sim
    }

    fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// A fresh agent process for member `i` (nothing in memory).
    fn spawn(&self, i: usize) -> Member {
        let name = self.names[i].clone();
        let spec = MemberSpec {
            nofailover: self.config.nofailover == Some(i),
            nosync: false,
            noloadbalance: false,
            priority: 100,
            witness: false,
            pg_endpoint: Endpoint::new(format!("{name}.sim"), 5432),
            api_url: format!("http://{name}.sim:8008"),
            can_backup: false,
            name,
        };
        let store: Arc<dyn Store> =
            Arc::new(SimStore::new(i, self.store.clone(), self.world.clone()));
        let pg: Arc<dyn LocalPostgres> = Arc::new(SimPostgres::new(
            i,
            self.world.clone(),
            self.store.clone(),
            self.keys.clone(),
        ));
        let mut member = Member::new(spec, self.keys.clone(), store, pg);
        let guards = self.guards.clone();
        member.ask_failsafe_with(
            Arc::new(SimPeers {
                world: self.world.clone(),
                board: self.board.clone(),
                names: self.names.clone(),
            }),
            // The failsafe answers move the lease guard: only ever later,
            // never where no deadline was set (as the runtime does).
            Arc::new(move |until| {
                let at = agent::member::fence_before(until);
                if let Some(current) = lock(&guards)[i].as_mut() {
                    *current = (*current).max(at);
                }
            }),
        );
        member
    }

    /// What the REST API would write: a switchover from the leader, or a
    /// manual failover when there is none; to a random member or to the
    /// best candidate; only if the core's admission rule, which the API
    /// applies, admits it.
    fn ask_switchover(&mut self) {
        let Ok(records) = block_on(ClusterRecords::read(&self.store, &self.keys)) else {
            return;
        };
        let leader = records.leader_name().map(str::to_string);
        let names: Vec<String> = (0..self.agents.len())
            .map(|i| self.world().nodes[i].name.clone())
            .filter(|n| Some(n) != leader.as_ref())
            .collect();
        let to = if self.rng.chance(1, 3) {
            None
        } else {
            Some(names[self.rng.below(names.len() as u64) as usize].clone())
        };
        if leader.is_none() && to.is_none() {
            return;
        }
        let wall_ms = WALL_EPOCH_MS + self.now;
        let view = records.to_ha();
        let admitted = match (&leader, &to) {
            (Some(_), _) if switchover::healthy_leader(&view).is_some() => {
                let ask = switchover::Ask {
                    from: leader.clone(),
                    to: to.clone(),
                    at_ms: None,
                };
                switchover::admit_switchover(&view, &ask, wall_ms)
            }
            (_, Some(to)) => switchover::admit_failover(&view, to, wall_ms),
            (_, None) => return,
        };
        let Ok(admitted) = admitted else {
            return;
        };
        let request = store::cluster::Switchover {
            from: admitted.from.clone(),
            to: admitted.to.clone(),
            at_ms: None,
            requested_ms: wall_ms,
            handoff: None,
            reason: None,
        };
        let created = block_on(self.keys.switchover().create(&self.store, &request, None)).is_ok();
        if created {
            self.fault_count += 1;
            // A client network fault that flaps changes a target's check
            // with no new fault: not quiet either.
            let quiet = self.no_fault_now();
            self.admitted_quietly = (quiet && admitted.from.is_some()).then_some(self.fault_count);
            let what = match &leader {
                Some(from) => format!("a switchover from {from}"),
                None => "a manual failover".to_string(),
            };
            let target = to.unwrap_or_else(|| "the best candidate".into());
            self.event(format!("OPERATOR asks for {what} to {target}"));
        }
    }

    fn event(&mut self, text: String) {
        let line = format!("[{:>8}] {text}", secs(self.now));
        self.history.push(line);
    }

    fn member_event(&mut self, i: usize, text: String) {
        let line = format!("[{:>8}] {:<4} {text}", secs(self.now), self.names[i]);
        self.history.push(line);
    }

    fn drain_world_events(&mut self) {
        let events = std::mem::take(&mut self.world().events);
        for (node, text) in events {
            self.member_event(node, text);
        }
    }

    fn run(mut self) -> Result<Report, Box<Failure>> {
        loop {
            self.step += 1;
            self.now += STEP_MS;
            self.clock.set(Duration::from_millis(self.now));
            self.world().now = self.now;
            self.store.expire_leases();
            self.faults()?;
            self.world().tick();
            self.lease_guards();
            self.drain_world_events();
            self.check()?;
            self.rounds()?;
            self.store.compact(self.store.revision());
            match self.healed_at {
                Some(healed) if self.now >= healed + LIVENESS_BOUND_MS => {
                    self.check_liveness()?;
                    return Ok(self.report());
                }
                Some(_) => {}
                None => {
                    let quiet = self.no_fault_now();
                    let over = match &self.script {
                        Some(steps) => steps.is_empty(),
                        None => self.now >= self.config.faults_until_ms,
                    };
                    if over && quiet {
                        self.healed_at = Some(self.now);
                        self.event(format!(
                            "every fault has healed: one primary with every member following it is due by {}",
                            secs(self.now + LIVENESS_BOUND_MS)
                        ));
                    }
                }
            }
        }
    }

    fn report(&self) -> Report {
        let world = self.world();
        let stints = world.acks.stints();
        // The cut → the last acknowledgement of a primary incarnation that
        // served before the takeover was seen.
        let windows = self.cut_takeovers.iter().filter_map(|&(node, cut, seen)| {
            stints
                .iter()
                .filter(|s| s.node == node && s.first <= seen && s.last >= cut)
                .map(|s| s.last - cut)
                .max()
        });
        // Failsafe mode serves on the other members' word while cut off:
        // its windows are by design, not losses of the cut.
        let async_loss_window_ms = match self.config.synchronous_mode {
            SynchronousMode::Off if !self.config.failsafe && !self.cut_takeovers.is_empty() => {
                Some(windows.max().unwrap_or(0))
            }
            _ => None,
        };
        Report {
            seed: self.seed,
            steps: self.step,
            virtual_ms: self.now,
            faults: self.fault_count,
            rounds: self.rounds,
            promotions: world.promotions.len(),
            acknowledged: world.acks.count,
            async_overlaps: world.acks.overlaps,
            async_stale_acks: world.acks.stale,
            unguarded_stale_acks: world.acks.unguarded_stale,
            two_writer_ticks: world.two_writer_ticks,
            async_cut_takeovers: match async_loss_window_ms {
                Some(_) => self.cut_takeovers.len() as u64,
                None => 0,
            },
            async_loss_window_ms,
            reach_switchovers: self.reach_asks,
            fingerprint: self.history.fingerprint,
        }
    }

    // ----- faults -----

    fn faults(&mut self) -> Result<(), Box<Failure>> {
        for i in 0..self.faults.len() {
            if let Some(active) = self.faults[i] {
                if active.until <= self.now {
                    self.faults[i] = None;
                    self.heal(i, active.kind);
                }
            }
        }
        if self.outage_until.is_some_and(|until| until <= self.now) {
            self.outage_until = None;
            self.world().store_down = false;
            self.event("FAULT over: the store is back".into());
        }
        for i in 0..self.reach_faults.len() {
            if self.reach_faults[i].is_some_and(|f| f.until <= self.now) {
                self.reach_faults[i] = None;
                self.member_event(i, "FAULT over: the client network reaches it again".into());
            }
        }
        if self.script.is_some() {
            return self.play_script();
        }
        let in_phase = self.now >= FAULTS_FROM_MS && self.now < self.config.faults_until_ms;
        if in_phase && self.rng.below(self.config.mean_fault_interval_ms / STEP_MS) == 0 {
            self.inject();
        }
        // Only seeds that check reachability draw these, so the others run
        // as before.
        if self.config.reachability
            && in_phase
            && self.rng.below(self.config.mean_fault_interval_ms / STEP_MS) == 0
        {
            let i = self.rng.below(self.reach_faults.len() as u64) as usize;
            if self.reach_faults[i].is_none() {
                let lasts = self.rng.range(20, 600) * STEP_MS;
                let flap = self
                    .rng
                    .chance(1, 3)
                    .then(|| self.rng.range(4, 60) * STEP_MS);
                self.apply(i, Fault::Unreachable { lasts, flap });
            }
        }
        Ok(())
    }

    /// A scripted run: the steps due now, instead of random faults. A step
    /// that cannot apply as written fails the run: the scenario no longer
    /// unfolds as its test says.
    fn play_script(&mut self) -> Result<(), Box<Failure>> {
        let now = self.now;
        while let Some((at, step)) = self.script.as_mut().and_then(|steps| {
            let due = steps.front().is_some_and(|(at, _)| *at <= now);
            due.then(|| steps.pop_front()).flatten()
        }) {
            let broken =
                |detail: String| format!("the step due at {} ({step}): {detail}", secs(at));
            match &step {
                Step::Fault { member, fault } => {
                    let Some(i) = self.names.iter().position(|n| n == member) else {
                        return Err(self.fail("the script", broken("no such member".into())));
                    };
                    let busy = match fault {
                        Fault::Unreachable { .. } => {
                            self.reach_faults[i].map(|_| "client network".to_string())
                        }
                        _ => self.faults[i].map(|active| format!("{:?}", active.kind)),
                    };
                    if let Some(kind) = busy {
                        let detail = format!("{member} still has a {kind} fault");
                        return Err(self.fail("the script", broken(detail)));
                    }
                    self.apply(i, *fault);
                }
                Step::StoreOutage { lasts } => {
                    if self.outage_until.is_some() {
                        let detail = "the store is already out".to_string();
                        return Err(self.fail("the script", broken(detail)));
                    }
                    self.store_outage(*lasts);
                }
                Step::ExpectLeader { member } => {
                    let leader = self.leader();
                    if leader.as_ref().map(|(name, _)| name) != member.as_ref() {
                        let held = match leader {
                            Some((name, term)) => format!("{name} holds it (term {term})"),
                            None => "nobody holds it".to_string(),
                        };
                        return Err(self.fail("the script", broken(held)));
                    }
                    self.event(format!("SCRIPT {step}: as expected"));
                }
                Step::ExpectLeaderOtherThan { not } => {
                    match self.leader() {
                        Some((name, _)) if name != *not => {}
                        Some((name, term)) => {
                            let held = format!("{name} holds it (term {term})");
                            return Err(self.fail("the script", broken(held)));
                        }
                        None => {
                            let held = "nobody holds it".to_string();
                            return Err(self.fail("the script", broken(held)));
                        }
                    }
                    self.event(format!("SCRIPT {step}: as expected"));
                }
                Step::Store { key, value } => {
                    let key = format!("{}{key}", self.keys.prefix());
                    self.raw_writes = true;
                    match value {
                        Some(bytes) => {
                            block_on(self.store.put(&key, bytes.clone(), None))
                                .expect("the in-memory store takes a put");
                        }
                        None => {
                            block_on(self.store.delete(&key))
                                .expect("the in-memory store takes a delete");
                        }
                    }
                    self.event(format!("SCRIPT {step}"));
                }
                Step::Remove { member } => {
                    if let Err(detail) = self.remove(member) {
                        return Err(self.fail("the script", broken(detail)));
                    }
                    self.removed.insert(member.clone());
                    self.event(format!("SCRIPT {step}"));
                }
            }
        }
        Ok(())
    }

    /// Records `member` removed as the API does: the core's admission
    /// rule, then the one retirement transaction.
    fn remove(&mut self, member: &str) -> Result<(), String> {
        let records =
            block_on(ClusterRecords::read(&self.store, &self.keys)).map_err(|e| e.to_string())?;
        let ask = ha::retire::Ask {
            member: member.to_string(),
            force: true,
            has_slot: false,
            // Recorded at once even though its agent runs: the agent then
            // finds itself removed with PostgreSQL running.
            by_itself: true,
        };
        let removal =
            ha::retire::admit_removal(&records.to_ha(), &ask, self.now).map_err(|r| r.message)?;
        let ha::retire::Removal::Record { clear_switchover } = removal else {
            return Err("asked of itself, a removal is recorded".to_string());
        };
        let retirement = store::cluster::Retirement {
            record: store::cluster::RemovedMember {
                name: member.to_string(),
                system_identifier: None,
                timeline: None,
                removed_ms: self.now,
                by: "the script".to_string(),
            },
            leader_revision: records.leader.as_ref().map(|l| l.mod_revision),
            status_revision: records.members.get(member).map(|m| m.mod_revision),
            switchover_revision: records
                .switchover
                .as_ref()
                .filter(|_| clear_switchover)
                .map(|s| s.mod_revision),
        };
        block_on(self.keys.retire(&self.store, &retirement)).map_err(|e| e.to_string())
    }

    fn inject(&mut self) {
        const KINDS: [(FaultKind, u64); 8] = [
            (FaultKind::HostCrash, 3),
            (FaultKind::AgentCrash, 2),
            (FaultKind::PgCrash, 2),
            (FaultKind::Freeze, 3),
            (FaultKind::CutOff, 3),
            (FaultKind::Delay, 2),
            (FaultKind::StoreOutage, 1),
            (FaultKind::Switchover, 3),
        ];
        let total: u64 = KINDS.iter().map(|(_, w)| w).sum();
        let mut pick = self.rng.below(total);
        let kind = KINDS
            .iter()
            .find(|(_, w)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .map(|(k, _)| *k)
            .expect("a kind");
        if kind == FaultKind::Switchover {
            self.ask_switchover();
            return;
        }
        if kind == FaultKind::StoreOutage {
            if self.outage_until.is_none() {
                let lasts = self.rng.range(10, 160) * STEP_MS;
                self.store_outage(lasts);
            }
            return;
        }
        let free: Vec<usize> = (0..self.faults.len())
            .filter(|&i| self.faults[i].is_none())
            .collect();
        if free.is_empty() {
            return;
        }
        let i = free[self.rng.below(free.len() as u64) as usize];
        let fault = self.draw(kind);
        self.apply(i, fault);
    }

    /// A random fault of `kind` (a member's, not a store outage or an
    /// operator's request).
    fn draw(&mut self, kind: FaultKind) -> Fault {
        let min_restart = self.config.min_restart_ms;
        match kind {
            FaultKind::HostCrash => {
                let down = (self.rng.range(10, 300) * STEP_MS).max(min_restart);
                if self.rng.chance(1, 2) {
                    let calls = self.rng.below(8) as u32;
                    Fault::HostCrashAfterCalls { calls, down }
                } else {
                    Fault::HostCrash { down }
                }
            }
            FaultKind::AgentCrash => Fault::AgentCrash {
                down: (self.rng.range(10, 200) * STEP_MS).max(min_restart),
            },
            FaultKind::PgCrash => Fault::PgCrash {
                unstartable: if self.rng.chance(1, 2) {
                    0
                } else {
                    self.rng.range(20, 160) * STEP_MS
                },
            },
            FaultKind::Freeze => Fault::Freeze {
                lasts: self.rng.range(10, 240) * STEP_MS,
            },
            FaultKind::CutOff => {
                let lasts = self.rng.range(10, 240) * STEP_MS;
                match self.rng.below(3) {
                    0 => Fault::CutOffAfterCalls {
                        calls: self.rng.below(8) as u32,
                        lasts,
                    },
                    1 => Fault::CutOff { lasts },
                    _ => Fault::Partition { lasts },
                }
            }
            FaultKind::Delay => {
                let delay = self.rng.range(2, 60) * STEP_MS;
                let lasts = self.rng.range(40, 300) * STEP_MS;
                Fault::Delay { delay, lasts }
            }
            FaultKind::StoreOutage | FaultKind::Switchover => unreachable!("not a member's"),
        }
    }

    fn store_outage(&mut self, lasts: Millis) {
        self.outage_until = Some(self.now + lasts);
        self.world().store_down = true;
        self.fault_count += 1;
        self.event(format!(
            "FAULT the store loses its quorum for {}",
            secs(lasts)
        ));
    }

    /// `fault` strikes member `i`, which has none running.
    fn apply(&mut self, i: usize, fault: Fault) {
        self.fault_count += 1;
        if let Fault::Unreachable { lasts, flap } = fault {
            self.reach_faults[i] = Some(ReachFault {
                since: self.now,
                until: self.now + lasts,
                flap,
            });
            let how = match flap {
                Some(period) => format!(", down and up by turns every {}", secs(period)),
                None => String::new(),
            };
            self.member_event(
                i,
                format!(
                    "FAULT its client network is cut off (its reachability check fails) for {}{how}",
                    secs(lasts)
                ),
            );
            return;
        }
        let kind = match fault {
            Fault::HostCrash { .. } | Fault::HostCrashAfterCalls { .. } => FaultKind::HostCrash,
            Fault::AgentCrash { .. } => FaultKind::AgentCrash,
            Fault::PgCrash { .. } => FaultKind::PgCrash,
            Fault::Freeze { .. } => FaultKind::Freeze,
            Fault::CutOff { .. }
            | Fault::CutOffAfterCalls { .. }
            | Fault::CutOffAfterGrant { .. }
            | Fault::Partition { .. } => FaultKind::CutOff,
            Fault::Delay { .. } => FaultKind::Delay,
            Fault::Unreachable { .. } => unreachable!("handled above"),
        };
        let lasting = |sim: &mut Sim, lasts: Millis| {
            sim.faults[i] = Some(Active {
                kind,
                until: sim.now + lasts,
            });
        };
        match fault {
            Fault::HostCrash { down } => self.crash_host(i, down),
            Fault::HostCrashAfterCalls { calls, down } => {
                self.world().nodes[i].budget = Some(Budget {
                    calls_left: calls,
                    host: true,
                });
                self.agents[i].crash_after_round = Some(down);
                self.faults[i] = Some(Active {
                    kind,
                    until: Millis::MAX,
                });
                self.member_event(
                    i,
                    format!(
                        "FAULT the host will crash after {calls} more calls of its agent, down for {}",
                        secs(down)
                    ),
                );
            }
            Fault::AgentCrash { down } => {
                self.agents[i].member = None;
                self.agent_died(i);
                self.forget_promise(i);
                self.agents[i].delayed = None;
                lasting(self, down);
                self.member_event(
                    i,
                    format!(
                        "FAULT the agent crashes (PostgreSQL keeps running), back in {}",
                        secs(down)
                    ),
                );
            }
            Fault::PgCrash { unstartable } => {
                {
                    let mut world = self.world();
                    world.crash_pg(i);
                    world.nodes[i].start_fails_until = self.now + unstartable;
                }
                lasting(self, unstartable.max(STEP_MS));
                self.member_event(
                    i,
                    format!(
                        "FAULT PostgreSQL crashes and will not start for {}",
                        secs(unstartable)
                    ),
                );
                self.drain_world_events();
            }
            Fault::Freeze { lasts } => {
                self.world().nodes[i].frozen = true;
                lasting(self, lasts);
                self.member_event(i, format!("FAULT the host freezes for {}", secs(lasts)));
            }
            Fault::CutOff { lasts } => {
                self.world().nodes[i].store_cut = true;
                self.member_event(
                    i,
                    format!("FAULT cut off from the store for {}", secs(lasts)),
                );
                lasting(self, lasts);
            }
            Fault::Partition { lasts } => {
                let mut world = self.world();
                world.nodes[i].store_cut = true;
                world.nodes[i].isolated = true;
                drop(world);
                self.member_event(
                    i,
                    format!(
                        "FAULT cut off from the store and the other members for {} (its clients still reach it)",
                        secs(lasts)
                    ),
                );
                lasting(self, lasts);
            }
            Fault::CutOffAfterCalls { calls, lasts } => {
                self.world().nodes[i].budget = Some(Budget {
                    calls_left: calls,
                    host: false,
                });
                self.member_event(
                    i,
                    format!(
                        "FAULT cut off from the store after {calls} more calls, for {}",
                        secs(lasts)
                    ),
                );
                lasting(self, lasts);
            }
            Fault::CutOffAfterGrant { lasts } => {
                self.world().nodes[i].cut_at_grant = true;
                self.member_event(
                    i,
                    format!(
                        "FAULT cut off from the store right after its next lease grant, until {}",
                        secs(self.now + lasts)
                    ),
                );
                lasting(self, lasts);
            }
            Fault::Delay { delay, lasts } => {
                self.agents[i].delay_ms = delay;
                self.world().nodes[i].slow_network = true;
                lasting(self, lasts);
                self.member_event(
                    i,
                    format!(
                        "FAULT messages delayed by {} and replication slowed, for {}",
                        secs(delay),
                        secs(lasts)
                    ),
                );
            }
            Fault::Unreachable { .. } => unreachable!("handled above"),
        }
    }

    fn crash_host(&mut self, i: usize, down: Millis) {
        self.agents[i].member = None;
        self.agent_died(i);
        self.forget_promise(i);
        self.agents[i].delayed = None;
        self.agents[i].crash_after_round = None;
        self.world().crash_host(i);
        self.faults[i] = Some(Active {
            kind: FaultKind::HostCrash,
            until: self.now + down,
        });
        self.member_event(
            i,
            format!("FAULT the host crashes, down for {}", secs(down)),
        );
        self.drain_world_events();
    }

    fn heal(&mut self, i: usize, kind: FaultKind) {
        match kind {
            FaultKind::HostCrash => {
                self.world().nodes[i].host_up = true;
                self.restart_agent(i);
                self.member_event(i, "FAULT over: the host is back, the agent starts".into());
            }
            FaultKind::AgentCrash => {
                self.restart_agent(i);
                self.member_event(i, "FAULT over: the agent restarts".into());
            }
            FaultKind::PgCrash => {
                self.member_event(i, "FAULT over: PostgreSQL can start again".into());
            }
            FaultKind::Freeze => {
                self.world().nodes[i].frozen = false;
                self.member_event(i, "FAULT over: the host thaws".into());
            }
            FaultKind::CutOff => {
                let mut world = self.world();
                world.nodes[i].store_cut = false;
                world.nodes[i].isolated = false;
                world.nodes[i].budget = None;
                world.nodes[i].cut_at_grant = false;
                drop(world);
                self.member_event(i, "FAULT over: the store is reachable again".into());
            }
            FaultKind::Delay => {
                self.agents[i].delay_ms = 0;
                self.world().nodes[i].slow_network = false;
                self.member_event(i, "FAULT over: messages flow normally".into());
            }
            FaultKind::StoreOutage | FaultKind::Switchover => {}
        }
    }

    /// A failsafe promise, and what the agent read, live in its memory.
    fn forget_promise(&self, i: usize) {
        let mut board = lock(&self.board);
        board.promises[i] = None;
        board.known_leader[i] = None;
    }

    /// The agent process died, and its lease guard with it.
    fn agent_died(&mut self, i: usize) {
        lock(&self.guards)[i] = None;
        self.world().nodes[i].guarded = false;
        self.world().nodes[i].leading = false;
    }

    /// The runtime's lease guard, a task beside the rounds: past its
    /// deadline it stops PostgreSQL at once. It runs after the world's
    /// tick, so the client's writes of that tick may be acknowledged
    /// first: a latency of up to one tick (50 ms) for the signal and the
    /// backends to exit. A frozen host's guard is frozen too; it fires at
    /// the thaw, after the tick in which the backends resumed.
    fn lease_guards(&mut self) {
        if self.no_guard {
            return;
        }
        let mut guards = lock(&self.guards);
        let mut world = lock(&self.world);
        for (i, guard) in guards.iter_mut().enumerate() {
            let Some(deadline) = *guard else {
                continue;
            };
            let n = &world.nodes[i];
            if deadline > self.now || n.frozen || !n.host_up {
                continue;
            }
            // It fires once per deadline, as the runtime's does.
            *guard = None;
            world.fence(i);
        }
    }

    fn restart_agent(&mut self, i: usize) {
        let member = self.spawn(i);
        let agent = &mut self.agents[i];
        agent.member = Some(member);
        agent.next_round = self.now;
        agent.delayed = None;
        agent.last_note.clear();
    }

    // ----- agent rounds -----

    fn rounds(&mut self) -> Result<(), Box<Failure>> {
        let mut due: Vec<(usize, Millis)> = Vec::new();
        for i in 0..self.agents.len() {
            let (up, frozen) = {
                let world = self.world();
                (world.nodes[i].host_up, world.nodes[i].frozen)
            };
            let agent = &mut self.agents[i];
            if agent.member.is_none() || !up || frozen {
                continue;
            }
            match agent.delayed {
                Some((started, lands)) if lands <= self.now => due.push((i, started)),
                Some(_) => {}
                None if agent.next_round <= self.now => {
                    if agent.delay_ms > 0 {
                        agent.delayed = Some((self.now, self.now + agent.delay_ms));
                    } else {
                        due.push((i, self.now));
                    }
                }
                None => {}
            }
        }
        self.rng.shuffle(&mut due);
        for (i, started) in due {
            self.round(i, started);
            self.drain_world_events();
            if let Some(down) = self.agents[i].crash_after_round.take() {
                self.crash_host(i, down);
            }
            self.wake_on_leader_change();
            self.check()?;
        }
        Ok(())
    }

    fn round(&mut self, i: usize, started: Millis) {
        let promise = lock(&self.board).promises[i].clone();
        let Some(member) = self.agents[i].member.as_mut() else {
            return;
        };
        member.keep_failsafe_promise(promise);
        let reach_fails = self.reach_faults[i].is_some_and(|f| f.fails_at(started));
        if self.config.reachability {
            member.set_reach(if reach_fails {
                ha::Reach::Fails {
                    detail: "0 of 1 targets answered, 1 needed; the client network is cut off"
                        .into(),
                }
            } else {
                ha::Reach::Passes
            });
        }
        let now = Now {
            mono: started,
            wall_ms: WALL_EPOCH_MS + started,
        };
        let Round { plan, failed, .. } = block_on(member.round(&|| now));
        // The runtime hands the guard its new deadline after every round.
        let deadline = member.fence_deadline();
        lock(&self.guards)[i] = deadline;
        let mut world = lock(&self.world);
        world.nodes[i].guarded = true;
        world.nodes[i].leading = deadline.is_some();
        drop(world);
        let known = member
            .records()
            .leader_name()
            .map(str::to_string)
            .zip(member.records().term());
        let ttl_ms = member.records().settings().ttl_ms;
        let mut board = lock(&self.board);
        board.known_leader[i] = known;
        board.known_ttl_ms[i] = ttl_ms;
        drop(board);
        // Events go to the store in the real agent; here the log says it all.
        member.take_events();
        let due = member.fast_path_due();
        self.rounds += 1;
        self.check_switchover_carried_out(i, &plan);
        self.check_no_takeover_on_unreadable_records(i, &plan);
        self.check_removed_stay_out(i, &plan);
        self.check_reachability(i, started, reach_fails, &plan, failed.is_none());
        self.watch_status_of(i);
        let agent = &mut self.agents[i];
        agent.delayed = None;
        agent.next_round = self.now + self.config.heartbeat_ms + self.rng.below(3) * STEP_MS;
        // The runtime looks again when the fast path's timers run out.
        if let Some(due) = due.filter(|&due| due > self.now) {
            agent.next_round = agent.next_round.min(due + STEP_MS);
        }
        let changed = plan.note != agent.last_note;
        if changed {
            agent.last_note = plan.note.clone();
        }
        let routine = plan
            .actions
            .iter()
            .all(|a| matches!(a, Action::RenewLeader | Action::KeepSlots { .. }));
        if changed || !routine || failed.is_some() {
            let mut line = format!("{:<13} {}", plan.role.to_string(), plan.note);
            if started != self.now {
                line = format!("(started {}) {line}", secs(started));
            }
            if !plan.actions.is_empty() {
                let actions: Vec<String> = plan.actions.iter().map(short).collect();
                line.push_str(&format!(" => {}", actions.join(", ")));
            }
            if let Some((action, error)) = failed {
                line.push_str(&format!(" !! {} failed: {error}", short(&action)));
            }
            self.member_event(i, line);
        }
    }

    /// No fault is in force or scheduled on an agent's next round.
    fn no_fault_now(&self) -> bool {
        self.faults.iter().all(Option::is_none)
            && self.reach_faults.iter().all(Option::is_none)
            && self.outage_until.is_none()
            && self.agents.iter().all(|a| a.crash_after_round.is_none())
    }

    /// Agents watch the store: the others' watches deliver member `i`'s
    /// status as of now, where their hosts run and reach the store (the
    /// real watch may deliver it later; the rounds read it then).
    fn watch_status_of(&mut self, i: usize) {
        let name = &self.names[i];
        let Ok(key) = self.keys.member(name) else {
            return;
        };
        // An undecodable status (a fault of its own) changes nothing here.
        let Ok(status) = block_on(key.get(&self.store)) else {
            return;
        };
        let revision = status.map(|status| status.mod_revision as u64);
        let world = lock(&self.world);
        let hears: Vec<bool> = world
            .nodes
            .iter()
            .map(|n| n.host_up && !n.frozen && n.cut_since.is_none())
            .collect();
        drop(world);
        for (j, agent) in self.agents.iter_mut().enumerate() {
            if j == i || !hears[j] {
                continue;
            }
            if let Some(member) = agent.member.as_mut() {
                member.note_status_seen(name, revision, self.now);
            }
        }
    }

    /// Agents watch the store: a change of leader wakes them soon.
    fn wake_on_leader_change(&mut self) {
        let leader = self.leader();
        if leader == self.leader_seen {
            return;
        }
        if let Some((name, _)) = &leader {
            let holder = self.names.iter().position(|n| n == name);
            if let (Some(old), Some(new)) = (self.last_holder, holder) {
                let cut = self.world().nodes[old].cut_since;
                if let (true, Some(cut)) = (old != new, cut) {
                    self.cut_takeovers.push((old, cut, self.now));
                }
            }
            self.last_holder = holder;
        }
        self.leader_seen = leader;
        for agent in &mut self.agents {
            let soon = self.now + self.rng.range(1, 3) * STEP_MS;
            if agent.member.is_some() && agent.delayed.is_none() {
                agent.next_round = agent.next_round.min(soon);
            }
        }
    }

    /// The leader key as the store holds it: member and term.
    fn leader(&self) -> Option<(String, i64)> {
        block_on(self.keys.leader().get(&self.store))
            .ok()
            .flatten()
            .map(|l| (l.value.member, l.create_revision))
    }

    // ----- invariants -----

    /// Invariant 7: while a record a decision needs (leader, config, sync,
    /// …) does not decode, nobody races for the leader key or promotes:
    /// left out, it would read as a permission.
    fn check_no_takeover_on_unreadable_records(&mut self, i: usize, plan: &ha::Plan) {
        if !self.raw_writes {
            return;
        }
        let takes_over = plan
            .actions
            .iter()
            .any(|a| matches!(a, ha::Action::AcquireLeader | ha::Action::Promote));
        if !takes_over {
            return;
        }
        let Ok(records) = block_on(ClusterRecords::read(&self.store, &self.keys)) else {
            return;
        };
        if !records.blocking.is_empty() {
            let detail = format!(
                "{} planned {:?} while {} did not decode",
                self.names[i],
                plan.actions,
                records.blocking.join(", ")
            );
            self.world()
                .violate("7. no takeover on an unreadable record", detail);
        }
    }

    /// Invariant 8: a removed member never takes the leader key, is never
    /// promoted, and no primary makes it synchronous or publishes it in
    /// the synchronous set.
    fn check_removed_stay_out(&mut self, i: usize, plan: &ha::Plan) {
        if self.removed.is_empty() {
            return;
        }
        let name = &self.names[i];
        for action in &plan.actions {
            let broken = match action {
                Action::AcquireLeader | Action::Promote | Action::DeposeLeader { .. } => {
                    self.removed.contains(name)
                }
                Action::ApplySynchronous { names, .. } => {
                    names.iter().any(|n| self.removed.contains(n))
                }
                Action::PublishSync { members, .. } => {
                    members.iter().any(|n| self.removed.contains(n))
                }
                _ => false,
            };
            if broken {
                let detail = format!(
                    "{name} planned {action:?} after {} was removed",
                    self.removed.iter().cloned().collect::<Vec<_>>().join(", ")
                );
                self.world()
                    .violate("8. a removed member stays out", detail);
            }
        }
    }

    /// Invariant 6: what the API admits, the leader does not refuse a
    /// moment later. A switchover admitted while nothing was wrong is not
    /// cancelled unless a fault came in between, or the target, streaming
    /// but behind, did not reach the leader's timeline within the bound.
    fn check_switchover_carried_out(&mut self, i: usize, plan: &ha::Plan) {
        let Some(admitted) = self.admitted_quietly else {
            return;
        };
        if self.fault_count != admitted {
            self.admitted_quietly = None;
            return;
        }
        for action in &plan.actions {
            if let Action::ClearSwitchover { outcome } = action {
                self.admitted_quietly = None;
                // Waiting for a target far behind to replay the timeline
                // switch is bounded: giving up then is the rule, not a
                // disagreement.
                if outcome.contains("cancelled") && !outcome.contains("has not replayed the switch")
                {
                    self.disagreement = Some(format!(
                        "{} cancelled a switchover the admission rule accepted, with no fault since: {outcome}",
                        self.names[i]
                    ));
                }
            }
        }
    }

    /// Invariants 8 and 9: a member whose reachability check fails is
    /// never promoted; a leader asks for a switchover because its own
    /// fails at most once per grace, however the check flaps, cluster-wide.
    fn check_reachability(
        &mut self,
        i: usize,
        started: Millis,
        reach_fails: bool,
        plan: &ha::Plan,
        all_ran: bool,
    ) {
        if reach_fails && plan.actions.contains(&Action::Promote) {
            self.reach_promoted = Some(format!(
                "{} planned a promotion while its reachability check failed: {}",
                self.names[i], plan.note
            ));
        }
        let asked = all_ran
            && plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::AskSwitchover { .. }));
        if !asked {
            return;
        }
        self.reach_asks += 1;
        let grace = self.config.reachability_grace_ms;
        if let Some((before, at)) = self.last_reach_ask {
            if started < at + grace {
                self.reach_asked_twice = Some(format!(
                    "{} asked for a reachability switchover {} after {} did, within the grace ({grace} ms)",
                    self.names[i],
                    secs(started - at),
                    self.names[before]
                ));
            }
        }
        self.last_reach_ask = Some((i, started));
    }

    fn fail(&self, invariant: &str, detail: String) -> Box<Failure> {
        Box::new(Failure {
            seed: self.seed,
            step: self.step,
            at: self.now,
            invariant: invariant.to_string(),
            detail,
            config: match self.script {
                None => self.config.to_string(),
                Some(_) => format!("{}, faults scripted", self.config.cluster()),
            },
            replay: match self.script {
                None => format!(
                    "SIM_SEED={} cargo test -p pgwarden-sim --test seeds replay -- --nocapture",
                    self.seed
                ),
                Some(_) => format!(
                    "the scenario's test with seed {} (Options {{ echo: true, .. }} prints the whole history)",
                    self.seed
                ),
            },
            history: self.history.lines.iter().cloned().collect(),
        })
    }

    fn check(&mut self) -> Result<(), Box<Failure>> {
        let violation = self.world().violations.first().cloned();
        if let Some(v) = violation {
            return Err(self.fail(v.invariant, v.detail));
        }
        if let Some(detail) = self.disagreement.take() {
            return Err(self.fail("6. an admitted switchover is carried out", detail));
        }
        if let Some(detail) = self.reach_promoted.take() {
            return Err(self.fail(
                "9. no promotion of a member whose reachability check fails",
                detail,
            ));
        }
        if let Some(detail) = self.reach_asked_twice.take() {
            return Err(self.fail("10. at most one reachability switchover per grace", detail));
        }
        // 1. Never two writers.
        let writers: Vec<String> = {
            let world = self.world();
            // A primary deposed on the fast path while cut off believes its
            // lease valid, but with no synchronous standby connected it
            // can acknowledge nothing (what clients saw is checked above).
            (0..self.agents.len())
                .filter(|&i| world.is_writable(i) && world.could_acknowledge(i))
                .filter_map(|i| {
                    let until = self.agents[i].member.as_ref()?.writes_valid_until()?;
                    (until > self.now).then(|| {
                        format!(
                            "{} (lease or failsafe answers valid until {})",
                            self.names[i],
                            secs(until)
                        )
                    })
                })
                .collect()
        };
        if writers.len() > 1 {
            return Err(self.fail(
                "1. never two writers",
                format!(
                    "running primaries whose agents believe their lease valid: {}",
                    writers.join(", ")
                ),
            ));
        }
        // 3. Synchronous mode: no acknowledged write lost.
        if self.config.synchronous_mode != SynchronousMode::Off {
            if let Some((leader, _)) = self.leader() {
                let world = self.world();
                if let Some(l) = world.index(&leader).filter(|&l| world.is_primary(l)) {
                    let missing = world.missing_acks(l);
                    if let Some(a) = missing.first() {
                        let detail = format!(
                            "the leader {leader}'s primary (lsn {}) lacks record {} at lsn {}, acknowledged by {} at {} ({} acknowledged records missing)",
                            world.lsn(l),
                            a.id,
                            a.index + 1,
                            world.nodes[a.node].name,
                            secs(a.at),
                            missing.len()
                        );
                        drop(world);
                        return Err(self.fail("3. no acknowledged write lost", detail));
                    }
                }
            }
        }
        Ok(())
    }

    /// Invariant 4: once every fault has healed, one running primary holds
    /// the leader key and every member streams from it.
    fn check_liveness(&mut self) -> Result<(), Box<Failure>> {
        let leader = self.leader();
        let world = self.world();
        let mut problems = Vec::new();
        let leader_index = leader.as_ref().and_then(|(name, _)| world.index(name));
        match (&leader, leader_index) {
            (None, _) | (_, None) => problems.push("nobody holds the leader key".to_string()),
            (Some((name, term)), Some(l)) => {
                let lease_ok = self.agents[l]
                    .member
                    .as_ref()
                    .and_then(Member::lease_valid_until)
                    .is_some_and(|until| until > self.now);
                if !world.is_writable(l) || !lease_ok {
                    problems.push(format!(
                        "{name} holds the leader key (term {term}) but is not a running primary with a valid lease"
                    ));
                }
            }
        }
        for j in 0..self.agents.len() {
            if Some(j) == leader_index {
                continue;
            }
            if self.removed.contains(&self.names[j]) {
                // It stays out, its PostgreSQL stopped.
                if world.nodes[j].server.is_some() {
                    problems.push(format!(
                        "{} was removed but its PostgreSQL runs",
                        self.names[j]
                    ));
                }
                continue;
            }
            if world.connected(j).is_none() || world.connected(j) != leader_index {
                problems.push(format!("{} does not stream from the leader", self.names[j]));
            } else if self.config.synchronous_mode != SynchronousMode::Off {
                let lsn = world.lsn(j) as usize;
                if let Some(a) = world.missing_acks(j).iter().find(|a| a.index < lsn) {
                    problems.push(format!(
                        "{} follows the leader but lacks acknowledged record {}",
                        self.names[j], a.id
                    ));
                }
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        let states: Vec<String> = (0..self.agents.len())
            .map(|j| {
                let n = &world.nodes[j];
                let pg = match (&n.data, &n.server) {
                    (None, _) => "no data".to_string(),
                    (Some(d), None) => format!(
                        "stopped, timeline {}, lsn {}{}",
                        d.timeline(),
                        d.wal.len(),
                        if d.was_primary { ", was primary" } else { "" }
                    ),
                    (Some(d), Some(s)) => format!(
                        "running {}, timeline {}, lsn {}, upstream {:?}, sync {:?}",
                        if s.primary { "primary" } else { "standby" },
                        d.timeline(),
                        d.wal.len(),
                        s.conf.upstream,
                        s.conf.sync_names
                    ),
                };
                format!(
                    "{}: {pg}; agent: {}",
                    self.names[j], self.agents[j].last_note
                )
            })
            .collect();
        drop(world);
        Err(self.fail(
            "4. liveness",
            format!(
                "{} after every fault healed: {}\n  members: {}",
                secs(LIVENESS_BOUND_MS),
                problems.join("; "),
                states.join("\n           ")
            ),
        ))
    }
}

/// An action in a few words, for the history.
fn short(action: &Action) -> String {
    match action {
        Action::ClaimInitialize => "ClaimInitialize".into(),
        Action::InitDb => "InitDb".into(),
        Action::CompleteInitialize { .. } => "CompleteInitialize".into(),
        Action::AcquireLeader => "AcquireLeader".into(),
        Action::RenewLeader => "RenewLeader".into(),
        Action::ReleaseLeader => "ReleaseLeader".into(),
        Action::CloneFrom { leader } => format!("CloneFrom({leader})"),
        Action::Rewind { leader } => format!("Rewind({leader})"),
        Action::Reclone { leader, .. } => format!("Reclone({leader})"),
        Action::StartPrimary => "StartPrimary".into(),
        Action::StartReplica { upstream } => {
            format!("StartReplica({})", upstream.as_deref().unwrap_or("-"))
        }
        Action::Follow { upstream } => format!("Follow({})", upstream.as_deref().unwrap_or("-")),
        Action::Promote => "Promote".into(),
        Action::Stop { mode } => format!("Stop({mode:?})"),
        Action::ApplySynchronous {
            names,
            count,
            quorum,
        } => format!(
            "ApplySynchronous({} {count} of [{}])",
            if *quorum { "any" } else { "first" },
            names.join(",")
        ),
        Action::PublishSync { members, quorum } => {
            format!("PublishSync([{}], quorum {quorum})", members.join(","))
        }
        Action::KeepSlots { .. } => "KeepSlots".into(),
        Action::RecordHistory { .. } => "RecordHistory".into(),
        Action::DeposeLeader { leader } => format!("DeposeLeader({leader})"),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}
