//! Backups, the WAL archive and point-in-time recovery, built in.
//!
//! * [`repo`]: the [`Repository`] trait — where backups and archived WAL
//!   live — with a POSIX directory (a mounted NFS share, usually) and an
//!   S3-compatible object store behind it. Every backend passes the same
//!   conformance tests. [`open`] gives the one `[backup]` in pgwarden.toml
//!   names.
//! * [`wal`]: the continuous WAL archive (`pgwarden wal push` and `wal
//!   fetch`): compressed, checksummed, idempotent.
//!
//! The layout of a repository and the rules that keep it whole are in
//! docs/backup.md.

mod open;
pub mod repo;
pub mod wal;

pub use open::open;
pub use repo::{Entry, RepoError, RepoPath, Repository};
