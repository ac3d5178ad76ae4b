//! Where backups and archived WAL live. Small on purpose (the shape of
//! `object_store`): whole objects, written so that they appear complete or
//! not at all, never changed once there unless the caller replaces them on
//! purpose.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

pub mod posix;
pub mod s3;

pub use posix::PosixRepository;
pub use s3::{S3Credentials, S3Options, S3Repository};

/// A path inside a repository: `/`-separated segments of letters, digits,
/// `.`, `_` and `-`; no empty segment, none starting with `.` (so no `.` or
/// `..`, and names a backend keeps for itself, such as its temporary files,
/// cannot be asked for).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoPath(String);

impl RepoPath {
    pub fn new(path: impl Into<String>) -> Result<RepoPath, RepoError> {
        let path = path.into();
        let valid_segment = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        };
        if path.split('/').all(valid_segment) {
            Ok(RepoPath(path))
        } else {
            Err(RepoError::BadPath(path))
        }
    }

    /// This path with `segment` (or several, `/`-separated) appended.
    pub fn join(&self, segment: &str) -> Result<RepoPath, RepoError> {
        RepoPath::new(format!("{}/{segment}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for RepoPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: RepoPath,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{0} is not in the repository")]
    NotFound(RepoPath),
    #[error("{0} is in the repository already")]
    AlreadyExists(RepoPath),
    #[error("{0:?} is not a repository path (letters, digits, '.', '_', '-' between '/', no name starting with '.')")]
    BadPath(String),
    #[error("the repository {repo} failed to {what} {path}: {source}; check that it is mounted/reachable, writable by this user and not full")]
    Io {
        repo: String,
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the repository {repo} failed to {what} {path}: {message}; check its address, credentials and that it is reachable")]
    Remote {
        repo: String,
        what: &'static str,
        path: String,
        message: String,
    },
}

/// A place for backups and archived WAL.
#[async_trait]
pub trait Repository: Send + Sync {
    /// Writes `data` at `path`, replacing what is there; readers see the
    /// old object or the new one whole, never a part.
    async fn put(&self, path: &RepoPath, data: Bytes) -> Result<(), RepoError>;
    /// Writes `data` at `path` only if nothing is there yet
    /// ([`RepoError::AlreadyExists`] otherwise), whole or not at all.
    async fn put_new(&self, path: &RepoPath, data: Bytes) -> Result<(), RepoError>;
    /// The whole object ([`RepoError::NotFound`] when absent).
    async fn get(&self, path: &RepoPath) -> Result<Bytes, RepoError>;
    /// Its size, or `None` when absent.
    async fn size(&self, path: &RepoPath) -> Result<Option<u64>, RepoError>;
    /// Every object under `prefix` (a directory-like prefix: `wal` lists
    /// `wal/…`, not `walrus`), sorted by path.
    async fn list(&self, prefix: &RepoPath) -> Result<Vec<Entry>, RepoError>;
    /// Removes the object; absent is not an error.
    async fn delete(&self, path: &RepoPath) -> Result<(), RepoError>;
    /// Where it is, for messages (`/mnt/backup`, `s3://bucket/prefix`).
    fn describe(&self) -> String;
}
