//! The data directory a restore writes into: made ready (created, or for a
//! delta restore cleared of whatever the backup does not have), and
//! compared with the backup so that only chunks that differ are fetched.

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::manifest::{Chunk, Manifest};
use crate::{checksum, compress};

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

/// One chunk of a file of the manifest: indexes into its files and that
/// file's chunks, and where the chunk starts in the file.
#[derive(Clone, Copy, Debug)]
pub struct ChunkAt {
    pub file: usize,
    pub chunk: usize,
    pub offset: u64,
}

/// Every chunk of the manifest, the biggest files' first: readers taking
/// them in this order finish together, and a 1 GiB table file is read by
/// all of them, not by one.
pub fn every_chunk(manifest: &Manifest) -> VecDeque<ChunkAt> {
    let mut order: Vec<usize> = (0..manifest.files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(manifest.files[i].size));
    let mut chunks = VecDeque::new();
    for file in order {
        let mut offset = 0;
        for (chunk, c) in manifest.files[file].chunks.iter().enumerate() {
            chunks.push_back(ChunkAt {
                file,
                chunk,
                offset,
            });
            offset += c.size;
        }
    }
    chunks
}

/// Takes chunks from `queue` until it is empty; returns those `root` does
/// not hold already (every chunk of a file that is missing).
pub fn compare(
    root: &Path,
    manifest: &Manifest,
    queue: &Mutex<VecDeque<ChunkAt>>,
) -> io::Result<Vec<ChunkAt>> {
    let mut differ = Vec::new();
    // The file the last chunk was in: chunks of one file come in a row.
    let mut open: Option<(usize, Option<fs::File>)> = None;
    let mut block = Vec::new();
    while let Some(at) = queue.lock().expect("queue lock").pop_front() {
        if open.as_ref().map(|(file, _)| *file) != Some(at.file) {
            let path = root.join(&manifest.files[at.file].path);
            let handle = match fs::File::open(&path) {
                Ok(handle) => Some(handle),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            open = Some((at.file, handle));
        }
        let chunk = &manifest.files[at.file].chunks[at.chunk];
        let holds = match open.as_ref().and_then(|(_, handle)| handle.as_ref()) {
            Some(handle) => holds(handle, at.offset, chunk, &mut block)?,
            None => false,
        };
        if !holds {
            differ.push(at);
        }
    }
    Ok(differ)
}

/// Whether `handle` holds `chunk` at `offset`: read and checksummed a
/// block at a time.
fn holds(handle: &fs::File, offset: u64, chunk: &Chunk, block: &mut Vec<u8>) -> io::Result<bool> {
    block.resize(compress::BLOCK, 0);
    let mut sum = checksum::Running::default();
    let (mut at, end) = (offset, offset + chunk.size);
    while at < end {
        let want = (end - at).min(compress::BLOCK as u64) as usize;
        let n = handle.read_at(&mut block[..want], at)?;
        if n == 0 {
            return Ok(false);
        }
        sum.update(&block[..n]);
        at += n as u64;
    }
    Ok(sum.finish() == chunk.sha256)
}

/// The chunks that differ, by file.
pub fn needed(mut differ: Vec<ChunkAt>) -> Vec<Needed> {
    differ.sort_by_key(|at| (at.file, at.chunk));
    let mut needed: Vec<Needed> = Vec::new();
    for at in differ {
        match needed.last_mut() {
            Some(last) if last.file == at.file => last.chunks.push(at.chunk),
            _ => needed.push(Needed {
                file: at.file,
                chunks: vec![at.chunk],
            }),
        }
    }
    needed
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
