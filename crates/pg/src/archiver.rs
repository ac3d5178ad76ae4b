//! How a primary's WAL archiving goes, by its own account:
//! `pg_stat_archiver` and the segments waiting in `archive_status`.

use tokio_postgres::Client;

use crate::error::PgError;

/// See [`archiver_report`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiverReport {
    /// `archive_mode` is not `off`: there is an archiver to report on.
    pub enabled: bool,
    pub archived_count: u64,
    pub last_archived_wal: Option<String>,
    /// Unix ms.
    pub last_archived_ms: Option<u64>,
    pub failed_count: u64,
    pub last_failed_wal: Option<String>,
    /// Unix ms.
    pub last_failed_ms: Option<u64>,
    /// Completed segments (and history files) PostgreSQL has not archived
    /// yet: the `.ready` files. They stay in pg_wal until archived.
    pub waiting: u64,
    pub segment_bytes: u64,
}

impl ArchiverReport {
    /// The last attempt failed: a failure newer than the last success.
    pub fn failing(&self) -> bool {
        match (self.last_failed_ms, self.last_archived_ms) {
            (Some(failed), Some(archived)) => failed > archived,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Bytes of WAL waiting to be archived.
    pub fn waiting_bytes(&self) -> u64 {
        self.waiting.saturating_mul(self.segment_bytes)
    }
}

/// One query; `pg_ls_archive_statusdir` needs superuser or `pg_monitor`,
/// which the agent's role has.
pub async fn archiver_report(client: &Client) -> Result<ArchiverReport, PgError> {
    let row = client
        .query_one(
            "SELECT current_setting('archive_mode') <> 'off', \
                    archived_count, last_archived_wal, \
                    (extract(epoch FROM last_archived_time) * 1000)::float8, \
                    failed_count, last_failed_wal, \
                    (extract(epoch FROM last_failed_time) * 1000)::float8, \
                    (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'), \
                    (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') \
             FROM pg_stat_archiver",
            &[],
        )
        .await
        .map_err(|e| PgError::sql("read pg_stat_archiver", e))?;
    let count = |i: usize| row.get::<_, i64>(i).max(0) as u64;
    let ms = |i: usize| {
        row.get::<_, Option<f64>>(i)
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map(|ms| ms as u64)
    };
    Ok(ArchiverReport {
        enabled: row.get(0),
        archived_count: count(1),
        last_archived_wal: row.get(2),
        last_archived_ms: ms(3),
        failed_count: count(4),
        last_failed_wal: row.get(5),
        last_failed_ms: ms(6),
        waiting: count(7),
        segment_bytes: count(8),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_means_the_last_attempt_failed() {
        let report = |archived, failed| ArchiverReport {
            last_archived_ms: archived,
            last_failed_ms: failed,
            ..Default::default()
        };
        assert!(!report(None, None).failing());
        assert!(!report(Some(10), None).failing());
        assert!(report(None, Some(10)).failing());
        assert!(report(Some(10), Some(11)).failing());
        assert!(!report(Some(12), Some(11)).failing());
    }
}
