//! A standby built from the repository instead of pg_basebackup (`[backup]
//! replica_from = ["backup", …]`): the newest backup of the cluster that the
//! archive continues is restored into the empty data directory and set up
//! as a standby, which replays the archive and then streams. The primary
//! sends only the WAL not yet archived, instead of its whole data directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backup::catalog::Snapshot;
use backup::restore::{self, choose, Recovery, RecoveryTarget, RestoreOptions};
use backup::Repository;
use pg::Instance;

use crate::bootstrap::empty_dir;
use crate::postgres::Upstream;

/// How long the upstream may take to say who it is.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the repository may take to list the cluster's backups and WAL.
const LIST_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the restore's progress is measured.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

pub struct StandbyFromBackup {
    repo: Arc<dyn Repository>,
    /// The repository as the operator wrote it, for messages.
    where_: String,
    restore_command: String,
}

/// Why no standby was built from a backup: the next method is tried.
#[derive(Debug)]
pub struct Declined(pub String);

impl StandbyFromBackup {
    /// From `[backup]`; `restore_command` fetches from the archive.
    pub fn new(backup: &config::Backup, restore_command: String) -> Result<Self, String> {
        Ok(StandbyFromBackup {
            repo: backup::open(backup).map_err(|e| e.to_string())?,
            where_: backup.repository.to_string(),
            restore_command,
        })
    }

    /// Restores the backup into `instance`'s empty data directory, ready to
    /// start as a standby of `upstream` (pgwarden.conf, written at start,
    /// names it and the archive). Returns what the event says. On failure
    /// the data directory is empty again, for the next method.
    /// `progress` hears (written, total) bytes as the restore goes.
    pub async fn build(
        &self,
        instance: &Instance,
        upstream: &Upstream,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<String, Declined> {
        let data_dir = instance.data_dir();
        if !is_empty_or_absent(data_dir) {
            return Err(Declined(format!("{} is not empty", data_dir.display())));
        }
        let (system_id, timeline) = identify(instance, upstream).await?;
        let snapshot = read_snapshot(self.repo.clone(), system_id)
            .await
            .map_err(|e| Declined(format!("cannot read the repository {}: {e}", self.where_)))?;
        let manifest = choose::for_standby(&snapshot, timeline).map_err(Declined)?;
        let id = &manifest.id;
        tracing::info!(
            "building this standby from backup {id} (ended {} at {}, timeline {}) in {}: \
             restoring it into {}, then replaying the archive up to {}'s timeline {timeline}",
            manifest.stop.time,
            manifest.stop.lsn,
            manifest.stop.timeline,
            self.where_,
            data_dir.display(),
            upstream.name
        );
        let total = manifest.totals.bytes;
        progress(0, total);
        let restored = async {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            let restore = self.restore_as_standby(instance, id);
            tokio::pin!(restore);
            loop {
                tokio::select! {
                    result = &mut restore => return result,
                    _ = tick.tick() => progress(allocated_bytes(data_dir).await.min(total), total),
                }
            }
        };
        match restored.await {
            Ok(()) => Ok(format!(
                "by restoring backup {id} from {} and replaying the archive",
                self.where_
            )),
            Err(why) => {
                empty_dir(data_dir);
                Err(Declined(format!("restoring backup {id} failed: {why}")))
            }
        }
    }

    async fn restore_as_standby(&self, instance: &Instance, id: &str) -> Result<(), String> {
        let run_as = instance.spec().run_as.clone();
        let options = RestoreOptions {
            parallelism: 4,
            delta: false,
            run_as: run_as.clone(),
            recovery: Recovery {
                restore_command: self.restore_command.clone(),
                target: RecoveryTarget::Latest,
                keep_archiving: true,
            },
        };
        let data_dir = instance.data_dir();
        restore::restore(self.repo.as_ref(), id, data_dir, &options)
            .await
            .map_err(|e| e.to_string())?;
        // A standby, not an archive recovery that promotes at the end: no
        // target, and pgwarden.conf's restore_command and archive settings
        // rather than the restore's. backup_label stays: replay starts there.
        restore::recovery::clear(data_dir, &run_as)
            .map_err(|e| format!("clearing the recovery settings: {e}"))?;
        match std::fs::remove_file(data_dir.join("recovery.signal")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("removing recovery.signal: {e}"))
            }
            _ => {}
        }
        instance.set_standby(true).map_err(|e| e.to_string())?;
        instance.write_passfile().map_err(|e| e.to_string())
    }
}

/// The upstream's database system identifier and timeline, from itself: a
/// backup of another cluster, or one its timeline does not descend from,
/// must never be restored.
async fn identify(instance: &Instance, upstream: &Upstream) -> Result<(u64, u32), Declined> {
    let asked = async {
        let client = pg::connect(&upstream.endpoint, &instance.spec().superuser)
            .await
            .map_err(|e| e.to_string())?;
        let row = client
            .query_one(
                "SELECT (SELECT system_identifier::text FROM pg_control_system()), \
                        pg_is_in_recovery(), \
                        CASE WHEN NOT pg_is_in_recovery() THEN \
                             ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        let system_id: String = row.get(0);
        let timeline: Option<i32> = row.get(2);
        let system_id = system_id
            .parse::<u64>()
            .map_err(|e| format!("system identifier {system_id:?}: {e}"))?;
        match timeline {
            Some(timeline) => Ok((system_id, timeline as u32)),
            None => Err("it is not a primary (in recovery)".to_string()),
        }
    };
    tokio::time::timeout(ASK_TIMEOUT, asked)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {ASK_TIMEOUT:?}")))
        .map_err(|why| {
            Declined(format!(
                "cannot ask {upstream} which cluster and timeline it is on: {why}"
            ))
        })
}

/// On a thread of its own: the catalog's future is not Send, and the
/// agent's round must be.
async fn read_snapshot(repo: Arc<dyn Repository>, system_id: u64) -> Result<Snapshot, String> {
    let read = tokio::task::spawn_blocking(move || {
        tokio::runtime::Handle::current().block_on(Snapshot::read(repo.as_ref(), system_id))
    });
    tokio::time::timeout(LIST_TIMEOUT, read)
        .await
        .map_err(|_| format!("no answer within {LIST_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// The bytes the files under `dir` hold on disk: the restore lays each
/// file out at its full size, sparse, and fills it in.
async fn allocated_bytes(dir: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|entry| match entry.metadata() {
                Ok(meta) if meta.is_dir() => walk(&entry.path()),
                Ok(meta) => meta.blocks() * 512,
                Err(_) => 0,
            })
            .sum()
    }
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || walk(&dir))
        .await
        .unwrap_or(0)
}

fn is_empty_or_absent(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}
