//! An in-memory [`Store`] for tests and the deterministic simulation.
//!
//! Everything is ordered (`BTreeMap`s, sequential lease IDs from 1, events in
//! the order they happen), nothing is random and no task runs unless asked
//! for ([`MemoryStore::spawn_reaper`]): the same calls at the same clock
//! readings give the same history.
//!
//! Leases expire when the store observes time past their deadline: at the
//! start of every call, when the simulation calls
//! [`MemoryStore::expire_leases`] after advancing its clock, or on every
//! tick of the reaper. The simulation's faults: [`MemoryStore::break_watches`]
//! drops every watch connection (watches resume by themselves, without a
//! gap), [`MemoryStore::set_available`] makes every call fail as
//! [`StoreError::Unavailable`] and holds watches disconnected until the store
//! is back.
//!
//! Unlike etcd, lease TTLs are kept exactly (no rounding to seconds, no
//! minimum), so the simulation can use any TTL.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;
use crate::types::{
    Condition, EventKind, Expect, KeyValue, Lease, LeaseId, Snapshot, WatchEvent, WatchStream,
    Write,
};
use crate::Store;

/// A handle on one in-memory store; clones share it.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Bumped when the store comes back, to wake disconnected watches.
    back: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug)]
struct State {
    revision: i64,
    kvs: BTreeMap<String, KeyValue>,
    leases: BTreeMap<LeaseId, LeaseState>,
    last_lease: i64,
    /// Every event after `compact_revision`, in order.
    history: VecDeque<WatchEvent>,
    compact_revision: i64,
    watchers: Vec<Watcher>,
    available: bool,
}

#[derive(Debug)]
struct LeaseState {
    ttl: Duration,
    deadline: Duration,
    keys: BTreeSet<String>,
}

#[derive(Debug)]
struct Watcher {
    prefix: String,
    sender: mpsc::UnboundedSender<WatchEvent>,
}

impl MemoryStore {
    /// An empty store (revision 1, like a fresh etcd) reading time from
    /// `clock`. Spawns nothing.
    pub fn new(clock: Arc<dyn Clock>) -> MemoryStore {
        MemoryStore {
            shared: Arc::new(Shared {
                clock,
                state: Mutex::new(State {
                    revision: 1,
                    kvs: BTreeMap::new(),
                    leases: BTreeMap::new(),
                    last_lease: 0,
                    history: VecDeque::new(),
                    compact_revision: 0,
                    watchers: Vec::new(),
                    available: true,
                }),
                back: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    /// A store on real time with a reaper expiring leases every 10 ms, so
    /// watchers see expiries without anyone calling the store. Must be
    /// called inside a tokio runtime.
    pub fn with_system_clock() -> MemoryStore {
        let store = MemoryStore::new(Arc::new(SystemClock::new()));
        store.spawn_reaper(Duration::from_millis(10));
        store
    }

    /// Expires due leases every `period` until every handle on the store is
    /// gone.
    pub fn spawn_reaper(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let shared: Weak<Shared> = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let now = shared.clock.now();
                shared.lock().expire(now);
            }
        })
    }

    /// Expires every lease whose deadline has passed (deleting its keys),
    /// as of the clock now; returns them in the order they expired.
    pub fn expire_leases(&self) -> Vec<LeaseId> {
        let now = self.shared.clock.now();
        self.shared.lock().expire(now)
    }

    /// Drops every watch connection. Each watch delivers what it already
    /// received, reconnects and resumes after its last event.
    pub fn break_watches(&self) {
        self.shared.lock().watchers.clear();
    }

    /// Switches the store off (every call fails as unavailable, watches are
    /// disconnected and wait) or on again. Leases keep counting down while
    /// it is off and expire, as on a real store, once it is back.
    pub fn set_available(&self, available: bool) {
        let mut state = self.shared.lock();
        state.available = available;
        if available {
            drop(state);
            self.shared.back.send_modify(|generation| *generation += 1);
        } else {
            state.watchers.clear();
        }
    }

    /// Forgets the history before `revision`: watches from an earlier
    /// revision then fail with [`StoreError::Compacted`].
    pub fn compact(&self, revision: i64) {
        let mut state = self.shared.lock();
        let revision = revision.min(state.revision);
        if revision > state.compact_revision {
            state.compact_revision = revision;
            while state.history.front().is_some_and(|e| e.revision < revision) {
                state.history.pop_front();
            }
        }
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        self.shared.lock().revision
    }

    fn call<T>(
        &self,
        op: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let now = self.shared.clock.now();
        let mut state = self.shared.lock();
        if !state.available {
            return Err(StoreError::unavailable(
                "the in-memory store is switched off (simulated outage)",
            ));
        }
        state.expire(now);
        op(&mut state)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects a watch: events from `*next` on are replayed from the
    /// history, later ones arrive as they happen. `*next == 0` means now.
    fn subscribe(
        &self,
        prefix: &str,
        next: &mut i64,
    ) -> Result<Option<mpsc::UnboundedReceiver<WatchEvent>>, StoreError> {
        let now = self.clock.now();
        let mut state = self.lock();
        if !state.available {
            return Ok(None);
        }
        state.expire(now);
        if *next == 0 {
            *next = state.revision + 1;
        }
        if *next < state.compact_revision {
            return Err(StoreError::Compacted {
                revision: *next,
                compact_revision: state.compact_revision,
            });
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        let from = state.history.partition_point(|e| e.revision < *next);
        for event in state.history.range(from..) {
            if event.kv.key.starts_with(prefix) {
                let _ = sender.send(event.clone());
            }
        }
        state.watchers.push(Watcher {
            prefix: prefix.to_string(),
            sender,
        });
        Ok(Some(receiver))
    }
}

impl State {
    fn expire(&mut self, now: Duration) -> Vec<LeaseId> {
        let mut due: Vec<(Duration, LeaseId)> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, l)| (l.deadline, *id))
            .collect();
        due.sort();
        due.into_iter()
            .map(|(_, id)| {
                self.revoke(id);
                id
            })
            .collect()
    }

    /// Removes the lease and deletes its keys in one revision.
    fn revoke(&mut self, id: LeaseId) -> bool {
        let Some(lease) = self.leases.remove(&id) else {
            return false;
        };
        if !lease.keys.is_empty() {
            self.revision += 1;
            for key in lease.keys {
                self.kvs.remove(&key);
                self.emit_delete(key);
            }
        }
        true
    }

    fn lease_alive(&self, lease: Option<LeaseId>) -> Result<(), StoreError> {
        match lease {
            Some(id) if !self.leases.contains_key(&id) => {
                Err(StoreError::LeaseNotFound { lease: id })
            }
            _ => Ok(()),
        }
    }

    fn put(&mut self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> i64 {
        self.revision += 1;
        let revision = self.revision;
        let create_revision = match self.kvs.get(key) {
            Some(old) => {
                if let Some(old_lease) = old.lease.filter(|l| Some(*l) != lease) {
                    if let Some(l) = self.leases.get_mut(&old_lease) {
                        l.keys.remove(key);
                    }
                }
                old.create_revision
            }
            None => revision,
        };
        if let Some(l) = lease.and_then(|id| self.leases.get_mut(&id)) {
            l.keys.insert(key.to_string());
        }
        let kv = KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: revision,
            lease,
        };
        self.kvs.insert(key.to_string(), kv.clone());
        self.emit(WatchEvent {
            kind: EventKind::Put,
            kv,
            revision,
        });
        revision
    }

    fn delete(&mut self, key: &str) -> bool {
        let Some(old) = self.kvs.remove(key) else {
            return false;
        };
        if let Some(l) = old.lease.and_then(|id| self.leases.get_mut(&id)) {
            l.keys.remove(key);
        }
        self.revision += 1;
        self.emit_delete(old.key);
        true
    }

    fn emit_delete(&mut self, key: String) {
        let revision = self.revision;
        self.emit(WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key,
                value: Vec::new(),
                create_revision: 0,
                mod_revision: revision,
                lease: None,
            },
            revision,
        });
    }

    fn emit(&mut self, event: WatchEvent) {
        self.watchers.retain(|w| {
            !event.kv.key.starts_with(&w.prefix) || w.sender.send(event.clone()).is_ok()
        });
        self.history.push_back(event);
    }

    fn matches(&self, key: &str, expect: Expect) -> bool {
        let mod_revision = self.kvs.get(key).map_or(0, |kv| kv.mod_revision);
        match expect {
            Expect::Absent => mod_revision == 0,
            Expect::ModRevision(revision) => mod_revision == revision,
        }
    }

    fn conflict(&self, key: &str) -> StoreError {
        StoreError::Conflict {
            key: key.to_string(),
            current: self.kvs.get(key).cloned(),
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.call(|state| Ok(state.kvs.get(key).cloned()))
    }

    async fn get_prefix(&self, prefix: &str) -> Result<Snapshot, StoreError> {
        self.call(|state| {
            Ok(Snapshot {
                revision: state.revision,
                kvs: state
                    .kvs
                    .range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(_, kv)| kv.clone())
                    .collect(),
            })
        })
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<i64, StoreError> {
        self.call(|state| {
            state.lease_alive(lease)?;
            Ok(state.put(key, value, lease))
        })
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expect: Expect,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<i64, StoreError> {
        self.call(|state| {
            if !state.matches(key, expect) {
                return Err(state.conflict(key));
            }
            state.lease_alive(lease)?;
            Ok(state.put(key, value, lease))
        })
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.call(|state| Ok(state.delete(key)))
    }

    async fn transaction(
        &self,
        conditions: &[Condition],
        writes: &[Write],
    ) -> Result<i64, StoreError> {
        self.call(|state| {
            if let Some(failed) = conditions.iter().find(|c| !state.matches(&c.key, c.expect)) {
                return Err(state.conflict(&failed.key));
            }
            for write in writes {
                if let Write::Put { lease, .. } = write {
                    state.lease_alive(*lease)?;
                }
            }
            // Unlike etcd, each write takes its own revision; they are still
            // applied together, with nothing in between.
            for write in writes {
                match write {
                    Write::Put { key, value, lease } => {
                        state.put(key, value.clone(), *lease);
                    }
                    Write::Delete { key } => {
                        state.delete(key);
                    }
                }
            }
            Ok(state.revision)
        })
    }

    async fn compare_and_delete(&self, key: &str, mod_revision: i64) -> Result<i64, StoreError> {
        self.call(|state| {
            if mod_revision <= 0 || !state.matches(key, Expect::ModRevision(mod_revision)) {
                return Err(state.conflict(key));
            }
            state.delete(key);
            Ok(state.revision)
        })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::Refused {
                detail: "a lease needs a TTL above zero".to_string(),
            });
        }
        let now = self.shared.clock.now();
        self.call(|state| {
            state.last_lease += 1;
            let id = LeaseId(state.last_lease);
            state.leases.insert(
                id,
                LeaseState {
                    ttl,
                    deadline: now + ttl,
                    keys: BTreeSet::new(),
                },
            );
            Ok(Lease { id, ttl })
        })
    }

    async fn refresh_lease(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let now = self.shared.clock.now();
        self.call(|state| {
            let l = state
                .leases
                .get_mut(&lease)
                .ok_or(StoreError::LeaseNotFound { lease })?;
            l.deadline = now + l.ttl;
            Ok(l.ttl)
        })
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.call(|state| {
            if state.revoke(lease) {
                Ok(())
            } else {
                Err(StoreError::LeaseNotFound { lease })
            }
        })
    }

    fn watch_prefix(&self, prefix: &str, start_revision: i64) -> WatchStream {
        let watch = MemoryWatch {
            shared: self.shared.clone(),
            prefix: prefix.to_string(),
            next: start_revision.max(0),
            receiver: None,
            done: false,
        };
        Box::pin(futures::stream::unfold(watch, |mut watch| async move {
            let item = watch.next_item().await?;
            Some((item, watch))
        }))
    }
}

/// The state of one watch stream; driven only by the consumer's polling.
struct MemoryWatch {
    shared: Arc<Shared>,
    prefix: String,
    /// The revision to resume from (0 until connected when watching "from
    /// now").
    next: i64,
    receiver: Option<mpsc::UnboundedReceiver<WatchEvent>>,
    done: bool,
}

impl MemoryWatch {
    async fn next_item(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        if self.done {
            return None;
        }
        loop {
            let receiver = match &mut self.receiver {
                Some(receiver) => receiver,
                None => {
                    let mut back = self.shared.back.subscribe();
                    match self.shared.subscribe(&self.prefix, &mut self.next) {
                        Ok(Some(receiver)) => self.receiver.insert(receiver),
                        Ok(None) => {
                            // Switched off: wait until it is back.
                            let _ = back.changed().await;
                            continue;
                        }
                        Err(e) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                }
            };
            // All events of one revision are queued together, so a break
            // (which closes the channel after them) never splits a revision.
            match receiver.recv().await {
                Some(event) => {
                    self.next = event.revision + 1;
                    return Some(Ok(event));
                }
                None => self.receiver = None,
            }
        }
    }
}
