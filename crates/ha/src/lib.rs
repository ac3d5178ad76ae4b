//! The decision core: a state machine with a pure planning step. From what
//! an agent observes (its PostgreSQL, the cluster as the store shows it,
//! the dynamic settings, the time) it makes a plan of actions. No I/O, no
//! clock, no async: every corner of failover is reachable from a unit test
//! or a deterministic simulation. Every safety rule lives here — who may
//! take over ([`candidates`]), which switchover may be asked for
//! ([`switchover`]), what a member may promise a primary in failsafe mode
//! ([`failsafe`]) — and the API and the agent only translate.
//!
//! Every heartbeat, and whenever the store or PostgreSQL changes, the agent
//! tells the core what it saw ([`Ha::observe`]), asks for a plan
//! ([`Ha::plan`], which changes nothing), carries out the plan's actions in
//! order, stops at the first that fails, and reports how each ended
//! ([`Ha::outcome`]).

pub mod backups;
pub mod candidates;
pub mod commit_hold;
mod decide;
pub mod failsafe;
mod observation;
mod plan;
pub mod retire;
pub mod retry;
pub mod switchover;
mod sync;
mod wal;

pub use candidates::{rank_candidates, Candidate, Exclusion};
pub use decide::Ha;
pub use observation::{
    Cluster, FailsafeList, FailsafePromise, Handoff, Initialize, Leader, Local, Me, MemberView,
    Millis, Observation, Reach, Removed, Replica, Running, Settings, Stopped, StoreView,
    SwitchoverRequest, SyncMode, SyncSet,
};
pub use plan::{Action, LogRole, Plan, StopMode};
pub use retry::Failing;
pub use sync::ANY_STANDBY;
