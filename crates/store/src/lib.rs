//! pgwarden store: the consistent store every member agrees through.
//!
//! * [`Store`]: the raw trait — linearizable get, compare-and-set on a key's
//!   revision, delete, leases (keys vanish when their lease expires) and
//!   prefix watches that resume without gaps. Keys are strings, values bytes.
//! * Backends: [`EtcdStore`] (etcd v3) and [`MemoryStore`] (deterministic,
//!   with an injectable [`Clock`], for the simulation of the decision core).
//! * [`cluster`]: the typed cluster layout (`/pgwarden/<cluster>/leader`, …)
//!   with schema-versioned JSON records, so no other crate handles raw keys.
//!
//! The design notes are in `docs/store.md`.

use std::time::Duration;

use async_trait::async_trait;

pub mod clock;
pub mod cluster;
pub mod error;
pub mod etcd;
pub mod ha_view;
pub mod memory;
pub mod records;
pub mod typed;
pub mod types;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::StoreError;
pub use etcd::{EtcdOptions, EtcdStore, EtcdTls};
pub use ha_view::HaView;
pub use memory::MemoryStore;
pub use records::ClusterRecords;
pub use typed::{Record, TypedKey, TypedPrefix, TypedSnapshot, Versioned};
pub use types::{
    Condition, EventKind, Expect, KeyValue, Lease, LeaseId, Snapshot, WatchEvent, WatchStream,
    Write,
};

/// A linearizable key-value store with leases and watches. Used as
/// `Arc<dyn Store>`.
///
/// Write calls return the store revision of the write. There are no hidden
/// background tasks behind this trait: the caller keeps its lease alive by
/// calling [`Store::refresh_lease`] on its own heartbeat.
#[async_trait]
pub trait Store: Send + Sync {
    /// The key, or `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every key starting with `prefix`, sorted by key, and the revision of
    /// the read.
    async fn get_prefix(&self, prefix: &str) -> Result<Snapshot, StoreError>;

    /// Writes unconditionally. With `lease`, the key is removed when the
    /// lease ends; without, a previous lease is detached. An unknown lease
    /// fails with [`StoreError::LeaseNotFound`].
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<i64, StoreError>;

    /// Writes only if the key is as `expect`ed; otherwise fails with
    /// [`StoreError::Conflict`] carrying the key's current state.
    async fn compare_and_set(
        &self,
        key: &str,
        expect: Expect,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<i64, StoreError>;

    /// Deletes the key; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;

    /// Deletes the key only if it was last written at `mod_revision`;
    /// otherwise fails with [`StoreError::Conflict`].
    async fn compare_and_delete(&self, key: &str, mod_revision: i64) -> Result<i64, StoreError>;

    /// Applies every write, atomically, only if every condition holds.
    /// A failed condition is [`StoreError::Conflict`] naming the failing
    /// condition's key where the backend can tell (etcd cannot: it names the
    /// first); nothing is written. Returns the revision written.
    async fn transaction(
        &self,
        conditions: &[Condition],
        writes: &[Write],
    ) -> Result<i64, StoreError>;

    /// Grants a lease of at least `ttl` (see [`Lease::ttl`] for what was
    /// granted).
    async fn grant_lease(&self, ttl: Duration) -> Result<Lease, StoreError>;

    /// Restarts the lease's countdown; returns its TTL. An expired or
    /// unknown lease fails with [`StoreError::LeaseNotFound`].
    async fn refresh_lease(&self, lease: LeaseId) -> Result<Duration, StoreError>;

    /// Ends the lease now, deleting its keys (one revision).
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Every change under `prefix` with a revision of at least
    /// `start_revision` (`0`: from now on), in order. The stream reconnects
    /// by itself and resumes after the last event it delivered; if that
    /// history is compacted it yields [`StoreError::Compacted`] and ends.
    /// Lease expiry shows as [`EventKind::Delete`]. Nothing happens until the
    /// stream is first polled.
    fn watch_prefix(&self, prefix: &str, start_revision: i64) -> WatchStream;
}
