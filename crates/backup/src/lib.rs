//! Backups, the WAL archive and point-in-time recovery, built in.
//!
//! * [`repo`]: the [`Repository`] trait — where backups and archived WAL
//!   live — with a POSIX directory (a mounted NFS share, usually) and an
//!   S3-compatible object store behind it. Every backend passes the same
//!   conformance tests. [`open`] gives the one `[backup]` in pgwarden.toml
//!   names.
//! * [`wal`]: the continuous WAL archive (`pgwarden wal push` and `wal
//!   fetch`): compressed, checksummed, idempotent.
//! * [`backup`]: base backups, full and incremental, of a running server.
//! * [`manifest`]: what a backup holds, and the layout of backups in a
//!   repository.
//! * [`catalog`]: what a repository holds for a cluster — its backups and
//!   the recovery window of each timeline.
//! * [`retention`]: which backups and WAL to keep, and removing the rest.
//! * [`dump`]: logical dumps (pg_dump) of named databases, skipped when
//!   nothing changed, with retention.
//! * [`verify`]: every chunk and segment re-read, the WAL checked for
//!   gaps, and what a gap breaks.
//! * [`restore`]: a backup written back into a data directory (whole, or
//!   only what differs), set up to recover to a point in time.
//!
//! The layout of a repository and the rules that keep it whole are in
//! docs/backup.md.

pub mod backup;
pub mod catalog;
pub mod checksum;
pub mod compress;
pub mod dump;
pub mod manifest;
mod open;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod verify;
pub mod wal;

pub use open::open;
pub use repo::{Entry, RepoError, RepoPath, Repository};
