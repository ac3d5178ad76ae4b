//! Backups, the WAL archive and point-in-time recovery, built in.
//!
//! * [`repo`]: the [`Repository`] trait — where backups and archived WAL
//!   live — with a POSIX directory (a mounted NFS share, usually) and an
//!   S3-compatible object store behind it. Every backend passes the same
//!   conformance tests.
//!
//! The layout of a repository and the rules that keep it whole are in
//! docs/backup.md.

pub mod repo;

pub use repo::{Entry, RepoError, RepoPath, Repository};
