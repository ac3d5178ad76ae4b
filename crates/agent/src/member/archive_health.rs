//! A primary's WAL archiving as this member publishes it, and the events
//! when it starts failing and when it works again.

use pg::ArchiverReport;
use store::cluster::ArchiveHealth;

pub(super) fn health(report: &ArchiverReport) -> ArchiveHealth {
    ArchiveHealth {
        failing: report.failing(),
        waiting: report.waiting,
        waiting_bytes: report.waiting_bytes(),
        last_archived_wal: report.last_archived_wal.clone(),
        last_archived_ms: report.last_archived_ms,
        failed_count: report.failed_count,
        last_failed_wal: report.last_failed_wal.clone(),
        last_failed_ms: report.last_failed_ms,
    }
}

/// The event, if archiving started failing or recovered since `before`.
pub(super) fn change(
    before: Option<&ArchiveHealth>,
    now: Option<&ArchiveHealth>,
) -> Option<(&'static str, String)> {
    let was_failing = before.is_some_and(|b| b.failing);
    match now {
        Some(now) if now.failing && !was_failing => Some((
            "archive_failing",
            format!(
                "PostgreSQL could not archive {} ({} failed attempts so far); {} segments \
                 ({} MiB) wait in pg_wal, which grows until archiving works again. Check the \
                 repository (reachable, writable, not full) and the `pgwarden wal push` errors in \
                 PostgreSQL's log; nothing is lost meanwhile, PostgreSQL keeps retrying",
                now.last_failed_wal.as_deref().unwrap_or("a segment"),
                now.failed_count,
                now.waiting,
                now.waiting_bytes / (1024 * 1024),
            ),
        )),
        Some(now) if !now.failing && was_failing => Some((
            "archive_recovered",
            format!(
                "archiving works again: {} archived, {} segments waiting",
                now.last_archived_wal.as_deref().unwrap_or("a segment"),
                now.waiting
            ),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(failing: bool) -> ArchiveHealth {
        ArchiveHealth {
            failing,
            ..Default::default()
        }
    }

    #[test]
    fn failing_and_recovering_are_said_once() {
        let (ok, bad) = (health(false), health(true));
        assert_eq!(change(None, Some(&bad)).unwrap().0, "archive_failing");
        assert_eq!(change(Some(&ok), Some(&bad)).unwrap().0, "archive_failing");
        assert_eq!(change(Some(&bad), Some(&bad)), None);
        assert_eq!(
            change(Some(&bad), Some(&ok)).unwrap().0,
            "archive_recovered"
        );
        assert_eq!(change(Some(&ok), Some(&ok)), None);
        assert_eq!(change(None, Some(&ok)), None);
        // No longer a primary: nothing to say about its archiving.
        assert_eq!(change(Some(&bad), None), None);
    }
}
