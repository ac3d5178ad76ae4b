//! A repository in a directory: a local disk or, usually, a mounted NFS
//! share. Objects are files; a write goes to a temporary file in the same
//! directory, is synced, then renamed into place (and the directory
//! synced), so a crash leaves the old object or the new one, never a part.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::{Entry, RepoError, RepoPath, Repository};

/// Temporary files start with this; listings skip them ([`RepoPath`] never
/// names one: no segment starts with '.').
const TEMP_PREFIX: &str = ".tmp-";

/// Makes every temporary file name of this process unique, so writes of the
/// same path running side by side never share one.
static TEMP_SEQUENCE: AtomicU64 = AtomicU64::new(0);

pub struct PosixRepository {
    root: PathBuf,
}

impl PosixRepository {
    /// A repository rooted at `root`, which must exist.
    pub fn new(root: impl Into<PathBuf>) -> PosixRepository {
        PosixRepository { root: root.into() }
    }

    fn file(&self, path: &RepoPath) -> PathBuf {
        self.root.join(path.as_str())
    }

    fn io(&self, what: &'static str, path: &Path, source: std::io::Error) -> RepoError {
        RepoError::Io {
            repo: self.describe(),
            what,
            path: path.display().to_string(),
            source,
        }
    }

    /// Writes `data` to a synced temporary file next to `target`.
    async fn write_temp(&self, target: &Path, data: &[u8]) -> Result<PathBuf, RepoError> {
        let dir = target.parent().expect("a repository path has a parent");
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| self.io("create directory", dir, e))?;
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{name}-{}-{}",
            std::process::id(),
            TEMP_SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = tokio::fs::File::create_new(&temp)
            .await
            .map_err(|e| self.io("create", &temp, e))?;
        let written = async {
            file.write_all(data).await?;
            file.sync_all().await
        };
        if let Err(e) = written.await {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(self.io("write", &temp, e));
        }
        Ok(temp)
    }

    async fn sync_dir(&self, dir: &Path) -> Result<(), RepoError> {
        let handle = tokio::fs::File::open(dir)
            .await
            .map_err(|e| self.io("open directory", dir, e))?;
        handle
            .sync_all()
            .await
            .map_err(|e| self.io("sync directory", dir, e))
    }
}

#[async_trait]
impl Repository for PosixRepository {
    async fn put(&self, path: &RepoPath, data: Bytes) -> Result<(), RepoError> {
        let target = self.file(path);
        let temp = self.write_temp(&target, &data).await?;
        if let Err(e) = tokio::fs::rename(&temp, &target).await {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(self.io("rename into", &target, e));
        }
        self.sync_dir(target.parent().expect("has a parent")).await
    }

    async fn put_new(&self, path: &RepoPath, data: Bytes) -> Result<(), RepoError> {
        let target = self.file(path);
        let temp = self.write_temp(&target, &data).await?;
        // A hard link fails if the target exists: an atomic create-if-absent
        // (rename would replace it).
        let linked = tokio::fs::hard_link(&temp, &target).await;
        let _ = tokio::fs::remove_file(&temp).await;
        match linked {
            Ok(()) => self.sync_dir(target.parent().expect("has a parent")).await,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                Err(RepoError::AlreadyExists(path.clone()))
            }
            Err(e) => Err(self.io("link into", &target, e)),
        }
    }

    async fn get(&self, path: &RepoPath) -> Result<Bytes, RepoError> {
        let file = self.file(path);
        match tokio::fs::read(&file).await {
            Ok(data) => Ok(Bytes::from(data)),
            // A directory is a prefix of objects, not one.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::IsADirectory) => {
                Err(RepoError::NotFound(path.clone()))
            }
            Err(e) => Err(self.io("read", &file, e)),
        }
    }

    async fn size(&self, path: &RepoPath) -> Result<Option<u64>, RepoError> {
        let file = self.file(path);
        match tokio::fs::metadata(&file).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("look at", &file, e)),
        }
    }

    async fn list(&self, prefix: &RepoPath) -> Result<Vec<Entry>, RepoError> {
        let mut entries = Vec::new();
        let mut pending = vec![(self.file(prefix), prefix.as_str().to_string())];
        while let Some((dir, name)) = pending.pop() {
            let mut read = match tokio::fs::read_dir(&dir).await {
                Ok(read) => read,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                // A prefix that names a file lists nothing.
                Err(e) if e.kind() == ErrorKind::NotADirectory => continue,
                Err(e) => return Err(self.io("list", &dir, e)),
            };
            while let Some(item) = read
                .next_entry()
                .await
                .map_err(|e| self.io("list", &dir, e))?
            {
                let Some(file_name) = item.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if file_name.starts_with(TEMP_PREFIX) {
                    continue;
                }
                let child = format!("{name}/{file_name}");
                let meta = item
                    .metadata()
                    .await
                    .map_err(|e| self.io("list", &dir, e))?;
                if meta.is_dir() {
                    pending.push((item.path(), child));
                } else if let Ok(path) = RepoPath::new(child) {
                    entries.push(Entry {
                        path,
                        size: meta.len(),
                    });
                }
            }
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    async fn delete(&self, path: &RepoPath) -> Result<(), RepoError> {
        let file = self.file(path);
        match tokio::fs::remove_file(&file).await {
            Ok(()) => Ok(()),
            // A directory is a prefix of objects, not one: no such object.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::IsADirectory) => Ok(()),
            Err(e) => Err(self.io("delete", &file, e)),
        }
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}
