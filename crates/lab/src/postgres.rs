//! Throwaway PostgreSQL clusters: a primary and streaming standbys
//! cloned through the pg crate, on free loopback ports in a temporary
//! directory.

use std::collections::BTreeMap;
use std::time::Duration;

use nix::sys::signal::Signal;
use pg::{Endpoint, Instance, InstanceSpec, PgError, Probe, Role, RunAs, Settings, Timeouts};

use crate::dir::ScratchDir;
use crate::ports::free_port;
use crate::process::terminate;
use crate::wait::{wait_for, WaitError};

/// Everything that can go wrong setting up a PostgreSQL cluster.
#[derive(Debug, thiserror::Error)]
pub enum PgClusterError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Wait(#[from] WaitError),
    #[error("cluster directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("no PostgreSQL binaries found: install postgresql-15 (scripts/install-deps does)")]
    NoBinaries,
}

/// Where PostgreSQL's programs are, found as pgwarden finds them when
/// `member.bin_dir` is unset.
pub fn bin_dir() -> Result<std::path::PathBuf, PgClusterError> {
    config::detect_bin_dir().ok_or(PgClusterError::NoBinaries)
}

/// Runs SQL as the superuser on `instance`, on a connection of its own.
pub(crate) async fn execute(instance: &Instance, sql: &str) -> Result<(), PgError> {
    let client = instance.connect().await?;
    client
        .batch_execute(sql)
        .await
        .map_err(|e| PgError::Refused(format!("{sql}: {e}")))
}

/// Reads one text value as the superuser on `instance`, on a connection of
/// its own.
pub(crate) async fn query_text(instance: &Instance, sql: &str) -> Result<Option<String>, PgError> {
    let client = instance.connect().await?;
    let row = client
        .query_one(sql, &[])
        .await
        .map_err(|e| PgError::Refused(format!("{sql}: {e}")))?;
    Ok(row.get(0))
}

/// One member of a [`PgCluster`]. Its postmaster is killed on drop.
#[derive(Debug)]
pub struct PgNode {
    pub name: String,
    pub instance: Instance,
    pub settings: Settings,
}

impl PgNode {
    pub fn endpoint(&self) -> Endpoint {
        self.instance.spec().endpoint.clone()
    }

    /// Runs SQL as the superuser.
    pub async fn execute(&self, sql: &str) -> Result<(), PgError> {
        execute(&self.instance, sql).await
    }

    /// Reads one text value as the superuser.
    pub async fn query_text(&self, sql: &str) -> Result<Option<String>, PgError> {
        query_text(&self.instance, sql).await
    }

    /// SIGKILLs the postmaster, like a crash.
    pub fn kill(&self) {
        if let Some(pid) = self.instance.postmaster_pid() {
            terminate(pid, Signal::SIGKILL, Duration::from_secs(5));
        }
    }

    /// Writes standby settings that stream from `primary` through a slot
    /// named after this node.
    pub fn follow(&mut self, primary: &Endpoint) -> Result<(), PgError> {
        self.settings.primary_conninfo = Some(self.instance.primary_conninfo(primary, &self.name));
        self.settings.primary_slot_name = Some(self.name.clone());
        self.instance.write_settings(&self.settings)?;
        self.instance.set_standby(true)
    }

    /// Waits until this standby's WAL receiver streams.
    pub async fn wait_streaming(&self, deadline: Duration) -> Result<(), WaitError> {
        wait_for(
            &format!("{} to stream WAL", self.name),
            deadline,
            || async {
                match self.instance.probe().await {
                    Probe::Up(state) => match &state.wal_receiver {
                        Some(receiver) if receiver.status == "streaming" => Ok(()),
                        other => Err(format!("wal receiver: {other:?}")),
                    },
                    down => Err(format!("{down:?}")),
                }
            },
        )
        .await
    }
}

impl Drop for PgNode {
    fn drop(&mut self) {
        // SIGQUIT is PostgreSQL's immediate shutdown: the postmaster takes its
        // children down with it.
        if let Some(pid) = self.instance.postmaster_pid() {
            terminate(pid, Signal::SIGQUIT, Duration::from_secs(10));
        }
    }
}

/// A primary and its streaming standbys, in one temporary directory.
#[derive(Debug)]
pub struct PgCluster {
    /// `nodes[0]` starts as the primary.
    pub nodes: Vec<PgNode>,
    pub run_as: RunAs,
    // Declared last: dropped after the nodes have been stopped.
    pub dir: ScratchDir,
}

impl PgCluster {
    /// An empty cluster directory; add nodes with `new_node`.
    pub fn empty() -> Result<PgCluster, PgClusterError> {
        let run_as = RunAs::detect()?;
        let dir = ScratchDir::new(&run_as)?;
        Ok(PgCluster {
            nodes: Vec::new(),
            run_as,
            dir,
        })
    }

    /// A bootstrapped primary and `standbys` standbys streaming from it.
    pub async fn start(standbys: usize) -> Result<PgCluster, PgClusterError> {
        let mut cluster = PgCluster::empty()?;
        cluster.add_primary("node0").await?;
        for i in 1..=standbys {
            cluster.add_standby(&format!("node{i}"), 0).await?;
        }
        Ok(cluster)
    }

    /// Bootstraps a new primary (initdb, start, replication role).
    pub async fn add_primary(&mut self, name: &str) -> Result<&PgNode, PgClusterError> {
        let node = self.new_node(name)?;
        node.instance.bootstrap(&node.settings).await?;
        self.nodes.push(node);
        Ok(self.nodes.last().expect("just pushed"))
    }

    /// A node with its own data directory and port; nothing on disk yet.
    pub fn new_node(&self, name: &str) -> Result<PgNode, PgClusterError> {
        let port = free_port();
        let data_dir = self.dir.join(name);
        let spec = InstanceSpec {
            log_file: self.dir.join(&format!("{name}.log")),
            data_dir,
            bin_dir: bin_dir()?,
            endpoint: Endpoint::new("127.0.0.1", port),
            superuser: Role {
                name: "postgres".into(),
                password: "lab superuser 'password'".into(),
            },
            replication: Role {
                name: "replicator".into(),
                password: "lab:replication\\password".into(),
            },
            hba_networks: vec!["127.0.0.1/32".into()],
            run_as: self.run_as.clone(),
            timeouts: Timeouts {
                pg_ctl: Duration::from_secs(60),
                clone: Duration::from_secs(300),
            },
        };
        let mut settings = Settings::new(name, "127.0.0.1", port);
        settings.socket_dir = self.dir.path().display().to_string();
        settings.max_connections = 50;
        settings.parameters = BTreeMap::from([
            ("shared_buffers".to_string(), "16MB".to_string()),
            ("fsync".to_string(), "off".to_string()),
        ]);
        Ok(PgNode {
            name: name.to_string(),
            instance: Instance::new(spec),
            settings,
        })
    }

    /// Clones a new standby from `nodes[source]` (with a slot there) and
    /// waits until it streams.
    pub async fn add_standby(
        &mut self,
        name: &str,
        source: usize,
    ) -> Result<&PgNode, PgClusterError> {
        let mut node = self.new_node(name)?;
        let source = &self.nodes[source];
        source.instance.create_slot(name).await?;
        node.instance.clone_from(&source.endpoint(), |_| {}).await?;
        node.follow(&source.endpoint())?;
        node.instance.start().await?;
        node.wait_streaming(Duration::from_secs(30)).await?;
        self.nodes.push(node);
        Ok(self.nodes.last().expect("just pushed"))
    }

    pub fn node(&self, name: &str) -> &PgNode {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in this cluster"))
    }
}
