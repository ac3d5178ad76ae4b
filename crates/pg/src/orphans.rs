//! Backends a dead postmaster left behind.
//!
//! When the postmaster is killed, its children notice at their next wait and
//! exit; until the last one has, they hold its shared memory and a new
//! postmaster refuses to start ("pre-existing shared memory block is still
//! in use"). A crash restart that starts at once then fails and is retried a
//! backoff later; one that waits for them a few milliseconds does not. A
//! child busy in a long query notices only when it next waits: it is ended
//! the way the postmaster itself ends its children after a crash.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long orphans get to notice their postmaster is gone on their own.
const NOTICE_WAIT: Duration = Duration::from_millis(1000);
/// How long killed orphans get to be gone.
const KILL_WAIT: Duration = Duration::from_millis(2000);
const POLL: Duration = Duration::from_millis(10);

/// The System V segment named in postmaster.pid (line 7: key, id).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    pub key: u32,
    pub id: i32,
}

impl Segment {
    pub(crate) fn parse(line: &str) -> Option<Segment> {
        let mut fields = line.split_whitespace();
        let key = fields.next()?.parse().ok()?;
        let id = fields.next()?.parse().ok()?;
        Some(Segment { key, id })
    }

    /// Whether the segment exists and a process is attached to it.
    pub(crate) fn in_use(self) -> bool {
        let mut info = std::mem::MaybeUninit::<nix::libc::shmid_ds>::zeroed();
        // SAFETY: IPC_STAT only writes a shmid_ds into the buffer we own.
        let found =
            unsafe { nix::libc::shmctl(self.id, nix::libc::IPC_STAT, info.as_mut_ptr()) } == 0;
        // SAFETY: initialised (zeroed, then filled by a successful IPC_STAT).
        found && unsafe { info.assume_init() }.shm_nattch > 0
    }
}

/// Waits until nothing is attached to `segment` any more, ending the
/// `postgres` processes of user `uid` that still are after
/// [`NOTICE_WAIT`]. Returns whether the segment is free.
pub(crate) async fn wait_gone(segment: Segment, uid: u32) -> bool {
    if wait_free(segment, NOTICE_WAIT).await {
        return true;
    }
    let orphans = attached(segment, uid);
    if orphans.is_empty() {
        return false;
    }
    tracing::warn!(
        "processes of the dead postmaster still hold its shared memory after {NOTICE_WAIT:?}: \
         ending {orphans:?} (SIGKILL) so PostgreSQL can start again"
    );
    for pid in orphans {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    wait_free(segment, KILL_WAIT).await
}

async fn wait_free(segment: Segment, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while segment.in_use() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

/// The `postgres` processes of `uid` that map `segment` (it shows in their
/// maps as `/SYSV<key in hex> (deleted)`).
fn attached(segment: Segment, uid: u32) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let name = format!("/SYSV{:08x}", segment.key);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| crate::pid::is_postgres(pid))
        .filter(|&pid| std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid))
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/maps"))
                .is_ok_and(|maps| maps.lines().any(|l| l.contains(&name)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_segment_line_of_postmaster_pid_parses() {
        let segment = Segment::parse("  5432001     32768").unwrap();
        assert_eq!((segment.key, segment.id), (5432001, 32768));
        assert!(Segment::parse("").is_none());
        assert!(Segment::parse("5432001").is_none());
        assert!(Segment::parse("x 1").is_none());
    }

    #[test]
    fn a_segment_that_does_not_exist_is_free() {
        assert!(!Segment {
            key: 1,
            id: i32::MAX
        }
        .in_use());
    }
}
