//! Base backups of a running PostgreSQL: `pg_backup_start` on one
//! connection, the data directory copied in parallel chunks, compressed,
//! `pg_backup_stop`, the WAL up to the end waited for in the archive, and
//! only then the manifest, written once: a backup is visible only when
//! complete, and never changes.
//!
//! An incremental backup names a parent: chunks whose size and checksum
//! equal the parent's at the same place are referenced, not stored again.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_postgres::Client;

use crate::compress;
use crate::manifest::{self, BackupKind, Compression, Manifest, Position, Totals};
use crate::repo::{RepoError, Repository};

pub mod copy;
pub mod protocol;
pub mod wal_needed;
pub mod walk;

pub use wal_needed::WalArchive;

/// How a backup is taken.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Files copied at once.
    pub parallelism: usize,
    /// zstd level.
    pub compress_level: i32,
    /// Large files are stored in chunks of this size: it bounds memory
    /// (about chunk size × parallelism × 2) and is what an incremental
    /// backup compares.
    pub chunk_size: u64,
    /// How long to wait for the WAL up to the backup's end to reach the
    /// archive.
    pub archive_timeout: Duration,
    /// Shown in pg_stat_activity and the backup_label.
    pub label: Option<String>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            parallelism: 2,
            compress_level: compress::DEFAULT_LEVEL,
            chunk_size: 64 << 20,
            archive_timeout: Duration::from_secs(300),
            label: None,
        }
    }
}

/// How far a backup has come, for a progress bar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The backup started at `id`; the files to copy are listed.
    Listed { id: String, files: u64, bytes: u64 },
    /// `bytes` of them have been read so far.
    Copied { bytes: u64 },
    /// pg_backup_stop returned; waiting for the WAL to reach the archive.
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    #[error(transparent)]
    Copy(#[from] copy::CopyError),
    #[error(transparent)]
    Wal(#[from] wal_needed::WalWaitError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("base backup: the server's data directory is {server}, not {given}; give the data directory of the server the connection reaches")]
    WrongDataDirectory { server: String, given: String },
    #[error("base backup: could not list the data directory {dir}: {source}")]
    List {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("base backup: the parent backup {parent} is of another cluster (system identifier {theirs}, this server's is {ours}); take a full backup")]
    ForeignParent {
        parent: String,
        theirs: String,
        ours: String,
    },
    #[error("base backup: {id} exists in the repository already (another backup started in the same second?); try again")]
    IdTaken { id: String },
}

/// One base backup to take.
pub struct BaseBackup<'a> {
    /// A superuser (or pg_backup_start-granted) connection to the server
    /// whose data directory this is. Nothing else may use it meanwhile.
    pub client: &'a Client,
    pub data_dir: &'a Path,
    pub repo: &'a dyn Repository,
    /// Where the WAL is archived, checked before the backup is published.
    pub archive: &'a dyn WalArchive,
    /// For an incremental backup: the backup to compare against.
    pub parent: Option<&'a Manifest>,
    pub options: BackupOptions,
    pub progress: &'a (dyn Fn(Progress) + Sync),
}

impl BaseBackup<'_> {
    /// Takes the backup; its manifest is in the repository when this
    /// returns `Ok`, and nothing visible is when it fails.
    pub async fn run(self) -> Result<Manifest, BackupError> {
        let server = protocol::inspect(self.client).await?;
        self.check_data_dir(&server)?;
        if let Some(parent) = self.parent {
            if parent.system_identifier != server.system_identifier {
                return Err(BackupError::ForeignParent {
                    parent: parent.id.clone(),
                    theirs: parent.system_identifier.clone(),
                    ours: server.system_identifier.clone(),
                });
            }
        }
        let kind = match self.parent {
            Some(_) => BackupKind::Incremental,
            None => BackupKind::Full,
        };
        let start_time = jiff::Timestamp::now();
        let id = manifest::new_id(start_time, kind);
        if !self
            .repo
            .list(&manifest::backup_dir(&id)?)
            .await?
            .is_empty()
        {
            return Err(BackupError::IdTaken { id });
        }
        let label = self
            .options
            .label
            .clone()
            .unwrap_or_else(|| format!("pgwarden backup {id}"));
        let started = protocol::start(self.client, &label).await?;
        let copied = match self.copy(&id).await {
            Ok(copied) => copied,
            Err(e) => {
                protocol::abort(self.client).await;
                return Err(e);
            }
        };
        let stopped = protocol::stop(self.client, server.taken_from).await?;
        let stop_time = jiff::Timestamp::now();
        (self.progress)(Progress::Stopped);
        let segments = wal_needed::needed(
            started.lsn,
            stopped.lsn,
            stopped.start_timeline,
            stopped.stop_timeline,
            server.wal_segment_size,
        );
        wal_needed::wait_archived(
            self.archive,
            &segments,
            stopped.lsn,
            self.options.archive_timeout,
        )
        .await?;
        let manifest = Manifest {
            format: manifest::FORMAT,
            id,
            kind,
            parent: self.parent.map(|p| p.id.clone()),
            label,
            pgwarden_version: env!("CARGO_PKG_VERSION").to_string(),
            server_version_num: server.version_num,
            system_identifier: server.system_identifier,
            taken_from: server.taken_from,
            wal_segment_size: server.wal_segment_size,
            chunk_size: self.options.chunk_size,
            compression: Compression {
                algorithm: "zstd".into(),
                level: self.options.compress_level,
            },
            start: Position {
                lsn: started.lsn,
                timeline: stopped.start_timeline,
                time: start_time.to_string(),
            },
            stop: Position {
                lsn: stopped.lsn,
                timeline: stopped.stop_timeline,
                time: stop_time.to_string(),
            },
            backup_label: stopped.backup_label,
            tablespace_map: stopped.tablespace_map,
            totals: Totals {
                files: copied.files.len() as u64,
                bytes: copied.files.iter().map(|f| f.size).sum(),
                stored_bytes: copied.stored_bytes,
                reused_bytes: copied.reused_bytes,
            },
            directories: copied.directories,
            files: copied.files,
        };
        manifest::publish(self.repo, &manifest).await?;
        Ok(manifest)
    }

    fn check_data_dir(&self, server: &protocol::Server) -> Result<(), BackupError> {
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        if canonical(&server.data_directory) != canonical(self.data_dir) {
            return Err(BackupError::WrongDataDirectory {
                server: server.data_directory.display().to_string(),
                given: self.data_dir.display().to_string(),
            });
        }
        Ok(())
    }

    /// Lists and copies the data directory (between start and stop).
    async fn copy(&self, id: &str) -> Result<Listed, BackupError> {
        let dir = self.data_dir.to_path_buf();
        let listing = tokio::task::spawn_blocking(move || walk::list(&dir))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|listed| listed)
            .map_err(|source| BackupError::List {
                dir: self.data_dir.display().to_string(),
                source,
            })?;
        (self.progress)(Progress::Listed {
            id: id.to_string(),
            files: listing.files.len() as u64,
            bytes: listing.files.iter().map(|f| f.size).sum(),
        });
        let done = AtomicU64::new(0);
        let report = |bytes: u64| {
            let bytes = done.fetch_add(bytes, Ordering::Relaxed) + bytes;
            (self.progress)(Progress::Copied { bytes });
        };
        let copier = copy::Copier {
            repo: self.repo,
            backup_id: id,
            chunk_size: self.options.chunk_size,
            level: self.options.compress_level,
            parallelism: self.options.parallelism,
            parent: self.parent,
            progress: &report,
        };
        let copied = copier.copy(listing.files).await?;
        Ok(Listed {
            directories: listing.directories,
            files: copied.files,
            stored_bytes: copied.stored_bytes,
            reused_bytes: copied.reused_bytes,
        })
    }
}

/// What the copy produced for the manifest.
struct Listed {
    directories: Vec<manifest::Directory>,
    files: Vec<manifest::File>,
    stored_bytes: u64,
    reused_bytes: u64,
}
