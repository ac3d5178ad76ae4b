//! Writing a backup back into a data directory, set up to recover to a
//! point in time: every file (or, with `delta`, only the chunks that differ
//! from what the directory holds, and without what the backup does not
//! have), the directories PostgreSQL needs, backup_label, recovery.signal
//! and the recovery settings, everything owned by the PostgreSQL user.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pg::RunAs;

use crate::manifest::{self, Manifest, ManifestError};
use crate::repo::{RepoError, Repository};

pub mod choose;
pub mod conf;
pub mod point;
pub mod recovery;
pub mod start;
mod sync;
pub mod target;
pub mod write;

pub use recovery::{Recovery, RecoveryTarget};

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Objects fetched and files compared at once.
    pub parallelism: usize,
    /// Restore into an existing data directory: keep what already matches,
    /// remove what the backup does not have.
    pub delta: bool,
    /// Who owns the restored files (the PostgreSQL user).
    pub run_as: RunAs,
    pub recovery: Recovery,
}

/// What a restore did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub files: u64,
    /// Files whose every chunk was there already (delta).
    pub unchanged_files: u64,
    pub chunks_written: u64,
    pub bytes_written: u64,
    pub bytes_fetched: u64,
    /// Entries a delta restore removed because the backup does not have them.
    pub removed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("restore: the chunk of {path} in backup {backup} (object {object}) is damaged: {reason}. Restore from another backup, and run `pgwarden backup verify`")]
    Damaged {
        backup: String,
        object: String,
        path: String,
        reason: String,
    },
    #[error("restore: could not {what} {path}: {source}; check that the target directory is writable and has space")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("restore: {dir} is not empty; restore into a new or empty directory, or use --delta to update an existing data directory (files that differ are overwritten, files the backup does not have are removed)")]
    NotEmpty { dir: PathBuf },
    #[error("restore: PostgreSQL (pid {pid}) is running in {dir}; stop it first")]
    Running { dir: PathBuf, pid: i32 },
    #[error("restore: backup {backup} ends at {backup_end}, after the requested {target}; it cannot stop there. Restore an earlier backup")]
    TargetBeforeBackupEnd {
        backup: String,
        backup_end: String,
        target: String,
    },
    #[error("the restored server stopped before recovery finished. {hint}\n{log}")]
    RecoveryStopped { hint: &'static str, log: String },
    #[error(transparent)]
    Pg(#[from] pg::PgError),
    #[error("restore: a task failed: {0}")]
    Task(String),
}

/// Restores backup `backup_id` from `repo` into `target_dir`.
pub async fn restore(
    repo: &dyn Repository,
    backup_id: &str,
    target_dir: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    let manifest = Arc::new(manifest::read(repo, backup_id).await?);
    check_target(&manifest, &options.recovery.target)?;
    let root = target_dir.to_path_buf();
    let io = |what, source| RestoreError::Io {
        what,
        path: root.clone(),
        source,
    };
    let mut report = RestoreReport {
        files: manifest.files.len() as u64,
        ..RestoreReport::default()
    };
    prepare_dir(&root, options.delta)?;
    let needed = if options.delta {
        report.removed = blocking({
            let (root, manifest) = (root.clone(), manifest.clone());
            move || target::remove_extras(&root, &manifest)
        })
        .await
        .map_err(|e| io("clear what the backup does not have in", e))?;
        compare(&root, &manifest, options.parallelism).await?
    } else {
        (0..manifest.files.len())
            .map(|file| target::Needed {
                file,
                chunks: (0..manifest.files[file].chunks.len()).collect(),
            })
            .filter(|n| !n.chunks.is_empty())
            .collect()
    };
    report.unchanged_files = manifest
        .files
        .iter()
        .filter(|f| !f.chunks.is_empty())
        .count() as u64
        - needed.len() as u64;
    blocking({
        let (root, manifest) = (root.clone(), manifest.clone());
        move || target::lay_out(&root, &manifest)
    })
    .await
    .map_err(|e| io("lay out the directories and files in", e))?;
    let written = write::write(repo, &root, &manifest, &needed, options.parallelism).await?;
    report.chunks_written = written.chunks;
    report.bytes_written = written.bytes;
    report.bytes_fetched = written.fetched_bytes;
    blocking({
        let (root, manifest, run_as) = (root.clone(), manifest.clone(), options.run_as.clone());
        let (recovery, parallelism) = (options.recovery.clone(), options.parallelism);
        move || {
            target::finish(&root, &manifest, &run_as)?;
            recovery.write(&root, &manifest.id, &manifest.backup_label, &run_as)?;
            sync::sync_tree(&root, parallelism)
        }
    })
    .await
    .map_err(|e| io("finish (modes, owners, recovery settings, sync)", e))?;
    Ok(report)
}

/// A target the backup cannot stop at is refused before anything is
/// written: PostgreSQL would only find out after replaying.
fn check_target(manifest: &Manifest, target: &RecoveryTarget) -> Result<(), RestoreError> {
    let too_early = |backup_end: String, target: String| {
        Err(RestoreError::TargetBeforeBackupEnd {
            backup: manifest.id.clone(),
            backup_end,
            target,
        })
    };
    match target {
        RecoveryTarget::Lsn(lsn) if *lsn < manifest.stop.lsn => {
            too_early(manifest.stop.lsn.to_string(), lsn.to_string())
        }
        RecoveryTarget::Time(time) => match manifest.stop.time.parse::<jiff::Timestamp>() {
            Ok(stop) if *time < stop => too_early(manifest.stop.time.clone(), time.to_string()),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// A new or empty directory; for a delta restore, any directory where
/// PostgreSQL is not running.
fn prepare_dir(root: &Path, delta: bool) -> Result<(), RestoreError> {
    let io = |what, source| RestoreError::Io {
        what,
        path: root.to_path_buf(),
        source,
    };
    match std::fs::read_dir(root) {
        Ok(mut entries) => {
            if delta {
                let pid_file = root.join("postmaster.pid");
                let pid = std::fs::read_to_string(pid_file)
                    .ok()
                    .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()));
                if let Some(pid) = pid.filter(|&pid| pg::pid::is_alive(pid)) {
                    return Err(RestoreError::Running {
                        dir: root.to_path_buf(),
                        pid,
                    });
                }
            } else if entries.next().is_some() {
                return Err(RestoreError::NotEmpty {
                    dir: root.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(root).map_err(|e| io("create", e))
        }
        Err(e) => Err(io("read", e)),
    }
}

/// The chunks that differ, found by `parallelism` readers at once.
async fn compare(
    root: &Path,
    manifest: &Arc<Manifest>,
    parallelism: usize,
) -> Result<Vec<target::Needed>, RestoreError> {
    let queue = Arc::new(std::sync::Mutex::new(target::every_chunk(manifest)));
    let tasks = (0..parallelism.max(1)).map(|_| {
        let (root, manifest, queue) = (root.to_path_buf(), manifest.clone(), queue.clone());
        blocking(move || target::compare(&root, &manifest, &queue))
    });
    let differ = futures::future::try_join_all(tasks)
        .await
        .map_err(|source| RestoreError::Io {
            what: "compare with the backup",
            path: root.to_path_buf(),
            source,
        })?;
    Ok(target::needed(differ.into_iter().flatten().collect()))
}

async fn blocking<T, F>(f: F) -> std::io::Result<T>
where
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::backup::{copy::Copier, walk};
    use crate::repo::PosixRepository;

    /// Every file under `root` and its content (directories as `None`).
    fn tree(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
        let mut found = BTreeMap::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let relative = path.strip_prefix(root).unwrap().display().to_string();
                if path.is_dir() {
                    pending.push(path);
                    found.insert(relative, None);
                } else {
                    found.insert(relative, Some(std::fs::read(&path).unwrap()));
                }
            }
        }
        found
    }

    /// A data directory of sorts, backed up into `repo` as backup B1.
    async fn backed_up(data: &Path, repo: &PosixRepository) -> Manifest {
        let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::create_dir_all(data.join("base/1")).unwrap();
        std::fs::create_dir_all(data.join("pg_wal")).unwrap();
        std::fs::write(data.join("pg_wal/000000010000000000000001"), b"wal").unwrap();
        std::fs::write(data.join("base/1/1259"), &big).unwrap();
        std::fs::write(data.join("PG_VERSION"), b"15\n").unwrap();
        std::fs::write(data.join("postgresql.auto.conf"), b"work_mem = '8MB'\n").unwrap();
        std::fs::write(data.join("base/1/empty"), b"").unwrap();
        let listing = walk::list(data).unwrap();
        let copier = Copier {
            repo,
            backup_id: "B1",
            chunk_size: 4096,
            level: 1,
            parallelism: 2,
            parent: None,
            progress: &|_| {},
        };
        let mut manifest = crate::manifest::sample("B1");
        manifest.files = copier.copy(listing.files).await.unwrap().files;
        manifest.directories = listing.directories;
        manifest.backup_label = "START WAL LOCATION: 0/3000028\n".into();
        manifest::publish(repo, &manifest).await.unwrap();
        manifest
    }

    fn options(delta: bool) -> RestoreOptions {
        RestoreOptions {
            parallelism: 2,
            delta,
            run_as: RunAs::current(),
            recovery: Recovery {
                restore_command: "cp /archive/%f %p".into(),
                target: RecoveryTarget::Latest,
                keep_archiving: false,
            },
        }
    }

    #[tokio::test]
    async fn writes_every_file_back_with_recovery_set_up() {
        let (data, store, out) = (tempdir(), tempdir(), tempdir());
        let repo = PosixRepository::new(store.path());
        backed_up(data.path(), &repo).await;
        let target = out.path().join("restored");
        let report = restore(&repo, "B1", &target, &options(false))
            .await
            .unwrap();
        assert_eq!(report.files, 4);
        assert_eq!(report.chunks_written, 5 + 1 + 1);
        let mut expected = tree(data.path());
        expected.remove("pg_wal/000000010000000000000001");
        for dir in target::REQUIRED_DIRECTORIES {
            expected.insert(dir.to_string(), None);
        }
        expected.insert(
            "backup_label".into(),
            Some(b"START WAL LOCATION: 0/3000028\n".to_vec()),
        );
        expected.insert("recovery.signal".into(), Some(Vec::new()));
        let auto_conf = std::fs::read_to_string(target.join("postgresql.auto.conf")).unwrap();
        assert!(auto_conf.starts_with("work_mem = '8MB'\n"), "{auto_conf}");
        assert!(
            auto_conf.contains("restore_command = 'cp /archive/%f %p'"),
            "{auto_conf}"
        );
        expected.insert("postgresql.auto.conf".into(), Some(auto_conf.into_bytes()));
        assert_eq!(tree(&target), expected);
        let mode = |p: &str| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(target.join(p)).unwrap().mode() & 0o7777
        };
        assert_eq!(mode(""), 0o700);
    }

    #[tokio::test]
    async fn refuses_a_directory_with_something_in_it_unless_delta() {
        let (data, store, out) = (tempdir(), tempdir(), tempdir());
        let repo = PosixRepository::new(store.path());
        backed_up(data.path(), &repo).await;
        std::fs::write(out.path().join("precious"), b"x").unwrap();
        let err = restore(&repo, "B1", out.path(), &options(false))
            .await
            .unwrap_err();
        assert!(matches!(err, RestoreError::NotEmpty { .. }), "{err}");
        assert!(err.to_string().contains("--delta"), "{err}");
        assert!(out.path().join("precious").exists());
    }

    #[tokio::test]
    async fn a_delta_restore_writes_only_what_differs_and_removes_what_the_backup_lacks() {
        let (data, store, out) = (tempdir(), tempdir(), tempdir());
        let repo = PosixRepository::new(store.path());
        backed_up(data.path(), &repo).await;
        let target = out.path().join("restored");
        restore(&repo, "B1", &target, &options(false))
            .await
            .unwrap();
        let first = tree(&target);

        let big = target.join("base/1/1259");
        let mut content = std::fs::read(&big).unwrap();
        content[5000] ^= 1;
        content.extend_from_slice(b"appended");
        std::fs::write(&big, content).unwrap();
        std::fs::remove_file(target.join("PG_VERSION")).unwrap();
        std::fs::write(target.join("base/1/16999"), b"not in the backup").unwrap();
        std::fs::create_dir_all(target.join("base/5/x")).unwrap();
        std::os::unix::fs::symlink("/etc", target.join("pg_wal/link")).unwrap();

        let report = restore(&repo, "B1", &target, &options(true)).await.unwrap();
        assert_eq!(
            report.chunks_written, 2,
            "one chunk of 1259 and PG_VERSION: {report:?}"
        );
        // And the first restore's backup_label and recovery.signal, written anew.
        assert_eq!(report.removed, 3 + 2, "{report:?}");
        // postgresql.auto.conf: the backup's content is its start (the
        // recovery settings after it are cut off and written anew).
        assert_eq!(report.unchanged_files, 1, "{report:?}");
        assert_eq!(tree(&target), first);
    }

    #[tokio::test]
    async fn a_damaged_chunk_is_named() {
        let (data, store, out) = (tempdir(), tempdir(), tempdir());
        let repo = PosixRepository::new(store.path());
        let manifest = backed_up(data.path(), &repo).await;
        let chunk = &manifest
            .files
            .iter()
            .find(|f| f.path == "base/1/1259")
            .unwrap()
            .chunks[1];
        let path = chunk.object_path().unwrap();
        let mut object = repo.get(&path).await.unwrap().to_vec();
        let frame = zstd::bulk::compress(&vec![7u8; chunk.size as usize], 1).unwrap();
        object.splice(
            chunk.offset as usize..(chunk.offset + chunk.length) as usize,
            frame.clone(),
        );
        repo.put(&path, object.into()).await.unwrap();
        let mut bad = manifest.clone();
        bad.id = "B2".into();
        manifest::publish(&repo, &bad).await.unwrap();
        let err = restore(&repo, "B1", &out.path().join("r"), &options(false))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the chunk of base/1/1259 in backup B1"),
            "{err}"
        );
        assert!(err.contains("Restore from another backup"), "{err}");
    }

    #[tokio::test]
    async fn a_target_before_the_backup_ended_is_refused() {
        let (data, store, out) = (tempdir(), tempdir(), tempdir());
        let repo = PosixRepository::new(store.path());
        backed_up(data.path(), &repo).await;
        let mut early = options(false);
        early.recovery.target = RecoveryTarget::Lsn("0/3000000".parse().unwrap());
        let err = restore(&repo, "B1", &out.path().join("r"), &early)
            .await
            .unwrap_err();
        assert!(
            matches!(err, RestoreError::TargetBeforeBackupEnd { .. }),
            "{err}"
        );
        early.recovery.target = RecoveryTarget::Time("2025-01-02T03:04:04Z".parse().unwrap());
        let err = restore(&repo, "B1", &out.path().join("r"), &early)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("Restore an earlier backup"),
            "{err}"
        );
        assert!(!out.path().join("r").exists());
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }
}
