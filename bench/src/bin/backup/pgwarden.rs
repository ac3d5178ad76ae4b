//! pgwarden's side: base backups and restores through the backup crate (as
//! the agent takes them), the archive through the `pgwarden wal push` and
//! `wal fetch` commands PostgreSQL runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use backup::backup::{BackupOptions, BaseBackup};
use backup::manifest::Manifest;
use backup::repo::{PosixRepository, RepoError};
use backup::restore::{self, Recovery, RecoveryTarget, RestoreOptions};
use backup::wal::WalName;
use backup::Repository;
use pg::RunAs;

pub struct Pgwarden {
    /// The pgwarden binary PostgreSQL runs, and its configuration (only
    /// `[backup]`).
    binary: PathBuf,
    config: PathBuf,
    repo_dir: PathBuf,
    repo: Arc<PosixRepository>,
    parallelism: usize,
}

/// The pgwarden archive as a base backup waits for it.
struct Archived(backup::wal::WalArchive, Arc<PosixRepository>);

#[async_trait]
impl backup::backup::WalArchive for Archived {
    async fn has_segment(&self, name: &str) -> Result<bool, RepoError> {
        let name = WalName::parse(name).map_err(RepoError::BadPath)?;
        Ok(self.1.size(&self.0.path_of(&name)).await?.is_some())
    }

    fn describe(&self) -> String {
        self.1.describe()
    }
}

impl Pgwarden {
    /// Copies `binary` into `dir` (where the PostgreSQL user may run it)
    /// and writes a configuration with a repository directory beside it.
    pub fn configure(
        dir: &Path,
        binary: &Path,
        parallelism: u64,
        run_as: &RunAs,
    ) -> Result<Pgwarden, String> {
        let home = dir.join("pgwarden");
        let repo_dir = home.join("repo");
        std::fs::create_dir_all(&repo_dir).map_err(|e| format!("{}: {e}", repo_dir.display()))?;
        let copy = home.join("pgwarden");
        std::fs::copy(binary, &copy).map_err(|e| format!("copy {}: {e}", binary.display()))?;
        let config = home.join("pgwarden.toml");
        std::fs::write(
            &config,
            format!("[backup]\nrepository = \"{}\"\n", repo_dir.display()),
        )
        .map_err(|e| format!("{}: {e}", config.display()))?;
        for path in [&home, &repo_dir, &config, &copy] {
            run_as.chown(path).map_err(|e| e.to_string())?;
        }
        Ok(Pgwarden {
            binary: copy,
            config,
            repo: Arc::new(PosixRepository::new(&repo_dir)),
            repo_dir,
            parallelism: parallelism as usize,
        })
    }

    /// PostgreSQL's archive_command.
    pub fn wal_push(&self) -> String {
        format!(
            "{} wal push -c {} %p",
            self.binary.display(),
            self.config.display()
        )
    }

    /// PostgreSQL's restore_command.
    pub fn wal_fetch(&self) -> String {
        format!(
            "{} wal fetch -c {} %f %p",
            self.binary.display(),
            self.config.display()
        )
    }

    /// A full backup, or an incremental one on `parent`, of the server
    /// `client` reaches, whose data directory is `data_dir`.
    pub async fn backup(
        &self,
        client: &tokio_postgres::Client,
        data_dir: &Path,
        parent: Option<&Manifest>,
    ) -> Result<Manifest, String> {
        let id = backup::wal::control::system_identifier(data_dir).map_err(|e| e.to_string())?;
        let repo: Arc<dyn Repository> = self.repo.clone();
        let archive = Archived(backup::wal::WalArchive::new(repo, id), self.repo.clone());
        BaseBackup {
            client,
            data_dir,
            repo: self.repo.as_ref(),
            archive: &archive,
            parent,
            options: BackupOptions {
                parallelism: self.parallelism,
                ..BackupOptions::default()
            },
            progress: &|_| {},
        }
        .run()
        .await
        .map_err(|e| format!("pgwarden backup: {e}"))
    }

    /// Restores backup `id` into `target` (new, or with `delta` an existing
    /// data directory), recovering to the end of the archive.
    pub async fn restore(
        &self,
        id: &str,
        target: &Path,
        delta: bool,
        run_as: &RunAs,
    ) -> Result<(), String> {
        let options = RestoreOptions {
            parallelism: self.parallelism,
            delta,
            run_as: run_as.clone(),
            recovery: Recovery {
                restore_command: self.wal_fetch(),
                target: RecoveryTarget::Latest,
                keep_archiving: false,
            },
        };
        restore::restore(self.repo.as_ref(), id, target, &options)
            .await
            .map(|_| ())
            .map_err(|e| format!("pgwarden restore: {e}"))
    }

    /// What backup `id` holds in the repository.
    pub fn stored_bytes(&self, id: &str) -> u64 {
        crate::lab::dir_size(&self.repo_dir.join("backups").join(id))
    }
}
