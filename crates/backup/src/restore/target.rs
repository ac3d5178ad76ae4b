//! The data directory a restore writes into: made ready (created, or for a
//! delta restore cleared of whatever the backup does not have), and
//! compared with the backup so that only chunks that differ are fetched.

use std::collections::HashSet;
use std::fs;
use std::io::{self, ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::checksum;
use crate::manifest::{File, Manifest};

/// Directories PostgreSQL needs at startup, emptied by a base backup.
pub const REQUIRED_DIRECTORIES: &[&str] = &[
    "pg_wal/archive_status",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
    "pg_stat_tmp",
    "pg_tblspc",
];

/// Which chunks of one file must be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Needed {
    /// Index into the manifest's files.
    pub file: usize,
    /// Indexes into its chunks.
    pub chunks: Vec<usize>,
}

/// Removes everything under `root` that the backup does not have as the
/// same kind of thing (a file, or a directory), including every symbolic
/// link: a delta restore leaves exactly the backup's tree. Returns how many
/// entries went.
pub fn remove_extras(root: &Path, manifest: &Manifest) -> io::Result<u64> {
    let files: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let dirs: HashSet<&str> = manifest
        .directories
        .iter()
        .map(|d| d.path.as_str())
        .chain(REQUIRED_DIRECTORIES.iter().copied())
        .chain(["pg_wal"])
        .collect();
    let mut removed = 0;
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, relative)) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if relative.is_empty() {
                name
            } else {
                format!("{relative}/{name}")
            };
            let kind = entry.file_type()?;
            if kind.is_dir() && dirs.contains(path.as_str()) {
                pending.push((entry.path(), path));
            } else if kind.is_file() && files.contains(path.as_str()) {
                continue;
            } else {
                if kind.is_dir() {
                    fs::remove_dir_all(entry.path())?;
                } else {
                    fs::remove_file(entry.path())?;
                }
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// The chunks of `files` (indexes into the manifest) that `root` does not
/// hold already; every chunk of a file that is missing.
pub fn compare(root: &Path, manifest: &Manifest, files: &[usize]) -> io::Result<Vec<Needed>> {
    let mut needed = Vec::new();
    for &index in files {
        let file = &manifest.files[index];
        let chunks = differing_chunks(&root.join(&file.path), file)?;
        if !chunks.is_empty() {
            needed.push(Needed {
                file: index,
                chunks,
            });
        }
    }
    Ok(needed)
}

fn differing_chunks(path: &Path, file: &File) -> io::Result<Vec<usize>> {
    let all = || (0..file.chunks.len()).collect();
    let mut handle = match fs::File::open(path) {
        Ok(handle) => handle,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(all()),
        Err(e) => return Err(e),
    };
    let mut differ = Vec::new();
    let mut offset = 0;
    let mut buffer = Vec::new();
    for (i, chunk) in file.chunks.iter().enumerate() {
        handle.seek(SeekFrom::Start(offset))?;
        buffer.clear();
        (&mut handle).take(chunk.size).read_to_end(&mut buffer)?;
        if buffer.len() as u64 != chunk.size || checksum::sha256_hex(&buffer) != chunk.sha256 {
            differ.push(i);
        }
        offset += chunk.size;
    }
    Ok(differ)
}

/// Creates every directory and file of the backup under `root` (files at
/// their final size, contents still to be written where they differ).
pub fn lay_out(root: &Path, manifest: &Manifest) -> io::Result<()> {
    for dir in &manifest.directories {
        let path = root.join(&dir.path);
        fs::create_dir_all(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(dir.mode))?;
    }
    // A backup lists them (emptied), but PostgreSQL does not start without
    // them, whatever the backup says.
    for dir in REQUIRED_DIRECTORIES {
        let path = root.join(dir);
        if !path.is_dir() {
            fs::create_dir_all(&path)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
        }
    }
    for file in &manifest.files {
        let handle = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(root.join(&file.path))?;
        handle.set_len(file.size)?;
    }
    Ok(())
}

/// Gives every file and directory its mode, mtime and owner.
pub fn finish(root: &Path, manifest: &Manifest, run_as: &pg::RunAs) -> io::Result<()> {
    let chown = |path: &PathBuf| {
        run_as
            .chown(path)
            .map_err(|e| io::Error::other(e.to_string()))
    };
    for file in &manifest.files {
        let path = root.join(&file.path);
        let handle = fs::OpenOptions::new().write(true).open(&path)?;
        let mtime =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(file.mtime.max(0) as u64);
        handle.set_modified(mtime)?;
        handle.set_permissions(fs::Permissions::from_mode(file.mode))?;
        chown(&path)?;
    }
    for dir in &manifest.directories {
        chown(&root.join(&dir.path))?;
    }
    for dir in REQUIRED_DIRECTORIES {
        chown(&root.join(dir))?;
    }
    chown(&root.join("pg_wal"))?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
    chown(&root.to_path_buf())
}
