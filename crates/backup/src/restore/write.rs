//! Fetching the objects that hold the chunks a restore needs, in parallel,
//! each once; every chunk decompressed, its checksum checked, and written
//! at its place in its file.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use crate::checksum;
use crate::compress;
use crate::manifest::{Chunk, Manifest};
use crate::repo::{RepoPath, Repository};
use crate::restore::target::Needed;
use crate::restore::RestoreError;

/// One chunk to write.
struct Piece {
    path: PathBuf,
    relative: String,
    chunk: Chunk,
    file_offset: u64,
}

/// What was written.
#[derive(Debug, Default)]
pub struct Written {
    pub chunks: u64,
    pub bytes: u64,
    pub fetched_bytes: u64,
}

pub async fn write(
    repo: &dyn Repository,
    root: &Path,
    manifest: &Manifest,
    needed: &[Needed],
    parallelism: usize,
) -> Result<Written, RestoreError> {
    let mut by_object: BTreeMap<RepoPath, Vec<Piece>> = BTreeMap::new();
    for need in needed {
        let file = &manifest.files[need.file];
        let offsets: Vec<u64> = file
            .chunks
            .iter()
            .scan(0, |at, c| {
                let offset = *at;
                *at += c.size;
                Some(offset)
            })
            .collect();
        for &i in &need.chunks {
            let chunk = &file.chunks[i];
            by_object
                .entry(chunk.object_path()?)
                .or_default()
                .push(Piece {
                    path: root.join(&file.path),
                    relative: file.path.clone(),
                    chunk: chunk.clone(),
                    file_offset: offsets[i],
                });
        }
    }
    let queue = Mutex::new(by_object.into_iter().collect::<VecDeque<_>>());
    let workers = (0..parallelism.max(1)).map(|_| worker(repo, &queue));
    let mut written = Written::default();
    for done in futures::future::try_join_all(workers).await? {
        written.chunks += done.chunks;
        written.bytes += done.bytes;
        written.fetched_bytes += done.fetched_bytes;
    }
    Ok(written)
}

async fn worker(
    repo: &dyn Repository,
    queue: &Mutex<VecDeque<(RepoPath, Vec<Piece>)>>,
) -> Result<Written, RestoreError> {
    let mut written = Written::default();
    loop {
        let Some((object, pieces)) = queue.lock().expect("queue lock").pop_front() else {
            return Ok(written);
        };
        let data = repo.get(&object).await?;
        written.fetched_bytes += data.len() as u64;
        written.chunks += pieces.len() as u64;
        written.bytes += pieces.iter().map(|p| p.chunk.size).sum::<u64>();
        tokio::task::spawn_blocking(move || write_pieces(&object, &data, &pieces))
            .await
            .map_err(|e| RestoreError::Task(e.to_string()))??;
    }
}

fn write_pieces(object: &RepoPath, data: &Bytes, pieces: &[Piece]) -> Result<(), RestoreError> {
    for piece in pieces {
        let damaged = |reason: String| RestoreError::Damaged {
            backup: piece.chunk.backup.clone(),
            object: object.to_string(),
            path: piece.relative.clone(),
            reason,
        };
        let (start, end) = (piece.chunk.offset, piece.chunk.offset + piece.chunk.length);
        let frame = data.get(start as usize..end as usize).ok_or_else(|| {
            damaged(format!(
                "the object is {} bytes long, the chunk ends at {end}",
                data.len()
            ))
        })?;
        let io = |what, source| RestoreError::Io {
            what,
            path: piece.path.clone(),
            source,
        };
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&piece.path)
            .map_err(|e| io("open", e))?;
        // Written as it is decompressed, a block at a time; a chunk that
        // turns out damaged fails the restore, which leaves a directory
        // PostgreSQL must not start anyway.
        let mut sum = checksum::Running::default();
        let mut at = piece.file_offset;
        compress::decompress_each(frame, piece.chunk.size, |block| {
            sum.update(block);
            file.write_all_at(block, at)?;
            at += block.len() as u64;
            Ok(())
        })
        .map_err(|e| match e {
            compress::StreamError::Frame(e) => damaged(e.to_string()),
            compress::StreamError::Sink(e) => io("write", e),
        })?;
        if sum.finish() != piece.chunk.sha256 {
            return Err(damaged("its checksum does not match the manifest".into()));
        }
    }
    Ok(())
}
