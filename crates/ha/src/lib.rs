//! The decision core: a pure function from what an agent observes (its
//! PostgreSQL, the cluster as the store shows it, the dynamic settings, the
//! time) to a plan of actions. No I/O, no clock, no async: every corner of
//! failover is reachable from a unit test or a deterministic simulation.
//!
//! The agent calls [`Ha::decide`] every heartbeat and whenever the store or
//! PostgreSQL changes, carries out the plan's actions in order, stops at the
//! first that fails, and tells the core with [`Ha::failed`].

mod candidates;
mod decide;
mod observation;
mod plan;
mod sync;

pub use candidates::{rank_candidates, Candidate, Exclusion};
pub use decide::Ha;
pub use observation::{
    Cluster, FailsafeList, FailsafePromise, Handoff, Initialize, Leader, Local, Me, MemberView,
    Millis, Observation, Replica, Running, Settings, Stopped, StoreView, SwitchoverRequest,
    SyncSet,
};
pub use plan::{Action, Plan, Role, StopMode};
