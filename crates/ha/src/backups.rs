//! Who takes the cluster's base backups, and when. The leader decides:
//! one backup at a time in the whole cluster, on a healthy streaming
//! standby when there is one (the primary carries no extra read load), the
//! primary only when none can; a scheduled backup is skipped when the WAL
//! has not moved since the last one (the 2000 seed's "only when the data
//! changed"). The chosen member's agent takes it in the background and
//! records how it ended (`agent::backup_taker`; members with a `[backup]`
//! repository publish `can_backup`); a member that went away with one
//! assigned fails it.

use crate::observation::{Cluster, MemberView, Millis, Running};
use crate::plan::Action;

/// Full, or only what changed since the previous backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupKind {
    Full,
    Incremental,
}

/// What the store holds about backups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backups {
    /// `ctl backup run`, not yet assigned.
    pub request: Option<BackupRequest>,
    /// The member taking one now.
    pub assignment: Option<BackupAssignment>,
    /// The last backup that completed, or the last scheduled one skipped.
    pub last: Option<LastBackup>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupRequest {
    /// `None`: the schedule's choice (full when one is due, else
    /// incremental).
    pub kind: Option<BackupKind>,
    /// Take it even if the WAL has not moved.
    pub force: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupAssignment {
    pub member: String,
    pub kind: BackupKind,
    /// Unix ms.
    pub assigned_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastBackup {
    /// When the last backup completed (unix ms).
    pub done_ms: u64,
    /// When the last full one completed (unix ms).
    pub full_done_ms: u64,
    /// The primary's WAL position once it ended (past the segment switch
    /// that ends a backup), so an idle primary compares equal.
    pub stop_lsn: u64,
    /// When the schedule last looked without a backup completing: skipped
    /// because nothing changed, or failed (unix ms).
    pub checked_ms: u64,
}

/// The backup schedule (dynamic configuration).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Between scheduled backups; 0: none scheduled (only `ctl backup run`).
    pub interval_ms: Millis,
    /// A scheduled backup is full when the last full one is older than
    /// this, else incremental; 0: always full.
    pub full_interval_ms: Millis,
}

/// What the leader `me`, running as `primary`, does about backups this
/// round, at `wall_ms`: at most one action, and why when it waits.
/// `taker_missing_for`: how long the assigned member has had no running
/// status (on the leader's clock).
pub fn plan(
    me: &str,
    cluster: &Cluster,
    primary: &Running,
    wall_ms: u64,
    taker_missing_for: Millis,
) -> (Option<Action>, Option<String>) {
    let backups = &cluster.backups;
    if let Some(assigned) = &backups.assignment {
        // Its agent ends the backup itself, unless it went away: for a
        // TTL, not a blip of its status, or a second backup could start
        // beside one still running.
        let gone = taker_missing_for >= cluster.settings.ttl_ms;
        return match gone {
            true => (
                Some(Action::EndBackup {
                    outcome: format!(
                        "backup on {} failed: it stopped running before the backup ended",
                        assigned.member
                    ),
                }),
                None,
            ),
            false => (None, None),
        };
    }
    let schedule = &cluster.settings.backup;
    let last = backups.last.as_ref();
    let scheduled = schedule.interval_ms > 0
        && last.is_none_or(|l| {
            wall_ms
                >= l.done_ms
                    .max(l.checked_ms)
                    .saturating_add(schedule.interval_ms)
        });
    let (kind, force) = match &backups.request {
        Some(request) => (request.kind, request.force),
        None if scheduled => (None, false),
        None => return (None, None),
    };
    if !force && last.is_some_and(|l| l.stop_lsn >= primary.lsn) {
        return (
            Some(Action::SkipBackup {
                reason: "the WAL has not moved since the last backup".to_string(),
            }),
            None,
        );
    }
    let kind = kind.unwrap_or(match last {
        Some(l)
            if schedule.full_interval_ms > 0
                && wall_ms < l.full_done_ms.saturating_add(schedule.full_interval_ms) =>
        {
            BackupKind::Incremental
        }
        _ => BackupKind::Full,
    });
    match taker(me, cluster) {
        Some(member) => (Some(Action::AssignBackup { member, kind }), None),
        None => (
            None,
            Some("a backup is due but no member has a repository configured".to_string()),
        ),
    }
}

/// The member to take a backup: the most advanced standby streaming from
/// the leader, then the leader itself; only members with a repository.
fn taker(me: &str, cluster: &Cluster) -> Option<String> {
    let streams = |(name, view): &(&String, &MemberView)| {
        *name != me
            && view.can_backup
            && view.running
            && !view.primary
            && view.streaming
            && view.upstream.as_deref() == Some(me)
    };
    let best = cluster
        .members
        .iter()
        .filter(streams)
        .max_by(|(an, a), (bn, b)| a.lsn.cmp(&b.lsn).then(bn.cmp(an)));
    match best {
        Some((name, _)) => Some(name.clone()),
        None => cluster
            .members
            .get(me)
            .filter(|m| m.can_backup)
            .map(|_| me.to_string()),
    }
}
