//! Backups, the WAL archive and point-in-time recovery, built in.
//!
//! * [`repo`]: the [`Repository`] trait — where backups and archived WAL
//!   live — with a POSIX directory (a mounted NFS share, usually) and an
//!   S3-compatible object store behind it. Every backend passes the same
//!   conformance tests.
//! * [`backup`]: base backups, full and incremental, of a running server.
//! * [`manifest`]: what a backup holds, and the layout of backups in a
//!   repository.
//! * [`restore`]: a backup written back into a data directory (whole, or
//!   only what differs), set up to recover to a point in time.
//!
//! The layout of a repository and the rules that keep it whole are in
//! docs/backup.md.

pub mod backup;
pub mod checksum;
pub mod compress;
pub mod manifest;
pub mod repo;
pub mod restore;

pub use repo::{Entry, RepoError, RepoPath, Repository};
