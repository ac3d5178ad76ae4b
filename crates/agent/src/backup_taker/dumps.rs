//! The logical dumps taken after a completed base backup (`dump_databases`
//! in the dynamic configuration): `pg_dump` of each named database from
//! this member's own PostgreSQL — usually a streaming standby, so the
//! primary carries no read load — into the same repository, skipped when
//! no transaction ended since the database's newest dump, then only the
//! newest `dump_keep` kept (`backup::dump::run`). Each database's outcome
//! is an event and goes into `backup/dumps` (for the metrics). A dump that
//! fails is said and recorded; the base backup, recorded already, stays
//! good.

use std::num::NonZeroUsize;
use std::time::Instant;

use api::local::Activity;
use backup::dump::{self, DumpOutcome, DumpStatus, DumpTarget};
use store::cluster::{LastDump, LastDumps};
use store::{Expect, StoreError};

use super::record::bytes;
use super::Taker;

/// Attempts to record the outcomes when `backup/dumps` changes meanwhile.
const ATTEMPTS: usize = 5;

impl Taker {
    /// Dumps what the configuration names now; returns once every database
    /// was tried and the outcomes recorded.
    pub(super) async fn dumps(&self) {
        let config = match self.keys.config().get(self.store.as_ref()).await {
            Ok(config) => config.map(|c| c.value).unwrap_or_default(),
            Err(e) => {
                tracing::warn!(
                    "{}: cannot read dump_databases from the store ({e}); no dump after this backup",
                    self.member
                );
                return;
            }
        };
        let databases = config.dump_databases;
        let keep = NonZeroUsize::new(config.dump_keep as usize);
        let spec = self.pg.instance().spec();
        let target = DumpTarget {
            bin_dir: spec.bin_dir.clone(),
            host: spec.endpoint.host.clone(),
            port: spec.endpoint.port,
            user: spec.superuser.name.clone(),
            password: spec.superuser.password.clone(),
            run_as: spec.run_as.clone(),
            chunk_size: DumpTarget::DEFAULT_CHUNK_SIZE,
        };
        let mut outcomes = Vec::new();
        for (n, database) in databases.iter().enumerate() {
            self.show(format!(
                "dump of {database} ({} of {})",
                n + 1,
                databases.len()
            ));
            let began = Instant::now();
            let outcome = dump::run(
                self.repo.as_ref(),
                &target,
                std::slice::from_ref(database),
                false,
                keep,
            )
            .await
            .pop()
            .expect("one outcome per database");
            self.said(&outcome, began.elapsed().as_secs_f64());
            outcomes.push(outcome);
        }
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(e) = self.record_dumps(&databases, &outcomes).await {
            tracing::warn!(
                "{}: could not record the dumps in the store: {e}",
                self.member
            );
        }
    }

    fn show(&self, what: String) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(Activity {
            what,
            done_bytes: 0,
            total_bytes: None,
        });
    }

    fn said(&self, outcome: &DumpOutcome, seconds: f64) {
        let database = &outcome.database;
        let expired = match outcome.expired.as_slice() {
            [] => String::new(),
            ids => format!("; retention removed {}", ids.join(", ")),
        };
        match &outcome.status {
            DumpStatus::Taken(m) => self.event(
                "dump_done",
                format!(
                    "dump {} of {database} done on {} (from its {}): {} dumped, {} written to the \
                     repository, in {seconds:.1} s{expired}",
                    m.id,
                    self.member,
                    m.taken_from,
                    bytes(m.bytes),
                    bytes(m.stored_bytes)
                ),
            ),
            DumpStatus::Skipped {
                newest,
                wal_position,
            } => self.event(
                "dump_skipped",
                format!(
                    "dump of {database} skipped on {}: no transaction ended since dump {newest} \
                     (WAL at {wal_position}){expired}",
                    self.member
                ),
            ),
            DumpStatus::Failed(e) => self.event(
                "dump_failed",
                format!(
                    "dump of {database} on {} failed: {e}. The base backup is not affected; the \
                     next backup tries again, `pgwarden dump run` dumps by hand",
                    self.member
                ),
            ),
        }
    }

    /// Writes each database's outcome into `backup/dumps`, keeping only the
    /// databases the configuration names.
    async fn record_dumps(
        &self,
        databases: &[String],
        outcomes: &[DumpOutcome],
    ) -> Result<(), StoreError> {
        let key = self.keys.last_dumps();
        let now_ms = api::time::now_ms();
        for attempt in 1.. {
            let current = key.get(self.store.as_ref()).await?;
            let mut record = current
                .as_ref()
                .map(|c| c.value.clone())
                .unwrap_or_default();
            record.databases.retain(|name, _| databases.contains(name));
            for outcome in outcomes {
                let last = record
                    .databases
                    .entry(outcome.database.clone())
                    .or_default();
                *last = recorded(last.clone(), &self.member, &outcome.status, now_ms);
            }
            if current.is_none() && record == LastDumps::default() {
                return Ok(());
            }
            let expect = current
                .as_ref()
                .map_or(Expect::Absent, |c| Expect::ModRevision(c.mod_revision));
            match key
                .compare_and_set(self.store.as_ref(), expect, &record, None)
                .await
            {
                Err(StoreError::Conflict { .. }) if attempt < ATTEMPTS => continue,
                result => return result.map(|_| ()),
            }
        }
        unreachable!("the loop returns")
    }
}

/// One database's record after a run.
fn recorded(last: LastDump, member: &str, status: &DumpStatus, now_ms: u64) -> LastDump {
    match status {
        DumpStatus::Taken(m) => LastDump {
            id: Some(m.id.clone()),
            member: Some(member.to_string()),
            done_ms: now_ms,
            failure: None,
            ..last
        },
        DumpStatus::Skipped { .. } => LastDump {
            checked_ms: now_ms,
            failure: None,
            ..last
        },
        DumpStatus::Failed(e) => LastDump {
            failure: Some(format!("on {member}: {e}")),
            failures: last.failures + 1,
            ..last
        },
    }
}

#[cfg(test)]
mod tests {
    use backup::dump::DumpError;

    use super::*;

    #[test]
    fn a_failure_is_counted_and_kept_until_a_run_succeeds() {
        let failed = DumpStatus::Failed(DumpError::IdTaken {
            database: "app".into(),
            id: "x".into(),
        });
        let first = recorded(LastDump::default(), "db2", &failed, 5);
        assert_eq!(first.failures, 1);
        assert!(first.failure.as_deref().unwrap().starts_with("on db2: "));
        assert_eq!((first.id.as_deref(), first.done_ms), (None, 0));
        let skipped = DumpStatus::Skipped {
            newest: "20261204-010000".into(),
            wal_position: pg::Lsn(1),
        };
        let after = recorded(first, "db3", &skipped, 9);
        assert_eq!(
            (after.failures, after.failure, after.checked_ms),
            (1, None, 9)
        );
    }
}
