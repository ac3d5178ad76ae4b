//! The agent's side of the simulation: a [`LocalPostgres`] over the
//! simulated world and a [`Store`] wrapper that can cut a member off.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agent::postgres::{LocalPostgres, Upstream};
use async_trait::async_trait;
use pg::{PgError, RewindOutcome};
use store::cluster::ClusterKeys;
use store::{
    Condition, Expect, KeyValue, Lease, LeaseId, MemoryStore, Snapshot, Store, StoreError,
    WatchStream, Write,
};

use crate::world::{Conf, World};

pub(crate) fn lock<T>(shared: &Mutex<T>) -> MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// One member's PostgreSQL in the simulated world. Like the real one it
/// remembers, in the agent process, what it last configured (upstream,
/// synchronous names): a restarted agent starts with a fresh one.
pub struct SimPostgres {
    node: usize,
    name: String,
    world: Arc<Mutex<World>>,
    /// The store as it really is, for the checks made at the moment of a
    /// promotion (never through this member's possibly cut-off link).
    oracle: MemoryStore,
    keys: ClusterKeys,
    applied: Mutex<Conf>,
}

impl SimPostgres {
    pub fn new(
        node: usize,
        world: Arc<Mutex<World>>,
        oracle: MemoryStore,
        keys: ClusterKeys,
    ) -> SimPostgres {
        let name = lock(&world).nodes[node].name.clone();
        SimPostgres {
            node,
            name,
            world,
            oracle,
            keys,
            applied: Mutex::new(Conf::default()),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// Changes the remembered settings and returns them, like
    /// `RealPostgres::rewrite` before it writes the file.
    fn change(&self, change: impl FnOnce(&mut Conf)) -> Conf {
        let mut applied = lock(&self.applied);
        change(&mut applied);
        applied.clone()
    }

    /// Who holds the leader key, and who claimed the initialize key without
    /// completing it, as the store really is.
    async fn leadership(&self) -> (Option<String>, Option<String>) {
        let leader = self
            .keys
            .leader()
            .get(&self.oracle)
            .await
            .ok()
            .flatten()
            .map(|l| l.value.member);
        let initializing = self
            .keys
            .initialize()
            .get(&self.oracle)
            .await
            .ok()
            .flatten()
            .filter(|i| i.value.system_identifier.is_none())
            .map(|i| i.value.member);
        (leader, initializing)
    }
}

#[async_trait]
impl LocalPostgres for SimPostgres {
    async fn observe(&self) -> ha::Local {
        let applied = self.change(|_| {});
        self.world().observe(
            self.node,
            applied.upstream,
            applied.sync_names,
            applied.sync_quorum.then_some(applied.sync_count),
        )
    }

    async fn initdb(&self) -> Result<(), PgError> {
        let conf = self.change(|_| {});
        self.world().initdb(self.node, conf)
    }

    async fn start_primary(&self) -> Result<(), PgError> {
        if self.world().standby_configured(self.node) {
            return Err(PgError::Refused(
                "will not start as primary: standby.signal is present, so this member last ran as a standby; \
                 it becomes primary only by promotion"
                    .into(),
            ));
        }
        let (leader, initializing) = self.leadership().await;
        let conf = self.change(|c| c.upstream = None);
        let mut world = self.world();
        let was_running = world.is_running(self.node);
        world.write_conf(self.node, conf)?;
        world.start(self.node)?;
        let me = Some(self.name.as_str());
        if !was_running
            && world.is_primary(self.node)
            && leader.as_deref() != me
            && initializing.as_deref() != me
        {
            let detail = format!(
                "{} started PostgreSQL as a primary while the leader key is {}",
                self.name,
                leader.as_deref().unwrap_or("absent")
            );
            world.violate("5. a primary only by leadership", detail);
        }
        Ok(())
    }

    async fn start_replica(&self, upstream: Option<&Upstream>) -> Result<(), PgError> {
        let conf = self.change(|c| {
            c.upstream = upstream.map(|u| u.name.clone());
            // A standby waits for nobody.
            c.sync_names.clear();
            c.sync_count = 0;
            c.sync_quorum = false;
        });
        let mut world = self.world();
        world.write_conf(self.node, conf)?;
        world.set_standby_signal(self.node)?;
        world.start(self.node)
    }

    async fn shutdown_checkpoint(&self) -> Result<(u64, u32), PgError> {
        let world = self.world();
        let node = &world.nodes[self.node];
        match &node.data {
            Some(data) if node.server.is_none() && data.clean_shutdown => {
                // The checkpoint is the last record; a standby holds it once
                // its position is past the record's start.
                Ok((data.wal.len() as u64 - 1, data.timeline()))
            }
            _ => Err(PgError::Refused(
                "simulated: not a clean primary shutdown".into(),
            )),
        }
    }

    async fn stop(&self, mode: ha::StopMode) -> Result<(), PgError> {
        self.world().stop(self.node, mode)
    }

    async fn promote(&self) -> Result<(), PgError> {
        let position = self
            .keys
            .primary_position()
            .get(&self.oracle)
            .await
            .ok()
            .flatten()
            .map(|p| p.value);
        let (leader, _) = self.leadership().await;
        {
            let mut world = self.world();
            let lsn = world.lsn(self.node);
            world.promote(self.node)?;
            let limit = world.maximum_lag_on_failover;
            if let Some(position) = position {
                let lag = position.lsn.saturating_sub(lsn);
                if lag > limit {
                    let detail = format!(
                        "{} was promoted at lsn {lsn}, {lag} behind the last published primary position {} ({} on timeline {}); the limit is {limit}",
                        self.name, position.lsn, position.member, position.timeline
                    );
                    world.violate("2. no promotion past the lag limit", detail);
                }
            }
            if leader.as_deref() != Some(self.name.as_str()) {
                let detail = format!(
                    "{} was promoted while the leader key is {}",
                    self.name,
                    leader.as_deref().unwrap_or("absent")
                );
                world.violate("5. a primary only by leadership", detail);
            }
        }
        // A primary streams from nobody (written, not reloaded).
        let conf = self.change(|c| c.upstream = None);
        self.world().write_conf(self.node, conf)
    }

    async fn clone_data_from(&self, upstream: &Upstream) -> Result<(), PgError> {
        self.world().clone_from(self.node, &upstream.name)
    }

    async fn rewind(&self, upstream: &Upstream) -> Result<RewindOutcome, PgError> {
        self.world().rewind(self.node, &upstream.name)
    }

    async fn reclone(&self, upstream: &Upstream) -> Result<(), PgError> {
        let mut world = self.world();
        world.move_aside(self.node)?;
        world.clone_from(self.node, &upstream.name)
    }

    async fn follow(&self, upstream: Option<&Upstream>) -> Result<(), PgError> {
        let conf = self.change(|c| c.upstream = upstream.map(|u| u.name.clone()));
        let mut world = self.world();
        world.write_conf(self.node, conf)?;
        world.reload(self.node)
    }

    async fn apply_synchronous(
        &self,
        names: &[String],
        count: u32,
        quorum: bool,
    ) -> Result<(), PgError> {
        let conf = self.change(|c| {
            c.sync_names = names.to_vec();
            c.sync_count = count;
            c.sync_quorum = quorum && !names.is_empty();
        });
        let mut world = self.world();
        world.write_conf(self.node, conf)?;
        world.reload(self.node)
    }

    async fn keep_slots(&self, keep: &[String], drop: &[String]) -> Result<(), PgError> {
        self.world().keep_slots(self.node, keep, drop)
    }
}

/// One member's connection to the shared in-memory store: every call fails
/// as unavailable while the member is cut off (or the whole store is down).
pub struct SimStore {
    node: usize,
    name: String,
    inner: MemoryStore,
    world: Arc<Mutex<World>>,
}

impl SimStore {
    pub fn new(node: usize, inner: MemoryStore, world: Arc<Mutex<World>>) -> SimStore {
        let name = lock(&world).nodes[node].name.clone();
        SimStore {
            node,
            name,
            inner,
            world,
        }
    }

    fn link(&self) -> Result<(), StoreError> {
        if lock(&self.world).store_reachable(self.node) {
            Ok(())
        } else {
            Err(StoreError::Unavailable {
                detail: format!("simulated: {} is cut off from the store", self.name),
            })
        }
    }
}

#[async_trait]
impl Store for SimStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.link()?;
        self.inner.get(key).await
    }

    async fn get_prefix(&self, prefix: &str) -> Result<Snapshot, StoreError> {
        self.link()?;
        self.inner.get_prefix(prefix).await
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<i64, StoreError> {
        self.link()?;
        self.inner.put(key, value, lease).await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expect: Expect,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<i64, StoreError> {
        self.link()?;
        self.inner.compare_and_set(key, expect, value, lease).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.link()?;
        self.inner.delete(key).await
    }

    async fn compare_and_delete(&self, key: &str, mod_revision: i64) -> Result<i64, StoreError> {
        self.link()?;
        self.inner.compare_and_delete(key, mod_revision).await
    }

    async fn transaction(
        &self,
        conditions: &[Condition],
        writes: &[Write],
    ) -> Result<i64, StoreError> {
        self.link()?;
        self.inner.transaction(conditions, writes).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease, StoreError> {
        self.link()?;
        let lease = self.inner.grant_lease(ttl).await?;
        lock(&self.world).lease_granted(self.node);
        Ok(lease)
    }

    async fn refresh_lease(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.link()?;
        self.inner.refresh_lease(lease).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.link()?;
        self.inner.revoke_lease(lease).await
    }

    fn watch_prefix(&self, prefix: &str, start_revision: i64) -> WatchStream {
        self.inner.watch_prefix(prefix, start_revision)
    }
}
