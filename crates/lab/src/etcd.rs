//! etcd servers on this machine: single node or three nodes.
//!
//! [`EtcdCluster::start`] runs `etcd` (3.4 or later; `$PGWARDEN_ETCD` or
//! `etcd` on the `PATH`) on free loopback ports in a fresh
//! `/tmp/pgwarden-test-*` directory, with short raft timings (heartbeat
//! 100 ms, election timeout 500 ms, so the smallest lease TTL is 1 s), and
//! waits until every node reports itself healthy and one of them leads.
//!
//! [`EtcdCluster::start_tls`] does the same with TLS on the client URLs and
//! client certificates required, from certificates the caller makes in the
//! cluster's directory (testkit makes throwaway ones). The nodes then listen
//! on TLS only, as they do for users; the health and leader probes are
//! etcd-client's maintenance status calls over the same TLS.
//!
//! [`EtcdCluster::start_on`] runs the nodes on a [`Network`]'s etcd host,
//! listening on its address; this process still reaches them on loopback,
//! through the ports the network forwards.
//!
//! Every process is killed by PID with SIGKILL and reaped when the cluster is
//! dropped (also when the caller panics), then the directory is removed. Each
//! process is also started with `PR_SET_PDEATHSIG = SIGKILL`, tied to a
//! thread that lives exactly as long as the process, so it dies with the
//! process that started it even when that is killed outright.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;

use crate::network::{Host, Network};
use crate::{free_port, wait_for, ScratchDir, WaitError};

/// How long [`EtcdCluster::start`] and [`EtcdCluster::restart`] wait for health.
const HEALTHY_DEADLINE: Duration = Duration::from_secs(30);
/// Bound on one status probe of a node, connection included.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("a local etcd cluster has 1 or 3 nodes, not {0}")]
    NodeCount(usize),
    #[error("cannot create the etcd directory: {0}")]
    Dir(#[source] io::Error),
    #[error(
        "cannot start `{binary}` for etcd node {node}: {source}; install etcd 3.4+ \
         (e.g. `apt-get install etcd-server`) or point $PGWARDEN_ETCD at the binary"
    )]
    Spawn {
        binary: String,
        node: usize,
        #[source]
        source: io::Error,
    },
    #[error("cannot make the TLS certificates for etcd: {detail}")]
    Certificates { detail: String },
    #[error("cannot reach etcd's host on the lab network: {0}")]
    Network(#[source] io::Error),
    #[error("cannot use the TLS certificates for etcd: {0}")]
    Tls(#[source] store::StoreError),
    #[error("etcd node {node} does not exist: this cluster has {nodes} nodes")]
    NoSuchNode { node: usize, nodes: usize },
    #[error("etcd node {node} is already running (pid {pid}); kill it first")]
    AlreadyRunning { node: usize, pid: i32 },
    #[error("etcd node {node} exited on its own; the end of its log {log}:\n{tail}")]
    Exited {
        node: usize,
        log: PathBuf,
        tail: String,
    },
    #[error("{wait}; the ends of the node logs:\n{logs}")]
    NotHealthy {
        #[source]
        wait: WaitError,
        logs: String,
    },
}

/// A running etcd process and the thread that started it. The thread forked
/// the process, so the parent-death signal is tied to it: it waits (without
/// reaping) until the process exits, so the PID stays ours until we reap it.
#[derive(Debug)]
struct Running {
    child: Child,
    watcher: JoinHandle<()>,
}

impl Running {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Kills the process by its PID and reaps it. Its PID cannot have been
    /// reused: the process is not reaped before this.
    fn kill(mut self) {
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.wait();
        let _ = self.watcher.join();
    }
}

#[derive(Debug)]
struct Node {
    name: String,
    /// The address it listens on: loopback, or its host's on a network.
    host: String,
    client_port: u16,
    tls: bool,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    running: Option<Running>,
}

impl Node {
    /// Where this process connects: loopback, forwarded when on a network.
    fn client_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Where the node listens and the hosts of its network connect.
    fn network_client_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://{}:{}", self.host, self.peer_port)
    }
}

/// Writes TLS certificates into a directory: see [`EtcdCluster::start_tls`].
type MakeCertificates<'a> = Box<dyn FnOnce(&Path) -> Result<TlsFiles, String> + 'a>;

/// A throwaway etcd cluster of one or three nodes on loopback ports.
#[derive(Debug)]
pub struct EtcdCluster {
    binary: String,
    initial_cluster: String,
    /// Same for every node of the cluster (it seeds the cluster ID).
    token: String,
    tls: Option<TlsFiles>,
    /// How the health and leader probes connect (TLS when the cluster has it).
    probe: ConnectOptions,
    nodes: Vec<Node>,
    lifetime: Lifetime,
    /// The network whose etcd host runs the nodes; `None`: this one.
    network: Option<Arc<dyn Network>>,
    // Dropped after the processes are killed (see `Drop`).
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `nodes` (1 or 3) etcd members and waits until the cluster is
    /// healthy and has a leader.
    pub async fn start(nodes: usize) -> Result<EtcdCluster, EtcdError> {
        EtcdCluster::start_with(nodes, None, Lifetime::DiesWithThisProcess, None).await
    }

    /// Like [`EtcdCluster::start`], on `network`'s [`Host::Etcd`].
    pub async fn start_on(
        nodes: usize,
        network: Arc<dyn Network>,
    ) -> Result<EtcdCluster, EtcdError> {
        EtcdCluster::start_with(nodes, None, Lifetime::DiesWithThisProcess, Some(network)).await
    }

    /// Like [`EtcdCluster::start`], but the nodes may be left running when
    /// this process exits (see [`EtcdCluster::leave_running`]).
    pub async fn start_detachable(nodes: usize, prefix: &str) -> Result<EtcdCluster, EtcdError> {
        EtcdCluster::start_with(nodes, None, Lifetime::MayOutlive(prefix.to_string()), None).await
    }

    /// Like [`EtcdCluster::start`], with TLS on the client URLs and client
    /// certificates required. `certificates` writes a CA, a server
    /// certificate for 127.0.0.1 and a client certificate into the directory
    /// it is given (the cluster's own, removed with it);
    /// [`EtcdCluster::tls_files`] then has what a client needs.
    pub async fn start_tls(
        nodes: usize,
        certificates: impl FnOnce(&Path) -> Result<TlsFiles, String>,
    ) -> Result<EtcdCluster, EtcdError> {
        EtcdCluster::start_with(
            nodes,
            Some(Box::new(certificates)),
            Lifetime::DiesWithThisProcess,
            None,
        )
        .await
    }

    async fn start_with(
        nodes: usize,
        certificates: Option<MakeCertificates<'_>>,
        lifetime: Lifetime,
        network: Option<Arc<dyn Network>>,
    ) -> Result<EtcdCluster, EtcdError> {
        if nodes != 1 && nodes != 3 {
            return Err(EtcdError::NodeCount(nodes));
        }
        // etcd runs as the current user: no ownership change is needed.
        let prefix = match &lifetime {
            Lifetime::DiesWithThisProcess => ScratchDir::PREFIX,
            Lifetime::MayOutlive(prefix) => prefix.as_str(),
        };
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(EtcdError::Dir)?;
        let tls = certificates
            .map(|make| make(dir.path()).map_err(|detail| EtcdError::Certificates { detail }))
            .transpose()?;
        let mut probe = ConnectOptions::new()
            .with_connect_timeout(PROBE_TIMEOUT)
            .with_timeout(PROBE_TIMEOUT);
        if let Some(tls) = &tls {
            probe =
                probe.with_tls(store::etcd::tls_options(&tls.client()).map_err(EtcdError::Tls)?);
        }
        let host = network
            .as_ref()
            .map_or_else(|| "127.0.0.1".to_string(), |n| n.address(Host::Etcd));
        let nodes: Vec<Node> = (0..nodes)
            .map(|i| Node {
                name: format!("etcd{i}"),
                host: host.clone(),
                client_port: free_port(),
                tls: tls.is_some(),
                peer_port: free_port(),
                data_dir: dir.path().join(format!("etcd{i}.data")),
                log: dir.path().join(format!("etcd{i}.log")),
                running: None,
            })
            .collect();
        if let Some(network) = &network {
            for node in &nodes {
                network
                    .expose(Host::Etcd, node.client_port)
                    .map_err(EtcdError::Network)?;
            }
        }
        let initial_cluster = nodes
            .iter()
            .map(|n| format!("{}={}", n.name, n.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            binary: std::env::var("PGWARDEN_ETCD").unwrap_or_else(|_| "etcd".to_string()),
            initial_cluster,
            token: format!("pgwarden-test-{}", nodes[0].peer_port),
            tls,
            probe,
            nodes,
            lifetime,
            network,
            dir,
        };
        for node in 0..cluster.nodes.len() {
            cluster.spawn(node)?;
        }
        let all: Vec<usize> = (0..cluster.nodes.len()).collect();
        cluster.wait_healthy(&all).await?;
        Ok(cluster)
    }

    /// Client URLs of every node (running or not), in node order, as this
    /// process reaches them.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(Node::client_url).collect()
    }

    /// Client URLs of every node as the hosts of its network reach them (the
    /// same as [`EtcdCluster::endpoints`] without a network).
    pub fn network_endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(Node::network_client_url).collect()
    }

    /// A store client over every node, with the default options (and the
    /// client certificate of a TLS cluster).
    pub async fn store(&self) -> Result<std::sync::Arc<dyn store::Store>, store::StoreError> {
        let options = store::EtcdOptions {
            tls: self.tls.as_ref().map(TlsFiles::client),
            ..store::EtcdOptions::new(self.endpoints())
        };
        Ok(std::sync::Arc::new(
            store::EtcdStore::connect(options).await?,
        ))
    }

    /// Client URL of one node.
    pub fn endpoint(&self, node: usize) -> String {
        self.nodes[node].client_url()
    }

    /// The CA and client certificate of a cluster made by
    /// [`EtcdCluster::start_tls`].
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The directory holding the data directories and logs.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Leaves the nodes running and their directory in place when this is
    /// dropped; returns their PIDs and the directory, for whoever stops them.
    /// Only for a cluster from [`EtcdCluster::start_detachable`]: the others
    /// die with this process anyway.
    pub fn leave_running(&mut self) -> (Vec<i32>, PathBuf) {
        assert!(
            self.lifetime != Lifetime::DiesWithThisProcess,
            "only a detachable etcd can be left running"
        );
        let pids = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.running.take())
            .map(|running| {
                let pid = running.pid();
                // Neither killed nor reaped: init adopts it when we exit.
                std::mem::forget(running);
                pid
            })
            .collect();
        self.dir.disable_cleanup(true);
        (pids, self.dir.path().to_path_buf())
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// PID of a node's process, if it runs.
    pub fn pid(&self, node: usize) -> Option<i32> {
        self.nodes.get(node)?.running.as_ref().map(Running::pid)
    }

    /// Kills one node with SIGKILL (no shutdown, like a crash) and reaps it.
    pub fn kill(&mut self, node: usize) -> Result<(), EtcdError> {
        self.check_node(node)?;
        if let Some(running) = self.nodes[node].running.take() {
            running.kill();
        }
        Ok(())
    }

    /// Starts a killed node again on the same ports and data directory and
    /// waits until it reports itself healthy.
    pub async fn restart(&mut self, node: usize) -> Result<(), EtcdError> {
        self.check_node(node)?;
        if let Some(pid) = self.pid(node) {
            return Err(EtcdError::AlreadyRunning { node, pid });
        }
        self.spawn(node)?;
        self.wait_healthy(&[node]).await
    }

    /// The node that currently leads, as every running node sees it, or
    /// `None` (no leader, an election in progress, or no node answers).
    pub async fn leader(&self) -> Option<usize> {
        let mut seen = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.running.is_none() {
                continue;
            }
            if let Ok(status) = self.status(node).await {
                seen.push((i, status));
            }
        }
        // The node that believes it leads, confirmed by a majority of those
        // that answered (a deposed leader may not know yet).
        let (leader, status) = seen
            .iter()
            .find(|(_, s)| s.leader != 0 && s.leader == s.member_id)?;
        let agreeing = seen
            .iter()
            .filter(|(_, s)| s.leader == status.member_id)
            .count();
        (agreeing * 2 > seen.len()).then_some(*leader)
    }

    /// Waits until one node leads, as a majority of the running nodes sees it.
    pub async fn wait_for_leader(&self, deadline: Duration) -> Result<usize, WaitError> {
        wait_for("an etcd leader", deadline, || async {
            self.leader().await.ok_or("no leader agreed by a majority")
        })
        .await
    }

    fn check_node(&self, node: usize) -> Result<(), EtcdError> {
        if node < self.nodes.len() {
            Ok(())
        } else {
            Err(EtcdError::NoSuchNode {
                node,
                nodes: self.nodes.len(),
            })
        }
    }

    fn spawn(&mut self, index: usize) -> Result<(), EtcdError> {
        let node = &self.nodes[index];
        let spawn_error = |source| EtcdError::Spawn {
            binary: self.binary.clone(),
            node: index,
            source,
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(spawn_error)?;
        let log_err = log.try_clone().map_err(spawn_error)?;
        let mut command = Command::new(&self.binary);
        command
            .arg("--name")
            .arg(&node.name)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--listen-client-urls")
            .arg(node.network_client_url())
            .arg("--advertise-client-urls")
            .arg(node.network_client_url())
            .arg("--listen-peer-urls")
            .arg(node.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(node.peer_url())
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--heartbeat-interval")
            .arg("100")
            .arg("--election-timeout")
            .arg("500")
            .arg("--logger")
            .arg("zap")
            .arg("--log-level")
            .arg("warn")
            .args(self.tls.iter().flat_map(|tls| {
                [
                    "--cert-file".into(),
                    tls.server_cert.clone().into_os_string(),
                    "--key-file".into(),
                    tls.server_key.clone().into_os_string(),
                    "--trusted-ca-file".into(),
                    tls.ca.clone().into_os_string(),
                    "--client-cert-auth".into(),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if self.lifetime == Lifetime::DiesWithThisProcess {
            // SAFETY: between fork and exec only prctl(2) is called, which
            // is async-signal-safe.
            unsafe {
                command.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)
                });
            }
        }
        if let Some(network) = &self.network {
            network
                .enter(Host::Etcd, &mut command)
                .map_err(spawn_error)?;
        }
        let (sender, receiver) = std::sync::mpsc::channel();
        let watcher = std::thread::Builder::new()
            .name(format!("{}-watcher", node.name))
            .spawn(move || {
                let child = command.spawn();
                let pid = child.as_ref().ok().map(|c| c.id() as i32);
                if sender.send(child).is_err() {
                    return;
                }
                if let Some(pid) = pid {
                    // Wait for the exit but leave the zombie: the PID stays
                    // reserved until `Running::kill` reaps it.
                    let _ = waitid(
                        Id::Pid(Pid::from_raw(pid)),
                        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
                    );
                }
            })
            .map_err(spawn_error)?;
        let child = match receiver.recv() {
            Ok(Ok(child)) => child,
            Ok(Err(source)) => {
                let _ = watcher.join();
                return Err(spawn_error(source));
            }
            Err(_) => {
                let _ = watcher.join();
                return Err(spawn_error(io::Error::other("the spawning thread died")));
            }
        };
        self.nodes[index].running = Some(Running { child, watcher });
        Ok(())
    }

    /// What one node says about itself: etcd-client's maintenance status
    /// call, over TLS when the cluster has it.
    async fn status(&self, node: &Node) -> Result<Status, String> {
        let ask = async {
            let mut client = Client::connect([node.client_url()], Some(self.probe.clone())).await?;
            client.status().await
        };
        let answer = tokio::time::timeout(PROBE_TIMEOUT, ask)
            .await
            .map_err(|_| format!("no status within {PROBE_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        Ok(Status {
            member_id: answer.header().map_or(0, |h| h.member_id()),
            leader: answer.leader(),
            errors: answer.errors().to_vec(),
        })
    }

    /// Waits until each of `nodes` knows a leader and reports no errors
    /// (what etcd's `/health` checks); fails early when one of them exits.
    async fn wait_healthy(&self, nodes: &[usize]) -> Result<(), EtcdError> {
        let waited = wait_for("healthy etcd nodes", HEALTHY_DEADLINE, || async {
            let mut unhealthy = Vec::new();
            for &i in nodes {
                let node = &self.nodes[i];
                if node
                    .running
                    .as_ref()
                    .is_none_or(|r| r.watcher.is_finished())
                {
                    return Ok(Err(i));
                }
                match self.status(node).await {
                    Ok(status) if status.healthy() => {}
                    Ok(status) => unhealthy.push(format!("{}: {status:?}", node.name)),
                    Err(e) => unhealthy.push(format!("{}: {e}", node.name)),
                }
            }
            if unhealthy.is_empty() {
                Ok(Ok(()))
            } else {
                Err(unhealthy)
            }
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(node)) => Err(EtcdError::Exited {
                node,
                log: self.nodes[node].log.clone(),
                tail: log_tail(&self.nodes[node].log),
            }),
            Err(wait) => Err(EtcdError::NotHealthy {
                wait,
                logs: self
                    .nodes
                    .iter()
                    .map(|n| format!("--- {}:\n{}", n.log.display(), log_tail(&n.log)))
                    .collect::<Vec<_>>()
                    .join("\n"),
            }),
        }
    }
}

/// Whether etcd may outlive the process that started it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lifetime {
    /// Killed by the kernel when this process dies, even by SIGKILL: a
    /// test that crashes leaves no etcd behind.
    DiesWithThisProcess,
    /// In a directory with this prefix, for `pgwarden demo --keep`.
    MayOutlive(String),
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(running) = node.running.take() {
                running.kill();
            }
        }
        // `dir` is removed when the fields drop, after this.
    }
}

/// What etcd's maintenance status says about one node.
#[derive(Debug, Clone)]
struct Status {
    member_id: u64,
    /// The member this node follows as raft leader; 0 for none.
    leader: u64,
    /// Alarms and errors the node reports, such as a full database.
    errors: Vec<String>,
}

impl Status {
    fn healthy(&self) -> bool {
        self.leader != 0 && self.errors.is_empty()
    }
}

/// PEM files of a TLS cluster: a CA, the server certificate (valid for
/// 127.0.0.1) and a client certificate the servers accept.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// What a store client needs to reach the cluster: the CA and the
    /// client certificate.
    pub fn client(&self) -> store::EtcdTls {
        store::EtcdTls {
            ca: Some(self.ca.clone()),
            cert: Some(self.client_cert.clone()),
            key: Some(self.client_key.clone()),
            domain: None,
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_three_node_cluster_elects_a_new_leader_and_takes_a_node_back() {
        let mut cluster = EtcdCluster::start(3).await.unwrap();
        let first = cluster
            .wait_for_leader(Duration::from_secs(10))
            .await
            .unwrap();
        let pid = cluster.pid(first).unwrap();
        cluster.kill(first).unwrap();
        assert!(cluster.pid(first).is_none());
        assert!(
            kill(Pid::from_raw(pid), None).is_err(),
            "the killed node's process {pid} is gone"
        );
        let second = cluster
            .wait_for_leader(Duration::from_secs(10))
            .await
            .unwrap();
        assert_ne!(first, second);
        cluster.restart(first).await.unwrap();
        cluster
            .wait_for_leader(Duration::from_secs(10))
            .await
            .unwrap();
        let pids: Vec<i32> = (0..3).filter_map(|n| cluster.pid(n)).collect();
        let path = cluster.path().to_path_buf();
        drop(cluster);
        for pid in pids {
            assert!(
                kill(Pid::from_raw(pid), None).is_err(),
                "process {pid} is gone"
            );
        }
        assert!(!path.exists(), "{} is removed", path.display());
    }
}
