//! The local PostgreSQL as the agent drives it. A trait, so the
//! deterministic simulation can put a simulated server in its place.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
pub use pg::ConfigReport;
use pg::{ArchiverReport, Endpoint, Instance, PgError, Probe, RewindOutcome, Settings};
use store::cluster::SlotStatus;
use tokio::sync::Mutex;

use crate::bootstrap::FromBackup;
use crate::standby_from_backup::{Declined, StandbyFromBackup};

/// A member's PostgreSQL as seen from another: its name and address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    pub endpoint: Endpoint,
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.endpoint)
    }
}

/// Everything the agent does to its PostgreSQL.
#[async_trait]
pub trait LocalPostgres: Send + Sync {
    /// What the server looks like now, in the decision core's terms.
    async fn observe(&self) -> ha::Local;
    /// Where a cleanly stopped primary's WAL ends, its shutdown checkpoint,
    /// and its timeline; an error if it did not shut down cleanly.
    async fn shutdown_checkpoint(&self) -> Result<(u64, u32), PgError>;
    /// A standby's replay delay as of the last observation, in ms.
    fn lag_ms(&self) -> Option<u64> {
        None
    }
    /// How far a clone under way has got: (done, total) bytes.
    fn clone_progress(&self) -> Option<(u64, u64)> {
        None
    }
    /// What the server said of its configuration files at the last
    /// observation.
    fn config_report(&self) -> ConfigReport {
        ConfigReport::default()
    }
    /// How a primary's WAL archiving went at the last observation; `None`
    /// on a standby, a stopped server, or without archiving.
    fn archiver_report(&self) -> Option<ArchiverReport> {
        None
    }
    /// Writes the cluster-wide parameters of the dynamic configuration and
    /// has a running server reload them.
    async fn apply_cluster_parameters(
        &self,
        _parameters: &BTreeMap<String, String>,
    ) -> Result<(), PgError> {
        Ok(())
    }
    /// initdb, start as primary, create the replication role.
    async fn initdb(&self) -> Result<(), PgError>;
    /// How the last successful [`LocalPostgres::initdb`] made the cluster,
    /// for its event.
    fn initdb_note(&self) -> String {
        "ran initdb: a new cluster".to_string()
    }
    async fn start_primary(&self) -> Result<(), PgError>;
    async fn start_replica(&self, upstream: Option<&Upstream>) -> Result<(), PgError>;
    async fn stop(&self, mode: ha::StopMode) -> Result<(), PgError>;
    async fn promote(&self) -> Result<(), PgError>;
    async fn clone_data_from(&self, upstream: &Upstream) -> Result<(), PgError>;
    async fn rewind(&self, upstream: &Upstream) -> Result<RewindOutcome, PgError>;
    /// Moves the data directory aside and clones afresh.
    async fn reclone(&self, upstream: &Upstream) -> Result<(), PgError>;
    /// How the last successful clone or re-clone was made, for its event
    /// (`cloned from db1 by pg_basebackup`).
    fn clone_method(&self) -> String {
        "by pg_basebackup".to_string()
    }
    /// Streams from `upstream` (none: replay what is there and wait).
    async fn follow(&self, upstream: Option<&Upstream>) -> Result<(), PgError>;
    async fn apply_synchronous(
        &self,
        names: &[String],
        count: u32,
        quorum: bool,
    ) -> Result<(), PgError>;
    /// Creates the slots in `keep` that are missing and drops those in
    /// `drop` (never another slot).
    async fn keep_slots(&self, keep: &[String], drop: &[String]) -> Result<(), PgError>;
    /// The physical slots as of the last [`LocalPostgres::keep_slots`]
    /// (the primary's), each with the member it is kept for (else its
    /// name) and the WAL it holds.
    fn slots_report(&self) -> Vec<SlotStatus> {
        Vec::new()
    }
    /// The data directory, for what an operator is told to do with it.
    fn data_dir(&self) -> Option<String> {
        None
    }
}

/// The real thing: a data directory driven through the pg crate.
pub struct RealPostgres {
    instance: Instance,
    member: String,
    /// The settings last written. Kept in memory: after an agent restart the
    /// first round rewrites them, and the synchronous set is re-published
    /// from scratch (shrinking it first is always safe).
    settings: Mutex<Applied>,
    lag_ms: std::sync::Mutex<Option<u64>>,
    config_report: std::sync::Mutex<ConfigReport>,
    /// When the report was last read; `None`: read it at the next
    /// observation (the files were written since).
    config_read_at: std::sync::Mutex<Option<std::time::Instant>>,
    progress: std::sync::Arc<std::sync::Mutex<Option<(u64, u64)>>>,
    archiver_report: std::sync::Mutex<Option<ArchiverReport>>,
    slots_report: std::sync::Mutex<Vec<SlotStatus>>,
    /// `[bootstrap]`: a new cluster comes from this backup, not initdb.
    from_backup: Option<FromBackup>,
    initdb_note: std::sync::Mutex<Option<String>>,
    /// `[backup] replica_from`: how a standby's data directory is made,
    /// each tried in turn until one works.
    replica_sources: Vec<ReplicaSource>,
    clone_method: std::sync::Mutex<String>,
}

/// One way to build a standby's data directory.
pub enum ReplicaSource {
    /// Restore the newest usable backup, then replay the archive.
    Backup(StandbyFromBackup),
    /// pg_basebackup from the upstream.
    Primary,
}

impl ReplicaSource {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ReplicaSource::Backup(_) => "a backup",
            ReplicaSource::Primary => "pg_basebackup",
        }
    }
}

struct Applied {
    settings: Settings,
    upstream: Option<String>,
    sync_names: Vec<String>,
    /// `Some(k)`: applied as `ANY k`.
    sync_any: Option<u32>,
}

impl RealPostgres {
    pub fn new(instance: Instance, member: impl Into<String>, settings: Settings) -> RealPostgres {
        RealPostgres {
            instance,
            member: member.into(),
            settings: Mutex::new(Applied {
                settings,
                upstream: None,
                sync_names: Vec::new(),
                sync_any: None,
            }),
            lag_ms: std::sync::Mutex::new(None),
            config_report: Default::default(),
            config_read_at: Default::default(),
            progress: Default::default(),
            archiver_report: Default::default(),
            slots_report: Default::default(),
            from_backup: None,
            initdb_note: Default::default(),
            replica_sources: vec![ReplicaSource::Primary],
            clone_method: Default::default(),
        }
    }

    /// Standbys are built by these methods, in this order.
    pub fn replicas_from(mut self, sources: Vec<ReplicaSource>) -> RealPostgres {
        self.replica_sources = sources;
        self
    }

    /// A new cluster is restored from a backup instead of made by initdb.
    pub fn bootstrap_from(mut self, from_backup: FromBackup) -> RealPostgres {
        self.from_backup = Some(from_backup);
        self
    }

    /// Makes commits wait (or acknowledge again): asynchronous mode's
    /// answer to a primary that hears from neither the store nor any
    /// standby ([`ha::commit_hold`]). Survives every later rewrite of the
    /// settings until taken back.
    pub async fn hold_commits(&self, hold: bool) -> Result<(), PgError> {
        self.rewrite(|applied| applied.settings.commits_held = hold)
            .await?;
        self.instance.reload_now().await
    }

    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// Rewrites pgwarden.conf with `change` applied.
    async fn rewrite(&self, change: impl FnOnce(&mut Applied)) -> Result<(), PgError> {
        let mut applied = self.settings.lock().await;
        change(&mut applied);
        self.written();
        self.instance.write_settings(&applied.settings)
    }

    /// The configuration files changed: read the report again soon.
    fn written(&self) {
        *self
            .config_read_at
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Reads what the server says of its configuration after a change, and
    /// every 10 s (a restart clears what waited for it); not every round,
    /// as pg_file_settings parses the files on each call.
    async fn read_config_report(&self) {
        const EVERY: std::time::Duration = std::time::Duration::from_secs(10);
        let due = self
            .config_read_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|at| at.elapsed() >= EVERY);
        if !due {
            return;
        }
        match self.instance.config_report().await {
            Ok(report) => {
                *self.config_report.lock().unwrap_or_else(|e| e.into_inner()) = report;
                *self
                    .config_read_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
            }
            Err(err) => tracing::debug!("could not read the configuration report: {err}"),
        }
    }

    /// A primary's archiving, every round: a failing archive is news the
    /// operator needs at once. The last report stays when it cannot be read.
    async fn read_archiver_report(&self, probe: &Probe) {
        let primary = probe.state().is_some_and(|s| !s.in_recovery);
        let report = if primary {
            match self.instance.archiver_report().await {
                Ok(report) => Some(report).filter(|r| r.enabled),
                Err(err) => {
                    tracing::debug!("could not read pg_stat_archiver: {err}");
                    return;
                }
            }
        } else {
            None
        };
        *self
            .archiver_report
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = report;
    }

    /// Builds the empty data directory for a standby of `upstream` by each
    /// method of `[backup] replica_from` in turn; one that cannot (no usable
    /// backup, a failed restore or pg_basebackup) leaves the directory empty
    /// and the next is tried.
    async fn build_standby(&self, upstream: &Upstream) -> Result<(), PgError> {
        if self.replica_sources.is_empty() {
            return Err(PgError::Refused(
                "no method of [backup] replica_from can build this standby: the backup \
                 repository could not be opened when the agent started (its log says why); \
                 fix that and restart the agent, or add \"primary\" to replica_from"
                    .into(),
            ));
        }
        let mut failed: Vec<String> = Vec::new();
        for (i, source) in self.replica_sources.iter().enumerate() {
            let result = match source {
                ReplicaSource::Backup(from) => {
                    let progress = |done, total| self.set_progress(Some((done, total)));
                    let built = from.build(&self.instance, upstream, &progress).await;
                    self.set_progress(None);
                    built.map_err(|Declined(why)| PgError::Refused(why))
                }
                ReplicaSource::Primary => self
                    .clone_with_progress(upstream)
                    .await
                    .map(|()| "by pg_basebackup".to_string()),
            };
            match result {
                Ok(how) => {
                    let how = if failed.is_empty() {
                        how
                    } else {
                        format!("{how} ({})", failed.join("; "))
                    };
                    *self.clone_method.lock().unwrap_or_else(|e| e.into_inner()) = how;
                    return Ok(());
                }
                // The only method: its error is the action's, logged as such.
                Err(err) if self.replica_sources.len() == 1 => return Err(err),
                Err(err) => {
                    let next = self.replica_sources.get(i + 1).map_or(
                        "no method is left: the next round tries again".to_string(),
                        |n| format!("trying {} next", n.name()),
                    );
                    tracing::warn!(
                        "{}: not building this standby from {}: {err}; {next}",
                        self.member,
                        source.name()
                    );
                    failed.push(format!("not from {}: {err}", source.name()));
                }
            }
        }
        Err(PgError::Refused(format!(
            "no method of [backup] replica_from built this standby: {}",
            failed.join("; ")
        )))
    }

    fn set_progress(&self, value: Option<(u64, u64)>) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = value;
    }

    async fn clone_with_progress(&self, upstream: &Upstream) -> Result<(), PgError> {
        let progress = self.progress.clone();
        let set = move |value| *progress.lock().unwrap_or_else(|e| e.into_inner()) = value;
        set(Some((0, 0)));
        let result = self
            .instance
            .clone_from(&upstream.endpoint, |p| {
                set(Some((p.done_kb * 1024, p.total_kb * 1024)))
            })
            .await;
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = None;
        result
    }

    fn point_at(&self, applied: &mut Applied, upstream: Option<&Upstream>) {
        applied.upstream = upstream.map(|u| u.name.clone());
        applied.settings.primary_conninfo =
            upstream.map(|u| self.instance.primary_conninfo(&u.endpoint, &self.member));
        applied.settings.primary_slot_name = upstream.map(|_| slot_name(&self.member));
    }
}

/// A member's replication slot: names are already `[a-z0-9_]`.
pub fn slot_name(member: &str) -> String {
    member.replace('-', "_")
}

#[async_trait]
impl LocalPostgres for RealPostgres {
    async fn observe(&self) -> ha::Local {
        if !self.instance.is_initialized() {
            return ha::Local::Empty;
        }
        let probe = self.instance.probe().await;
        *self.lag_ms.lock().unwrap_or_else(|e| e.into_inner()) = probe
            .state()
            .and_then(|s| s.replay_delay)
            .map(|d| d.as_millis() as u64);
        if probe.is_up() {
            self.read_config_report().await;
        }
        self.read_archiver_report(&probe).await;
        let state = match probe {
            Probe::Up(state) => state,
            Probe::Down {
                postmaster_alive, ..
            } => {
                let control = match self.instance.controldata().await {
                    Ok(control) => control,
                    // Unreadable pg_control: treat like a server that is
                    // not ready; the log line says why.
                    Err(err) => {
                        tracing::warn!("cannot read pg_control: {err}");
                        return ha::Local::Starting { was_primary: false };
                    }
                };
                // A fresh clone's pg_control says "in production" (copied
                // from the primary) until it has run; standby.signal says
                // what it was started as. Taking it for a former primary
                // had the agent run pg_rewind on a clone whose postmaster
                // was still coming up.
                let was_primary =
                    control.state.was_primary() && !self.instance.is_standby_configured();
                return if postmaster_alive {
                    ha::Local::Starting { was_primary }
                } else {
                    ha::Local::Stopped(ha::Stopped {
                        system_id: control.system_identifier,
                        timeline: control.timeline,
                        was_primary,
                    })
                };
            }
        };
        let applied = self.settings.lock().await;
        ha::Local::Running(ha::Running {
            system_id: state.system_identifier,
            timeline: state.timeline,
            primary: !state.in_recovery,
            lsn: state.last_lsn().0,
            upstream: applied.upstream.clone(),
            streaming: state.wal_receiver.as_ref().is_some_and(|r| {
                r.status == "streaming"
                    && r.quiet_for.is_none_or(|quiet| {
                        quiet.as_millis() < u128::from(pg::RECEIVER_QUIET_LIMIT_MS)
                    })
            }),
            receiver_quiet_ms: state
                .wal_receiver
                .as_ref()
                .and_then(|r| r.quiet_for)
                .map(|quiet| quiet.as_millis() as u64),
            sync_applied: applied.sync_names.clone(),
            sync_applied_any: applied.sync_any,
            replicas: state
                .replication
                .iter()
                .map(|row| ha::Replica {
                    name: row.application_name.clone(),
                    streaming: row.state == "streaming",
                    synchronous: row.sync_state == "sync" || row.sync_state == "quorum",
                    flush_lsn: row.flush_lsn.map_or(0, |l| l.0),
                })
                .collect(),
        })
    }

    async fn shutdown_checkpoint(&self) -> Result<(u64, u32), PgError> {
        let control = self.instance.controldata().await?;
        if control.state != pg::ClusterState::ShutDown {
            return Err(PgError::Refused(format!(
                "pg_control says {:?}, not a clean primary shutdown: the standby cannot be sure to have all its WAL",
                control.state
            )));
        }
        Ok((control.checkpoint_lsn.0, control.timeline))
    }

    fn lag_ms(&self) -> Option<u64> {
        *self.lag_ms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn clone_progress(&self) -> Option<(u64, u64)> {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn config_report(&self) -> ConfigReport {
        self.config_report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn archiver_report(&self) -> Option<ArchiverReport> {
        self.archiver_report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn apply_cluster_parameters(
        &self,
        parameters: &BTreeMap<String, String>,
    ) -> Result<(), PgError> {
        let mut applied = self.settings.lock().await;
        if &applied.settings.cluster_parameters == parameters {
            return Ok(());
        }
        if self.instance.is_initialized() {
            let mut settings = applied.settings.clone();
            settings.cluster_parameters = parameters.clone();
            self.written();
            self.instance.write_settings(&settings)?;
            if self.instance.postmaster_pid().is_some() {
                self.instance.reload().await?;
            }
        }
        // Not initialised yet: initdb or the clone writes them.
        applied.settings.cluster_parameters = parameters.clone();
        Ok(())
    }

    async fn initdb(&self) -> Result<(), PgError> {
        let applied = self.settings.lock().await;
        let note = match &self.from_backup {
            None => {
                self.instance.bootstrap(&applied.settings).await?;
                None
            }
            Some(from_backup) => Some(
                from_backup
                    .bootstrap(&self.instance, &applied.settings)
                    .await?,
            ),
        };
        *self.initdb_note.lock().unwrap_or_else(|e| e.into_inner()) = note;
        Ok(())
    }

    fn initdb_note(&self) -> String {
        self.initdb_note
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "ran initdb: a new cluster".to_string())
    }

    async fn start_primary(&self) -> Result<(), PgError> {
        if self.instance.is_standby_configured() {
            return Err(PgError::Refused(
                "will not start as primary: standby.signal is present, so this member last ran as a standby; \
                 it becomes primary only by promotion"
                    .into(),
            ));
        }
        self.rewrite(|applied| self.point_at(applied, None)).await?;
        self.instance.start().await
    }

    async fn start_replica(&self, upstream: Option<&Upstream>) -> Result<(), PgError> {
        {
            let mut applied = self.settings.lock().await;
            self.point_at(&mut applied, upstream);
            // A standby waits for nobody.
            applied.sync_names.clear();
            applied.sync_any = None;
            applied.settings.synchronous_standby_names.clear();
            self.instance.write_settings(&applied.settings)?;
        }
        self.instance.set_standby(true)?;
        self.instance.start_in_background().await
    }

    async fn stop(&self, mode: ha::StopMode) -> Result<(), PgError> {
        let mode = match mode {
            ha::StopMode::Fast => pg::StopMode::Fast,
            ha::StopMode::Immediate => pg::StopMode::Immediate,
        };
        self.instance.stop(mode).await
    }

    async fn promote(&self) -> Result<(), PgError> {
        self.instance.promote().await?;
        // A primary streams from nobody.
        self.rewrite(|applied| self.point_at(applied, None)).await
    }

    async fn clone_data_from(&self, upstream: &Upstream) -> Result<(), PgError> {
        self.build_standby(upstream).await
    }

    async fn rewind(&self, upstream: &Upstream) -> Result<RewindOutcome, PgError> {
        self.instance.rewind(&upstream.endpoint).await
    }

    async fn reclone(&self, upstream: &Upstream) -> Result<(), PgError> {
        self.instance.move_aside()?;
        self.build_standby(upstream).await
    }

    fn clone_method(&self) -> String {
        self.clone_method
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn follow(&self, upstream: Option<&Upstream>) -> Result<(), PgError> {
        self.rewrite(|applied| self.point_at(applied, upstream))
            .await?;
        self.instance.reload().await
    }

    async fn apply_synchronous(
        &self,
        names: &[String],
        count: u32,
        quorum: bool,
    ) -> Result<(), PgError> {
        self.rewrite(|applied| {
            applied.sync_names = names.to_vec();
            applied.sync_any = (quorum && !names.is_empty()).then_some(count);
            applied.settings.synchronous_standby_names =
                synchronous_standby_names(names, count, quorum);
        })
        .await?;
        self.instance.reload().await
    }

    async fn keep_slots(&self, keep: &[String], drop: &[String]) -> Result<(), PgError> {
        let existing = self.instance.slots().await?;

        for name in drop {
            let slot = slot_name(name);
            if existing.contains(&slot) {
                self.instance.drop_slot(&slot).await?;
            }
        }
        for name in keep {
            let slot = slot_name(name);
            if !existing.contains(&slot) {
                self.instance.create_slot(&slot).await?;
            }
        }
        let members: BTreeMap<String, &String> = keep.iter().map(|m| (slot_name(m), m)).collect();
        let report = self
            .instance
            .slot_usage()
            .await?
            .into_iter()
            .map(|slot| SlotStatus {
                member: members
                    .get(&slot.name)
                    .map_or_else(|| slot.name.clone(), |m| m.to_string()),
                active: slot.active,
                retained_bytes: slot.retained_bytes,
            })
            .collect();
        *self.slots_report.lock().unwrap_or_else(|e| e.into_inner()) = report;
        Ok(())
    }

    fn slots_report(&self) -> Vec<SlotStatus> {
        self.slots_report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn data_dir(&self) -> Option<String> {
        Some(self.instance.data_dir().display().to_string())
    }
}

/// `FIRST n ("a", "b")`, with `quorum` `ANY n ("a", "b")`, or empty for
/// none; `*` stays bare.
pub fn synchronous_standby_names(names: &[String], count: u32, quorum: bool) -> String {
    if names.is_empty() || count == 0 {
        return String::new();
    }
    let list: Vec<String> = names
        .iter()
        .map(|n| {
            if n == "*" {
                n.clone()
            } else {
                format!("\"{}\"", n.replace('"', "\"\""))
            }
        })
        .collect();
    let method = if quorum { "ANY" } else { "FIRST" };
    format!("{method} {count} ({})", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_synchronous_standby_names() {
        assert_eq!(synchronous_standby_names(&[], 0, false), "");
        assert_eq!(
            synchronous_standby_names(&["db2".into(), "db3".into()], 2, false),
            "FIRST 2 (\"db2\", \"db3\")"
        );
        assert_eq!(
            synchronous_standby_names(&["*".into()], 1, false),
            "FIRST 1 (*)"
        );
        assert_eq!(
            synchronous_standby_names(&["db2".into(), "db3".into()], 1, true),
            "ANY 1 (\"db2\", \"db3\")"
        );
    }
}
