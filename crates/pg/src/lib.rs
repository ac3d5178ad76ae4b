//! Everything that touches a local PostgreSQL: initdb, pg_ctl, pg_basebackup,
//! pg_rewind, the pgwarden-owned configuration file, replication slots and the
//! probe. Every subprocess call has a timeout, and its stderr ends up in the
//! error.

mod archiver;
mod child_env;
mod command;
pub mod conninfo;
mod controldata;
mod error;
mod files;
mod hba;
mod instance;
mod lsn;
mod orphans;
pub mod pid;
mod probe;
mod run_as;
mod settings;

pub use archiver::ArchiverReport;
pub use child_env::{hide_from_children, scrub as scrub_child_env};
pub use conninfo::Endpoint;
pub use controldata::{ClusterState, ControlData};
pub use error::PgError;
pub use hba::render_hba;
pub use instance::{
    CloneProgress, Instance, InstanceSpec, RewindOutcome, Role, SlotUsage, StopMode, Timeouts,
};
pub use lsn::Lsn;
pub use probe::{connect, ConfigReport, Probe, ReplicationRow, ServerState, WalReceiver};
pub use run_as::RunAs;
pub use settings::{Settings, RECEIVER_QUIET_LIMIT_MS};
