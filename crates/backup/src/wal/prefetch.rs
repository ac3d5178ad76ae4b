//! Fetching WAL ahead of PostgreSQL. Recovery asks `restore_command` for
//! one segment at a time and replays it before asking for the next, so a
//! fetch that only fetches what it is asked for leaves replay waiting on
//! every segment's download and decompression. Instead, after answering
//! for segment N, `wal fetch` starts a prefetcher (`wal prefetch`, a child
//! process that outlives the call) that fetches the next [`AHEAD`]
//! segments, [`PARALLEL`] at a time (decompressing and checksumming
//! beside replay, not instead of it), into a spool directory
//! (`pg_wal/pgwarden-prefetch`); the following calls find their segment
//! there and return at once.
//!
//! The spool never decides what PostgreSQL sees:
//! * a spooled segment is used only under its own name, from the same
//!   archive (the spool records which), once it was checked against the
//!   size and SHA-256 in the archive's header and named only then, and
//!   if it still has that size; anything else is removed and fetched from
//!   the archive directly;
//! * "not in the archive" is only ever answered by the archive itself: a
//!   segment that is not spooled (missing, a timeline switch, a prefetch
//!   that failed) is fetched as without a spool;
//! * the spool holds at most the window after the last segment asked for,
//!   is emptied when another archive is used, and is removed by `wal
//!   push`, which runs only once recovery is over. PostgreSQL ignores a
//!   directory in pg_wal, and base backups leave pg_wal's content out.
//!
//! One prefetcher runs per data directory (a lock file); it stops when the
//! archive does not have a segment, on any error, or after [`IDLE`] without
//! work. PostgreSQL signals the restore_command's process group when it
//! shuts down, which ends a prefetcher too.

use std::fs::{self, File};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use nix::fcntl::{Flock, FlockArg};

use super::{control, Fetched, Fingerprint, WalArchive, WalError, WalKind, WalName};

/// Segments fetched ahead of the one PostgreSQL asked for.
pub const AHEAD: u64 = 8;
/// Segments fetched at once.
pub const PARALLEL: usize = 2;
/// A prefetcher with nothing to fetch for this long stops.
pub const IDLE: Duration = Duration::from_secs(2);
/// How long a fetch waits for the running prefetcher to spool the segment
/// it wants before fetching it itself.
const WAIT: Duration = Duration::from_secs(60);

/// The spool's directory name inside pg_wal.
pub const SPOOL: &str = "pgwarden-prefetch";
/// Which archive the spooled segments came from.
const ARCHIVE_FILE: &str = "archive";
/// The segment PostgreSQL asked for last, and the segment size.
const REQUESTED_FILE: &str = "requested";
const LOCK_FILE: &str = "lock";
/// A segment being fetched, not yet checked and named.
const PART: &str = ".part";
/// The size and SHA-256 a spooled segment must have.
const SUM: &str = ".sha256";

/// The spool of one data directory.
#[derive(Clone, Debug)]
pub struct Spool {
    dir: PathBuf,
}

/// What a fetch did, and whether a prefetcher should now be started.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub fetched: Fetched,
    pub prefetch: bool,
}

impl Spool {
    /// The spool of the data directory `wal_path` (as PostgreSQL gives it:
    /// `pg_wal/NAME`) is in.
    pub fn for_wal_path(wal_path: &Path) -> Spool {
        Spool::of(&control::data_dir_of(wal_path))
    }

    pub fn of(data_dir: &Path) -> Spool {
        Spool {
            dir: data_dir.join("pg_wal").join(SPOOL),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Makes the spool ready for `archive`'s segments: created if absent,
    /// emptied if it holds another archive's. `false` when it cannot be
    /// used (another archive's prefetcher still runs, or no disk).
    fn open(&self, archive: &WalArchive) -> bool {
        let identity = archive.identity();
        let marker = self.file(ARCHIVE_FILE);
        match fs::read_to_string(&marker) {
            Ok(text) if text == identity => return true,
            Ok(_) => {
                let Ok(Some(_lock)) = self.lock() else {
                    return false;
                };
                self.clear_segments();
            }
            Err(_) => {
                // Not create_dir_all: a prefetcher outliving its server must
                // not build a removed data directory up again.
                if let Err(e) = fs::create_dir(&self.dir) {
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        return false;
                    }
                }
            }
        }
        write_atomically(&marker, identity.as_bytes()).is_ok()
    }

    /// The prefetcher's lock, if no prefetcher holds it.
    fn lock(&self) -> io::Result<Option<Flock<File>>> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.file(LOCK_FILE))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(errno.into()),
        }
    }

    /// Whether a prefetcher is running.
    fn busy(&self) -> bool {
        matches!(self.lock(), Ok(None))
    }

    fn note_request(&self, name: &WalName, segment_size: u64) -> io::Result<()> {
        write_atomically(
            &self.file(REQUESTED_FILE),
            format!("{name} {segment_size}").as_bytes(),
        )
    }

    fn requested(&self) -> Option<(WalName, u64)> {
        let text = fs::read_to_string(self.file(REQUESTED_FILE)).ok()?;
        let (name, size) = text.split_once(' ')?;
        let name = WalName::parse(name).ok()?;
        let size = size.parse().ok().filter(|s: &u64| s.is_power_of_two())?;
        (name.kind() == WalKind::Segment).then_some((name, size))
    }

    /// Whether `name` is in the window after the last request.
    fn in_window(&self, name: &WalName) -> bool {
        self.requested()
            .is_some_and(|(last, size)| following(&last, size, AHEAD).contains(name))
    }

    /// Moves the spooled `name` to `dest` if it is there whole (then its
    /// fingerprint); removes it if not. Its content was checked against
    /// the archive's checksum before it was given its name; it is not
    /// hashed again here, on the path PostgreSQL waits on.
    fn take(&self, name: &WalName, dest: &Path) -> Option<Fingerprint> {
        let segment = self.file(name.as_str());
        let sum = self.file(&format!("{name}{SUM}"));
        // The checksum is written first, so a segment without one is not
        // spooled yet.
        let expected = parse_sum(&fs::read_to_string(&sum).ok()?);
        let size = fs::metadata(&segment).ok()?.len();
        let taken = expected
            .filter(|fingerprint| fingerprint.size == size)
            .filter(|_| fs::rename(&segment, dest).is_ok());
        let _ = fs::remove_file(&segment);
        let _ = fs::remove_file(&sum);
        taken
    }

    /// Removes every spooled segment, whole or in parts.
    fn clear_segments(&self) {
        self.trim(|_| false);
    }

    /// Removes the spooled segments (and their parts) `keep` says no to,
    /// and anything else that is not the spool's own.
    fn trim(&self, keep: impl Fn(&WalName) -> bool) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            // `NAME`, `NAME.part`, `NAME.sha256`, or a temporary file
            // `.NAME…` while one is written.
            let base = file_name
                .trim_start_matches('.')
                .split('.')
                .next()
                .unwrap_or_default();
            if [ARCHIVE_FILE, REQUESTED_FILE, LOCK_FILE].contains(&base) {
                continue;
            }
            let wanted =
                !file_name.starts_with('.') && WalName::parse(base).is_ok_and(|name| keep(&name));
            if !wanted {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Removes the spool unless a prefetcher is running: recovery is over.
    pub fn remove(&self) {
        if !self.dir.exists() {
            return;
        }
        if let Ok(Some(_lock)) = self.lock() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Restores `name` to `dest` for PostgreSQL: a segment from the spool when
/// the prefetcher has it (waiting for it if the prefetcher is fetching it
/// now), from the archive otherwise. `prefetch` says to start a prefetcher
/// for the segments after it.
pub async fn fetch(archive: &WalArchive, name: &WalName, dest: &Path) -> Result<Answer, WalError> {
    let direct = |fetched| Answer {
        fetched,
        prefetch: false,
    };
    if name.kind() != WalKind::Segment {
        return archive.fetch(name, dest).await.map(direct);
    }
    let spool = Spool::for_wal_path(dest);
    if !spool.open(archive) {
        return archive.fetch(name, dest).await.map(direct);
    }
    if let Some(fingerprint) = spooled(&spool, name, dest).await {
        let noted = spool.note_request(name, fingerprint.size).is_ok();
        return Ok(Answer {
            fetched: Fetched::Restored(fingerprint),
            prefetch: noted && !spool.busy(),
        });
    }
    let fetched = archive.fetch(name, dest).await?;
    let prefetch = match &fetched {
        Fetched::Restored(fingerprint) => {
            spool.note_request(name, fingerprint.size).is_ok() && !spool.busy()
        }
        Fetched::NotInArchive => false,
    };
    Ok(Answer { fetched, prefetch })
}

/// The spooled `name`, moved to `dest`. Waits while the running
/// prefetcher may still bring it.
async fn spooled(spool: &Spool, name: &WalName, dest: &Path) -> Option<Fingerprint> {
    let began = Instant::now();
    loop {
        if let Some(fingerprint) = spool.take(name, dest) {
            return Some(fingerprint);
        }
        if began.elapsed() > WAIT || !spool.busy() || !spool.in_window(name) {
            // The prefetcher may have spooled it just before it stopped.
            return spool.take(name, dest);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The prefetcher: fetches the window after the last requested segment
/// into the spool until the archive lacks one, a fetch fails, or nothing
/// was asked for [`IDLE`]. Returns at once if another one runs.
pub async fn prefetch(archive: &WalArchive, spool: &Spool) -> Result<(), WalError> {
    let Ok(Some(_lock)) = spool.lock() else {
        return Ok(());
    };
    // Parts a prefetcher that was stopped left behind.
    spool.trim(|_| true);
    let mut idle_since = Instant::now();
    // The request whose window is spooled whole: while it stays the last
    // one, there is nothing to look at (the CPU is replay's).
    let mut spooled_for = None;
    loop {
        let Some(requested) = spool.requested() else {
            return Ok(());
        };
        if spooled_for.as_ref() == Some(&requested) {
            if idle_since.elapsed() > IDLE {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let (last, size) = &requested;
        let window = following(last, *size, AHEAD);
        spool.trim(|name| window.contains(name));
        let todo: Vec<&WalName> = window
            .iter()
            .filter(|name| !spool.file(name.as_str()).exists())
            .collect();
        if todo.is_empty() {
            spooled_for = Some(requested);
            idle_since = Instant::now();
            continue;
        }
        let results: Vec<Result<Fetched, WalError>> = futures::stream::iter(todo)
            .map(|name| spool_one(archive, spool, name))
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        for result in results {
            if result? == Fetched::NotInArchive {
                return Ok(());
            }
        }
        idle_since = Instant::now();
    }
}

/// Fetches `name` into the spool: the part, then its checksum, then the
/// part renamed to the name.
async fn spool_one(
    archive: &WalArchive,
    spool: &Spool,
    name: &WalName,
) -> Result<Fetched, WalError> {
    let part = spool.file(&format!("{name}{PART}"));
    let fetched = archive.fetch(name, &part).await?;
    if let Fetched::Restored(fingerprint) = &fetched {
        let write = |path: PathBuf| {
            move |source| WalError::Write {
                path: path.clone(),
                source,
            }
        };
        let sum = spool.file(&format!("{name}{SUM}"));
        write_atomically(&sum, sum_text(fingerprint).as_bytes()).map_err(write(sum))?;
        let segment = spool.file(name.as_str());
        fs::rename(&part, &segment).map_err(write(segment))?;
    }
    Ok(fetched)
}

fn sum_text(fingerprint: &Fingerprint) -> String {
    format!("{} {}", fingerprint.size, fingerprint.sha256)
}

fn parse_sum(text: &str) -> Option<Fingerprint> {
    let (size, sha256) = text.split_once(' ')?;
    Some(Fingerprint {
        size: size.parse().ok()?,
        sha256: sha256.to_string(),
    })
}

/// The `count` segments after `name` on its timeline.
pub fn following(name: &WalName, segment_size: u64, count: u64) -> Vec<WalName> {
    let text = name.as_str();
    let hex = |s: &str| u64::from_str_radix(s, 16).expect("a segment name is hex");
    let per_id = 0x1_0000_0000 / segment_size.max(1);
    let number = hex(&text[8..16]) * per_id + hex(&text[16..24]);
    (1..=count)
        .map(|i| {
            let next = number + i;
            let name = format!("{}{:08X}{:08X}", &text[..8], next / per_id, next % per_id);
            WalName::parse(&name).expect("a segment name")
        })
        .collect()
}

/// Writes `path` through a temporary file renamed into place.
fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "no file name"))?;
    let temp = path.with_file_name(format!(".{file_name}.{}", std::process::id()));
    fs::write(&temp, data)?;
    fs::rename(&temp, path).inspect_err(|_| {
        let _ = fs::remove_file(&temp);
    })
}

#[cfg(test)]
mod tests;
