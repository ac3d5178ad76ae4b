//! Starting a restored server and waiting until recovery reached its target
//! and the server was promoted (it then accepts writes). Watched
//! through its files, not a connection: the restored pg_hba.conf need not
//! let this host in over TCP, and peer authentication does not take root
//! for postgres.

use std::path::Path;
use std::time::{Duration, Instant};

use pg::{ClusterState, Instance, PgError};

use super::RestoreError;

/// How often the server's state is looked at, and progress said.
const POLL: Duration = Duration::from_millis(200);
const SAY_EVERY: Duration = Duration::from_secs(10);

/// Starts `instance` (a restored data directory) in the background and
/// waits for the end of recovery. Recovery may replay for a long time; it
/// ends when the server dies (a target it cannot reach) or is promoted.
/// `still` hears every 10 s how long it has been recovering.
pub async fn start_and_wait(
    instance: &Instance,
    still: impl Fn(Duration),
) -> Result<(), RestoreError> {
    instance.start_in_background().await?;
    let started = Instant::now();
    let mut said = Instant::now();
    loop {
        if instance.postmaster_pid().is_none() {
            return Err(RestoreError::RecoveryStopped {
                hint: HINT,
                log: log_tail(&instance.spec().log_file, 20),
            });
        }
        match promoted(instance).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => tracing::debug!("pg_controldata: {e}"),
        }
        if said.elapsed() >= SAY_EVERY {
            still(started.elapsed());
            said = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

const HINT: &str = "PostgreSQL says why at the end of its log: \"recovery ended before \
                    configured recovery target was reached\" means the archive holds no WAL up \
                    to the target (a time or position after the last archived segment, a \
                    restore point made before the backup, or one that does not exist): pick \
                    another target or an older backup with --backup, and restore again";

/// Archive recovery is over (recovery.signal is gone, pg_control says in
/// production) and the server accepts connections (postmaster.pid says
/// ready). pg_control alone is not enough: a backup of a primary carries
/// "in production" until replay begins.
async fn promoted(instance: &Instance) -> Result<bool, PgError> {
    let data_dir = instance.data_dir();
    if data_dir.join("recovery.signal").exists() {
        return Ok(false);
    }
    let ready = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .map(|text| text.lines().nth(7).map(str::trim) == Some("ready"))
        .unwrap_or(false);
    if !ready {
        return Ok(false);
    }
    Ok(instance.controldata().await?.state == ClusterState::InProduction)
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    format!(
        "--- the last lines of {} ---\n{}",
        path.display(),
        all[all.len().saturating_sub(lines)..].join("\n")
    )
}
