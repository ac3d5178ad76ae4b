//! The simulated PostgreSQL servers and the hosts they run on.
//!
//! A data directory's WAL is a list of records, each with a cluster-wide
//! unique id and the timeline it was written on; the LSN is the list's
//! length. Every record is written once, on one primary, at one position,
//! and copied only to the same position of another WAL whose earlier
//! records are the same (streaming, cloning) or removed by truncation
//! (rewinding). So two WALs that hold the same record at position `i`
//! agree on everything up to `i`: "is a prefix of" and "holds record r" are
//! one comparison each.
//!
//! Streaming happens in [`World::tick`]: a running standby copies new
//! records from its running upstream only while its own WAL is a prefix of
//! the upstream's (otherwise it has diverged, as PostgreSQL refuses to
//! follow a timeline that forked before its own position). The client
//! writes one record per tick to every running primary and waits for the
//! acknowledgement PostgreSQL would give under its synchronous settings.

use pg::{PgError, RewindOutcome};

use crate::rng::Rng;

/// Virtual milliseconds since the start of the run.
pub type Millis = u64;

/// One WAL record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rec {
    pub id: u64,
    pub timeline: u32,
}

/// The settings file pgwarden writes (pgwarden.conf): where a standby
/// streams from, and synchronous_standby_names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conf {
    pub upstream: Option<String>,
    pub sync_names: Vec<String>,
    pub sync_count: u32,
    /// `ANY sync_count (…)` rather than `FIRST`.
    pub sync_quorum: bool,
}

/// A data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    pub system_id: u64,
    pub wal: Vec<Rec>,
    /// pg_control says "in production" or "shut down": it last ran as a
    /// primary.
    pub was_primary: bool,
    pub standby_signal: bool,
    /// The last stop was a fast stop of a primary: its WAL ends with the
    /// shutdown checkpoint.
    pub clean_shutdown: bool,
    /// The settings file as last written.
    pub conf: Conf,
    pub slots: Vec<String>,
}

impl DataDir {
    pub fn timeline(&self) -> u32 {
        self.wal.last().map_or(1, |r| r.timeline)
    }
}

/// A running postmaster.
#[derive(Clone, Debug)]
pub struct Server {
    pub primary: bool,
    /// The settings it loaded (at start or on reload).
    pub conf: Conf,
    /// Changes whenever the server starts accepting writes: a primary's
    /// acknowledgements belong to one incarnation.
    pub incarnation: u64,
}

/// One host: its data directory, its server and the faults on it.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub data: Option<DataDir>,
    pub server: Option<Server>,
    /// False while the host is down (crashed, not yet restarted).
    pub host_up: bool,
    /// The whole host is paused (VM freeze, SIGSTOP): neither the agent
    /// nor PostgreSQL does anything, connections stay open.
    pub frozen: bool,
    /// PostgreSQL refuses to start until then (a full disk, a bad config).
    pub start_fails_until: Millis,
    /// Replication to or from this host crawls (one record in four ticks).
    pub slow_network: bool,
    /// The agent cannot reach the store.
    pub store_cut: bool,
    /// Cut off from the other members too (a partition): no replication
    /// to or from it; its own clients still reach it.
    pub isolated: bool,
    /// Since when it has been isolated, as of the last tick.
    pub isolated_since: Option<Millis>,
    /// Its agent leads with a valid lease as of its last round (the
    /// runtime hands the commit hold's watcher the mode then).
    pub leading: bool,
    /// The commit hold's watcher (asynchronous mode).
    pub commits: CommitWatch,
    /// The upstream whose WAL sender has caught this standby up since it
    /// connected: PostgreSQL's `streaming` state (before it: `catchup`).
    /// Only such a standby counts as synchronous.
    pub caught_up: Option<usize>,
    /// The agent dies (crash) or loses the store (cut) after this many more
    /// calls: a fault in the middle of a round.
    pub budget: Option<Budget>,
    /// The agent loses the store right after its next lease grant (a
    /// scripted fault).
    pub cut_at_grant: bool,
    /// The agent process runs and has finished a round since it started:
    /// only then does its lease guard watch PostgreSQL (the runtime's
    /// guard starts disarmed).
    pub guarded: bool,
    /// Since when the agent has not reached the store (cut off, or the
    /// store without quorum), as of the last tick.
    pub cut_since: Option<Millis>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub calls_left: u32,
    /// Also PostgreSQL calls fail once spent (the agent process died).
    pub host: bool,
}

/// A write waiting for its acknowledgement.
#[derive(Clone, Copy, Debug)]
struct Pending {
    node: usize,
    incarnation: u64,
    timeline: u32,
    id: u64,
    index: usize,
}

/// An acknowledged record.
#[derive(Clone, Copy, Debug)]
pub struct Acked {
    pub id: u64,
    pub index: usize,
    pub node: usize,
    pub at: Millis,
}

/// The time span over which one primary incarnation acknowledged writes.
#[derive(Clone, Copy, Debug)]
pub struct Stint {
    pub node: usize,
    pub incarnation: u64,
    pub timeline: u32,
    pub first: Millis,
    pub last: Millis,
    /// Acknowledgements it gave once a later primary had acknowledged.
    pub stale: u64,
    /// Of those, while it had no lease guard.
    pub unguarded: u64,
}

impl Stint {
    /// Whether `self` serves a later history than `other`: a later
    /// timeline, or (two promotions that chose one timeline number) the
    /// same one on another node, begun later.
    fn later_than(&self, other: &Stint) -> bool {
        self.timeline > other.timeline
            || (self.timeline == other.timeline
                && self.node != other.node
                && self.first > other.first)
    }
}

/// Asynchronous mode: acknowledgements a primary may still give after a
/// primary on a later timeline acknowledged, if its agent runs: the lease
/// guard stops it 500 ms before its lease can expire, so only a primary
/// that was frozen past its lease writes on; it thaws together with its
/// guard, which stops it one tick later (the client writes one record a
/// tick to each primary, acknowledged at once without synchronous names).
pub const ASYNC_STALE_ACKS_BOUND: u64 = 1;

/// Asynchronous mode: how long after a partition cut it off from the store
/// and from every standby a primary whose agent runs may still acknowledge
/// writes, all of them lost when a standby takes over. The commit hold
/// (`ha::commit_hold`): WAL unconfirmed for 200 ms, then a store check that
/// gets no answer within 250 ms — or, if the store answered a check just
/// before the cut, the next check 500 ms after that one — and a tick (50 ms)
/// to see it: 800 ms.
pub const ASYNC_LOSS_WINDOW_BOUND_MS: Millis =
    ha::commit_hold::ASK_AGAIN_AFTER_MS + ha::commit_hold::STORE_CHECK_TIMEOUT_MS + 50;

/// The runtime's commit hold watcher (`agent::commit_hold`), per tick: the
/// furthest WAL position a standby confirmed and since when it stands
/// still below what was written, the store check under way, and whether
/// commits are held.
#[derive(Clone, Debug, Default)]
pub struct CommitWatch {
    standbys: Vec<usize>,
    confirmations: ha::commit_hold::Confirmations,
    asked_at: Option<Millis>,
    ask_again_at: Millis,
    pub held: bool,
}

/// What the client was told was committed.
#[derive(Clone, Debug, Default)]
pub struct Acks {
    pub count: u64,
    stints: Vec<Stint>,
    /// The acknowledged records no other acknowledged record implies:
    /// holding these means holding every acknowledged record.
    pub frontier: Vec<Acked>,
    /// Async mode: times two primaries acknowledged in overlapping spans.
    pub overlaps: u64,
    /// Acknowledgements by a primary after one on a later timeline had
    /// acknowledged (asynchronous mode only; zero otherwise).
    pub stale: u64,
    /// Of those, by a primary without a lease guard: its agent dead, or
    /// restarted and not through its first round. No watchdog stops it
    /// (not modelled), so no bound applies.
    pub unguarded_stale: u64,
}

impl Acks {
    pub fn stints(&self) -> &[Stint] {
        &self.stints
    }
}

/// A broken invariant noticed inside the world.
#[derive(Clone, Debug)]
pub struct Violation {
    pub invariant: &'static str,
    pub detail: String,
}

/// A promotion, for the report.
#[derive(Clone, Debug)]
pub struct Promotion {
    pub node: usize,
    pub at: Millis,
    pub lsn: u64,
}

/// Every simulated host and server, shared by the [`crate::SimPostgres`]
/// of each member and by the simulation loop.
#[derive(Debug)]
pub struct World {
    pub now: Millis,
    pub nodes: Vec<Node>,
    /// Records copied per tick by a healthy stream.
    pub stream_rate: usize,
    pub synchronous_mode: bool,
    pub maximum_lag_on_failover: u64,
    /// The whole store is down (no quorum): every agent is cut off.
    pub store_down: bool,
    /// Whether a mid-round cut-off may fall right after a lease grant.
    pub cut_after_grant: bool,
    /// `SIM_NO_HOLD` set: no commit hold (to show what it bounds).
    pub no_commit_hold: bool,
    next_record: u64,
    /// Record id → its position in every WAL that holds it.
    positions: Vec<usize>,
    next_system_id: u64,
    next_incarnation: u64,
    ticks: u64,
    rng: Rng,
    pending: Vec<Pending>,
    pub acks: Acks,
    pub promotions: Vec<Promotion>,
    /// Ticks at which two or more PostgreSQL servers accepted writes
    /// (legitimate for a moment, e.g. a frozen primary not yet fenced).
    pub two_writer_ticks: u64,
    /// Lines for the history: (node, text).
    pub events: Vec<(usize, String)>,
    pub violations: Vec<Violation>,
}

fn failed(what: &str, program: &str, stderr: impl Into<String>) -> PgError {
    PgError::Failed {
        what: what.to_string(),
        program: program.to_string(),
        status: "exit status: 1".to_string(),
        stderr: stderr.into(),
    }
}

/// Whether `a` is a prefix of `b` (see the module notes for why one
/// comparison is enough).
fn is_prefix(a: &[Rec], b: &[Rec]) -> bool {
    a.len() <= b.len() && a.last().is_none_or(|last| b[a.len() - 1].id == last.id)
}

/// The length of the common prefix of `a` and `b`.
fn common_prefix(a: &[Rec], b: &[Rec]) -> usize {
    // Equal at i implies equal before i: binary search for the last match.
    let (mut lo, mut hi) = (0, a.len().min(b.len()));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if a[mid - 1].id == b[mid - 1].id {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

impl World {
    pub fn new(
        names: &[String],
        stream_rate: usize,
        synchronous_mode: bool,
        maximum_lag_on_failover: u64,
        rng: Rng,
    ) -> World {
        World {
            now: 0,
            nodes: names
                .iter()
                .map(|name| Node {
                    name: name.clone(),
                    data: None,
                    server: None,
                    host_up: true,
                    frozen: false,
                    start_fails_until: 0,
                    slow_network: false,
                    store_cut: false,
                    isolated: false,
                    isolated_since: None,
                    leading: false,
                    commits: CommitWatch::default(),
                    caught_up: None,
                    budget: None,
                    cut_at_grant: false,
                    guarded: false,
                    cut_since: None,
                })
                .collect(),
            stream_rate,
            synchronous_mode,
            maximum_lag_on_failover,
            store_down: false,
            cut_after_grant: true,
            no_commit_hold: std::env::var_os("SIM_NO_HOLD").is_some(),
            next_record: 1,
            positions: vec![usize::MAX],
            next_system_id: 7_300_000_000_000_000_001,
            next_incarnation: 1,
            ticks: 0,
            rng,
            pending: Vec::new(),
            acks: Acks::default(),
            promotions: Vec::new(),
            two_writer_ticks: 0,
            events: Vec::new(),
            violations: Vec::new(),
        }
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    fn log(&mut self, node: usize, text: impl Into<String>) {
        self.events.push((node, text.into()));
    }

    pub fn violate(&mut self, invariant: &'static str, detail: String) {
        self.violations.push(Violation { invariant, detail });
    }

    pub fn wal(&self, node: usize) -> &[Rec] {
        self.nodes[node].data.as_ref().map_or(&[], |d| &d.wal)
    }

    pub fn lsn(&self, node: usize) -> u64 {
        self.wal(node).len() as u64
    }

    /// Whether the node's WAL holds record `id`.
    pub fn holds(&self, node: usize, id: u64) -> bool {
        let index = self.positions[id as usize];
        self.wal(node).get(index).is_some_and(|r| r.id == id)
    }

    fn new_record(&mut self, node: usize, timeline: u32) -> Rec {
        let rec = Rec {
            id: self.next_record,
            timeline,
        };
        self.next_record += 1;
        let data = self.nodes[node].data.as_mut().expect("a data directory");
        self.positions.push(data.wal.len());
        data.wal.push(rec);
        rec
    }

    fn new_incarnation(&mut self) -> u64 {
        self.next_incarnation += 1;
        self.next_incarnation
    }

    /// Accepts writes: up, awake, running as primary.
    pub fn is_writable(&self, node: usize) -> bool {
        let n = &self.nodes[node];
        n.host_up && !n.frozen && n.server.as_ref().is_some_and(|s| s.primary)
    }

    pub fn is_running(&self, node: usize) -> bool {
        let n = &self.nodes[node];
        n.host_up && n.server.is_some()
    }

    pub fn is_primary(&self, node: usize) -> bool {
        self.is_running(node) && self.nodes[node].server.as_ref().is_some_and(|s| s.primary)
    }

    /// The upstream a running standby is connected to: configured, running,
    /// the same cluster, and this standby's WAL a prefix of the upstream's.
    /// A frozen upstream keeps its connections (nothing flows).
    pub fn connected(&self, node: usize) -> Option<usize> {
        let n = &self.nodes[node];
        if !n.host_up {
            return None;
        }
        let server = n.server.as_ref()?;
        if server.primary {
            return None;
        }
        let upstream = self.index(server.conf.upstream.as_deref()?)?;
        if upstream == node || !self.is_running(upstream) {
            return None;
        }
        if n.isolated || self.nodes[upstream].isolated {
            return None;
        }
        let (mine, theirs) = (n.data.as_ref()?, self.nodes[upstream].data.as_ref()?);
        (mine.system_id == theirs.system_id && is_prefix(&mine.wal, &theirs.wal))
            .then_some(upstream)
    }

    /// The standbys a primary currently counts as synchronous
    /// (`FIRST n (names)`, `*` matching any standby, in name order; with
    /// `ANY n (names)` every connected standby the names match).
    pub fn sync_standbys(&self, primary: usize) -> Vec<usize> {
        let Some(server) = &self.nodes[primary].server else {
            return Vec::new();
        };
        let conf = &server.conf;
        let connected: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| {
                self.connected(j) == Some(primary) && self.nodes[j].caught_up == Some(primary)
            })
            .collect();
        let mut chosen: Vec<usize> = Vec::new();
        let limit = match conf.sync_quorum {
            true => usize::MAX,
            false => conf.sync_count as usize,
        };
        for name in &conf.sync_names {
            for &j in &connected {
                if chosen.len() < limit
                    && !chosen.contains(&j)
                    && (name == "*" || *name == self.nodes[j].name)
                {
                    chosen.push(j);
                }
            }
        }
        chosen
    }

    /// Whether PostgreSQL could acknowledge a commit at all with the
    /// standbys connected now: not when it waits for synchronous standbys
    /// none (or too few) of whom are connected.
    pub fn could_acknowledge(&self, primary: usize) -> bool {
        let Some(server) = &self.nodes[primary].server else {
            return false;
        };
        server.conf.sync_names.is_empty()
            || server.conf.sync_count == 0
            || self.sync_standbys(primary).len() >= server.conf.sync_count as usize
    }

    /// Whether PostgreSQL would acknowledge a commit at `index` now.
    fn acknowledges(&self, primary: usize, index: usize) -> bool {
        let Some(server) = &self.nodes[primary].server else {
            return false;
        };
        if server.conf.sync_names.is_empty() || server.conf.sync_count == 0 {
            return true;
        }
        let sync = self.sync_standbys(primary);
        let holding = sync.iter().filter(|&&j| self.wal(j).len() > index).count();
        match server.conf.sync_quorum {
            true => holding >= server.conf.sync_count as usize,
            false => sync.len() >= server.conf.sync_count as usize && holding == sync.len(),
        }
    }

    /// One tick of the world: the client writes, standbys stream, commits
    /// are acknowledged.
    pub fn tick(&mut self) {
        self.ticks += 1;
        let now = self.now;
        let store_down = self.store_down;
        for n in &mut self.nodes {
            match n.store_cut || store_down {
                true => n.cut_since = n.cut_since.or(Some(now)),
                false => n.cut_since = None,
            }
            match n.isolated {
                true => n.isolated_since = n.isolated_since.or(Some(now)),
                false => n.isolated_since = None,
            }
        }
        let writers = (0..self.nodes.len())
            .filter(|&i| self.is_writable(i))
            .count();
        if writers > 1 {
            self.two_writer_ticks += 1;
        }
        for i in 0..self.nodes.len() {
            if self.is_writable(i) {
                let timeline = self.nodes[i].data.as_ref().map_or(1, DataDir::timeline);
                let rec = self.new_record(i, timeline);
                let incarnation = self.nodes[i].server.as_ref().map_or(0, |s| s.incarnation);
                self.pending.push(Pending {
                    node: i,
                    incarnation,
                    timeline,
                    id: rec.id,
                    index: self.wal(i).len() - 1,
                });
            }
        }
        for j in 0..self.nodes.len() {
            let Some(upstream) = self.connected(j) else {
                continue;
            };
            if self.nodes[j].frozen || self.nodes[upstream].frozen {
                continue;
            }
            let slow = self.nodes[j].slow_network || self.nodes[upstream].slow_network;
            let rate = match slow {
                true if self.ticks % 4 == 0 => 1,
                true => 0,
                false => self.stream_rate,
            };
            self.stream(j, upstream, rate);
        }
        for j in 0..self.nodes.len() {
            let upstream = self.connected(j);
            let caught_up = match upstream {
                Some(u) if self.wal(j).len() == self.wal(u).len() => Some(u),
                Some(u) if self.nodes[j].caught_up == Some(u) => Some(u),
                _ => None,
            };
            self.nodes[j].caught_up = caught_up;
        }
        for i in 0..self.nodes.len() {
            self.watch_commits(i);
        }
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            let n = &self.nodes[p.node];
            let same = n.host_up
                && n.server
                    .as_ref()
                    .is_some_and(|s| s.primary && s.incarnation == p.incarnation);
            if !same {
                continue; // the client's connection broke: not acknowledged
            }
            if n.frozen || n.commits.held || !self.acknowledges(p.node, p.index) {
                self.pending.push(p);
                continue;
            }
            self.acknowledge(p);
        }
    }

    /// Asynchronous mode, a leading primary: WAL no standby confirms for
    /// [`ha::commit_hold::UNCONFIRMED_AFTER_MS`] makes the watcher ask the
    /// store; no answer within [`ha::commit_hold::STORE_CHECK_TIMEOUT_MS`]
    /// holds commits until the store answers. Standbys cut off with it
    /// still count as connected (their TCP connections stay open until
    /// `wal_sender_timeout`), confirming nothing more.
    fn watch_commits(&mut self, i: usize) {
        use ha::commit_hold::{
            decide, CommitHold, CommitSignals, ASK_AGAIN_AFTER_MS, STORE_CHECK_TIMEOUT_MS,
        };
        let now = self.now;
        let leading = self.nodes[i].leading && self.is_writable(i) && self.nodes[i].guarded;
        if self.synchronous_mode || !leading {
            self.nodes[i].commits = CommitWatch::default();
            return;
        }
        let written = self.wal(i).len();
        // The standbys connected to it; cut off, those connected at the
        // cut, whose connections stay open and silent (no new one comes).
        if !self.nodes[i].isolated {
            let connected = (0..self.nodes.len())
                .filter(|&j| self.connected(j) == Some(i))
                .collect();
            self.nodes[i].commits.standbys = connected;
        }
        let confirmed = self.nodes[i]
            .commits
            .standbys
            .iter()
            .map(|&j| self.wal(j).len().min(written))
            .max();
        let store_answers = self.nodes[i].cut_since.is_none();
        let watch = &mut self.nodes[i].commits;
        let unconfirmed_for =
            watch
                .confirmations
                .unconfirmed_for(written as u64, confirmed.map(|c| c as u64), now);
        if self.no_commit_hold {
            return;
        }
        let signals = |store_answered| CommitSignals {
            mode: ha::SyncMode::Off,
            leading: true,
            unconfirmed_for_ms: unconfirmed_for,
            store_answered,
        };
        let answer = if watch.held {
            // Held: the watcher keeps asking; the store's answer releases.
            store_answers.then_some(true)
        } else if let Some(asked) = watch.asked_at {
            match store_answers {
                true => Some(true),
                false if now - asked >= STORE_CHECK_TIMEOUT_MS => Some(false),
                false => return,
            }
        } else {
            if now >= watch.ask_again_at && decide(&signals(None)) == CommitHold::CheckStore {
                watch.asked_at = Some(now);
                // A store that answers does so within the tick.
                if store_answers {
                    watch.asked_at = None;
                    watch.ask_again_at = now + ASK_AGAIN_AFTER_MS;
                }
            }
            return;
        };
        let Some(answered) = answer else {
            return;
        };
        watch.asked_at = None;
        match decide(&signals(Some(answered))) {
            CommitHold::Hold if !watch.held => {
                watch.held = true;
                self.events.push((
                    i,
                    "commits held: neither the store nor any standby answers".into(),
                ));
            }
            CommitHold::Release if watch.held => {
                watch.held = false;
                watch.ask_again_at = now + ASK_AGAIN_AFTER_MS;
                self.events
                    .push((i, "commits released: the store answers again".into()));
            }
            _ => watch.ask_again_at = now + ASK_AGAIN_AFTER_MS,
        }
    }

    fn stream(&mut self, standby: usize, upstream: usize, max: usize) {
        let from = self.wal(standby).len();
        let to = self.wal(upstream).len().min(from.saturating_add(max));
        if to > from {
            let new: Vec<Rec> = self.wal(upstream)[from..to].to_vec();
            if let Some(data) = self.nodes[standby].data.as_mut() {
                data.wal.extend(new);
            }
        }
    }

    fn acknowledge(&mut self, p: Pending) {
        let now = self.now;
        let acks = &mut self.acks;
        acks.count += 1;
        let found = acks
            .stints
            .iter()
            .position(|s| s.node == p.node && s.incarnation == p.incarnation);
        let began = found.is_none();
        let at = match found {
            Some(at) => at,
            None => {
                acks.stints.push(Stint {
                    node: p.node,
                    incarnation: p.incarnation,
                    timeline: p.timeline,
                    first: now,
                    last: now,
                    stale: 0,
                    unguarded: 0,
                });
                acks.stints.len() - 1
            }
        };
        let mine = acks.stints[at];
        let overlapping: Vec<Stint> = acks
            .stints
            .iter()
            .enumerate()
            .filter(|(k, s)| *k != at && s.last >= mine.first)
            .map(|(_, s)| *s)
            .collect();
        acks.stints[at].last = now;
        if let Some(other) = overlapping.first() {
            if self.synchronous_mode {
                let detail = format!(
                    "{} acknowledged record {} at {} while its acknowledgements began at {}, but {} acknowledged writes from {} to {}",
                    self.nodes[p.node].name,
                    p.id,
                    secs(now),
                    secs(mine.first),
                    self.nodes[other.node].name,
                    secs(other.first),
                    secs(other.last),
                );
                self.violate(
                    "1. never two writers (synchronous acknowledgements overlap)",
                    detail,
                );
            } else {
                self.acks.overlaps += 1;
            }
        }
        self.check_stale(at, began, p.id);
        self.check_loss_window(&p);
        let wal = self.nodes[p.node]
            .data
            .as_ref()
            .map_or(&[][..], |d| &d.wal[..]);
        let positions = &self.positions;
        self.acks.frontier.retain(|a| {
            let index = positions[a.id as usize];
            wal.get(index).is_none_or(|r| r.id != a.id)
        });
        self.acks.frontier.push(Acked {
            id: p.id,
            index: p.index,
            node: p.node,
            at: now,
        });
    }

    /// Invariant 1 on what clients saw: no write acknowledged by a primary
    /// once a primary on a later timeline has acknowledged writes (in the
    /// same tick counts too, whichever came first). Synchronous and quorum
    /// mode: none. Asynchronous mode: at most [`ASYNC_STALE_ACKS_BOUND`]
    /// per primary incarnation whose agent runs (its lease guard's
    /// latency); one without a guard (its agent dead or not through its
    /// first round) is only counted.
    fn check_stale(&mut self, at: usize, began: bool, id: u64) {
        let now = self.now;
        let mine = self.acks.stints[at];
        // Stints that have gone stale by this acknowledgement: this one if a
        // later primary acknowledged before, and, if this one just began,
        // older ones that acknowledged in this same tick.
        let mut stale: Vec<(usize, Stint)> = Vec::new();
        let stints = &self.acks.stints;
        if let Some(later) = stints
            .iter()
            .find(|s| s.later_than(&mine) && s.first <= now)
        {
            stale.push((at, *later));
        }
        if began {
            for (k, older) in stints.iter().enumerate() {
                // Unless a third, later primary already made that one stale.
                let counted = stints
                    .iter()
                    .enumerate()
                    .any(|(j, s)| j != at && j != k && s.later_than(older) && s.first <= now);
                if k != at && mine.later_than(older) && older.last == now && !counted {
                    stale.push((k, mine));
                }
            }
        }
        for (k, later) in stale {
            let old = self.acks.stints[k];
            let name = &self.nodes[old.node].name;
            let detail = format!(
                "{name} (timeline {}) acknowledged a write at {} (record {id} or one of its tick), after {} had acknowledged writes on timeline {} from {}",
                old.timeline,
                secs(now),
                self.nodes[later.node].name,
                later.timeline,
                secs(later.first),
            );
            if self.synchronous_mode {
                self.violate(
                    "1. never two writers (a write acknowledged after a later timeline's)",
                    detail,
                );
                continue;
            }
            self.acks.stale += 1;
            self.acks.stints[k].stale += 1;
            if !self.nodes[old.node].guarded {
                self.acks.unguarded_stale += 1;
                self.acks.stints[k].unguarded += 1;
                continue;
            }
            let count = self.acks.stints[k].stale - self.acks.stints[k].unguarded;
            if count > ASYNC_STALE_ACKS_BOUND {
                self.violate(
                    "1. never two writers (asynchronous: too many writes acknowledged after a later timeline's)",
                    format!(
                        "{detail}: {count} such acknowledgements under its lease guard, which allows {ASYNC_STALE_ACKS_BOUND}"
                    ),
                );
            }
        }
    }

    /// Invariant 1, asynchronous mode: a primary whose agent runs and leads
    /// acknowledges nothing [`ASYNC_LOSS_WINDOW_BOUND_MS`] after a
    /// partition cut it off from the store and every other member (the
    /// commit hold); a write it acknowledges then is lost at the takeover.
    fn check_loss_window(&mut self, p: &Pending) {
        let n = &self.nodes[p.node];
        // Without a standby the hold does not apply: a lone primary has
        // nobody its writes could be lost to.
        let lone = n.commits.standbys.is_empty();
        if self.synchronous_mode || lone || !n.isolated || !n.guarded || !n.leading {
            return;
        }
        // Cut off from everyone since the later of the two.
        let (Some(store), Some(members)) = (n.cut_since, n.isolated_since) else {
            return;
        };
        let cut = store.max(members);
        if self.now - cut > ASYNC_LOSS_WINDOW_BOUND_MS {
            let detail = format!(
                "{} acknowledged record {} at {}, {} ms after a partition cut it off at {}: the commit hold allows {ASYNC_LOSS_WINDOW_BOUND_MS} ms",
                n.name,
                p.id,
                secs(self.now),
                self.now - cut,
                secs(cut),
            );
            self.violate(
                "1. never two writers (asynchronous: a cut-off primary acknowledged past the commit hold)",
                detail,
            );
        }
    }

    /// Drops the client connections to `node`'s server.
    fn drop_pending(&mut self, node: usize) {
        self.pending.retain(|p| p.node != node);
    }

    /// The server (re)started or stopped: its replication connections, in
    /// and out, start over.
    fn reconnect(&mut self, node: usize) {
        for n in &mut self.nodes {
            if n.caught_up == Some(node) {
                n.caught_up = None;
            }
        }
        self.nodes[node].caught_up = None;
    }

    // ----- faults -----

    /// The lease guard stops PostgreSQL at once (the postmaster gets
    /// SIGQUIT): like an immediate stop, but no call of the agent's.
    pub fn fence(&mut self, node: usize) {
        let Some(server) = self.nodes[node].server.take() else {
            return;
        };
        if let Some(data) = self.nodes[node].data.as_mut() {
            data.was_primary = server.primary;
            data.clean_shutdown = false;
        }
        self.drop_pending(node);
        self.reconnect(node);
        self.log(
            node,
            "pg: stopped (Immediate) by the lease guard: the lease runs out and no round renewed it",
        );
    }

    /// The host goes down: PostgreSQL dies with it, the data stays.
    pub fn crash_host(&mut self, node: usize) {
        self.crash_pg(node);
        let n = &mut self.nodes[node];
        n.host_up = false;
        n.frozen = false;
        n.budget = None;
    }

    /// PostgreSQL dies (no shutdown checkpoint; pg_control keeps saying
    /// what it was).
    pub fn crash_pg(&mut self, node: usize) {
        if self.nodes[node].server.take().is_some() {
            self.log(node, "pg: crashed");
        }
        self.drop_pending(node);
        self.reconnect(node);
    }

    /// Spends one call of a mid-round fault's budget; false once spent.
    pub fn spend(&mut self, node: usize, postgres: bool) -> bool {
        let n = &mut self.nodes[node];
        match &mut n.budget {
            None => true,
            Some(b) if postgres && !b.host => true,
            Some(b) if b.calls_left == 0 => false,
            Some(b) => {
                b.calls_left -= 1;
                true
            }
        }
    }

    /// Whether the node's agent reaches the store now (spending a call of
    /// a mid-round fault's budget).
    pub fn store_reachable(&mut self, node: usize) -> bool {
        let spent = !self.spend(node, false);
        if spent && self.nodes[node].budget.is_some_and(|b| !b.host) {
            self.nodes[node].store_cut = true;
        }
        !(self.store_down || self.nodes[node].store_cut || spent)
    }

    /// The agent was granted a new lease: a cut-off scripted for this
    /// moment starts now. Unless allowed, a random mid-round cut-off waits
    /// for the call that follows (a fixed agent bug took the new lease for
    /// a leader lease when the store failed right after the grant).
    pub fn lease_granted(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if std::mem::take(&mut n.cut_at_grant) {
            n.store_cut = true;
        }
        if !self.cut_after_grant {
            if let Some(budget) = self.nodes[node].budget.as_mut().filter(|b| !b.host) {
                budget.calls_left += 1;
            }
        }
    }

    // ----- what the agent does to its PostgreSQL -----

    fn check_budget(&mut self, node: usize) -> Result<(), PgError> {
        if self.spend(node, true) {
            Ok(())
        } else {
            Err(PgError::Refused(
                "simulated: the agent process died in the middle of the round".into(),
            ))
        }
    }

    pub fn observe(
        &self,
        node: usize,
        upstream: Option<String>,
        sync_applied: Vec<String>,
        sync_applied_any: Option<u32>,
    ) -> ha::Local {
        let n = &self.nodes[node];
        let Some(data) = &n.data else {
            return ha::Local::Empty;
        };
        let Some(server) = n.server.as_ref().filter(|_| n.host_up) else {
            return ha::Local::Stopped(ha::Stopped {
                system_id: data.system_id,
                timeline: data.timeline(),
                was_primary: data.was_primary,
            });
        };
        let replicas = if server.primary {
            let sync = self.sync_standbys(node);
            (0..self.nodes.len())
                .filter(|&j| self.connected(j) == Some(node))
                .map(|j| ha::Replica {
                    name: self.nodes[j].name.clone(),
                    streaming: self.nodes[j].caught_up == Some(node),
                    synchronous: sync.contains(&j),
                    flush_lsn: self.lsn(j),
                })
                .collect()
        } else {
            Vec::new()
        };
        ha::Local::Running(ha::Running {
            system_id: data.system_id,
            timeline: data.timeline(),
            primary: server.primary,
            lsn: data.wal.len() as u64,
            upstream,
            streaming: !server.primary && self.connected(node).is_some(),
            sync_applied,
            sync_applied_any,
            receiver_quiet_ms: None,
            replicas,
        })
    }

    /// initdb, then start as primary.
    pub fn initdb(&mut self, node: usize, conf: Conf) -> Result<(), PgError> {
        self.check_budget(node)?;
        if self.nodes[node].data.is_some() {
            return Err(PgError::Refused(format!(
                "initdb: the data directory of {} is not empty; pgwarden never overwrites data",
                self.nodes[node].name
            )));
        }
        let system_id = self.next_system_id;
        self.next_system_id += 1;
        self.nodes[node].data = Some(DataDir {
            system_id,
            wal: Vec::new(),
            was_primary: false,
            standby_signal: false,
            clean_shutdown: false,
            conf,
            slots: Vec::new(),
        });
        self.new_record(node, 1);
        self.log(node, format!("pg: initdb, system identifier {system_id}"));
        self.start(node)
    }

    /// Writes the settings file (pgwarden.conf).
    pub fn write_conf(&mut self, node: usize, conf: Conf) -> Result<(), PgError> {
        self.check_budget(node)?;
        let n = &mut self.nodes[node];
        let data = n.data.as_mut().ok_or_else(|| PgError::Io {
            what: "write pgwarden.conf".to_string(),
            path: format!("/sim/{}/data/pgwarden.conf", n.name).into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        data.conf = conf;
        Ok(())
    }

    pub fn standby_configured(&self, node: usize) -> bool {
        self.nodes[node]
            .data
            .as_ref()
            .is_some_and(|d| d.standby_signal)
    }

    pub fn set_standby_signal(&mut self, node: usize) -> Result<(), PgError> {
        self.check_budget(node)?;
        if let Some(data) = self.nodes[node].data.as_mut() {
            data.standby_signal = true;
        }
        Ok(())
    }

    /// pg_ctl start: as a standby with standby.signal, else as a primary.
    /// Starting a running server succeeds without doing anything.
    pub fn start(&mut self, node: usize) -> Result<(), PgError> {
        self.check_budget(node)?;
        if self.nodes[node].server.is_some() {
            return Ok(());
        }
        if self.now < self.nodes[node].start_fails_until {
            return Err(failed(
                "start PostgreSQL",
                "pg_ctl",
                "simulated: the server did not start (see the server log)",
            ));
        }
        let incarnation = self.new_incarnation();
        let n = &mut self.nodes[node];
        let Some(data) = n.data.as_mut() else {
            return Err(failed(
                "start PostgreSQL",
                "pg_ctl",
                "directory is not a database cluster directory",
            ));
        };
        let primary = !data.standby_signal;
        data.was_primary = primary;
        data.clean_shutdown = false;
        n.caught_up = None;
        n.server = Some(Server {
            primary,
            conf: data.conf.clone(),
            incarnation,
        });
        let text = format!(
            "pg: started as {} on timeline {} at lsn {}",
            if primary { "primary" } else { "standby" },
            data.timeline(),
            data.wal.len()
        );
        self.log(node, text);
        Ok(())
    }

    /// pg_ctl stop. A fast stop of a primary writes a shutdown checkpoint
    /// and sends it to the connected standbys first.
    pub fn stop(&mut self, node: usize, mode: ha::StopMode) -> Result<(), PgError> {
        self.check_budget(node)?;
        let Some(server) = self.nodes[node].server.clone() else {
            return Ok(());
        };
        if server.primary && mode == ha::StopMode::Fast {
            let timeline = self.nodes[node].data.as_ref().map_or(1, DataDir::timeline);
            self.new_record(node, timeline);
            for j in 0..self.nodes.len() {
                if self.connected(j) == Some(node) && !self.nodes[j].frozen {
                    self.stream(j, node, usize::MAX);
                }
            }
        }
        self.nodes[node].server = None;
        if let Some(data) = self.nodes[node].data.as_mut() {
            data.was_primary = server.primary;
            data.clean_shutdown = server.primary && mode == ha::StopMode::Fast;
        }
        self.drop_pending(node);
        self.reconnect(node);
        self.log(node, format!("pg: stopped ({mode:?})"));
        Ok(())
    }

    /// pg_ctl promote: ends recovery with a record on the next timeline.
    pub fn promote(&mut self, node: usize) -> Result<(), PgError> {
        self.check_budget(node)?;
        let standby = self.nodes[node].server.as_ref().is_some_and(|s| !s.primary);
        if !standby {
            return Err(failed(
                "promote PostgreSQL",
                "pg_ctl",
                "cannot promote server: server is not in standby mode",
            ));
        }
        let timeline = self.nodes[node].data.as_ref().map_or(1, DataDir::timeline) + 1;
        self.new_record(node, timeline);
        self.reconnect(node);
        let incarnation = self.new_incarnation();
        let n = &mut self.nodes[node];
        let data = n.data.as_mut().expect("a running server has data");
        data.standby_signal = false;
        data.was_primary = true;
        let server = n.server.as_mut().expect("running");
        server.primary = true;
        server.incarnation = incarnation;
        let lsn = data.wal.len() as u64;
        self.promotions.push(Promotion {
            node,
            at: self.now,
            lsn,
        });
        self.log(
            node,
            format!("pg: promoted to timeline {timeline} at lsn {lsn}"),
        );
        Ok(())
    }

    fn source(&self, node: usize, what: &str, program: &str, name: &str) -> Result<usize, PgError> {
        let source = self.index(name);
        // A partition stands between the two when either is cut off.
        let apart = |s: usize| self.nodes[s].isolated || self.nodes[node].isolated;
        match source {
            Some(s) if self.is_running(s) && !self.nodes[s].frozen && !apart(s) => Ok(s),
            _ => Err(failed(
                what,
                program,
                format!("could not connect to server {name}: connection refused"),
            )),
        }
    }

    /// pg_basebackup into the empty data directory.
    pub fn clone_from(&mut self, node: usize, source: &str) -> Result<(), PgError> {
        self.check_budget(node)?;
        let what = "clone with pg_basebackup";
        if self.nodes[node].data.is_some() {
            return Err(PgError::Refused(format!(
                "{what}: the data directory of {} is not empty; pgwarden never overwrites data",
                self.nodes[node].name
            )));
        }
        let s = self.source(node, what, "pg_basebackup", source)?;
        let src = self.nodes[s].data.clone().expect("running");
        let was_primary = self.is_primary(s);
        let lsn = src.wal.len();
        self.nodes[node].data = Some(DataDir {
            was_primary,
            standby_signal: false,
            clean_shutdown: false,
            slots: Vec::new(),
            ..src
        });
        self.log(node, format!("pg: cloned from {source} at lsn {lsn}"));
        Ok(())
    }

    /// pg_rewind onto `source`: truncate to the common prefix. Fails now
    /// and then, as pg_rewind does when the WAL it needs is gone.
    pub fn rewind(&mut self, node: usize, source: &str) -> Result<RewindOutcome, PgError> {
        self.check_budget(node)?;
        let what = "rewind with pg_rewind";
        if self.nodes[node].server.is_some() {
            return Err(failed(
                what,
                "pg_rewind",
                "target server must be shut down cleanly",
            ));
        }
        let Some(data) = &self.nodes[node].data else {
            return Err(failed(what, "pg_rewind", "no data directory"));
        };
        let s = self.source(node, what, "pg_rewind", source)?;
        let src = self.nodes[s].data.as_ref().expect("running");
        if src.system_id != data.system_id {
            return Err(failed(
                what,
                "pg_rewind",
                "source and target clusters are from different systems",
            ));
        }
        if self.rng.chance(1, 10) {
            return Err(failed(
                what,
                "pg_rewind",
                "could not find previous WAL record (simulated)",
            ));
        }
        if data.timeline() == src.timeline() {
            // pg_rewind compares timelines, not WAL: the same timeline
            // number means nothing to rewind, even where two promotions
            // chose the same number.
            self.log(
                node,
                format!("pg: rewind onto {source}: source and target cluster are on the same timeline, no rewind required"),
            );
            return Ok(RewindOutcome::NotNeeded);
        }
        let keep = common_prefix(&data.wal, &src.wal);
        if keep == data.wal.len() {
            self.log(node, format!("pg: rewind onto {source}: not needed"));
            return Ok(RewindOutcome::NotNeeded);
        }
        let was_primary = self.is_primary(s);
        let data = self.nodes[node].data.as_mut().expect("checked");
        let dropped = data.wal.len() - keep;
        data.wal.truncate(keep);
        // pg_rewind copies the source's pg_control.
        data.was_primary = was_primary;
        self.log(
            node,
            format!("pg: rewound onto {source}: dropped {dropped} records after lsn {keep}"),
        );
        Ok(RewindOutcome::Rewound)
    }

    /// Moves the stopped data directory aside.
    pub fn move_aside(&mut self, node: usize) -> Result<(), PgError> {
        self.check_budget(node)?;
        if self.nodes[node].server.is_some() {
            return Err(PgError::Refused(
                "will not move the data directory aside while PostgreSQL runs on it: stop it first"
                    .into(),
            ));
        }
        self.nodes[node].data = None;
        self.log(node, "pg: data directory moved aside");
        Ok(())
    }

    /// pg_ctl reload: the running server takes the settings file.
    pub fn reload(&mut self, node: usize) -> Result<(), PgError> {
        self.check_budget(node)?;
        let n = &mut self.nodes[node];
        let (Some(server), Some(data)) = (n.server.as_mut(), n.data.as_ref()) else {
            return Err(failed(
                "reload PostgreSQL",
                "pg_ctl",
                "PID file does not exist; is server running?",
            ));
        };
        if server.conf.upstream != data.conf.upstream {
            // A new primary_conninfo restarts the WAL receiver.
            n.caught_up = None;
        }
        server.conf = data.conf.clone();
        Ok(())
    }

    /// Creates the missing slots of `keep`, drops those in `drop`.
    pub fn keep_slots(
        &mut self,
        node: usize,
        keep: &[String],
        drop: &[String],
    ) -> Result<(), PgError> {
        self.check_budget(node)?;
        let n = &mut self.nodes[node];
        match (&n.server, n.data.as_mut()) {
            (Some(_), Some(data)) => {
                data.slots.retain(|s| !drop.contains(s));
                for name in keep {
                    if !data.slots.contains(name) {
                        data.slots.push(name.clone());
                    }
                }
                Ok(())
            }
            _ => Err(PgError::Sql {
                what: "list replication slots".into(),
                detail: "connection refused".into(),
            }),
        }
    }

    /// Every record id acknowledged and not yet on `node`, for messages.
    pub fn missing_acks(&self, node: usize) -> Vec<Acked> {
        self.acks
            .frontier
            .iter()
            .filter(|a| !self.holds(node, a.id))
            .copied()
            .collect()
    }
}

/// `12.350s`
pub fn secs(ms: Millis) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(ids: &[u64]) -> Vec<Rec> {
        ids.iter().map(|&id| Rec { id, timeline: 1 }).collect()
    }

    #[test]
    fn prefixes_and_common_prefixes() {
        assert!(is_prefix(&recs(&[]), &recs(&[1])));
        assert!(is_prefix(&recs(&[1, 2]), &recs(&[1, 2, 3])));
        assert!(!is_prefix(&recs(&[1, 4]), &recs(&[1, 2, 3])));
        assert!(!is_prefix(&recs(&[1, 2, 3]), &recs(&[1, 2])));
        assert_eq!(common_prefix(&recs(&[1, 2, 5, 6]), &recs(&[1, 2, 3])), 2);
        assert_eq!(common_prefix(&recs(&[1, 2]), &recs(&[1, 2, 3])), 2);
        assert_eq!(common_prefix(&recs(&[9]), &recs(&[1, 2, 3])), 0);
        assert_eq!(common_prefix(&recs(&[]), &recs(&[1])), 0);
    }

    fn world() -> World {
        let names: Vec<String> = ["db1", "db2", "db3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        World::new(&names, 2, true, 10, Rng::new(1))
    }

    fn standby_of(world: &mut World, node: usize, upstream: &str) {
        world.clone_from(node, upstream).unwrap();
        world
            .write_conf(
                node,
                Conf {
                    upstream: Some(upstream.into()),
                    ..Conf::default()
                },
            )
            .unwrap();
        world.set_standby_signal(node).unwrap();
        world.start(node).unwrap();
    }

    #[test]
    fn standbys_stream_and_synchronous_commits_wait_for_them() {
        let mut w = world();
        w.initdb(0, Conf::default()).unwrap();
        standby_of(&mut w, 1, "db1");
        standby_of(&mut w, 2, "db1");
        w.tick();
        assert_eq!(w.acks.count, 1, "asynchronous: acknowledged at once");
        assert_eq!(w.lsn(1), w.lsn(0));
        w.write_conf(
            0,
            Conf {
                sync_names: vec!["db3".into()],
                sync_count: 1,
                ..Conf::default()
            },
        )
        .unwrap();
        w.reload(0).unwrap();
        w.nodes[2].frozen = true;
        w.tick();
        w.tick();
        assert_eq!(w.acks.count, 1, "db3 is frozen: nothing acknowledged");
        w.nodes[2].frozen = false;
        w.tick();
        w.tick();
        assert_eq!(w.acks.count, 5, "db3 caught up, two records a tick");
        assert_eq!(w.acks.frontier.len(), 1);
        assert_eq!(w.sync_standbys(0), vec![2]);
    }

    #[test]
    fn a_promoted_standby_diverges_and_a_rewind_lets_the_old_primary_follow() {
        let mut w = world();
        w.initdb(0, Conf::default()).unwrap();
        standby_of(&mut w, 1, "db1");
        w.tick();
        w.promote(1).unwrap();
        w.tick(); // both primaries write: diverged
        w.stop(0, ha::StopMode::Immediate).unwrap();
        let wal_before = w.lsn(0);
        w.write_conf(
            0,
            Conf {
                upstream: Some("db2".into()),
                ..Conf::default()
            },
        )
        .unwrap();
        w.set_standby_signal(0).unwrap();
        w.start(0).unwrap();
        assert_eq!(w.connected(0), None, "diverged: not streaming");
        w.stop(0, ha::StopMode::Fast).unwrap();
        let outcome = loop {
            if let Ok(outcome) = w.rewind(0, "db2") {
                break outcome;
            }
        };
        assert_eq!(outcome, RewindOutcome::Rewound);
        assert!(w.lsn(0) < wal_before);
        w.start(0).unwrap();
        assert_eq!(w.connected(0), Some(1));
        for _ in 0..5 {
            w.tick();
        }
        assert_eq!(w.lsn(0), w.lsn(1), "caught up");
        assert_eq!(w.nodes[0].data.as_ref().unwrap().timeline(), 2);
    }
}
