//! The continuous WAL archive: `pgwarden wal push` (PostgreSQL's
//! `archive_command`) and `pgwarden wal fetch` (its `restore_command`).
//!
//! Every file PostgreSQL archives — completed segments, the `.partial`
//! segment a promotion leaves of the old timeline, timeline `.history`
//! files, `.backup` labels — is stored once, zstd-compressed behind a
//! header with the SHA-256 of its content ([`object`]), at
//! `wal/<system identifier>/…` ([`name`]; docs/backup.md, "Layout").
//!
//! A push creates the object only if it is absent, so it is idempotent: a
//! file pushed again with the same content succeeds (PostgreSQL retries a
//! push whose success it did not record), and different content under an
//! archived name is refused loudly, never overwritten. A fetch checks the
//! content against the checksum before PostgreSQL sees a byte of it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::repo::{RepoError, RepoPath, Repository};

pub mod control;
pub mod name;
pub mod object;
pub mod prefetch;

pub use name::{WalKind, WalName};
pub use object::Fingerprint;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{0}")]
    BadName(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot write {path}: {source}; check the disk and that PostgreSQL's user may write there"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot read the database system identifier from {path}: {source}; `pgwarden wal push` \
         and `wal fetch` are run by PostgreSQL (archive_command, restore_command) in its data \
         directory, with paths under pg_wal/"
    )]
    Control {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot compress {name}: {source}")]
    Compress {
        name: WalName,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(
        "{} is archived already with different content ({} in {}: {}; this server's: {}). \
         It is not overwritten: another cluster with the same system identifier may archive \
         into this repository, or this server's WAL diverged from the archived history. Keep \
         the archived file (backups may need it), find out which server wrote it, and give a \
         separate cluster its own repository. PostgreSQL keeps this segment and retries until \
         the push succeeds",
        .0.name, .0.object, .0.repo, .0.archived, .0.ours
    )]
    Conflict(Box<Conflict>),
    #[error(
        "the archived {name} ({object} in {repo}) is damaged: {problem}; it cannot be \
         restored from this archive. Check the repository's storage; a base backup taken \
         after this point no longer needs it"
    )]
    Damaged {
        name: WalName,
        object: RepoPath,
        repo: String,
        problem: String,
    },
}

/// A push of other content under an archived name.
#[derive(Debug)]
pub struct Conflict {
    pub name: WalName,
    pub object: RepoPath,
    pub repo: String,
    pub archived: Fingerprint,
    pub ours: Fingerprint,
}

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pushed {
    Archived(Fingerprint),
    /// It was there already, with the same content.
    AlreadyArchived(Fingerprint),
}

/// What a fetch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    Restored(Fingerprint),
    /// Not archived (yet): for PostgreSQL, the end of the archive.
    NotInArchive,
}

/// The archived WAL of one database cluster.
#[derive(Clone)]
pub struct WalArchive {
    repo: Arc<dyn Repository>,
    dir: RepoPath,
}

impl WalArchive {
    /// The archive of the cluster with this system identifier.
    pub fn new(repo: Arc<dyn Repository>, system_identifier: u64) -> WalArchive {
        let dir = RepoPath::new(format!("wal/{system_identifier}")).expect("digits are a path");
        WalArchive { repo, dir }
    }

    /// The archive of the cluster whose data directory `wal_path` (as
    /// PostgreSQL gives it: `pg_wal/NAME`) is in.
    pub fn for_wal_path(
        repo: Arc<dyn Repository>,
        wal_path: &Path,
    ) -> Result<WalArchive, WalError> {
        let data_dir = control::data_dir_of(wal_path);
        let id = control::system_identifier(&data_dir).map_err(|source| WalError::Control {
            path: data_dir.join("global/pg_control"),
            source,
        })?;
        Ok(WalArchive::new(repo, id))
    }

    /// Where this cluster's WAL lives in the repository (`wal/<id>`).
    pub fn dir(&self) -> &RepoPath {
        &self.dir
    }

    /// Which archive this is, for telling spooled segments apart:
    /// the repository and the cluster's directory in it.
    pub fn identity(&self) -> String {
        format!("{} {}", self.repo.describe(), self.dir)
    }

    /// Where `name` is archived.
    pub fn path_of(&self, name: &WalName) -> RepoPath {
        name.repo_path(&self.dir)
            .expect("WAL names are repository path segments")
    }

    /// Archives the file at `path` (named as PostgreSQL names it).
    pub async fn push(&self, path: &Path) -> Result<Pushed, WalError> {
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let name = WalName::parse(file_name).map_err(WalError::BadName)?;
        let data = tokio::fs::read(path)
            .await
            .map_err(|source| WalError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        let encoding = {
            let name = name.clone();
            tokio::task::spawn_blocking(move || object::encode(name.as_str(), &data))
        };
        let (encoded, ours) = encoding
            .await
            .expect("compression does not panic")
            .map_err(|source| WalError::Compress {
                name: name.clone(),
                source,
            })?;
        let target = self.path_of(&name);
        match self.repo.put_new(&target, encoded).await {
            Ok(()) => Ok(Pushed::Archived(ours)),
            Err(RepoError::AlreadyExists(_)) => self.compare(&name, &target, ours).await,
            Err(e) => Err(e.into()),
        }
    }

    /// `name` is archived already: the same content is success, any other
    /// a conflict.
    async fn compare(
        &self,
        name: &WalName,
        target: &RepoPath,
        ours: Fingerprint,
    ) -> Result<Pushed, WalError> {
        let archived = self.repo.get(target).await?;
        match object::header(&archived) {
            Ok(header) if header.fingerprint == ours => Ok(Pushed::AlreadyArchived(ours)),
            Ok(header) => Err(WalError::Conflict(Box::new(Conflict {
                name: name.clone(),
                object: target.clone(),
                repo: self.repo.describe(),
                archived: header.fingerprint,
                ours,
            }))),
            Err(problem) => Err(self.damaged(name, target, problem)),
        }
    }

    /// Restores `name` to `dest`, checked against its checksum; written
    /// to a temporary file next to `dest` and renamed, so `dest` is whole
    /// or absent.
    pub async fn fetch(&self, name: &WalName, dest: &Path) -> Result<Fetched, WalError> {
        let source = self.path_of(name);
        let archived = match self.repo.get(&source).await {
            Ok(archived) => archived,
            Err(RepoError::NotFound(_)) => return Ok(Fetched::NotInArchive),
            Err(e) => return Err(e.into()),
        };
        // Written as it is decompressed, to a temporary file that gets
        // the name only once the checksum matched.
        let file_name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal");
        let temp = dest.with_file_name(format!(".{file_name}.pgwarden-fetch"));
        let written = tokio::task::spawn_blocking({
            let temp = temp.clone();
            move || {
                let mut file = std::fs::File::create(&temp).map_err(object::Decode::Sink)?;
                object::decode_each(&archived, |block| file.write_all(block))
            }
        })
        .await
        .expect("decompression does not panic");
        let header = match written {
            Ok(header) if header.name == name.as_str() => header,
            Ok(header) => {
                let _ = std::fs::remove_file(&temp);
                let problem = format!("it holds {} instead", header.name);
                return Err(self.damaged(name, &source, problem));
            }
            Err(failed) => {
                let _ = std::fs::remove_file(&temp);
                return Err(match failed {
                    object::Decode::Damaged(problem) => self.damaged(name, &source, problem),
                    object::Decode::Sink(e) => WalError::Write {
                        path: temp,
                        source: e,
                    },
                });
            }
        };
        tokio::fs::rename(&temp, dest)
            .await
            .map_err(|source| WalError::Write {
                path: dest.to_path_buf(),
                source,
            })?;
        Ok(Fetched::Restored(header.fingerprint))
    }

    fn damaged(&self, name: &WalName, object: &RepoPath, problem: String) -> WalError {
        WalError::Damaged {
            name: name.clone(),
            object: object.clone(),
            repo: self.repo.describe(),
            problem,
        }
    }
}

#[cfg(test)]
mod tests;
