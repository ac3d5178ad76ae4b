//! The cluster's keys and records (the layout of DESIGN.md):
//!
//! ```text
//! <namespace>/<cluster>/leader            Leader          bound to the leader's lease
//! <namespace>/<cluster>/members/<name>    MemberStatus    bound to the member's lease
//! <namespace>/<cluster>/config            DynamicConfig   changed by compare-and-set
//! <namespace>/<cluster>/initialize        Initialize      written once (create-if-absent)
//! <namespace>/<cluster>/sync              SyncSet
//! <namespace>/<cluster>/failsafe          FailsafeList the members a primary cut off from the store asks
//! <namespace>/<cluster>/switchover        Switchover
//! <namespace>/<cluster>/history           History
//! <namespace>/<cluster>/primary_position  PrimaryPosition the leader's last WAL position, kept after it dies
//! <namespace>/<cluster>/removed/<name>    RemovedMember   a member retired with `ctl remove`, until re-admitted
//! <namespace>/<cluster>/events/<seq>      Event           bounded, oldest trimmed
//! <namespace>/<cluster>/backup/request    BackupRequest   `ctl backup run`, until the leader assigns it
//! <namespace>/<cluster>/backup/assignment BackupAssignment the member taking a backup now
//! <namespace>/<cluster>/backup/last       LastBackup      the last backup that completed
//! <namespace>/<cluster>/backup/dumps      LastDumps       each dumped database's last dump and failures
//! ```
//!
//! The leader's term (fencing token) is the store revision that created its
//! key: the store numbers every write, so a later leadership always has a
//! larger term, and no second write is needed to pick one.
//!
//! The namespace is `/pgwarden` unless configured otherwise. Times are unix
//! milliseconds, WAL positions (LSNs) plain `u64` byte positions.
//!
//! One module per record (with its validation where it has one), `keys`
//! for the layout, `names` for the key segments; everything is used as
//! `store::cluster::…`.

mod backup;
mod dynamic_config;
mod events;
#[cfg(test)]
pub(crate) mod fixtures;
mod history;
mod initialize;
mod keys;
mod leader;
mod member;
mod names;
mod pg_url;
mod removed;
mod switchover;

pub use backup::{
    BackupAssignment, BackupFailure, BackupKind, BackupRequest, LastBackup, LastDump, LastDumps,
};
pub use dynamic_config::{
    DynamicConfig, SynchronousMode, SLOT_RETENTION_MAX_MS, SLOT_RETENTION_MIN_MS,
};
pub use events::{Event, EVENTS_KEPT};
pub use history::{History, HistoryEntry};
pub use initialize::Initialize;
pub use keys::{ClusterKey, ClusterKeys, DEFAULT_NAMESPACE};
pub use leader::{FailsafeList, Leader, PrimaryPosition, SyncSet};
pub use member::{
    ArchiveHealth, MemberStatus, PgState, ReachState, Reachability, Role, SlotStatus, Tags,
};
pub use names::check_name;
pub use pg_url::{parse_pg_url, PgAddress};
pub use removed::{RemovedMember, Retirement};
pub use switchover::{Handoff, Switchover};
