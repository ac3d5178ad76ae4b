//! A backup is complete only when the WAL from its start to its end is in
//! the archive (DESIGN.md, safety rule 9): restoring it replays that WAL to
//! become consistent. This names those segments and waits, with a deadline,
//! until the archive holds every one.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use pg::Lsn;

use crate::repo::RepoError;

/// Where archived WAL is looked up.
#[async_trait]
pub trait WalArchive: Send + Sync {
    /// Whether the segment file `name` (`000000010000000000000003`) is in
    /// the archive, whole.
    async fn has_segment(&self, name: &str) -> Result<bool, RepoError>;
    /// Where it is, for messages.
    fn describe(&self) -> String;
}

/// A WAL segment file's name: timeline, then the segment number split as
/// PostgreSQL splits it.
pub fn segment_name(timeline: u32, segment: u64, segment_size: u64) -> String {
    let per_id = 0x1_0000_0000 / segment_size;
    format!(
        "{timeline:08X}{:08X}{:08X}",
        segment / per_id,
        segment % per_id
    )
}

/// The segments replay reads from `start` up to (not including) `stop`.
/// Each is wanted on the start or the stop timeline (a standby may have
/// followed its upstream onto a new one during the backup); the first name
/// is the usual one.
pub fn needed(
    start: Lsn,
    stop: Lsn,
    start_timeline: u32,
    stop_timeline: u32,
    segment_size: u64,
) -> Vec<Vec<String>> {
    let first = start.0 / segment_size;
    // The segment holding the byte just before `stop`, as pg_backup_stop
    // names the last one it waits for.
    let last = stop.0.saturating_sub(1) / segment_size;
    (first..=last.max(first))
        .map(|segment| {
            let mut names = vec![segment_name(stop_timeline, segment, segment_size)];
            if start_timeline != stop_timeline {
                names.push(segment_name(start_timeline, segment, segment_size));
            }
            names
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum WalWaitError {
    #[error("base backup: WAL segment {segment} (needed to restore this backup, which ends at {stop}) is not in the archive {archive} after {waited:?}; the backup is not marked complete. Check that archiving works (pg_stat_archiver, `archive_command`); a backup from a standby also needs the primary to archive that segment (archive_timeout, or `SELECT pg_switch_wal()` on the primary)")]
    Missing {
        segment: String,
        stop: Lsn,
        archive: String,
        waited: Duration,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Waits until every needed segment is in `archive`, or `deadline` passed.
pub async fn wait_archived(
    archive: &dyn WalArchive,
    segments: &[Vec<String>],
    stop: Lsn,
    deadline: Duration,
) -> Result<(), WalWaitError> {
    let began = Instant::now();
    for names in segments {
        loop {
            let mut found = false;
            for name in names {
                if archive.has_segment(name).await? {
                    found = true;
                    break;
                }
            }
            if found {
                break;
            }
            if began.elapsed() >= deadline {
                return Err(WalWaitError::Missing {
                    segment: names[0].clone(),
                    stop,
                    archive: archive.describe(),
                    waited: began.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 << 20;

    #[test]
    fn names_segments_as_postgresql_does() {
        assert_eq!(segment_name(1, 3, MB16), "000000010000000000000003");
        assert_eq!(segment_name(2, 0x1FF, MB16), "0000000200000001000000FF");
        assert_eq!(segment_name(1, 0x100, MB16), "000000010000000100000000");
        assert_eq!(segment_name(1, 3, 64 << 20), "000000010000000000000003");
    }

    #[test]
    fn the_segments_from_start_to_the_byte_before_stop() {
        let start: Lsn = "0/2000028".parse().unwrap();
        let inside: Lsn = "0/4000100".parse().unwrap();
        let boundary: Lsn = "0/4000000".parse().unwrap();
        let names = |stop| {
            needed(start, stop, 1, 1, MB16)
                .into_iter()
                .map(|n| n[0][16..].to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(inside), ["00000002", "00000003", "00000004"]);
        assert_eq!(names(boundary), ["00000002", "00000003"]);
    }

    #[test]
    fn a_timeline_switch_accepts_either_timeline() {
        let start: Lsn = "0/2000028".parse().unwrap();
        let stop: Lsn = "0/2000100".parse().unwrap();
        assert_eq!(
            needed(start, stop, 1, 2, MB16),
            [vec![
                "000000020000000000000002".to_string(),
                "000000010000000000000002".to_string()
            ]]
        );
    }

    struct Holding(Vec<&'static str>);

    #[async_trait]
    impl WalArchive for Holding {
        async fn has_segment(&self, name: &str) -> Result<bool, RepoError> {
            Ok(self.0.contains(&name))
        }
        fn describe(&self) -> String {
            "the test archive".into()
        }
    }

    #[tokio::test]
    async fn a_missing_segment_fails_the_wait_by_name() {
        let archive = Holding(vec!["000000010000000000000002"]);
        let start: Lsn = "0/2000028".parse().unwrap();
        let stop: Lsn = "0/3000100".parse().unwrap();
        let segments = needed(start, stop, 1, 1, MB16);
        let err = wait_archived(&archive, &segments, stop, Duration::ZERO)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("WAL segment 000000010000000000000003"),
            "{err}"
        );
        assert!(err.contains("not marked complete"), "{err}");
        let enough = needed(start, "0/2000100".parse().unwrap(), 1, 1, MB16);
        wait_archived(&archive, &enough, stop, Duration::ZERO)
            .await
            .unwrap();
    }
}
