//! What a backup asks of the primary: to end the WAL segment a backup
//! needs archived, and where its WAL stands once the backup is over.

use std::time::{Duration, Instant};

use pg::{Endpoint, Lsn, Role};
use tokio::sync::watch;

use super::TakerView;

/// How long the primary's WAL position must stay put to count as settled.
/// An idle primary still writes after a backup: the background writer logs
/// a running-transactions record up to 15 s after the segment switch,
/// later still when it hibernates (10 s). Recording the position before
/// that would make the next backup look due although nothing changed.
const SETTLED_FOR: Duration = Duration::from_secs(26);
/// A primary under writes never settles: take its position by then.
const SETTLE_AT_MOST: Duration = Duration::from_secs(60);

/// The primary's PostgreSQL, reached as the superuser.
pub struct PrimaryLink {
    primary: Primary,
    superuser: Role,
}

enum Primary {
    /// The backup runs on the primary itself.
    Here(Endpoint),
    /// The backup runs on a standby: the leader's, as the last round saw
    /// it (a failover during the backup moves it).
    Leader(watch::Receiver<TakerView>),
}

impl PrimaryLink {
    pub fn here(endpoint: Endpoint, superuser: Role) -> PrimaryLink {
        PrimaryLink {
            primary: Primary::Here(endpoint),
            superuser,
        }
    }

    pub fn leader(view: watch::Receiver<TakerView>, superuser: Role) -> PrimaryLink {
        PrimaryLink {
            primary: Primary::Leader(view),
            superuser,
        }
    }

    fn endpoint(&self) -> Option<Endpoint> {
        match &self.primary {
            Primary::Here(endpoint) => Some(endpoint.clone()),
            Primary::Leader(view) => view.borrow().primary.clone(),
        }
    }

    pub fn describe(&self) -> String {
        self.endpoint()
            .map_or_else(|| "no primary".to_string(), |e| e.to_string())
    }

    /// One text value from the primary; `None` if it cannot answer or is
    /// not a primary (any more).
    async fn primary_text(&self, sql: &str) -> Option<String> {
        let endpoint = self.endpoint()?;
        let client = pg::connect(&endpoint, &self.superuser).await.ok()?;
        let row = client
            .query_one(
                &format!("SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE ({sql})::text END"),
                &[],
            )
            .await
            .ok()?;
        row.get(0)
    }

    /// The segment file the primary writes into now.
    pub async fn current_segment(&self) -> Option<String> {
        self.primary_text("pg_walfile_name(pg_current_wal_lsn())")
            .await
    }

    /// Ends the primary's current segment, so that it is archived now
    /// rather than when it fills (a backup from a standby ends inside it).
    pub async fn switch_segment(&self) -> Result<(), String> {
        match self.primary_text("pg_switch_wal()").await {
            Some(_) => Ok(()),
            None => Err(format!(
                "cannot ask the primary ({}) to switch its WAL segment",
                self.describe()
            )),
        }
    }

    pub async fn position(&self) -> Option<u64> {
        let text = self.primary_text("pg_current_wal_lsn()").await?;
        text.parse::<Lsn>().ok().map(|lsn| lsn.0)
    }

    /// The primary's WAL position once it stopped moving (see
    /// [`SETTLED_FOR`]), or as it was after [`SETTLE_AT_MOST`] under
    /// writes; `None` if it cannot be read.
    pub async fn settled_position(&self) -> Option<u64> {
        let began = Instant::now();
        let mut last = self.position().await?;
        let mut since = Instant::now();
        while since.elapsed() < SETTLED_FOR && began.elapsed() < SETTLE_AT_MOST {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some(now) = self.position().await else {
                return Some(last);
            };
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
        Some(last)
    }
}
