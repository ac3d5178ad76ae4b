//! The continuous archive as a base backup waits on it: a segment counts
//! once `pgwarden wal push` stored it. A backup from a standby ends inside
//! the segment the primary is writing, which an idle primary would not
//! archive for a long time: after a short wait the primary is asked to end
//! that segment (once), so the backup completes in seconds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backup::repo::RepoError;
use backup::wal::{WalArchive, WalName};
use backup::Repository;

use super::primary::PrimaryLink;

/// How long a missing segment may simply be on its way (the archiver
/// pushing it) before the primary is asked to switch.
const SWITCH_AFTER: Duration = Duration::from_secs(2);

pub struct PrimaryArchive<'a> {
    repo: Arc<dyn Repository>,
    wal: WalArchive,
    primary: &'a PrimaryLink,
    /// When each segment was first found missing.
    missing_since: Mutex<HashMap<String, Instant>>,
    switched: Mutex<HashSet<String>>,
}

impl<'a> PrimaryArchive<'a> {
    pub fn new(repo: Arc<dyn Repository>, wal: WalArchive, primary: &'a PrimaryLink) -> Self {
        PrimaryArchive {
            repo,
            wal,
            primary,
            missing_since: Mutex::new(HashMap::new()),
            switched: Mutex::new(HashSet::new()),
        }
    }

    /// Asks the primary to end `name` if it still writes into it and has not
    /// been asked already.
    async fn end_segment_if_current(&self, name: &str) {
        let waited = {
            let mut since = self.missing_since.lock().unwrap_or_else(|e| e.into_inner());
            since
                .entry(name.to_string())
                .or_insert_with(Instant::now)
                .elapsed()
        };
        if waited < SWITCH_AFTER
            || self
                .switched
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(name)
        {
            return;
        }
        if self.primary.current_segment().await.as_deref() != Some(name) {
            return;
        }
        self.switched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        match self.primary.switch_segment().await {
            Ok(()) => tracing::info!(
                "base backup: asked the primary ({}) to end WAL segment {name} so that it is archived",
                self.primary.describe()
            ),
            Err(e) => tracing::warn!("base backup: {e}; waiting for {name} to be archived anyway"),
        }
    }
}

#[async_trait]
impl backup::backup::WalArchive for PrimaryArchive<'_> {
    async fn has_segment(&self, name: &str) -> Result<bool, RepoError> {
        let parsed = WalName::parse(name).map_err(|_| RepoError::BadPath(name.to_string()))?;
        if self.repo.size(&self.wal.path_of(&parsed)).await?.is_some() {
            return Ok(true);
        }
        self.end_segment_if_current(name).await;
        Ok(false)
    }

    fn describe(&self) -> String {
        format!("{} in {}", self.wal.dir(), self.repo.describe())
    }
}
