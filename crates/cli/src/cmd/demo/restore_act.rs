//! The demo's last act: a base backup taken early (`ctl backup run`), a
//! table dropped by mistake at the end, and `pgwarden restore` bringing it
//! back as it was just before the drop, in a new directory, across the
//! failover's and the switchover's timelines.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lab::AgentMember;
use pg::{Endpoint, Role};

/// Rows of the table dropped by mistake.
pub const ROWS: u32 = 1000;

/// `pgwarden ctl --api API backup run --full`; its last line.
pub async fn take_backup(binary: &Path, api: &str) -> Result<String> {
    let out = run(binary, &["ctl", "--api", api, "backup", "run", "--full"]).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(stdout.lines().last().unwrap_or_default().trim().to_string())
}

/// Creates the table, notes the time after its last commit, and drops it:
/// the time to restore to.
pub async fn drop_by_mistake(primary: &AgentMember) -> Result<String> {
    primary
        .execute(&format!(
            "CREATE TABLE orders (id int PRIMARY KEY, item text); \
             INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, {ROWS}) g"
        ))
        .await?;
    let before = primary
        .query_text(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
        )
        .await?
        .context("the server's clock")?;
    primary.execute("DROP TABLE orders").await?;
    // Everything up to the drop in the archive, so a restore can replay it.
    primary
        .execute("SELECT pg_switch_wal(); CHECKPOINT")
        .await?;
    Ok(before)
}

/// Waits until `primary` has archived every segment it completed.
pub async fn archived(primary: &AgentMember, deadline: Duration) -> Result<()> {
    let waited = lab::wait_for("the archive to hold the drop", deadline, || async {
        let waiting = primary
            .query_text(
                "SELECT count(*)::text FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'",
            )
            .await;
        match waiting {
            Ok(Some(n)) if n == "0" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    waited.map_err(|e| anyhow::anyhow!("{e}"))
}

/// A server restored into `dir` on `port`, stopped when dropped.
pub struct Restored {
    pub dir: PathBuf,
    pub port: u16,
}

/// `pgwarden restore -c CONFIG --to TIME --target-dir DIR --port PORT --start`.
pub async fn restore(binary: &Path, config: &Path, time: &str, dir: PathBuf) -> Result<Restored> {
    let port = lab::free_port();
    let restored = Restored {
        dir: dir.clone(),
        port,
    };
    let out = run(
        binary,
        &[
            "restore",
            "-c",
            &config.display().to_string(),
            "--to",
            time,
            "--target-dir",
            &dir.display().to_string(),
            "--port",
            &port.to_string(),
            "--start",
        ],
    )
    .await?;
    if !out.status.success() {
        bail!(
            "pgwarden restore failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(restored)
}

impl Restored {
    /// The rows of `orders` in the restored server.
    pub async fn rows(&self, superuser: &Role) -> Result<i64> {
        let client = pg::connect(&Endpoint::new("127.0.0.1", self.port), superuser).await?;
        let row = client
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .context("count the restored rows")?;
        Ok(row.get(0))
    }
}

impl Drop for Restored {
    /// Stops the restored server (immediate shutdown: nothing in it is
    /// kept), by the PID it wrote.
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.dir.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok());
        let Some(pid) = pid.filter(|pid| pg::pid::is_alive(*pid)) else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .args(["-QUIT", &pid.to_string()])
            .status();
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while pg::pid::is_alive(pid) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn run(binary: &Path, args: &[&str]) -> Result<Output> {
    let out = tokio::time::timeout(
        super::STEP_DEADLINE,
        tokio::process::Command::new(binary)
            .args(args)
            .env_remove("PGWARDEN_API")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("pgwarden {} did not finish in time", args.join(" ")))??;
    Ok(out)
}
