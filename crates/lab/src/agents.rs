//! A whole pgwarden cluster on this machine: etcd plus one `pgwarden agent`
//! process per member, each with its own PostgreSQL, on loopback or on the
//! hosts of a [`Network`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pg::{Endpoint, Instance, InstanceSpec, PgError, Probe, Role, RunAs, Timeouts};
use store::cluster::{ClusterKeys, DynamicConfig, PgState, SynchronousMode};
use store::Store;

use crate::dir::ScratchDir;
use crate::etcd::EtcdCluster;
use crate::network::{Host, Network};
use crate::ports::free_port;
use crate::postgres::bin_dir;
use crate::process::{is_alive, terminate};
use crate::slow_link::SlowLink;
use crate::wait::{wait_for, WaitError};
use crate::workload::{Target, Workload};

pub const SUPERUSER_PASSWORD: &str = "lab superuser password";
pub const REPLICATION_PASSWORD: &str = "lab replication password";
pub const CLUSTER: &str = "test";

/// How to build the cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub members: usize,
    pub config: DynamicConfig,
    /// fsync off makes tests faster; a process kill loses nothing either way.
    pub fsync: bool,
    /// etcd nodes (1 or 3).
    pub etcd_nodes: usize,
    /// The cluster's name in the store.
    pub name: String,
    /// Start of the temporary directories' names.
    pub dir_prefix: &'static str,
    /// Whether the cluster may be left running when this process exits
    /// ([`AgentCluster::leave_running`]). Tests leave it false: a test that
    /// crashes must not leave etcd behind.
    pub detachable: bool,
    /// The body of every member's `[backup]` table (e.g.
    /// `repository = "/mnt/backup"`): PostgreSQL then archives its WAL
    /// through `pgwarden wal push`. `None`: no archive.
    pub backup: Option<String>,
    /// Run etcd and each member on a host of this network (e.g. testkit's
    /// `NetLab`) instead of on loopback here. The cluster keeps it alive
    /// until its processes are gone.
    pub network: Option<Arc<dyn Network>>,
    /// The agents reach etcd through a relay whose delay
    /// [`AgentCluster::set_store_delay`] sets (loopback clusters only).
    pub slow_store: bool,
    /// Extra lines for each member's `[member]` table (e.g. its
    /// `reachability` targets), by member index; none past the end.
    pub member_lines: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            members: 3,
            config: DynamicConfig::default(),
            fsync: false,
            etcd_nodes: 1,
            name: CLUSTER.to_string(),
            dir_prefix: ScratchDir::PREFIX,
            detachable: false,
            backup: None,
            network: None,
            slow_store: false,
            member_lines: Vec::new(),
        }
    }
}

/// One member: its agent process and its PostgreSQL.
#[derive(Debug)]
pub struct AgentMember {
    pub name: String,
    pub config_file: PathBuf,
    pub agent_log: PathBuf,
    pub instance: Instance,
    /// The REST API's URL, as this process reaches it.
    pub api_url: String,
    agent: Option<Child>,
    /// Left running on purpose: dropping this stops nothing.
    left_running: bool,
}

impl AgentMember {
    pub fn endpoint(&self) -> Endpoint {
        self.instance.spec().endpoint.clone()
    }

    pub fn agent_pid(&self) -> Option<i32> {
        self.agent
            .as_ref()
            .map(|c| c.id() as i32)
            .filter(|pid| is_alive(*pid))
    }

    /// The postmaster and every process it started.
    pub fn postgres_pids(&self) -> Vec<i32> {
        let Some(postmaster) = self.instance.postmaster_pid() else {
            return Vec::new();
        };
        let mut pids = vec![postmaster];
        pids.extend(children_of(postmaster));
        pids
    }

    /// What the local PostgreSQL says about itself.
    pub async fn probe(&self) -> Probe {
        self.instance.probe().await
    }

    /// Runs SQL as the superuser on this member's PostgreSQL, directly.
    pub async fn execute(&self, sql: &str) -> Result<(), PgError> {
        crate::postgres::execute(&self.instance, sql).await
    }

    /// Reads one text value as the superuser on this member's PostgreSQL,
    /// directly.
    pub async fn query_text(&self, sql: &str) -> Result<Option<String>, PgError> {
        crate::postgres::query_text(&self.instance, sql).await
    }

    /// The last lines of the agent's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(&self.agent_log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for AgentMember {
    fn drop(&mut self) {
        if self.left_running {
            return;
        }
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.postgres_pids() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
        if let Some(pid) = self.instance.postmaster_pid() {
            terminate(pid, Signal::SIGQUIT, Duration::from_secs(10));
        }
    }
}

/// What [`AgentCluster::leave_running`] left.
#[derive(Debug)]
pub struct LeftRunning {
    pub dir: PathBuf,
    pub etcd_dir: PathBuf,
    /// Each member's name, agent PID (if it ran) and data directory.
    pub agents: Vec<(String, Option<i32>, PathBuf)>,
    pub etcd: Vec<i32>,
}

fn superuser() -> Role {
    Role {
        name: "postgres".into(),
        password: SUPERUSER_PASSWORD.into(),
    }
}

/// etcd and the members, in one temporary directory.
pub struct AgentCluster {
    binary: PathBuf,
    pub members: Vec<AgentMember>,
    pub store: Arc<dyn Store>,
    pub keys: ClusterKeys,
    pub etcd: EtcdCluster,
    /// The relays the agents reach etcd through, with `slow_store`.
    store_links: Vec<SlowLink>,
    /// Outlives every process on it (fields drop in declaration order).
    network: Option<Arc<dyn Network>>,
    // Declared last: removed after every process has gone.
    pub dir: ScratchDir,
}

impl AgentCluster {
    /// Starts etcd, writes the dynamic configuration and starts one agent
    /// per member (`db1`, `db2`, …). Returns at once: the agents bootstrap
    /// on their own; use `wait_*` to wait for a state.
    pub async fn start(
        binary: &Path,
        options: ClusterOptions,
    ) -> Result<AgentCluster, Box<dyn std::error::Error>> {
        let run_as = RunAs::detect()?;
        let dir = ScratchDir::with_prefix(&run_as, options.dir_prefix)?;
        let etcd = if let Some(network) = &options.network {
            EtcdCluster::start_on(options.etcd_nodes, network.clone()).await?
        } else if options.detachable {
            EtcdCluster::start_detachable(options.etcd_nodes, options.dir_prefix).await?
        } else {
            EtcdCluster::start(options.etcd_nodes).await?
        };
        let store = etcd.store().await?;
        let keys = ClusterKeys::new("/pgwarden", &options.name)?;
        keys.config()
            .create(store.as_ref(), &options.config, None)
            .await?;
        for (file, password) in [
            ("superuser.pw", SUPERUSER_PASSWORD),
            ("replication.pw", REPLICATION_PASSWORD),
        ] {
            fs::write(dir.join(file), password)?;
        }
        let mut store_links = Vec::new();
        if options.slow_store {
            for url in etcd.endpoints() {
                let target = url
                    .trim_start_matches("http://")
                    .parse()
                    .map_err(|e| format!("etcd endpoint {url}: {e}"))?;
                store_links.push(SlowLink::start(target).await?);
            }
        }
        let mut cluster = AgentCluster {
            binary: binary.to_path_buf(),
            members: Vec::new(),
            store,
            keys,
            etcd,
            store_links,
            network: options.network.clone(),
            dir,
        };
        for i in 0..options.members {
            let member = cluster.prepare(i, &options, &run_as)?;
            cluster.members.push(member);
        }
        for i in 0..cluster.members.len() {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    /// Member `index`'s directory and configuration: `db1` for index 0.
    fn prepare(
        &self,
        index: usize,
        options: &ClusterOptions,
        run_as: &RunAs,
    ) -> Result<AgentMember, Box<dyn std::error::Error>> {
        let name = &format!("db{}", index + 1);
        let home = self.dir.join(name);
        fs::create_dir_all(&home)?;
        run_as.chown(&home)?;
        let port = free_port();
        let api = free_port();
        // Without a network: loopback. With one: the member's host address,
        // and its ports forwarded to the same ones on loopback here.
        let (address, network, api_insecure) = match &options.network {
            None => ("127.0.0.1".to_string(), "127.0.0.1/32".to_string(), ""),
            Some(network) => {
                let host = Host::Member(index);
                network.expose(host, port)?;
                network.expose(host, api)?;
                (
                    network.address(host),
                    network.hba_network(),
                    // Only the lab's hosts can reach it.
                    "insecure = true\n",
                )
            }
        };
        let data_dir = home.join("data");
        let config_file = home.join("pgwarden.toml");
        let config = format!(
            r#"[member]
name = "{name}"
data_dir = "{data}"
bin_dir = "{bin}"
listen_address = "{address}"
port = {port}
socket_dir = "{sockets}"
{member_lines}
[postgresql]
hba_networks = ["{network}"]
parameters = {{ shared_buffers = "16MB", fsync = {fsync}, max_connections = 50 }}

[store]
endpoints = {endpoints:?}
cluster = "{cluster}"
request_timeout = "1s"

[timing]
heartbeat = "{heartbeat}ms"
lease_ttl = "{ttl}ms"
pg_ctl_timeout = "30s"
clone_timeout = "5m"

[api]
listen = "{address}:{api}"
{api_insecure}
[credentials.superuser]
password_file = "{su}"

[credentials.replication]
password_file = "{repl}"
{backup}"#,
            data = data_dir.display(),
            bin = bin_dir()?.display(),
            sockets = self.dir.path().display(),
            member_lines = options
                .member_lines
                .get(index)
                .map(String::as_str)
                .unwrap_or_default(),
            fsync = options.fsync,
            endpoints = if self.store_links.is_empty() {
                self.etcd.network_endpoints()
            } else {
                self.store_links
                    .iter()
                    .map(|link| format!("http://{}", link.addr))
                    .collect()
            },
            cluster = options.name,
            heartbeat = options.config.heartbeat_ms,
            ttl = options.config.ttl_ms,
            su = self.dir.join("superuser.pw").display(),
            repl = self.dir.join("replication.pw").display(),
            backup = options
                .backup
                .as_ref()
                .map(|table| format!("\n[backup]\n{table}\n"))
                .unwrap_or_default(),
        );
        fs::write(&config_file, config)?;
        let instance = Instance::new(InstanceSpec {
            data_dir,
            bin_dir: bin_dir()?,
            log_file: home.join("postgres.log"),
            endpoint: Endpoint::new("127.0.0.1", port),
            superuser: Role {
                name: "postgres".into(),
                password: SUPERUSER_PASSWORD.into(),
            },
            replication: Role {
                name: "replicator".into(),
                password: REPLICATION_PASSWORD.into(),
            },
            hba_networks: vec![network],
            run_as: run_as.clone(),
            timeouts: Timeouts::default(),
        });
        Ok(AgentMember {
            name: name.to_string(),
            api_url: format!("http://127.0.0.1:{api}"),
            agent_log: home.join("agent.log"),
            config_file,
            instance,
            agent: None,
            left_running: false,
        })
    }

    /// Starts member `i`'s agent (again).
    pub fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        let member = &mut self.members[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.agent_log)?;
        let mut command = Command::new(&self.binary);
        if let Some(network) = &self.network {
            network.enter(Host::Member(i), &mut command)?;
        }
        let child = command
            .args(["agent", "-c"])
            .arg(&member.config_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env(
                "RUST_LOG",
                std::env::var("PGWARDEN_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .spawn()?;
        member.agent = Some(child);
        Ok(())
    }

    /// The host `name` runs on, on the cluster's [`Network`].
    pub fn host(&self, name: &str) -> Host {
        Host::Member(self.index(name))
    }

    pub fn member(&self, name: &str) -> &AgentMember {
        &self.members[self.index(name)]
    }

    fn index(&self, name: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.name == name)
            .unwrap_or_else(|| panic!("no member {name} in this cluster"))
    }

    /// Host death: SIGKILL the agent and every PostgreSQL process together.
    pub fn kill_host(&mut self, name: &str) {
        let i = self.index(name);
        let member = &mut self.members[i];
        let agent = member.agent.take();
        let mut pids = member.postgres_pids();
        pids.extend(agent.as_ref().map(|child| child.id() as i32));
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Some(mut child) = agent {
            let _ = child.wait();
        }
    }

    /// A PostgreSQL crash: SIGKILL the postmaster only; the agent lives.
    pub fn kill_postmaster(&self, name: &str) {
        if let Some(pid) = self.member(name).instance.postmaster_pid() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the agent and all of PostgreSQL
    /// at once, like a host that stops being scheduled.
    pub fn freeze(&self, name: &str, frozen: bool) {
        let member = self.member(name);
        let signal = if frozen {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        let mut pids = member.postgres_pids();
        pids.extend(member.agent_pid());
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// SIGTERM to the agent (a planned stop) and wait for it to exit.
    pub fn stop_agent(&mut self, name: &str, deadline: Duration) -> bool {
        let i = self.index(name);
        let Some(mut child) = self.members[i].agent.take() else {
            return true;
        };
        let pid = child.id() as i32;
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let start = std::time::Instant::now();
        while start.elapsed() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Restarts a member's agent that was killed or stopped.
    pub fn restart(&mut self, name: &str) -> std::io::Result<()> {
        let i = self.index(name);
        self.spawn(i)
    }

    /// The member holding the leader key, if any.
    pub async fn leader(&self) -> Option<String> {
        self.keys
            .leader()
            .get(self.store.as_ref())
            .await
            .ok()
            .flatten()
            .map(|l| l.value.member)
    }

    /// Waits until one member is a running primary holding the leader key
    /// and every other listed member streams from it, with synchronous
    /// replication on also until the primary has published a synchronous
    /// standby (before that no failover can happen). Returns the primary.
    pub async fn wait_healthy(
        &self,
        members: &[&str],
        deadline: Duration,
    ) -> Result<String, WaitError> {
        wait_for(
            &format!("one primary with {members:?} all up and streaming"),
            deadline,
            || async {
                let Some(leader) = self.leader().await else {
                    return Err("no leader key".to_string());
                };
                if !members.contains(&leader.as_str()) {
                    return Err(format!("the leader is {leader}, not one of these"));
                }
                let mut seen = Vec::new();
                let mut healthy = true;
                for name in members {
                    let member = self.member(name);
                    let state = match member.probe().await {
                        Probe::Up(state) => state,
                        Probe::Down { reason, .. } => {
                            seen.push(format!("{name}: down ({reason})"));
                            healthy = false;
                            continue;
                        }
                    };
                    if *name == leader {
                        healthy &= !state.in_recovery;
                        seen.push(format!("{name}: primary={}", !state.in_recovery));
                    } else {
                        let streaming = state.wal_receiver.as_ref().is_some_and(|r| {
                            r.status == "streaming"
                                && r.sender_port == Some(self.member(&leader).endpoint().port)
                        });
                        healthy &= state.in_recovery && streaming;
                        seen.push(format!(
                            "{name}: standby={} streaming from {leader}={streaming}",
                            state.in_recovery
                        ));
                    }
                }
                if healthy && members.len() > 1 {
                    // With synchronous replication on, a failover needs a
                    // published synchronous standby: until then the
                    // cluster is up but not yet protected.
                    let synchronous = match self.keys.config().get(self.store.as_ref()).await {
                        Ok(Some(config)) => config.value.synchronous_mode != SynchronousMode::Off,
                        _ => false,
                    };
                    if synchronous {
                        let published = match self.keys.sync().get(self.store.as_ref()).await {
                            Ok(Some(sync)) => {
                                sync.value.leader == leader
                                    && !sync.value.members.is_empty()
                                    && sync.value.quorum() > 0
                            }
                            _ => false,
                        };
                        if !published {
                            healthy = false;
                            seen.push("no synchronous standby published yet".to_string());
                        }
                    }
                }
                if healthy {
                    Ok(leader)
                } else {
                    Err(format!("leader {leader}; {}", seen.join("; ")))
                }
            },
        )
        .await
    }

    /// Waits until `name`'s agent publishes, in a status written after
    /// this call, that its PostgreSQL runs: proof that the agent itself has
    /// seen it up again (the store may still hold a status from before a
    /// crash, and PostgreSQL may answer before the agent's next round).
    pub async fn wait_published_running(
        &self,
        name: &str,
        deadline: Duration,
    ) -> Result<(), WaitError> {
        let what = format!("{name}'s agent to publish its PostgreSQL running");
        let key = self.keys.member(name).map_err(|e| WaitError {
            what: what.clone(),
            waited: Duration::ZERO,
            last_seen: e.to_string(),
        })?;
        let before = key
            .get(self.store.as_ref())
            .await
            .ok()
            .flatten()
            .map_or(0, |status| status.mod_revision);
        wait_for(&what, deadline, || async {
            match key.get(self.store.as_ref()).await {
                Ok(Some(status))
                    if status.mod_revision > before && status.value.state == PgState::Running =>
                {
                    Ok(())
                }
                Ok(Some(status)) => Err(format!(
                    "revision {} (before: {before}), state {:?}",
                    status.mod_revision, status.value.state
                )),
                Ok(None) => Err("no status".to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// Waits until the primary has published a synchronous standby: only
    /// then may a failover happen in synchronous mode.
    pub async fn wait_synchronous(&self, deadline: Duration) -> Result<Vec<String>, WaitError> {
        wait_for("a published synchronous standby", deadline, || async {
            match self.keys.sync().get(self.store.as_ref()).await {
                Ok(Some(sync)) if !sync.value.members.is_empty() && sync.value.quorum() > 0 => {
                    Ok(sync.value.members)
                }
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    /// A write load against whoever leads, logging each acknowledged id.
    pub fn workload(&self) -> Workload {
        self.workload_on(self.leader_target(), 1)
    }

    /// A write load through one address, such as a proxy's read-write port,
    /// that waits up to `connect_timeout` for each connection.
    pub fn workload_through(&self, endpoint: Endpoint, connect_timeout: Duration) -> Workload {
        self.workload_on(self.address_target(endpoint, connect_timeout), 1)
    }

    /// A write load to `target` writing ids from `first_id` on (loads that
    /// run side by side need ids of their own).
    pub fn workload_on(&self, target: Target, first_id: i64) -> Workload {
        Workload::start_from(target, superuser(), first_id)
    }

    /// Whoever holds the leader key.
    pub fn leader_target(&self) -> Target {
        let endpoints = self
            .members
            .iter()
            .map(|m| (m.name.clone(), m.endpoint()))
            .collect();
        Target::Leader {
            store: self.store.clone(),
            keys: self.keys.clone(),
            endpoints,
        }
    }

    /// One address, whose member is recognised by its port.
    pub fn address_target(&self, endpoint: Endpoint, connect_timeout: Duration) -> Target {
        let members_by_port = self
            .members
            .iter()
            .map(|m| (m.endpoint().port, m.name.clone()))
            .collect();
        Target::Address {
            endpoint,
            members_by_port,
            connect_timeout,
        }
    }

    /// Leaves etcd, the agents and their PostgreSQL running and every
    /// directory in place; returns what an operator needs to stop them.
    /// Only for a cluster started with `detachable`.
    pub fn leave_running(mut self) -> LeftRunning {
        let agents = self
            .members
            .iter_mut()
            .map(|m| {
                m.left_running = true;
                // Dropping a `Child` neither kills nor waits for it.
                let pid = m.agent.take().map(|child| child.id() as i32);
                (m.name.clone(), pid, m.instance.spec().data_dir.clone())
            })
            .collect();
        let (etcd, etcd_dir) = self.etcd.leave_running();
        LeftRunning {
            dir: self.dir.keep(),
            etcd_dir,
            agents,
            etcd,
        }
    }

    /// Which of `ids` are missing from table `acked` on `member`.
    pub async fn missing_ids(&self, member: &str, ids: &[i64]) -> Result<Vec<i64>, pg::PgError> {
        let client = self.member(member).instance.connect().await?;
        let rows = client
            .query("SELECT id FROM acked", &[])
            .await
            .map_err(|e| pg::PgError::Refused(format!("read table acked on {member}: {e}")))?;
        let present: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
        Ok(ids
            .iter()
            .copied()
            .filter(|id| !present.contains(id))
            .collect())
    }

    /// Holds back every request the agents send to etcd by `delay` from
    /// now on (a cluster started with `slow_store`).
    pub fn set_store_delay(&self, delay: Duration) {
        for link in &self.store_links {
            link.set_delay(delay);
        }
    }

    /// Every agent's log tail, for the message of a failed test or run.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {} agent log ---\n{}", m.name, m.log_tail(40)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for AgentCluster {
    fn drop(&mut self) {
        // Members first (agents, then their postmasters), then etcd, then
        // the directory: fields drop in declaration order.
        self.members.clear();
    }
}

/// Direct children of `parent`, from /proc.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}
