//! Logical dumps (the 2000 seed): `pg_dump --format=custom` of named
//! databases, streamed in zstd chunks into `dumps/<database>/<id>/`, with a
//! `dump.json` manifest written last (a dump is visible only when
//! complete). A dump is skipped when the newest one of that database
//! recorded the WAL position the server is at now, or the same ended
//! transactions (nothing changed), and only the newest N of each database
//! are kept.
//!
//! [`run`] is what the agent calls after a base backup it took
//! (`dump_databases` in the dynamic configuration).

use std::num::NonZeroUsize;
use std::path::PathBuf;

use pg::{Lsn, RunAs};

use crate::repo::{RepoError, Repository};

mod fetch;
mod manifest;
mod retention;
mod take;

pub use fetch::fetch;
pub use manifest::{list, newest, DumpChunk, DumpManifest};
pub use retention::expire;
pub use take::take;

/// The server to dump, and how to run pg_dump against it.
#[derive(Clone, Debug)]
pub struct DumpTarget {
    /// Where pg_dump is (`member.bin_dir`).
    pub bin_dir: PathBuf,
    /// A host name or address, or a unix socket directory (starts with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Given to pg_dump through PGPASSWORD, never on its command line.
    pub password: String,
    /// Who runs pg_dump (`postgres` when pgwarden runs as root).
    pub run_as: RunAs,
    /// Bytes of pg_dump's output per stored chunk (bounds memory).
    pub chunk_size: usize,
}

impl DumpTarget {
    pub const DEFAULT_CHUNK_SIZE: usize = 64 << 20;
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("dump of {database}: could not connect to PostgreSQL at {host}:{port} as {user}: {message}; check that the server runs and [credentials.superuser]")]
    Connect {
        database: String,
        host: String,
        port: u16,
        user: String,
        message: String,
    },
    #[error("dump of {database}: PostgreSQL refused `{query}`: {message}")]
    Query {
        database: String,
        query: &'static str,
        message: String,
    },
    #[error("dump of {database}: could not run {program}: {source}; check member.bin_dir")]
    Spawn {
        database: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("dump of {database}: pg_dump failed ({status}): {stderr}; nothing was kept")]
    PgDump {
        database: String,
        status: String,
        stderr: String,
    },
    #[error("dump of {database}: {id} exists in the repository already (another dump in the same second?); try again")]
    IdTaken { database: String, id: String },
    #[error("{path}: the dump manifest is not valid JSON ({message}); the repository was changed by hand, or is damaged")]
    BadManifest { path: String, message: String },
    #[error("no dump {id} of database {database:?} in {repo}; `pgwarden dump list` shows the dumps there")]
    UnknownDump {
        database: String,
        id: String,
        repo: String,
    },
    #[error("dump {id} of {database}: chunk {index} is damaged ({message}); fetch another dump (`pgwarden dump list`)")]
    Damaged {
        database: String,
        id: String,
        index: usize,
        message: String,
    },
    #[error("could not write {path}: {source}; check that its directory exists and is writable")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[source] std::io::Error),
}

/// What became of one database.
#[derive(Debug)]
pub struct DumpOutcome {
    pub database: String,
    pub status: DumpStatus,
    /// Dumps of this database removed by retention, oldest first.
    pub expired: Vec<String>,
}

#[derive(Debug)]
pub enum DumpStatus {
    /// A new dump is in the repository.
    Taken(DumpManifest),
    /// Nothing changed since `newest` (same WAL position, or no
    /// transaction ended since): no new dump.
    Skipped { newest: String, wal_position: Lsn },
    /// No dump was kept; the error says why.
    Failed(DumpError),
}

/// Dumps each of `databases` unless nothing changed since its newest dump
/// (`force` dumps anyway), then keeps only the newest `keep` of each. One
/// database failing does not stop the others.
pub async fn run(
    repo: &dyn Repository,
    target: &DumpTarget,
    databases: &[String],
    force: bool,
    keep: Option<NonZeroUsize>,
) -> Vec<DumpOutcome> {
    let mut outcomes = Vec::new();
    for database in databases {
        let status = match one(repo, target, database, force).await {
            Ok(status) => status,
            Err(e) => DumpStatus::Failed(e),
        };
        let mut expired = Vec::new();
        if let (Some(keep), false) = (keep, matches!(status, DumpStatus::Failed(_))) {
            match retention::expire(repo, database, keep).await {
                Ok(ids) => expired = ids,
                Err(e) => tracing::warn!("dump retention of {database}: {e}"),
            }
        }
        outcomes.push(DumpOutcome {
            database: database.clone(),
            status,
            expired,
        });
    }
    outcomes
}

async fn one(
    repo: &dyn Repository,
    target: &DumpTarget,
    database: &str,
    force: bool,
) -> Result<DumpStatus, DumpError> {
    if !force {
        if let Some(newest) = manifest::newest(repo, database).await? {
            let now = take::server_state(target, database).await?;
            let unchanged = now.wal_position == newest.wal_position
                || (now.transactions.is_some() && now.transactions == newest.transactions);
            if unchanged {
                return Ok(DumpStatus::Skipped {
                    newest: newest.id,
                    wal_position: now.wal_position,
                });
            }
        }
    }
    Ok(DumpStatus::Taken(take::take(repo, target, database).await?))
}
