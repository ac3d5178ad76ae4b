//! Store I/O: keeps a copy of the cluster prefix up to date (a watch, plus
//! a periodic full re-read that also proves the store still answers) and
//! publishes a new [`Table`] whenever the routes change.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use store::cluster::{ClusterKey, ClusterKeys, Leader, MemberStatus};
use store::typed::decode_kv;
use store::{EventKind, KeyValue, Store, StoreError, WatchStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::routing::{compute, LeaderKey, ReadPolicy};
use crate::table::Table;

pub struct Watcher {
    pub store: Arc<dyn Store>,
    pub keys: ClusterKeys,
    pub policy: ReadPolicy,
    /// How long to keep the last routes while the store does not answer.
    pub store_grace: Duration,
    /// How often to re-read the whole prefix.
    pub refresh: Duration,
    pub metrics: Arc<Metrics>,
    pub tx: watch::Sender<Arc<Table>>,
}

/// The cluster prefix as last seen.
#[derive(Default)]
struct View {
    kvs: BTreeMap<String, KeyValue>,
    /// Watch events at or below this revision are already in `kvs`.
    snapshot_revision: i64,
}

impl Watcher {
    pub async fn run(self) {
        let prefix = self.keys.prefix().to_string();
        let mut view = View::default();
        let mut last_contact = Instant::now();
        let mut store_lost = false;
        let mut stream: Option<WatchStream> = None;
        let mut tick = tokio::time::interval(self.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match self.store.get_prefix(&prefix).await {
                        Ok(snapshot) => {
                            last_contact = Instant::now();
                            view.kvs = snapshot.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
                            view.snapshot_revision = snapshot.revision;
                            if stream.is_none() {
                                stream = Some(self.store.watch_prefix(&prefix, snapshot.revision + 1));
                            }
                        }
                        Err(err) => {
                            if !store_lost {
                                tracing::warn!("proxy: cannot read the cluster from the store: {err}");
                            }
                        }
                    }
                }
                event = next(&mut stream) => match event {
                    Some(Ok(event)) => {
                        last_contact = Instant::now();
                        if event.revision > view.snapshot_revision {
                            match event.kind {
                                EventKind::Put => { view.kvs.insert(event.kv.key.clone(), event.kv); }
                                EventKind::Delete => { view.kvs.remove(&event.kv.key); }
                            }
                        }
                    }
                    Some(Err(StoreError::Compacted { .. })) | None => {
                        // The next re-read starts a new watch from its snapshot.
                        stream = None;
                        tick.reset_immediately();
                    }
                    Some(Err(err)) => tracing::debug!("proxy: store watch: {err}"),
                },
                _ = self.tx.closed() => return,
            }
            let lost = last_contact.elapsed() > self.store_grace;
            if lost != store_lost {
                store_lost = lost;
                if lost {
                    tracing::error!(
                        "proxy: the store has not answered for {:?}: refusing read-write connections until it does; check the store endpoints and the network",
                        self.store_grace
                    );
                } else {
                    tracing::info!("proxy: the store answers again");
                }
            }
            self.metrics.store_reachable.store(!lost, Relaxed);
            if view.snapshot_revision > 0 || store_lost {
                self.publish(&view, store_lost);
            }
        }
    }

    fn publish(&self, view: &View, store_lost: bool) {
        let mut leader = None;
        let mut members: Vec<MemberStatus> = Vec::new();
        let mut unreadable = Vec::new();
        for kv in view.kvs.values() {
            match self.keys.classify(&kv.key) {
                Some(ClusterKey::Leader) => match decode_kv::<Leader>(kv) {
                    Ok(l) => {
                        leader = Some(LeaderKey {
                            member: l.value.member,
                            term: kv.create_revision as u64,
                        })
                    }
                    Err(err) => tracing::warn!("proxy: {err}"),
                },
                Some(ClusterKey::Member(name)) => match decode_kv::<MemberStatus>(kv) {
                    Ok(status) => members.push(status.value),
                    // Named in the routing line, so a member left out by a
                    // record this proxy cannot read (another version's, say)
                    // does not just vanish.
                    Err(err) => unreadable.push((name, err)),
                },
                _ => {}
            }
        }
        let mut routes = compute(leader.as_ref(), &members, &self.policy);
        for (name, err) in unreadable {
            routes
                .excluded
                .insert(name, format!("has a status the proxy cannot read: {err}"));
        }
        let current = self.tx.borrow().clone();
        if current.loaded
            && current.routes.same_routing(&routes)
            && current.store_lost == store_lost
        {
            return;
        }
        let table = Table::new(routes, store_lost, &self.metrics);
        tracing::info!("proxy {}", table.describe());
        self.metrics.routing_changes.fetch_add(1, Relaxed);
        self.tx.send_replace(Arc::new(table));
    }
}

async fn next(stream: &mut Option<WatchStream>) -> Option<Result<store::WatchEvent, StoreError>> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}
