//! Copying the listed files into the repository: each file read in chunks
//! (so memory stays bounded by chunk size × parallelism), each chunk
//! checksummed and, unless the parent backup holds the same chunk,
//! compressed and stored. A large file's chunks are an object each; small
//! files are gathered into bundle objects, so a data directory of a
//! thousand 8 kB catalog files is a few dozen writes, not a thousand.
//!
//! Files may change while they are read (PostgreSQL is running): one that
//! vanished is left out, one that shrank or grew is recorded as read. WAL
//! replay from the backup's start makes every file right again.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::backup::walk::Listed;
use crate::checksum::Running;
use crate::compress;
use crate::manifest::{self, Chunk, File, Manifest};
use crate::repo::{RepoError, Repository};

/// Files smaller than this (or than the chunk size) go into bundles.
const SMALL_FILE: u64 = 1 << 20;
/// A bundle holds files until their listed sizes reach this.
const BUNDLE_SIZE: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("base backup: could not {what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("base backup: a copy task failed: {0}")]
    Task(String),
}

/// What a copy needs besides the files.
pub struct Copier<'a> {
    pub repo: &'a dyn Repository,
    pub backup_id: &'a str,
    pub chunk_size: u64,
    pub level: i32,
    pub parallelism: usize,
    /// The backup an incremental one compares against.
    pub parent: Option<&'a Manifest>,
    /// Told the number of bytes read, after each piece of work.
    pub progress: &'a (dyn Fn(u64) + Sync),
}

/// The copied files (sorted by path) and what it cost.
#[derive(Debug, Default)]
pub struct Copied {
    pub files: Vec<File>,
    pub stored_bytes: u64,
    pub reused_bytes: u64,
}

enum Work {
    Large(Listed),
    Bundle(Vec<Listed>),
}

/// A chunk as read: found unchanged in the parent, or to be stored.
enum Piece {
    Reused(Chunk),
    New {
        size: u64,
        sha256: String,
        frame: Vec<u8>,
    },
}

impl Piece {
    fn size(&self) -> u64 {
        match self {
            Piece::Reused(chunk) => chunk.size,
            Piece::New { size, .. } => *size,
        }
    }
}

/// A file being read: the handle and the checksum of everything so far.
struct Reading {
    file: fs::File,
    whole: Running,
    size: u64,
}

impl Copier<'_> {
    pub async fn copy(&self, files: Vec<Listed>) -> Result<Copied, CopyError> {
        let queue = Mutex::new(self.plan(files));
        let next_object = AtomicU64::new(1);
        let workers = (0..self.parallelism.max(1)).map(|_| self.worker(&queue, &next_object));
        let mut copied = Copied::default();
        for done in futures::future::try_join_all(workers).await? {
            copied.files.extend(done.files);
            copied.stored_bytes += done.stored_bytes;
            copied.reused_bytes += done.reused_bytes;
        }
        copied.files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(copied)
    }

    /// Large files first, biggest first, so the workers finish together.
    fn plan(&self, mut files: Vec<Listed>) -> VecDeque<Work> {
        let small = SMALL_FILE.min(self.chunk_size);
        files.sort_by(|a, b| b.size.cmp(&a.size).then(a.path.cmp(&b.path)));
        let mut work = VecDeque::new();
        let mut bundle = Vec::new();
        let mut bundled = 0;
        for file in files {
            if file.size >= small {
                work.push_back(Work::Large(file));
                continue;
            }
            bundled += file.size;
            bundle.push(file);
            if bundled >= BUNDLE_SIZE {
                work.push_back(Work::Bundle(std::mem::take(&mut bundle)));
                bundled = 0;
            }
        }
        if !bundle.is_empty() {
            work.push_back(Work::Bundle(bundle));
        }
        work
    }

    async fn worker(
        &self,
        queue: &Mutex<VecDeque<Work>>,
        next_object: &AtomicU64,
    ) -> Result<Copied, CopyError> {
        let mut copied = Copied::default();
        loop {
            let work = queue.lock().expect("queue lock").pop_front();
            let files = match work {
                None => return Ok(copied),
                Some(Work::Large(listed)) => {
                    self.copy_large(listed, next_object, &mut copied).await?
                }
                Some(Work::Bundle(listed)) => {
                    self.copy_bundle(listed, next_object, &mut copied).await?
                }
            };
            for file in &files {
                for chunk in &file.chunks {
                    if chunk.backup != self.backup_id {
                        copied.reused_bytes += chunk.size;
                    }
                }
            }
            copied.files.extend(files);
        }
    }

    /// One object per chunk.
    async fn copy_large(
        &self,
        listed: Listed,
        next_object: &AtomicU64,
        copied: &mut Copied,
    ) -> Result<Vec<File>, CopyError> {
        let source = listed.source.clone();
        let Some(mut reading) = blocking(move || open(&source)).await? else {
            return Ok(Vec::new());
        };
        let parent = self.parent_chunks(&listed.path);
        let mut chunks = Vec::new();
        loop {
            let expected = parent.get(chunks.len()).cloned();
            let (chunk_size, source) = (self.chunk_size, listed.source.clone());
            // As many compressing threads as copying workers: the other
            // workers may have run out of files while this one is big.
            let compression = (self.level, self.parallelism as u32);
            let (back, piece) = blocking(move || {
                let piece = next_piece(&mut reading, &source, chunk_size, compression, expected);
                piece.map(|p| (reading, p))
            })
            .await?;
            reading = back;
            let Some(piece) = piece else { break };
            let size = piece.size();
            (self.progress)(size);
            let chunk = match piece {
                Piece::Reused(chunk) => chunk,
                Piece::New {
                    size,
                    sha256,
                    frame,
                } => {
                    let length = frame.len() as u64;
                    let object = self.store(next_object, frame).await?;
                    copied.stored_bytes += length;
                    Chunk {
                        size,
                        sha256,
                        backup: self.backup_id.to_string(),
                        object,
                        offset: 0,
                        length,
                    }
                }
            };
            chunks.push(chunk);
            if size < self.chunk_size {
                break;
            }
        }
        Ok(vec![finish(&listed, reading, chunks)])
    }

    /// The new chunks of several small files in one object.
    async fn copy_bundle(
        &self,
        bundle: Vec<Listed>,
        next_object: &AtomicU64,
        copied: &mut Copied,
    ) -> Result<Vec<File>, CopyError> {
        let parents: Vec<Vec<Chunk>> = bundle.iter().map(|l| self.parent_chunks(&l.path)).collect();
        let (chunk_size, level) = (self.chunk_size, self.level);
        let (mut files, object) = blocking(move || {
            let mut object = Vec::new();
            let mut files = Vec::new();
            for (listed, parent) in bundle.into_iter().zip(parents) {
                let Some(mut reading) = open(&listed.source)? else {
                    continue;
                };
                let mut chunks = Vec::new();
                loop {
                    let expected = parent.get(chunks.len()).cloned();
                    let piece = next_piece(
                        &mut reading,
                        &listed.source,
                        chunk_size,
                        (level, 1),
                        expected,
                    )?;
                    let Some(piece) = piece else { break };
                    let size = piece.size();
                    chunks.push(match piece {
                        Piece::Reused(chunk) => chunk,
                        Piece::New {
                            size,
                            sha256,
                            frame,
                        } => {
                            let offset = object.len() as u64;
                            object.extend_from_slice(&frame);
                            Chunk {
                                size,
                                sha256,
                                backup: String::new(),
                                object: String::new(),
                                offset,
                                length: frame.len() as u64,
                            }
                        }
                    });
                    if size < chunk_size {
                        break;
                    }
                }
                files.push(finish(&listed, reading, chunks));
            }
            Ok((files, object))
        })
        .await?;
        (self.progress)(files.iter().map(|f| f.size).sum());
        if !object.is_empty() {
            copied.stored_bytes += object.len() as u64;
            let name = self.store(next_object, object).await?;
            for chunk in files.iter_mut().flat_map(|f| f.chunks.iter_mut()) {
                if chunk.backup.is_empty() {
                    chunk.backup = self.backup_id.to_string();
                    chunk.object = name.clone();
                }
            }
        }
        Ok(files)
    }

    /// The parent backup's chunks of the file at `path`, if it had one.
    fn parent_chunks(&self, path: &str) -> Vec<Chunk> {
        self.parent
            .and_then(|p| {
                // The manifest's files are sorted by path.
                p.files
                    .binary_search_by(|f| f.path.as_str().cmp(path))
                    .ok()
                    .map(|i| p.files[i].chunks.clone())
            })
            .unwrap_or_default()
    }

    /// Writes a new object of this backup; returns its name inside it.
    async fn store(&self, next_object: &AtomicU64, data: Vec<u8>) -> Result<String, CopyError> {
        let name = format!(
            "data/{:06}.zst",
            next_object.fetch_add(1, Ordering::Relaxed)
        );
        let path = manifest::backup_dir(self.backup_id)?.join(&name)?;
        self.repo.put(&path, data.into()).await?;
        Ok(name)
    }
}

/// Opens a file to copy; `None` when it vanished since it was listed.
fn open(source: &Path) -> Result<Option<Reading>, CopyError> {
    match fs::File::open(source) {
        Ok(file) => Ok(Some(Reading {
            file,
            whole: Running::default(),
            size: 0,
        })),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source_error) => Err(CopyError::File {
            what: "open",
            path: source.to_path_buf(),
            source: source_error,
        }),
    }
}

/// Reads the next chunk (`None` at the end): reused when the parent's chunk
/// at this place has the same size and checksum, compressed otherwise (at
/// `level`, on `threads` threads).
fn next_piece(
    reading: &mut Reading,
    source: &Path,
    chunk_size: u64,
    (level, threads): (i32, u32),
    parent: Option<Chunk>,
) -> Result<Option<Piece>, CopyError> {
    let error = |what, e| CopyError::File {
        what,
        path: source.to_path_buf(),
        source: e,
    };
    // Read, checksummed and compressed a block at a time, so each block
    // is still in the CPU's cache for the next step. A chunk the parent may
    // hold is kept whole instead, and compressed only if it differs.
    let mut kept = Vec::new();
    let mut frame = match parent {
        None => Some(compress::FrameWriter::new(level, threads).map_err(|e| error("compress", e))?),
        Some(_) => None,
    };
    let mut block = vec![0u8; (compress::BLOCK as u64).min(chunk_size) as usize];
    let mut chunk_sum = Running::default();
    let mut size = 0;
    while size < chunk_size {
        let want = (chunk_size - size).min(block.len() as u64) as usize;
        let n = compress::read_full(&mut reading.file, &mut block[..want])
            .map_err(|e| error("read", e))?;
        let data = &block[..n];
        chunk_sum.update(data);
        reading.whole.update(data);
        match &mut frame {
            Some(frame) => frame.write(data).map_err(|e| error("compress", e))?,
            None => kept.extend_from_slice(data),
        }
        size += n as u64;
        if n < want {
            break;
        }
    }
    if size == 0 {
        return Ok(None);
    }
    reading.size += size;
    let sha256 = chunk_sum.finish();
    if let Some(chunk) = parent.filter(|c| c.size == size && c.sha256 == sha256) {
        return Ok(Some(Piece::Reused(chunk)));
    }
    let frame = match frame {
        Some(frame) => frame.finish(),
        None => compress::FrameWriter::new(level, threads).and_then(|mut frame| {
            frame.write(&kept)?;
            frame.finish()
        }),
    }
    .map_err(|e| error("compress", e))?;
    Ok(Some(Piece::New {
        size,
        sha256,
        frame,
    }))
}

fn finish(listed: &Listed, reading: Reading, chunks: Vec<Chunk>) -> File {
    File {
        path: listed.path.clone(),
        size: reading.size,
        mode: listed.mode,
        mtime: listed.mtime,
        sha256: reading.whole.finish(),
        chunks,
    }
}

async fn blocking<T, F>(f: F) -> Result<T, CopyError>
where
    F: FnOnce() -> Result<T, CopyError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CopyError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::walk;
    use crate::repo::{PosixRepository, RepoPath};

    const CHUNK: u64 = 4096;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    async fn copy(
        repo: &PosixRepository,
        id: &str,
        data: &Path,
        parent: Option<&Manifest>,
    ) -> Copied {
        let copier = Copier {
            repo,
            backup_id: id,
            chunk_size: CHUNK,
            level: 1,
            parallelism: 2,
            parent,
            progress: &|_| {},
        };
        copier.copy(walk::list(data).unwrap().files).await.unwrap()
    }

    async fn content(repo: &PosixRepository, chunk: &Chunk) -> Vec<u8> {
        let object = repo.get(&chunk.object_path().unwrap()).await.unwrap();
        let frame = &object[chunk.offset as usize..(chunk.offset + chunk.length) as usize];
        compress::decompress(frame, chunk.size).unwrap()
    }

    #[tokio::test]
    async fn chunks_large_files_bundles_small_ones_and_skips_vanished_ones() {
        let data = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let repo = PosixRepository::new(store.path());
        let big = pattern(10_000, 1);
        std::fs::write(data.path().join("big"), &big).unwrap();
        std::fs::write(data.path().join("small"), b"small").unwrap();
        std::fs::write(data.path().join("other"), b"other").unwrap();
        std::fs::write(data.path().join("empty"), b"").unwrap();
        std::fs::write(data.path().join("gone"), b"gone").unwrap();
        let listing = walk::list(data.path()).unwrap();
        std::fs::remove_file(data.path().join("gone")).unwrap();
        let copier = Copier {
            repo: &repo,
            backup_id: "B1",
            chunk_size: CHUNK,
            level: 1,
            parallelism: 2,
            parent: None,
            progress: &|_| {},
        };
        let copied = copier.copy(listing.files).await.unwrap();
        let paths: Vec<&str> = copied.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["big", "empty", "other", "small"]);
        let file = &copied.files[0];
        assert_eq!(file.size, 10_000);
        assert_eq!(file.sha256, crate::checksum::sha256_hex(&big));
        let sizes: Vec<u64> = file.chunks.iter().map(|c| c.size).collect();
        assert_eq!(sizes, [4096, 4096, 1808]);
        let mut joined = Vec::new();
        for chunk in &file.chunks {
            joined.extend(content(&repo, chunk).await);
        }
        assert_eq!(joined, big);
        assert!(copied.files[1].chunks.is_empty());
        // The two small files share one object.
        let (other, small) = (&copied.files[2].chunks[0], &copied.files[3].chunks[0]);
        assert_eq!(other.object, small.object);
        assert_eq!(content(&repo, small).await, b"small");
        assert_eq!(content(&repo, other).await, b"other");
        let objects = repo
            .list(&RepoPath::new("backups/B1").unwrap())
            .await
            .unwrap();
        assert_eq!(objects.len(), 4);
        assert_eq!(
            copied.stored_bytes,
            objects.iter().map(|o| o.size).sum::<u64>()
        );
        assert_eq!(copied.reused_bytes, 0);
    }

    #[tokio::test]
    async fn an_incremental_copy_stores_only_changed_chunks() {
        let data = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let repo = PosixRepository::new(store.path());
        let mut big = pattern(10_000, 1);
        std::fs::write(data.path().join("big"), &big).unwrap();
        std::fs::write(data.path().join("small"), b"small").unwrap();
        std::fs::write(data.path().join("changes"), b"before").unwrap();
        let mut parent = crate::manifest::sample("B1");
        parent.files = copy(&repo, "B1", data.path(), None).await.files;

        big[5000] ^= 0xff;
        big.extend_from_slice(b"grown");
        std::fs::write(data.path().join("big"), &big).unwrap();
        std::fs::write(data.path().join("changes"), b"after").unwrap();
        let copied = copy(&repo, "B2", data.path(), Some(&parent)).await;
        let big_file = &copied.files[0];
        let owners: Vec<&str> = big_file.chunks.iter().map(|c| c.backup.as_str()).collect();
        assert_eq!(
            owners,
            ["B1", "B2", "B2"],
            "only the changed chunk and the grown tail are new"
        );
        assert_eq!(big_file.chunks[0], parent.files[0].chunks[0]);
        let small = copied.files.iter().find(|f| f.path == "small").unwrap();
        assert_eq!(small.chunks[0].backup, "B1");
        let changes = copied.files.iter().find(|f| f.path == "changes").unwrap();
        assert_eq!(changes.chunks[0].backup, "B2");
        assert_eq!(content(&repo, &changes.chunks[0]).await, b"after");
        assert_eq!(copied.reused_bytes, 4096 + 5);
    }
}
