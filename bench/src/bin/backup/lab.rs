//! The one PostgreSQL 15 both tools back up, with a pgbench database; what
//! its archive_command runs; pgbench runs; restored copies started until
//! they accept writes.

use std::path::Path;
use std::time::{Duration, Instant};

use lab::{wait_for, PgCluster, PgNode};
use pg::StopMode;

/// How long a restored server may take to accept writes.
const REPLAY_DEADLINE: Duration = Duration::from_secs(900);

pub struct Server {
    pub cluster: PgCluster,
}

impl Server {
    /// The source's directory and port, nothing started yet.
    pub fn new() -> Result<Server, String> {
        let mut cluster = PgCluster::empty().map_err(|e| e.to_string())?;
        let node = cluster.new_node("source").map_err(|e| e.to_string())?;
        cluster.nodes.push(node);
        Ok(Server { cluster })
    }

    /// initdb and start, archiving through `archive_command`.
    pub async fn bootstrap(&mut self, archive_command: String) -> Result<(), String> {
        let node = &mut self.cluster.nodes[0];
        node.settings.archive_command = Some(archive_command);
        for (name, value) in [
            ("shared_buffers", "256MB"),
            ("max_wal_size", "8GB"),
            ("checkpoint_timeout", "30min"),
            ("log_line_prefix", "%m [%p] "),
        ] {
            node.settings.parameters.insert(name.into(), value.into());
        }
        node.instance
            .bootstrap(&node.settings)
            .await
            .map_err(|e| format!("bootstrap: {e}"))?;
        // pgBackRest refuses pgwarden's `archive_mode = always` (which
        // pgwarden.conf sets and no parameter may override); a lone server
        // archives the same segments with `on`: postgresql.auto.conf is
        // read last.
        let auto = node.instance.data_dir().join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&auto).map_err(|e| format!("read {auto:?}: {e}"))?;
        text.push_str("archive_mode = 'on'\n");
        std::fs::write(&auto, text).map_err(|e| format!("write {auto:?}: {e}"))?;
        node.instance
            .restart()
            .await
            .map_err(|e| format!("restart with archive_mode = on: {e}"))
    }

    pub fn source(&self) -> &PgNode {
        &self.cluster.nodes[0]
    }

    pub fn dir(&self) -> &Path {
        self.cluster.dir.path()
    }

    /// Rewrites the archive_command and reloads.
    pub async fn set_archive_command(&mut self, command: String) -> Result<(), String> {
        let node = &mut self.cluster.nodes[0];
        node.settings.archive_command = Some(command);
        node.instance
            .write_settings(&node.settings)
            .map_err(|e| e.to_string())?;
        node.instance.reload().await.map_err(|e| e.to_string())
    }

    pub async fn text(&self, sql: &str) -> Result<String, String> {
        self.source()
            .query_text(sql)
            .await
            .map_err(|e| format!("{sql}: {e}"))
            .map(Option::unwrap_or_default)
    }

    /// Runs pgbench against the source; its output.
    pub async fn pgbench(&self, args: &[String]) -> Result<String, String> {
        let spec = self.source().instance.spec();
        let mut command = tokio::process::Command::new(spec.bin_dir.join("pgbench"));
        command
            .args(["-h", "127.0.0.1", "-p"])
            .arg(spec.endpoint.port.to_string())
            .args(["-U", &spec.superuser.name])
            .args(args)
            .arg("postgres")
            .env("PGPASSWORD", &spec.superuser.password)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = command
            .output()
            .await
            .map_err(|e| format!("pgbench: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(format!(
                "pgbench {}: {}\n{text}",
                args.join(" "),
                out.status
            ));
        }
        Ok(text)
    }

    /// Transactions per second of `seconds` of the standard pgbench load.
    pub async fn tps(&self, seconds: u64) -> Result<f64, String> {
        let out = self.pgbench(&load(seconds)).await?;
        out.lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no tps in pgbench's output:\n{out}"))
    }

    /// Ends the current segment and waits until the archive_command
    /// archived it (and so every one before).
    pub async fn archive_all(&self) -> Result<(), String> {
        let segment = self.text("SELECT pg_walfile_name(pg_switch_wal())").await?;
        wait_for(
            &format!("{segment} to be archived"),
            Duration::from_secs(600),
            || async {
                let last = self
                    .text("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
                    .await?;
                if last.as_str() >= segment.as_str() {
                    Ok(())
                } else {
                    Err(format!("archived up to {last:?}"))
                }
            },
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// A node named `name` for a restored data directory (its own port,
    /// the source's parameters), not yet started.
    pub fn restored_node(&self, name: &str) -> Result<PgNode, String> {
        let mut node = self.cluster.new_node(name).map_err(|e| e.to_string())?;
        node.settings.parameters = self.source().settings.parameters.clone();
        Ok(node)
    }
}

/// The pgbench load every measurement runs.
pub fn load(seconds: u64) -> Vec<String> {
    ["-n", "-c", "4", "-j", "2", "-T", &seconds.to_string()]
        .map(String::from)
        .to_vec()
}

/// Starts the restored server in `node` and waits until it has replayed
/// the archive and accepts a write: the time that took.
pub async fn replay(node: &PgNode) -> Result<Duration, String> {
    node.instance
        .write_settings(&node.settings)
        .map_err(|e| e.to_string())?;
    let began = Instant::now();
    node.instance
        .start_in_background()
        .await
        .map_err(|e| format!("{} did not start: {e}", node.name))?;
    let write = "CREATE TABLE IF NOT EXISTS bench_replayed (i int); \
                 INSERT INTO bench_replayed VALUES (1)";
    loop {
        match node.execute(write).await {
            Ok(()) => break,
            // A server that stopped (a recovery that failed) never will.
            Err(e)
                if began.elapsed() > REPLAY_DEADLINE
                    || (began.elapsed() > Duration::from_secs(5)
                        && node.instance.postmaster_pid().is_none()) =>
            {
                return Err(format!(
                    "{} did not accept writes: {e}\n{}",
                    node.name,
                    log_tail(node)
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let took = began.elapsed();
    if let Ok(dir) = std::env::var("BENCH_KEEP_LOGS") {
        let _ = std::fs::copy(
            &node.instance.spec().log_file,
            format!("{dir}/{}.log", node.name),
        );
    }
    node.instance
        .stop(StopMode::Fast)
        .await
        .map_err(|e| e.to_string())?;
    Ok(took)
}

fn log_tail(node: &PgNode) -> String {
    let text = std::fs::read_to_string(&node.instance.spec().log_file).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Bytes in the files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
