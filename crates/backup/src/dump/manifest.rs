//! What a dump holds (`dumps/<database>/<id>/dump.json`) and finding the
//! dumps in a repository.

use bytes::Bytes;
use pg::Lsn;
use serde::{Deserialize, Serialize};

use super::DumpError;
use crate::repo::{RepoError, RepoPath, Repository};

pub(crate) const DUMPS: &str = "dumps";
pub(crate) const MANIFEST: &str = "dump.json";

/// A complete dump: pg_dump's custom-format output, in chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpManifest {
    pub database: String,
    /// `YYYYMMDD-HHMMSS`, UTC, when it started.
    pub id: String,
    /// The server's `server_version`.
    pub server_version: String,
    /// `primary` or `standby`.
    pub taken_from: String,
    /// Where the server's WAL was when the dump started: equal on the next
    /// run means nothing changed, and the dump is skipped.
    #[serde(with = "crate::manifest::lsn_text")]
    pub wal_position: Lsn,
    /// Which transactions had ended when the dump started: a primary's
    /// snapshot (`primary xmin:xmax:in-progress`), or on a standby its
    /// snapshot's bounds and the time of the last transaction it replayed.
    /// Equal on the next run means no transaction ended since, and the dump
    /// is skipped although the WAL moved (a checkpoint, a segment switch, a
    /// base backup). Absent in older dumps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactions: Option<String>,
    /// RFC 3339, UTC.
    pub start_time: String,
    pub end_time: String,
    /// pg_dump's output.
    pub bytes: u64,
    /// What the chunks take in the repository.
    pub stored_bytes: u64,
    pub chunks: Vec<DumpChunk>,
    pub pgwarden_version: String,
}

/// One zstd-compressed piece of pg_dump's output, `NNNN.zst`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpChunk {
    pub size: u64,
    pub stored_size: u64,
    /// SHA-256 of the uncompressed bytes.
    pub sha256: String,
}

/// `dumps/<database>/<id>`.
pub(crate) fn dump_dir(database: &str, id: &str) -> Result<RepoPath, RepoError> {
    RepoPath::new(format!("{DUMPS}/{database}/{id}"))
}

pub(crate) fn chunk_path(database: &str, id: &str, index: usize) -> Result<RepoPath, RepoError> {
    dump_dir(database, id)?.join(&format!("{index:04}.zst"))
}

pub(crate) fn manifest_path(database: &str, id: &str) -> Result<RepoPath, RepoError> {
    dump_dir(database, id)?.join(MANIFEST)
}

pub(crate) fn encode(manifest: &DumpManifest) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(manifest).expect("a manifest serializes"))
}

pub(crate) async fn read(
    repo: &dyn Repository,
    path: &RepoPath,
) -> Result<DumpManifest, DumpError> {
    let data = repo.get(path).await?;
    serde_json::from_slice(&data).map_err(|e| DumpError::BadManifest {
        path: path.to_string(),
        message: e.to_string(),
    })
}

/// Every complete dump, of one database or of all, by database then id
/// (oldest first).
pub async fn list(
    repo: &dyn Repository,
    database: Option<&str>,
) -> Result<Vec<DumpManifest>, DumpError> {
    let prefix = match database {
        Some(db) => RepoPath::new(format!("{DUMPS}/{db}"))?,
        None => RepoPath::new(DUMPS)?,
    };
    let mut dumps = Vec::new();
    for entry in repo.list(&prefix).await? {
        if entry.path.as_str().ends_with(&format!("/{MANIFEST}")) {
            dumps.push(read(repo, &entry.path).await?);
        }
    }
    dumps.sort_by(|a, b| (&a.database, &a.id).cmp(&(&b.database, &b.id)));
    Ok(dumps)
}

/// The newest complete dump of `database`.
pub async fn newest(
    repo: &dyn Repository,
    database: &str,
) -> Result<Option<DumpManifest>, DumpError> {
    Ok(list(repo, Some(database)).await?.pop())
}
