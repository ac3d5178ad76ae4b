//! Making a restored directory durable: every file and directory under it
//! flushed, several at once. Not `syncfs`: that waits for every dirty page
//! of the whole filesystem, whatever else is writing there, and a busy
//! host's other writers made restores several times slower.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Flushes every file, then every directory, under `root` (itself
/// included), `parallelism` at a time. Symbolic links are not followed.
pub fn sync_tree(root: &Path, parallelism: usize) -> io::Result<()> {
    let (files, dirs) = list(root)?;
    sync_all(&files, parallelism)?;
    sync_all(&dirs, parallelism)
}

fn list(root: &Path) -> io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut files, mut dirs) = (Vec::new(), vec![root.to_path_buf()]);
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
                dirs.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    Ok((files, dirs))
}

fn sync_all(paths: &[PathBuf], parallelism: usize) -> io::Result<()> {
    let next = AtomicUsize::new(0);
    let sync_next = || -> io::Result<()> {
        while let Some(path) = paths.get(next.fetch_add(1, Ordering::Relaxed)) {
            fs::File::open(path)?.sync_all()?;
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..parallelism.max(1))
            .map(|_| scope.spawn(sync_next))
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a sync thread panicked")))
            })
            .collect::<io::Result<Vec<()>>>()
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_file_and_directory_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("base/1")).unwrap();
        fs::write(root.join("base/1/1259"), b"x").unwrap();
        fs::write(root.join("PG_VERSION"), b"15").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        let (mut files, mut dirs) = list(root).unwrap();
        files.sort();
        dirs.sort();
        assert_eq!(files, [root.join("PG_VERSION"), root.join("base/1/1259")]);
        assert_eq!(
            dirs,
            [root.to_path_buf(), root.join("base"), root.join("base/1")]
        );
        sync_tree(root, 2).unwrap();
    }
}
