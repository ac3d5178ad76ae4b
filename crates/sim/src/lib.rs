//! Deterministic simulation of a pgwarden cluster.
//!
//! Several real [`agent::member::Member`]s (so the store glue, the decision
//! core and the executor are all under test) run over one shared
//! [`store::MemoryStore`] on a [`store::ManualClock`], each with a
//! [`SimPostgres`] in a simulated [`World`] of hosts, data directories and
//! streaming WAL, and each with its own [`SimStore`] link that a fault can
//! cut. One loop drives everything in virtual time: no threads, no real
//! time, no hash-map order, every random choice from one seeded generator.
//! So a seed replays exactly. A [`Script`] replaces the random faults with
//! a fixed schedule, for regression tests that must keep reaching their
//! situation whatever the random injection draws.
//!
//! After every step the invariants of `docs/simulation.md` are checked;
//! a broken one comes back as a [`Failure`] that prints the seed, the step,
//! the invariant and the last events.

mod failsafe;
mod postgres;
mod rng;
mod script;
mod sim;
mod world;

pub use postgres::{SimPostgres, SimStore};
pub use rng::Rng;
pub use script::{Fault, Script};
pub use sim::{
    run, run_script, run_with, ClusterShape, Failure, Options, Report, SimConfig,
    LIVENESS_BOUND_MS, STEP_MS,
};
pub use world::{secs, Conf, DataDir, Millis, Node, Rec, World};
