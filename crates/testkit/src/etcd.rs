//! etcd servers for tests: single node or three nodes.
//!
//! [`EtcdCluster::start`] runs `etcd` (3.4 or later; `$PGWARDEN_ETCD` or
//! `etcd` on the `PATH`) on free loopback ports in a fresh
//! `/tmp/pgwarden-test-*` directory, with short raft timings (heartbeat
//! 100 ms, election timeout 500 ms, so the smallest lease TTL is 1 s), and
//! waits until every node reports itself healthy and one of them leads.
//!
//! [`EtcdCluster::start_tls`] does the same with TLS on the client URLs
//! (certificates made with the `openssl` command line tool, client
//! certificates required); each node then also listens on a plain-text
//! loopback port that only the test kit's probes use.
//!
//! Every process is killed by PID with SIGKILL and reaped when the cluster is
//! dropped (also when a test panics), then the directory is removed. Each
//! process is also started with `PR_SET_PDEATHSIG = SIGKILL`, tied to a
//! thread that lives exactly as long as the process, so it dies with the test
//! process even when that is killed outright.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{free_port, wait_for, TestDir, WaitError};

/// How long [`EtcdCluster::start`] and [`EtcdCluster::restart`] wait for health.
const HEALTHY_DEADLINE: Duration = Duration::from_secs(30);
/// Bound on one HTTP probe of a node.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("an etcd test cluster has 1 or 3 nodes, not {0}")]
    NodeCount(usize),
    #[error("cannot create the etcd test directory: {0}")]
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
    #[error("cannot make test TLS certificates with `openssl`: {detail}; install the openssl command line tool")]
    Certificates { detail: String },
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
    client_port: u16,
    /// Plain-text port for the kit's probes: the client port without TLS.
    probe_port: u16,
    tls: bool,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    running: Option<Running>,
}

impl Node {
    fn client_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn listen_client_urls(&self) -> String {
        if self.tls {
            format!("{},http://127.0.0.1:{}", self.client_url(), self.probe_port)
        } else {
            self.client_url()
        }
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// A throwaway etcd cluster of one or three nodes on loopback ports.
#[derive(Debug)]
pub struct EtcdCluster {
    binary: String,
    initial_cluster: String,
    /// Same for every node of the cluster (it seeds the cluster ID).
    token: String,
    tls: Option<TlsFiles>,
    nodes: Vec<Node>,
    lifetime: Lifetime,
    // Dropped after the processes are killed (see `Drop`).
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `nodes` (1 or 3) etcd members and waits until the cluster is
    /// healthy and has a leader.
    pub async fn start(nodes: usize) -> Result<EtcdCluster, EtcdError> {
        EtcdCluster::start_with(nodes, false, Lifetime::DiesWithThisProcess).await
    }

    /// Like [`EtcdCluster::start`], but the nodes may be left running when
    /// this process exits (see [`EtcdCluster::leave_running`]).
    pub async fn start_detachable(nodes: usize, prefix: &str) -> Result<EtcdCluster, EtcdError> {
        EtcdCluster::start_with(nodes, false, Lifetime::MayOutlive(prefix.to_string())).await
    }

    /// Like [`EtcdCluster::start`], with TLS on the client URLs and client
    /// certificates required; [`EtcdCluster::tls_files`] has what a client
    /// needs.
    pub async fn start_tls(nodes: usize) -> Result<EtcdCluster, EtcdError> {
        EtcdCluster::start_with(nodes, true, Lifetime::DiesWithThisProcess).await
    }

    async fn start_with(
        nodes: usize,
        tls: bool,
        lifetime: Lifetime,
    ) -> Result<EtcdCluster, EtcdError> {
        if nodes != 1 && nodes != 3 {
            return Err(EtcdError::NodeCount(nodes));
        }
        // etcd runs as the current user: no ownership change is needed.
        let prefix = match &lifetime {
            Lifetime::DiesWithThisProcess => TestDir::PREFIX,
            Lifetime::MayOutlive(prefix) => prefix.as_str(),
        };
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(EtcdError::Dir)?;
        let tls = if tls {
            Some(make_certificates(dir.path())?)
        } else {
            None
        };
        let nodes: Vec<Node> = (0..nodes)
            .map(|i| {
                let client_port = free_port();
                Node {
                    name: format!("etcd{i}"),
                    client_port,
                    probe_port: if tls.is_some() {
                        free_port()
                    } else {
                        client_port
                    },
                    tls: tls.is_some(),
                    peer_port: free_port(),
                    data_dir: dir.path().join(format!("etcd{i}.data")),
                    log: dir.path().join(format!("etcd{i}.log")),
                    running: None,
                }
            })
            .collect();
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
            nodes,
            lifetime,
            dir,
        };
        for node in 0..cluster.nodes.len() {
            cluster.spawn(node)?;
        }
        let all: Vec<usize> = (0..cluster.nodes.len()).collect();
        cluster.wait_healthy(&all).await?;
        Ok(cluster)
    }

    /// Client URLs of every node (running or not), in node order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(Node::client_url).collect()
    }

    /// A store client over every node, with the default options.
    pub async fn store(&self) -> Result<std::sync::Arc<dyn store::Store>, store::StoreError> {
        let options = store::EtcdOptions::new(self.endpoints());
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
            if let Ok(status) = status(node.probe_port).await {
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
            .arg(node.listen_client_urls())
            .arg("--advertise-client-urls")
            .arg(node.client_url())
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

    /// Waits until each of `nodes` answers `/health` with true; fails early
    /// when one of them exits.
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
                match http(node.probe_port, "GET", "/health", "").await {
                    Ok(body) if body.contains("\"health\":\"true\"") => {}
                    Ok(body) => unhealthy.push(format!("{}: {}", node.name, body.trim())),
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

/// What `/v3/maintenance/status` says about one node.
#[derive(Debug, Clone, Copy)]
struct Status {
    member_id: u64,
    leader: u64,
}

async fn status(port: u16) -> io::Result<Status> {
    let body = http(port, "POST", "/v3/maintenance/status", "{}").await?;
    let field = |name: &str| {
        json_u64(&body, name).ok_or_else(|| {
            io::Error::other(format!("no `{name}` in the status answer: {}", body.trim()))
        })
    };
    Ok(Status {
        member_id: field("member_id")?,
        leader: field("leader")?,
    })
}

/// The number in `"name":"123"` or `"name":123` (grpc-gateway writes 64-bit
/// integers as strings). Good enough for the status answer.
fn json_u64(body: &str, name: &str) -> Option<u64> {
    let pattern = format!("\"{name}\":");
    let rest = &body[body.find(&pattern)? + pattern.len()..];
    let rest = rest.trim_start().trim_start_matches('"');
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// One HTTP/1.1 request to a node's client port; returns the body.
async fn http(port: u16, method: &str, path: &str, body: &str) -> io::Result<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status_line = answer.lines().next().unwrap_or_default().to_string();
        if !status_line.contains(" 200 ") {
            return Err(io::Error::other(format!("{method} {path}: {status_line}")));
        }
        Ok(answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default())
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::other(format!(
                "{method} {path}: no answer within {PROBE_TIMEOUT:?}"
            )))
        })
}

/// PEM files of a TLS test cluster: a throwaway CA, the server certificate
/// (for 127.0.0.1 and localhost) and a client certificate (CN `root`).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn make_certificates(dir: &Path) -> Result<TlsFiles, EtcdError> {
    let file = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| -> Result<(), EtcdError> {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| EtcdError::Certificates {
                detail: format!("openssl {}: {e}", args.join(" ")),
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(EtcdError::Certificates {
                detail: format!(
                    "openssl {} failed ({}): {}",
                    args.join(" "),
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            })
        }
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=pgwarden test CA",
    ];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&ca)?;
    for (name, subject, usage) in [
        (
            "server",
            "/CN=127.0.0.1",
            "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost",
        ),
        ("client", "/CN=root", "extendedKeyUsage=clientAuth"),
    ] {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(file(&ext), usage).map_err(|e| EtcdError::Certificates {
            detail: format!("cannot write {ext}: {e}"),
        })?;
        let mut request = vec!["req", "-subj", subject, "-keyout", &key, "-out", &csr];
        request.extend(ec);
        openssl(&request)?;
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ])?;
    }
    Ok(TlsFiles {
        ca: file("ca.pem"),
        server_cert: file("server.pem"),
        server_key: file("server.key"),
        client_cert: file("client.pem"),
        client_key: file("client.key"),
    })
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_written_as_strings_or_numbers() {
        let body = r#"{"header":{"cluster_id":"1","member_id":"9372538179322589801","revision":"1"},"leader":"9372538179322589801","raftIndex":"4"}"#;
        assert_eq!(json_u64(body, "member_id"), Some(9372538179322589801));
        assert_eq!(json_u64(body, "leader"), Some(9372538179322589801));
        assert_eq!(json_u64(r#"{"leader": 12}"#, "leader"), Some(12));
        assert_eq!(json_u64(r#"{"other":"1"}"#, "leader"), None);
    }

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
