//! A write load that logs every acknowledged id: the ground truth for "no
//! acknowledged write lost" and for how long writes were unavailable.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pg::{Endpoint, Role};
use store::cluster::ClusterKeys;
use store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One acknowledged write.
#[derive(Clone, Debug)]
pub struct Ack {
    pub id: i64,
    pub member: String,
    pub at: Instant,
    /// Which connection of the load acknowledged it (1, 2, …): writes after
    /// a fault count once the load had to reconnect.
    pub connection: usize,
}

/// What the load saw.
#[derive(Clone, Debug, Default)]
pub struct WorkloadReport {
    pub acks: Vec<Ack>,
    /// Writes whose outcome is unknown (error or timeout after sending).
    pub failed: usize,
}

impl WorkloadReport {
    pub fn acked_ids(&self) -> Vec<i64> {
        self.acks.iter().map(|a| a.id).collect()
    }
}

/// Where the load sends its writes.
#[derive(Clone)]
pub enum Target {
    /// Straight to the member holding the leader key, looked up in the store
    /// again after every failed write.
    Leader {
        store: Arc<dyn Store>,
        keys: ClusterKeys,
        endpoints: BTreeMap<String, Endpoint>,
    },
    /// One address, such as a proxy's read-write port; the member that
    /// answered is recognised by the port its server listens on.
    Address {
        endpoint: Endpoint,
        members_by_port: BTreeMap<u16, String>,
        /// How long a connection may take: a proxy holds new connections
        /// while there is no primary.
        connect_timeout: Duration,
    },
}

/// A running write load, logging each acknowledged id.
pub struct Workload {
    stop: watch::Sender<bool>,
    task: JoinHandle<WorkloadReport>,
    progress: watch::Receiver<usize>,
    acks: Arc<Mutex<Vec<Ack>>>,
}

impl Workload {
    /// Writes ids 1, 2, 3, … into table `acked`, one autocommit insert at a
    /// time, to `target`; after a failed write it connects again.
    pub fn start(target: Target, superuser: Role) -> Workload {
        Workload::start_from(target, superuser, 1)
    }

    /// Like [`Workload::start`], with ids from `first_id` on: loads running
    /// side by side write ids of their own.
    pub fn start_from(target: Target, superuser: Role, first_id: i64) -> Workload {
        let (stop, stopped) = watch::channel(false);
        let (progress_tx, progress) = watch::channel(0usize);
        let acks = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(run(
            target,
            superuser,
            first_id,
            stopped,
            progress_tx,
            acks.clone(),
        ));
        Workload {
            stop,
            task,
            progress,
            acks,
        }
    }

    fn acks(&self) -> std::sync::MutexGuard<'_, Vec<Ack>> {
        self.acks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first write acknowledged on a connection opened after `t` (not
    /// by `not_on`): the first write that got through after a fault.
    pub fn first_ack_reconnected_after(&self, t: Instant, not_on: Option<&str>) -> Option<Ack> {
        let acks = self.acks();
        let connection_at_t = acks
            .iter()
            .rev()
            .find(|a| a.at < t)
            .map_or(0, |a| a.connection);
        acks.iter()
            .find(|a| {
                a.at >= t && a.connection > connection_at_t && Some(a.member.as_str()) != not_on
            })
            .cloned()
    }

    /// The gap in writes around `t`: the last write acknowledged by
    /// `before_on` before `t`, and the first one acknowledged by `after_on`
    /// at or after it (a switchover's write unavailability).
    pub fn gap_around(&self, t: Instant, before_on: &str, after_on: &str) -> Option<(Ack, Ack)> {
        let acks = self.acks();
        let last = acks
            .iter()
            .rev()
            .find(|a| a.at < t && a.member == before_on)?
            .clone();
        let first = acks
            .iter()
            .find(|a| a.at >= t && a.member == after_on)?
            .clone();
        Some((last, first))
    }

    /// Every acknowledged id so far.
    pub fn acked_ids(&self) -> Vec<i64> {
        self.acks().iter().map(|a| a.id).collect()
    }

    /// Waits until `n` writes in total have been acknowledged.
    pub async fn wait_acks(&mut self, n: usize, deadline: Duration) -> bool {
        tokio::time::timeout(deadline, self.progress.wait_for(|acked| *acked >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn acked(&self) -> usize {
        *self.progress.borrow()
    }

    pub async fn stop(self) -> WorkloadReport {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

async fn run(
    target: Target,
    superuser: Role,
    first_id: i64,
    stopped: watch::Receiver<bool>,
    progress: watch::Sender<usize>,
    acks: Arc<Mutex<Vec<Ack>>>,
) -> WorkloadReport {
    let mut failed = 0;
    let mut connection = 0;
    let mut next_id = first_id;
    let write_timeout = Duration::from_secs(1);
    while !*stopped.borrow() {
        let Some((client, member)) = connect(&target, &superuser).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        connection += 1;
        if client
            .batch_execute("CREATE TABLE IF NOT EXISTS acked (id bigint PRIMARY KEY)")
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        while !*stopped.borrow() {
            let id = next_id;
            next_id += 1;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
            let write = client.execute("INSERT INTO acked VALUES ($1)", &params);
            match tokio::time::timeout(write_timeout, write).await {
                Ok(Ok(_)) => {
                    let mut acks = acks.lock().unwrap_or_else(|e| e.into_inner());
                    acks.push(Ack {
                        id,
                        member: member.clone(),
                        at: Instant::now(),
                        connection,
                    });
                    let _ = progress.send(acks.len());
                }
                _ => {
                    failed += 1;
                    break;
                }
            }
        }
    }
    let acks = acks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    WorkloadReport { acks, failed }
}

/// A connection to the target, and the member behind it.
async fn connect(target: &Target, role: &Role) -> Option<(tokio_postgres::Client, String)> {
    match target {
        Target::Leader {
            store,
            keys,
            endpoints,
        } => {
            let leader = keys.leader().get(store.as_ref()).await.ok()??.value.member;
            let endpoint = endpoints.get(&leader)?;
            let attempt = tokio::time::timeout(Duration::from_secs(2), pg::connect(endpoint, role));
            // A client that follows the leader key (as the proxy does) gives
            // up on a silent host as soon as another member leads, instead
            // of waiting out its connect timeout.
            let moved_on = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if let Ok(Some(now)) = keys.leader().get(store.as_ref()).await {
                        if now.value.member != leader {
                            return;
                        }
                    }
                }
            };
            let client = tokio::select! {
                attempt = attempt => attempt.ok()?.ok()?,
                () = moved_on => return None,
            };
            Some((client, leader))
        }
        Target::Address {
            endpoint,
            members_by_port,
            connect_timeout,
        } => {
            let client = tokio::time::timeout(*connect_timeout, pg::connect(endpoint, role))
                .await
                .ok()?
                .ok()?;
            let row = client
                .query_one("SELECT inet_server_port()", &[])
                .await
                .ok()?;
            let port: i32 = row.get(0);
            let member = members_by_port.get(&u16::try_from(port).ok()?)?.clone();
            Some((client, member))
        }
    }
}
