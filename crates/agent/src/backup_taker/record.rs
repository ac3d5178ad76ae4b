//! How a backup ended, written to the store and the event log. A complete
//! backup becomes `backup/last` and its assignment goes, in one transaction
//! guarded by the assignment as it was handed out: if the leader ended or
//! replaced it meanwhile, nothing is written. A failure is recorded too,
//! with the schedule's clock moved (`checked_ms`), so a failing backup is
//! tried again an interval later, not in a loop.

use std::time::Duration;

use backup::manifest;
use store::cluster::{BackupAssignment, BackupFailure, BackupKind, LastBackup};
use store::{Condition, Expect, StoreError, Versioned, Write};

use super::{kind_name, Taken, Taker};

/// A store that does not answer is tried again this often, this many times:
/// the leader waits for the assignment's end as long as this member lives.
const ATTEMPTS: usize = 30;
const RETRY: Duration = Duration::from_secs(1);

impl Taker {
    pub(super) async fn done(&self, assignment: &Versioned<BackupAssignment>, taken: Taken) {
        let manifest = &taken.manifest;
        let kind = match manifest.kind {
            manifest::BackupKind::Full => BackupKind::Full,
            manifest::BackupKind::Incremental => BackupKind::Incremental,
        };
        let done_ms = api::time::now_ms();
        // The assignment stays until the WAL settled (below): the leader
        // assigns no other backup meanwhile, so a request right after this
        // one compares against the settled position.
        let written = self
            .write(Some(assignment), false, |last| LastBackup {
                id: Some(manifest.id.clone()),
                member: Some(self.member.clone()),
                kind: Some(kind),
                started_ms: taken.started_ms,
                done_ms,
                full_done_ms: match kind {
                    BackupKind::Full => done_ms,
                    BackupKind::Incremental => last.full_done_ms,
                },
                stop_lsn: taken.primary_lsn,
                bytes: manifest.totals.bytes,
                stored_bytes: manifest.totals.stored_bytes,
                ..last
            })
            .await;
        let details = format!(
            "backup {} ({}) done on {}: {} of data, {} written to the repository, in {:.1} s; it ends at WAL {} on timeline {}",
            manifest.id,
            kind_name(kind),
            self.member,
            bytes(manifest.totals.bytes),
            bytes(manifest.totals.stored_bytes),
            taken.seconds,
            manifest.stop.lsn,
            manifest.stop.timeline
        );
        match written {
            Ok(()) => {
                self.event("backup_done", details);
                self.expire(&manifest.system_identifier).await;
                // The dumps run while the primary's WAL settles, before the
                // assignment ends; a failed one does not touch the backup.
                let (settled, ()) =
                    tokio::join!(taken.primary.settled_position(), self.dumps());
                self.settle(assignment, &manifest.id, settled).await;
            }
            Err(problem) => self.event(
                "backup_failed",
                format!(
                    "backup {} is complete in the repository but could not be recorded as the cluster's last \
                     backup ({problem}); it can be restored, and the next backup compares against the one recorded before",
                    manifest.id
                ),
            ),
        }
    }

    /// Moves backup `id`'s recorded WAL position to `settled`, where the
    /// primary's settled: an idle primary still writes a record or two
    /// after a backup, which would make the next scheduled one look due
    /// although nothing changed. Done after the backup is reported, so no
    /// one waits for it; left alone once another backup is recorded. Ends
    /// the assignment.
    async fn settle(
        &self,
        assignment: &Versioned<BackupAssignment>,
        id: &str,
        settled: Option<u64>,
    ) {
        let settled = settled.unwrap_or(0);
        let written = self
            .write(Some(assignment), true, |last| {
                if last.id.as_deref() == Some(id) && settled > last.stop_lsn {
                    LastBackup {
                        stop_lsn: settled,
                        ..last
                    }
                } else {
                    last
                }
            })
            .await;
        if let Err(problem) = written {
            tracing::debug!(
                "{}: could not record where the WAL settled after backup {id}: {problem}",
                self.member
            );
        }
    }

    /// Applies retention after a completed backup, while this member still
    /// holds the assignment (no other backup runs meanwhile).
    async fn expire(&self, system_identifier: &str) {
        let Ok(system_identifier) = system_identifier.parse::<u64>() else {
            return;
        };
        let expired =
            backup::retention::expire(self.repo.as_ref(), system_identifier, &self.retention)
                .await
                .map_err(|e| e.to_string());
        match expired {
            Ok(report) if !report.plan.is_empty() => self.event(
                "backup_expired",
                format!(
                    "retention removed {} backup(s) ({}), {} unfinished backup director(ies) and {} \
                     archived WAL file(s): {} MiB freed",
                    report.plan.expire.len(),
                    report.plan.expire.join(", "),
                    report.plan.incomplete.len(),
                    report.plan.wal.len(),
                    report.plan.bytes >> 20
                ),
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "{}: retention after the backup failed: {e}; `pgwarden backup expire` applies it by hand",
                self.member
            ),
        }
    }

    /// Records a failure; against `assignment` (deleting it) unless it is
    /// already gone.
    pub(super) async fn failed(
        &self,
        assignment: Option<&Versioned<BackupAssignment>>,
        kind: BackupKind,
        reason: String,
    ) {
        let at_ms = api::time::now_ms();
        let failure = BackupFailure {
            member: self.member.clone(),
            kind,
            at_ms,
            reason: reason.clone(),
        };
        let written = self
            .write(assignment, true, |last| LastBackup {
                checked_ms: at_ms,
                failures: last.failures + 1,
                failure: Some(failure.clone()),
                ..last
            })
            .await;
        if let Err(problem) = written {
            tracing::warn!(
                "{}: could not record the failed backup in the store: {problem}",
                self.member
            );
        }
        self.event(
            "backup_failed",
            format!(
                "{} backup on {} failed: {reason}. Nothing incomplete is visible in the repository; \
                 `pgwarden ctl backup run` tries again",
                kind_name(kind),
                self.member
            ),
        );
    }

    /// Writes `backup/last` as `change` makes it from what the store holds
    /// and, with `end`, deletes `assignment`, guarded by both; retried while
    /// the store does not answer. Fails if the assignment changed.
    async fn write(
        &self,
        assignment: Option<&Versioned<BackupAssignment>>,
        end: bool,
        change: impl Fn(LastBackup) -> LastBackup,
    ) -> Result<(), String> {
        let last_key = self.keys.last_backup();
        let assignment_key = self.keys.backup_assignment();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = async {
                let current = last_key.get(self.store.as_ref()).await?;
                let last = change(
                    current
                        .as_ref()
                        .map(|c| c.value.clone())
                        .unwrap_or_default(),
                );
                let mut conditions = vec![Condition {
                    key: last_key.key().to_string(),
                    expect: current
                        .as_ref()
                        .map_or(Expect::Absent, |c| Expect::ModRevision(c.mod_revision)),
                }];
                let mut writes = vec![Write::Put {
                    key: last_key.key().to_string(),
                    value: store::typed::encode(last_key.key(), &last)?,
                    lease: None,
                }];
                if let Some(assignment) = assignment {
                    conditions.push(Condition {
                        key: assignment_key.key().to_string(),
                        expect: Expect::ModRevision(assignment.mod_revision),
                    });
                    if end {
                        writes.push(Write::Delete {
                            key: assignment_key.key().to_string(),
                        });
                    }
                }
                self.store.transaction(&conditions, &writes).await
            }
            .await;
            match result {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => {
                    let still = assignment_key.get(self.store.as_ref()).await;
                    let same = matches!(
                        (&still, assignment),
                        (Ok(Some(now)), Some(then)) if now.mod_revision == then.mod_revision
                    ) || (assignment.is_none());
                    if !same {
                        return Err(
                            "the leader ended the assignment meanwhile (it took this member for gone)"
                                .to_string(),
                        );
                    }
                    // backup/last changed under us: read it again.
                }
                Err(e) if attempt >= ATTEMPTS => return Err(format!("the store: {e}")),
                Err(e) => tracing::debug!("{}: recording the backup: {e}; retrying", self.member),
            }
            if attempt >= ATTEMPTS {
                return Err("backup/last kept changing".to_string());
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// `1.5 GB`, `320 kB`: sizes as people read them.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pg::{Endpoint, Instance, InstanceSpec, RunAs, Settings, Timeouts};
    use store::cluster::ClusterKeys;
    use store::{MemoryStore, Store, SystemClock};

    use super::*;
    use crate::events::EventLog;
    use crate::hooks::Hooks;
    use crate::postgres::RealPostgres;

    fn taker(store: Arc<dyn Store>, keys: &ClusterKeys) -> Taker {
        let role = |name: &str| pg::Role {
            name: name.into(),
            password: "secret".into(),
        };
        let spec = InstanceSpec {
            data_dir: "/nonexistent/data".into(),
            bin_dir: "/nonexistent/bin".into(),
            log_file: "/nonexistent/log".into(),
            endpoint: Endpoint::new("127.0.0.1", 5432),
            superuser: role("postgres"),
            replication: role("replicator"),
            hba_networks: Vec::new(),
            run_as: RunAs::current(),
            timeouts: Timeouts::default(),
        };
        Taker {
            member: "db2".into(),
            store: store.clone(),
            keys: keys.clone(),
            repo: Arc::new(backup::repo::PosixRepository::new("/nonexistent/repo")),
            retention: (&config::Retention::default()).into(),
            pg: Arc::new(RealPostgres::new(
                Instance::new(spec),
                "db2",
                Settings::new("db2", "127.0.0.1", 5432),
            )),
            events: EventLog::spawn(
                store,
                keys.clone(),
                "db2".into(),
                Hooks::new("main", config::Hooks::default()),
            ),
            progress: Default::default(),
        }
    }

    async fn assign(store: &dyn Store, keys: &ClusterKeys) -> Versioned<BackupAssignment> {
        let assignment = BackupAssignment {
            member: "db2".into(),
            kind: BackupKind::Full,
            assigned_ms: 1,
            term: 7,
        };
        let key = keys.backup_assignment();
        key.put(store, &assignment, None).await.unwrap();
        key.get(store).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_failure_ends_the_assignment_moves_the_schedule_and_is_counted() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::new(SystemClock::new())));
        let keys = ClusterKeys::new("/pgwarden", "main").unwrap();
        let done = LastBackup {
            id: Some("20261203-220000F".into()),
            done_ms: 5,
            stop_lsn: 100,
            ..LastBackup::default()
        };
        keys.last_backup()
            .put(store.as_ref(), &done, None)
            .await
            .unwrap();
        let assignment = assign(store.as_ref(), &keys).await;
        let taker = taker(store.clone(), &keys);
        taker
            .failed(Some(&assignment), BackupKind::Full, "it broke".into())
            .await;
        let last = keys
            .last_backup()
            .get(store.as_ref())
            .await
            .unwrap()
            .unwrap()
            .value;
        assert_eq!(last.id, done.id, "the last good backup stays");
        assert_eq!(last.stop_lsn, 100);
        assert_eq!(last.failures, 1);
        assert!(
            last.checked_ms > 0,
            "the schedule looks again an interval later"
        );
        let failure = last.failure.unwrap();
        assert_eq!(
            (failure.member.as_str(), failure.reason.as_str()),
            ("db2", "it broke")
        );
        assert!(keys
            .backup_assignment()
            .get(store.as_ref())
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn an_assignment_the_leader_replaced_is_not_ended_by_the_old_backup() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::new(SystemClock::new())));
        let keys = ClusterKeys::new("/pgwarden", "main").unwrap();
        let old = assign(store.as_ref(), &keys).await;
        keys.backup_assignment()
            .delete(store.as_ref())
            .await
            .unwrap();
        let new = assign(store.as_ref(), &keys).await;
        let taker = taker(store.clone(), &keys);
        let written = taker
            .write(Some(&old), true, |last| LastBackup {
                id: Some("stale".into()),
                ..last
            })
            .await;
        assert!(written.unwrap_err().contains("ended the assignment"));
        let still = keys.backup_assignment().get(store.as_ref()).await.unwrap();
        assert_eq!(still.map(|a| a.mod_revision), Some(new.mod_revision));
        assert!(keys
            .last_backup()
            .get(store.as_ref())
            .await
            .unwrap()
            .is_none());
    }

    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_500_000), "1.5 MB");
        assert_eq!(bytes(12_000_000_000), "12.0 GB");
    }
}
