//! A new cluster from a base backup instead of initdb (`[bootstrap]` in
//! pgwarden.toml): the backup is restored into the empty data directory,
//! recovered to the target from the archive, and promoted; it keeps
//! archiving into the same repository, on a new timeline.

use std::sync::Arc;

use backup::restore::point::{parse_target, Timeline};
use backup::restore::{self, choose, Recovery, RecoveryTarget, RestoreOptions};
use backup::Repository;
use pg::{Instance, PgError, Settings};

/// Where the new cluster comes from.
pub struct FromBackup {
    repo: Arc<dyn Repository>,
    /// The repository as the operator wrote it, for messages.
    where_: String,
    backup_id: Option<String>,
    target: RecoveryTarget,
    restore_command: String,
}

impl FromBackup {
    /// From `[bootstrap]` and `[backup]`; `restore_command` fetches from the
    /// archive. A target that does not parse is refused here, at start.
    pub fn new(
        bootstrap: &config::Bootstrap,
        backup: &config::Backup,
        restore_command: String,
    ) -> Result<FromBackup, String> {
        let target = parse_target(&bootstrap.recovery_target)
            .map_err(|e| format!("pgwarden.toml [bootstrap] recovery_target: {e}"))?;
        let repo = backup::open(backup).map_err(|e| e.to_string())?;
        Ok(FromBackup {
            repo,
            where_: backup.repository.to_string(),
            backup_id: bootstrap.backup_id.clone(),
            target,
            restore_command,
        })
    }

    /// Restores, recovers and promotes into `instance`'s empty data
    /// directory, then gives it this member's settings and replication
    /// role. On failure the data directory is emptied again (it was empty
    /// before), so the next attempt starts clean.
    pub async fn bootstrap(
        &self,
        instance: &Instance,
        settings: &Settings,
    ) -> Result<String, PgError> {
        let picked = choose::pick(
            self.repo.as_ref(),
            self.backup_id.as_deref(),
            &self.target,
            Timeline::Latest,
            &self.where_,
        )
        .await
        .map_err(|e| PgError::Refused(format!("bootstrap from a backup: {e}")))?;
        for note in &picked.notes {
            tracing::warn!("bootstrap from a backup: {note}");
        }
        let id = picked.manifest.id.clone();
        tracing::info!(
            "bootstrap: restoring backup {id} (ended {} at {}) from {} into {}",
            picked.manifest.stop.time,
            picked.manifest.stop.lsn,
            self.where_,
            instance.data_dir().display()
        );
        let result = self.restore_and_promote(instance, settings, &id).await;
        if let Err(err) = &result {
            tracing::warn!("bootstrap from backup {id} failed: {err}; emptying the data directory for the next attempt");
            if instance.postmaster_pid().is_some() {
                let _ = instance.stop(pg::StopMode::Immediate).await;
            }
            empty_dir(instance.data_dir());
        }
        result.map(|()| {
            format!(
                "restored backup {id} from {} and recovered it to {}: a new cluster",
                self.where_,
                describe(&self.target)
            )
        })
    }

    async fn restore_and_promote(
        &self,
        instance: &Instance,
        settings: &Settings,
        id: &str,
    ) -> Result<(), PgError> {
        let run_as = instance.spec().run_as.clone();
        let failed =
            |e: restore::RestoreError| PgError::Refused(format!("bootstrap from backup {id}: {e}"));
        let options = RestoreOptions {
            parallelism: 4,
            delta: false,
            run_as: run_as.clone(),
            recovery: Recovery {
                restore_command: self.restore_command.clone(),
                target: self.target.clone(),
                // The cluster goes on: its new timeline is archived too.
                keep_archiving: true,
            },
        };
        restore::restore(self.repo.as_ref(), id, instance.data_dir(), &options)
            .await
            .map_err(failed)?;
        instance.write_settings(settings)?;
        instance.write_passfile()?;
        restore::start::start_and_wait(instance, |after| {
            tracing::info!(
                "bootstrap: still recovering backup {id} after {}s",
                after.as_secs()
            )
        })
        .await
        .map_err(failed)?;
        restore::recovery::clear(instance.data_dir(), &run_as).map_err(|e| {
            PgError::Refused(format!(
                "bootstrap: could not remove the recovery settings from {}/postgresql.auto.conf \
                 ({e}); remove the recovery_target* lines by hand before restarting it",
                instance.data_dir().display()
            ))
        })?;
        instance.ensure_replication_role().await
    }
}

fn describe(target: &RecoveryTarget) -> String {
    match target {
        RecoveryTarget::Latest => "the end of the archive".into(),
        RecoveryTarget::Immediate => "the end of the backup".into(),
        RecoveryTarget::Time(t) => t.to_string(),
        RecoveryTarget::Lsn(lsn) => format!("WAL position {lsn}"),
        RecoveryTarget::Name(name) => format!("restore point {name}"),
    }
}

/// Removes what a failed attempt left, keeping the directory itself.
pub(crate) fn empty_dir(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = removed {
            tracing::warn!("could not remove {}: {e}", path.display());
        }
    }
}
