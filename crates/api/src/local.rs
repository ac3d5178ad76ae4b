//! What passes between an agent and its own API.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

/// The member as its agent saw it in its last round.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalState {
    pub member: String,
    /// PostgreSQL accepts connections.
    pub pg_running: bool,
    /// Running and not in recovery.
    pub primary: bool,
    /// Holds the leader key (as of the last round).
    pub leader: bool,
    /// Who held the leader key, and in which term, when the agent last
    /// reached the store.
    #[serde(default)]
    pub leader_name: Option<String>,
    #[serde(default)]
    pub leader_term: Option<u64>,
    /// A standby whose WAL receiver streams.
    pub streaming: bool,
    pub timeline: Option<u32>,
    /// Written (primary) or received (standby).
    pub lsn: Option<u64>,
    pub lag_bytes: Option<u64>,
    pub lag_ms: Option<u64>,
    /// The cluster's lease TTL as the agent last read it: how long a
    /// failsafe promise of this member lasts (two of them).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// How long the leader lease surely holds (leader only).
    pub lease_remaining_ms: Option<u64>,
    pub store_reachable: bool,
    /// The last decision, in words.
    pub note: String,
    /// A long action under way (clone, rewind), if any.
    pub activity: Option<Activity>,
    /// On a primary that archives WAL: how that goes.
    #[serde(default)]
    pub archive: Option<store::cluster::ArchiveHealth>,
    /// On the primary: the replication slots it keeps, with the WAL each
    /// holds back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<store::cluster::SlotStatus>,
    /// Its reachability check (`[member] reachability`); `None`: no targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachability: Option<store::cluster::Reachability>,
    /// Store keys that did not decode in the last round (left out of the
    /// agent's view; docs/store.md says what each costs).
    #[serde(default)]
    pub undecodable_keys: Vec<String>,
    /// Unix ms of the round.
    pub updated_ms: u64,
}

/// A long action and how far it got.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// `reinit`, `clone`, `rewind`, `restart`.
    pub what: String,
    pub done_bytes: u64,
    pub total_bytes: Option<u64>,
}

/// What only the agent itself can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Restart PostgreSQL in place (keeping its role).
    Restart,
    /// Throw the data directory away and clone afresh from the leader
    /// (refused on the leader).
    Reinit,
    /// `ctl remove --force`: stop PostgreSQL and record this member as
    /// removed from the cluster (refused on the leader).
    Retire,
}

/// A request and where its answer goes: `Ok` with what was done (or
/// started), `Err` with why it was refused.
#[derive(Debug)]
pub struct AgentRequest {
    pub request: Request,
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// Failsafe: this member's word to a primary that cannot reach the store,
/// given by its API (`POST /failsafe`) and kept by its agent, which takes
/// no leadership and deposes nobody until `until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promise {
    pub leader: String,
    pub until: std::time::Instant,
}

/// The promise last given, shared by the two ends of the link.
pub type PromiseSlot = Arc<Mutex<Option<Promise>>>;

/// The API's end of the link.
#[derive(Clone, Debug)]
pub struct AgentLink {
    pub state: watch::Receiver<LocalState>,
    pub requests: mpsc::Sender<AgentRequest>,
    pub promise: PromiseSlot,
}

/// The agent's end of the link.
#[derive(Debug)]
pub struct AgentSide {
    pub state: watch::Sender<LocalState>,
    pub requests: mpsc::Receiver<AgentRequest>,
    pub promise: PromiseSlot,
}

/// A connected pair.
pub fn link(initial: LocalState) -> (AgentLink, AgentSide) {
    let (state_tx, state_rx) = watch::channel(initial);
    let (request_tx, request_rx) = mpsc::channel(8);
    let promise = PromiseSlot::default();
    (
        AgentLink {
            state: state_rx,
            requests: request_tx,
            promise: promise.clone(),
        },
        AgentSide {
            state: state_tx,
            requests: request_rx,
            promise,
        },
    )
}
