//! Takes the base backup the leader assigned to this member, on a task of
//! its own: the HA loop hands it what each round read (the assignment, this
//! member's role, where the primary is) and never waits for it.
//!
//! The backup runs against this member's own PostgreSQL (a streaming
//! standby, or the primary when no standby can) into the `[backup]`
//! repository, incremental on the latest complete backup of the same
//! database system when one is asked for and there is one. It is complete
//! only once the WAL up to its end is in the continuous archive
//! ([`archive::PrimaryArchive`]). Its end is recorded in the store
//! ([`record`]): `backup/last` and the assignment's removal in one
//! transaction guarded by the assignment, so a backup the leader gave up
//! is never recorded as the cluster's. Then, still under the assignment
//! (no other backup starts beside them), the logical dumps the
//! configuration names ([`dumps`]). The leader decides; this only carries
//! out (DESIGN.md rule 8).

mod archive;
mod dumps;
mod primary;
mod record;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::local::Activity;
use backup::backup::{BackupOptions, BaseBackup, Progress};
use backup::manifest::{self, Manifest};
use backup::Repository;
use pg::Endpoint;
use store::cluster::{BackupAssignment, BackupKind, ClusterKeys};
use store::{Store, Versioned};
use tokio::sync::watch;

use primary::PrimaryLink;

use crate::events::EventLog;
use crate::member::MemberEvent;
use crate::postgres::RealPostgres;

/// What this member's PostgreSQL is, as the last round saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serving {
    Primary,
    Standby,
}

impl Serving {
    fn describe(self) -> &'static str {
        match self {
            Serving::Primary => "the primary",
            Serving::Standby => "a standby",
        }
    }
}

/// What a round read that the taker acts on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TakerView {
    pub assignment: Option<Versioned<BackupAssignment>>,
    /// `None` while PostgreSQL does not answer.
    pub serving: Option<Serving>,
    /// The leader's PostgreSQL, where a standby's backup needs its WAL
    /// archived from.
    pub primary: Option<Endpoint>,
}

/// The running backup's progress, for this member's `/health` (ctl's bar).
pub type ProgressSlot = Arc<Mutex<Option<Activity>>>;

/// Everything a backup needs.
pub struct Taker {
    pub member: String,
    pub store: Arc<dyn Store>,
    pub keys: ClusterKeys,
    pub repo: Arc<dyn Repository>,
    pub pg: Arc<RealPostgres>,
    pub events: EventLog,
    pub progress: ProgressSlot,
    /// What `[backup]` keeps: applied after each completed backup.
    pub retention: backup::retention::Policy,
}

/// A backup that completed.
struct Taken {
    manifest: Manifest,
    /// The primary's WAL position once the backup ended.
    primary_lsn: u64,
    /// The primary, to record where its WAL settles after the backup.
    primary: PrimaryLink,
    started_ms: u64,
    seconds: f64,
}

/// How a backup ended, when it did not complete.
enum Stopped {
    /// It failed: why, and what to do.
    Failed(String),
    /// The assignment is gone (the leader ended it): nothing to record
    /// against it.
    Withdrawn,
}

impl Taker {
    /// Runs until the agent stops (the view's sender is dropped).
    pub fn spawn(self, view: watch::Receiver<TakerView>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(view))
    }

    async fn run(self, mut view: watch::Receiver<TakerView>) {
        // The assignment last carried out: not taken twice if its end could
        // not be recorded.
        let mut carried_out: Option<i64> = None;
        loop {
            let (assignment, serving) = loop {
                {
                    let seen = view.borrow_and_update();
                    if let (Some(assignment), Some(serving)) = (&seen.assignment, seen.serving) {
                        if assignment.value.member == self.member
                            && Some(assignment.mod_revision) != carried_out
                        {
                            break (assignment.clone(), serving);
                        }
                    }
                }
                if view.changed().await.is_err() {
                    return;
                }
            };
            carried_out = Some(assignment.mod_revision);
            let kind = assignment.value.kind;
            self.event(
                "backup_started",
                format!(
                    "{} backup started on {} ({}), into {}",
                    kind_name(kind),
                    self.member,
                    serving.describe(),
                    self.repo.describe()
                ),
            );
            let outcome = self.watched(&assignment, serving, &mut view).await;
            *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = None;
            match outcome {
                Ok(taken) => self.done(&assignment, taken).await,
                Err(Stopped::Failed(reason)) => self.failed(Some(&assignment), kind, reason).await,
                Err(Stopped::Withdrawn) => {
                    let reason = "the leader ended the assignment (it took this member for \
                        gone); the backup was stopped and is not in the repository: the next \
                        requested or scheduled one runs afresh";
                    self.failed(None, kind, reason.to_string()).await
                }
            }
        }
    }

    /// Takes the backup, stopping it when the assignment goes away or this
    /// member's role changes (dropping it closes its connection, and
    /// PostgreSQL ends the backup; nothing was published).
    async fn watched(
        &self,
        assignment: &Versioned<BackupAssignment>,
        serving: Serving,
        view: &mut watch::Receiver<TakerView>,
    ) -> Result<Taken, Stopped> {
        let job = self.take(&assignment.value, serving, view.clone());
        tokio::pin!(job);
        loop {
            tokio::select! {
                result = &mut job => return result.map_err(Stopped::Failed),
                changed = view.changed() => {
                    if changed.is_err() {
                        return Err(Stopped::Failed("the agent stopped during the backup".into()));
                    }
                    let seen = view.borrow_and_update();
                    let same = seen.assignment.as_ref().map(|a| a.mod_revision)
                        == Some(assignment.mod_revision);
                    if !same {
                        return Err(Stopped::Withdrawn);
                    }
                    // Not answering is no change of role: a failed probe on
                    // a busy host must not end hours of copying; a server
                    // that really stopped fails the backup's own connection.
                    if let Some(now) = seen.serving.filter(|now| *now != serving) {
                        return Err(Stopped::Failed(format!(
                            "this member's PostgreSQL became {} during the backup (was {}); a backup \
                             that spans a change of role is not trustworthy, so it was stopped. The next \
                             requested or scheduled backup runs on the new topology",
                            now.describe(),
                            serving.describe()
                        )));
                    }
                }
            }
        }
    }

    async fn take(
        &self,
        assignment: &BackupAssignment,
        serving: Serving,
        view: watch::Receiver<TakerView>,
    ) -> Result<Taken, String> {
        let started_ms = api::time::now_ms();
        let began = Instant::now();
        let spec = self.pg.instance().spec();
        let client = pg::connect(&spec.endpoint, &spec.superuser)
            .await
            .map_err(|e| format!("cannot connect to this member's PostgreSQL: {e}"))?;
        let system_id = system_identifier(&client).await?;
        let parent = match assignment.kind {
            BackupKind::Full => None,
            BackupKind::Incremental => self.latest_backup(system_id).await?,
        };
        if assignment.kind == BackupKind::Incremental && parent.is_none() {
            tracing::info!(
                "{}: no complete backup of this database system in {}: taking a full one",
                self.member,
                self.repo.describe()
            );
        }
        // Where the WAL is written: this server, or the leader's.
        let link = match serving {
            Serving::Primary => {
                primary::PrimaryLink::here(spec.endpoint.clone(), spec.superuser.clone())
            }
            Serving::Standby => primary::PrimaryLink::leader(view, spec.superuser.clone()),
        };
        let archive = archive::PrimaryArchive::new(
            self.repo.clone(),
            backup::wal::WalArchive::new(self.repo.clone(), system_id),
            &link,
        );
        let progress = |step: Progress| self.progress(step);
        let manifest = BaseBackup {
            client: &client,
            data_dir: &spec.data_dir,
            repo: self.repo.as_ref(),
            archive: &archive,
            parent: parent.as_ref(),
            options: BackupOptions {
                // The archiver pushes a segment within seconds and a
                // standby's last one is asked for after 2 s: a segment
                // missing this long is not coming (its primary died with it
                // unarchived), and the next backup should not wait behind it.
                archive_timeout: Duration::from_secs(120),
                label: Some(format!(
                    "pgwarden {} backup on {}",
                    kind_name(assignment.kind),
                    self.member
                )),
                ..BackupOptions::default()
            },
            progress: &progress,
        }
        .run()
        .await
        .map_err(|e| e.to_string())?;
        let primary_lsn = link
            .position()
            .await
            .unwrap_or(manifest.stop.lsn.0)
            .max(manifest.stop.lsn.0);
        Ok(Taken {
            manifest,
            primary_lsn,
            primary: link,
            started_ms,
            seconds: began.elapsed().as_secs_f64(),
        })
    }

    /// The newest complete backup of the database system `system_id`.
    async fn latest_backup(&self, system_id: u64) -> Result<Option<Manifest>, String> {
        let repo = self.repo.as_ref();
        let mut ids = manifest::list(repo).await.map_err(|e| {
            format!("cannot list the backups in the repository to find the parent of an incremental one: {e}")
        })?;
        ids.sort();
        let wanted = system_id.to_string();
        for id in ids.iter().rev() {
            match manifest::read(repo, id).await {
                Ok(m) if m.system_identifier == wanted => return Ok(Some(m)),
                Ok(_) => {}
                Err(e) => tracing::warn!("{}: skipping backup {id} as a parent: {e}", self.member),
            }
        }
        Ok(None)
    }

    fn progress(&self, step: Progress) {
        let mut slot = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        let activity = slot.get_or_insert_with(|| Activity {
            what: "backup".into(),
            done_bytes: 0,
            total_bytes: None,
        });
        match step {
            Progress::Listed { id, bytes, .. } => {
                activity.what = format!("backup {id}");
                activity.total_bytes = Some(bytes);
            }
            Progress::Copied { bytes } => activity.done_bytes = bytes,
            Progress::Stopped => {
                activity.what = format!("{}: waiting for its WAL in the archive", activity.what);
            }
        }
    }

    fn event(&self, kind: &'static str, details: String) {
        self.events.send(vec![MemberEvent { kind, details }]);
    }
}

async fn system_identifier(client: &tokio_postgres::Client) -> Result<u64, String> {
    let row = client
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
        .map_err(|e| format!("cannot read the database system identifier: {e}"))?;
    let text: String = row.get(0);
    text.parse()
        .map_err(|_| format!("PostgreSQL gave {text:?} as its system identifier"))
}

pub fn kind_name(kind: BackupKind) -> &'static str {
    match kind {
        BackupKind::Full => "full",
        BackupKind::Incremental => "incremental",
    }
}
