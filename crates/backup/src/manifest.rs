//! A backup's manifest: every file with its size, mode, mtime and checksum,
//! the chunks it is cut into and where each chunk lives (this backup or an
//! earlier one an incremental backup refers to), the WAL positions and
//! timelines the backup spans, and what PostgreSQL said at its end
//! (backup_label, tablespace_map).
//!
//! Layout in a repository:
//!
//! ```text
//! backups/<id>/data/<n>.zst     chunk objects: one or more zstd frames each
//! backups/<id>/manifest.json    written last, with put_new: the backup exists
//!                               (is complete) once this is there
//! ```
//!
//! `<id>` is the start time in UTC, `YYYYMMDD-HHMMSS`, and `F` (full) or `I`
//! (incremental), so ids sort by time.

use pg::Lsn;
use serde::{Deserialize, Serialize};

use crate::repo::{RepoError, RepoPath, Repository};

/// The manifest format this pgwarden writes and reads.
pub const FORMAT: u32 = 1;

/// Where backups live in a repository.
pub const BACKUPS: &str = "backups";

const MANIFEST: &str = "manifest.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub kind: BackupKind,
    /// The backup an incremental one compared against.
    pub parent: Option<String>,
    pub label: String,
    pub pgwarden_version: String,
    pub server_version_num: u32,
    /// pg_control's system identifier (as text: JSON readers lose u64s).
    pub system_identifier: String,
    pub taken_from: TakenFrom,
    pub wal_segment_size: u64,
    /// Files are cut into chunks of this many bytes (the last one shorter).
    pub chunk_size: u64,
    pub compression: Compression,
    pub start: Position,
    pub stop: Position,
    /// The backup_label PostgreSQL returned at the end: a restore writes it.
    pub backup_label: String,
    /// The tablespace_map PostgreSQL returned (`None` without tablespaces).
    pub tablespace_map: Option<String>,
    pub totals: Totals,
    /// Every directory, parents before children.
    pub directories: Vec<Directory>,
    /// Every file, sorted by path.
    pub files: Vec<File>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    Full,
    Incremental,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TakenFrom {
    Primary,
    Standby,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compression {
    pub algorithm: String,
    pub level: i32,
}

/// Where in the WAL, on which timeline, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    #[serde(with = "lsn_text")]
    pub lsn: Lsn,
    pub timeline: u32,
    /// RFC 3339, UTC.
    pub time: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub files: u64,
    /// Uncompressed bytes of every file.
    pub bytes: u64,
    /// Compressed bytes this backup wrote.
    pub stored_bytes: u64,
    /// Uncompressed bytes of the chunks found unchanged in the parent.
    pub reused_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    /// Relative to the data directory, `/`-separated.
    pub path: String,
    pub mode: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    /// Relative to the data directory, `/`-separated.
    pub path: String,
    /// The bytes read (the file may have changed size while it was read:
    /// WAL replay puts it right).
    pub size: u64,
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
    pub sha256: String,
    /// In file order; their sizes add up to `size`. Empty for an empty file.
    pub chunks: Vec<Chunk>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Uncompressed.
    pub size: u64,
    pub sha256: String,
    /// The backup whose objects hold it: this one, or an earlier one.
    pub backup: String,
    /// The object inside that backup, relative to `backups/<backup>/`.
    pub object: String,
    /// The chunk's zstd frame is bytes `offset..offset + length` of the object.
    pub offset: u64,
    pub length: u64,
}

impl Chunk {
    /// The object's path in the repository.
    pub fn object_path(&self) -> Result<RepoPath, RepoError> {
        RepoPath::new(format!("{BACKUPS}/{}/{}", self.backup, self.object))
    }
}

impl Manifest {
    /// The backups this one reads chunks from, itself included.
    pub fn referenced_backups(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .files
            .iter()
            .flat_map(|f| f.chunks.iter().map(|c| c.backup.clone()))
            .chain([self.id.clone()])
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// `backups/<id>`.
pub fn backup_dir(id: &str) -> Result<RepoPath, RepoError> {
    RepoPath::new(format!("{BACKUPS}/{id}"))
}

/// `backups/<id>/manifest.json`.
pub fn manifest_path(id: &str) -> Result<RepoPath, RepoError> {
    backup_dir(id)?.join(MANIFEST)
}

/// A new backup's id from its start time: sortable, readable.
pub fn new_id(start: jiff::Timestamp, kind: BackupKind) -> String {
    let letter = match kind {
        BackupKind::Full => 'F',
        BackupKind::Incremental => 'I',
    };
    format!("{}{letter}", start.strftime("%Y%m%d-%H%M%S"))
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("the manifest of backup {id} cannot be read ({source}); the backup is damaged: restore from another one and run `pgwarden backup verify`")]
    Damaged {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the manifest of backup {id} names {path:?}, which is not a plain path inside a data directory; a restore would write outside it. The manifest is damaged or forged: do not restore this backup, and run `pgwarden backup verify`")]
    UnsafePath { id: String, path: String },
    #[error("backup {id} has manifest format {found}; this pgwarden reads format {FORMAT}: use the pgwarden version that wrote it ({version}) or newer")]
    Format {
        id: String,
        found: u32,
        version: String,
    },
}

/// The manifest of a complete backup.
pub async fn read(repo: &dyn Repository, id: &str) -> Result<Manifest, ManifestError> {
    let bytes = repo.get(&manifest_path(id)?).await?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|source| ManifestError::Damaged {
            id: id.to_string(),
            source,
        })?;
    if manifest.format != FORMAT {
        return Err(ManifestError::Format {
            id: id.to_string(),
            found: manifest.format,
            version: manifest.pgwarden_version,
        });
    }
    let paths = manifest.directories.iter().map(|d| &d.path);
    if let Some(path) = paths
        .chain(manifest.files.iter().map(|f| &f.path))
        .find(|p| !inside_data_dir(p))
    {
        return Err(ManifestError::UnsafePath {
            id: id.to_string(),
            path: path.clone(),
        });
    }
    Ok(manifest)
}

/// A relative, `/`-separated path that stays inside the directory it is
/// joined to: no root, no `..`, no empty or `.` component.
fn inside_data_dir(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Publishes a backup: from here on it exists, and it never changes.
pub async fn publish(repo: &dyn Repository, manifest: &Manifest) -> Result<(), RepoError> {
    let json = serde_json::to_vec_pretty(manifest).expect("a manifest serialises");
    repo.put_new(&manifest_path(&manifest.id)?, json.into())
        .await
}

/// The ids of the complete backups (those with a manifest), oldest first.
pub async fn list(repo: &dyn Repository) -> Result<Vec<String>, RepoError> {
    let entries = repo.list(&RepoPath::new(BACKUPS)?).await?;
    let suffix = format!("/{MANIFEST}");
    let prefix = format!("{BACKUPS}/");
    Ok(entries
        .iter()
        .filter_map(|e| {
            let rest = e.path.as_str().strip_prefix(&prefix)?;
            let id = rest.strip_suffix(&suffix)?;
            (!id.contains('/')).then(|| id.to_string())
        })
        .collect())
}

pub(crate) mod lsn_text {
    use pg::Lsn;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(lsn: &Lsn, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(lsn)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A small manifest for tests.
#[cfg(test)]
pub(crate) fn sample(id: &str) -> Manifest {
    let position = |lsn: u64| Position {
        lsn: Lsn(lsn),
        timeline: 1,
        time: "2025-01-02T03:04:05Z".into(),
    };
    Manifest {
        format: FORMAT,
        id: id.into(),
        kind: BackupKind::Full,
        parent: None,
        label: "test".into(),
        pgwarden_version: "0.1.0".into(),
        server_version_num: 150000,
        system_identifier: "7300000000000000001".into(),
        taken_from: TakenFrom::Primary,
        wal_segment_size: 16 << 20,
        chunk_size: 64 << 20,
        compression: Compression {
            algorithm: "zstd".into(),
            level: 3,
        },
        start: position(0x3000028),
        stop: position(0x3000100),
        backup_label: "START WAL LOCATION: 0/3000028\n".into(),
        tablespace_map: None,
        totals: Totals::default(),
        directories: vec![Directory {
            path: "base".into(),
            mode: 0o700,
        }],
        files: vec![File {
            path: "PG_VERSION".into(),
            size: 3,
            mode: 0o600,
            mtime: 1,
            sha256: "x".into(),
            chunks: vec![Chunk {
                size: 3,
                sha256: "x".into(),
                backup: id.into(),
                object: "data/1.zst".into(),
                offset: 0,
                length: 12,
            }],
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::PosixRepository;

    #[test]
    fn ids_sort_by_time() {
        let earlier: jiff::Timestamp = "2025-01-02T03:04:05Z".parse().unwrap();
        let later: jiff::Timestamp = "2025-11-02T00:00:00Z".parse().unwrap();
        let a = new_id(earlier, BackupKind::Full);
        assert_eq!(a, "20250102-030405F");
        assert!(a < new_id(later, BackupKind::Incremental));
    }

    #[test]
    fn lsns_are_written_as_postgresql_writes_them() {
        let json = serde_json::to_string(&sample("20250102-030405F")).unwrap();
        assert!(json.contains(r#""lsn":"0/3000028""#), "{json}");
    }

    #[tokio::test]
    async fn a_published_backup_is_listed_read_back_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let repo = PosixRepository::new(dir.path());
        assert!(list(&repo).await.unwrap().is_empty());
        let manifest = sample("20250102-030405F");
        // Objects of a backup still running are not a backup.
        repo.put(
            &RepoPath::new("backups/20250103-000000F/data/1.zst").unwrap(),
            "x".into(),
        )
        .await
        .unwrap();
        publish(&repo, &manifest).await.unwrap();
        assert_eq!(list(&repo).await.unwrap(), vec!["20250102-030405F"]);
        assert_eq!(read(&repo, "20250102-030405F").await.unwrap(), manifest);
        let again = publish(&repo, &manifest).await.unwrap_err();
        assert!(matches!(again, RepoError::AlreadyExists(_)), "{again}");
    }

    #[tokio::test]
    async fn a_damaged_manifest_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let repo = PosixRepository::new(dir.path());
        repo.put(&manifest_path("X").unwrap(), "{".into())
            .await
            .unwrap();
        let err = read(&repo, "X").await.unwrap_err().to_string();
        assert!(
            err.contains("the manifest of backup X cannot be read"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_manifest_naming_a_path_outside_the_data_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = PosixRepository::new(dir.path());
        for (i, bad) in ["../../etc/cron.d/x", "/etc/passwd", "base//1", "./x", ""]
            .into_iter()
            .enumerate()
        {
            let mut manifest = sample(&format!("2025010{i}-000000F"));
            manifest.files[0].path = bad.to_string();
            publish(&repo, &manifest).await.unwrap();
            let err = read(&repo, &manifest.id).await.unwrap_err();
            assert!(
                matches!(&err, ManifestError::UnsafePath { path, .. } if path == bad),
                "{bad}: {err}"
            );
        }
        let mut manifest = sample("20250109-000000F");
        manifest.directories[0].path = "pg_tblspc/../..".into();
        publish(&repo, &manifest).await.unwrap();
        assert!(read(&repo, &manifest.id).await.is_err());
    }
}
