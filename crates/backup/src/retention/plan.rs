//! What retention removes, decided from a listing alone (no I/O): the
//! backups neither rule keeps and no kept backup needs, the directories of
//! backups that never completed, and the archived WAL older than what the
//! kept backups need on their timelines.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use crate::catalog::window::on_path;
use crate::catalog::Snapshot;
use crate::manifest::{BackupKind, Manifest};
use crate::repo::RepoPath;
use crate::wal::WalKind;

/// A directory without a manifest this much younger than now may be a
/// backup still running (of this cluster or another one sharing the
/// repository): it is left alone.
pub const INCOMPLETE_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Which backups to keep (pgwarden.toml's `retention_full` and
/// `retention_window`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The newest this many full backups, and the incremental backups
    /// taken since the oldest of them.
    pub full: u32,
    /// Every backup needed to restore to any point this far back.
    pub window: Option<Duration>,
}

impl From<&config::Retention> for Policy {
    fn from(r: &config::Retention) -> Policy {
        Policy {
            full: r.full,
            window: r.window,
        }
    }
}

/// What to remove, and why the rest stays.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Kept backups, oldest first, each with why.
    pub keep: Vec<(String, String)>,
    /// Complete backups to remove, oldest first.
    pub expire: Vec<String>,
    /// Directories of backups that never completed, to remove.
    pub incomplete: Vec<String>,
    /// Archived WAL files to remove.
    pub wal: Vec<RepoPath>,
    /// Bytes all that frees.
    pub bytes: u64,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.expire.is_empty() && self.incomplete.is_empty() && self.wal.is_empty()
    }
}

/// Plans retention for the cluster `snapshot` was read for, at `now`.
pub fn plan(snapshot: &Snapshot, policy: &Policy, now: jiff::Timestamp) -> Plan {
    let backups = &snapshot.manifests;
    let Some(newest) = backups.last() else {
        // Nothing restores without a backup: no rule can say what WAL is
        // no longer needed.
        return Plan::default();
    };
    let mut keep: BTreeMap<String, String> = BTreeMap::new();
    keep.insert(newest.id.clone(), "the newest backup".into());

    let fulls: Vec<&Manifest> = backups
        .iter()
        .rev()
        .filter(|m| m.kind == BackupKind::Full)
        .take(policy.full as usize)
        .collect();
    if let Some(oldest_kept_full) = fulls.last() {
        for m in backups.iter().filter(|m| m.id >= oldest_kept_full.id) {
            let why = match m.kind {
                BackupKind::Full => format!("one of the newest {} full backups", policy.full),
                BackupKind::Incremental => format!(
                    "taken after {}, the oldest of the newest {} full backups",
                    oldest_kept_full.id, policy.full
                ),
            };
            keep.entry(m.id.clone()).or_insert(why);
        }
    }

    if let Some(window) = policy.window {
        let span = jiff::SignedDuration::try_from(window).unwrap_or(jiff::SignedDuration::MAX);
        let cutoff = now.checked_sub(span).unwrap_or(jiff::Timestamp::MIN);
        let window_text = config::format_duration(window);
        let ended = |m: &Manifest| {
            m.stop
                .time
                .parse::<jiff::Timestamp>()
                .unwrap_or(jiff::Timestamp::MAX)
        };
        for m in backups.iter().filter(|m| ended(m) >= cutoff) {
            keep.entry(m.id.clone())
                .or_insert_with(|| format!("ended within the last {window_text}"));
        }
        if let Some(m) = backups.iter().rev().find(|m| ended(m) < cutoff) {
            keep.entry(m.id.clone()).or_insert_with(|| {
                format!("the window of {window_text} starts after its end: restoring to its start needs it")
            });
        }
    }

    // A kept backup's parent and every backup holding chunks it reads stay.
    let by_id: BTreeMap<&str, &Manifest> = backups.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut todo: Vec<String> = keep.keys().cloned().collect();
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    while let Some(id) = todo.pop() {
        let Some(m) = by_id.get(id.as_str()) else {
            continue;
        };
        for other in m.parent.iter().cloned().chain(m.referenced_backups()) {
            referenced.insert(other.clone());
            if other != id && by_id.contains_key(other.as_str()) && !keep.contains_key(&other) {
                keep.insert(
                    other.clone(),
                    format!("{id} reads its chunks or is its parent"),
                );
                todo.push(other);
            }
        }
    }

    let mut plan = Plan {
        expire: backups
            .iter()
            .filter(|m| !keep.contains_key(&m.id))
            .map(|m| m.id.clone())
            .collect(),
        ..Plan::default()
    };
    let size_of = |id: &str| {
        snapshot
            .backup_objects
            .get(id)
            .map_or(0, |objects| objects.iter().map(|e| e.size).sum::<u64>())
    };
    plan.bytes += plan.expire.iter().map(|id| size_of(id)).sum::<u64>();

    let grace = jiff::SignedDuration::try_from(INCOMPLETE_GRACE).expect("a day fits");
    let old_enough = now.checked_sub(grace).unwrap_or(jiff::Timestamp::MIN);
    for incomplete in snapshot.incomplete() {
        let started = id_time(&incomplete.id);
        if incomplete.id < newest.id
            && started.is_some_and(|t| t < old_enough)
            && !referenced.contains(&incomplete.id)
        {
            plan.bytes += incomplete.stored_bytes;
            plan.incomplete.push(incomplete.id);
        }
    }

    let kept: Vec<&Manifest> = backups
        .iter()
        .filter(|m| keep.contains_key(&m.id))
        .collect();
    let needed = needed_from(snapshot, &kept);
    let size = snapshot.segments.segment_size;
    let oldest_start = kept
        .iter()
        .map(|m| m.start.lsn.0 / size)
        .min()
        .expect("the newest backup is kept");
    for w in &snapshot.wal {
        if w.name.kind() == WalKind::History {
            continue;
        }
        let segment = snapshot.segment_number(&w.name);
        let from = needed
            .get(&w.name.timeline())
            .copied()
            .unwrap_or(oldest_start);
        if segment < from {
            plan.bytes += w.size;
            plan.wal.push(w.path.clone());
        }
    }
    plan.keep = backups
        .iter()
        .filter_map(|m| keep.get(&m.id).map(|why| (m.id.clone(), why.clone())))
        .collect();
    plan
}

/// For each timeline, the first segment of it a kept backup needs: on the
/// path of every timeline a kept backup is on, from the backup's start.
fn needed_from(snapshot: &Snapshot, kept: &[&Manifest]) -> BTreeMap<u32, u64> {
    let size = snapshot.segments.segment_size;
    let mut needed: BTreeMap<u32, u64> = BTreeMap::new();
    let paths: Vec<_> = snapshot
        .timelines()
        .into_iter()
        .map(|t| snapshot.path(t))
        .collect();
    for m in kept {
        let span = crate::catalog::Span {
            id: m.id.clone(),
            start: m.start.clone(),
            stop: m.stop.clone(),
        };
        let first = m.start.lsn.0 / size;
        for path in paths.iter().filter(|p| on_path(p, &span)) {
            for tli in snapshot.timelines() {
                let Some((begins, ends)) = path.segments_of(tli, size) else {
                    continue;
                };
                let from = first.max(begins);
                if ends.is_none_or(|ends| from < ends) {
                    let entry = needed.entry(tli).or_insert(from);
                    *entry = (*entry).min(from);
                }
            }
        }
    }
    needed
}

/// The start time an id records (`20250102-030405F`).
fn id_time(id: &str) -> Option<jiff::Timestamp> {
    let d = id.get(..15)?;
    if !d.bytes().enumerate().all(|(i, b)| {
        if i == 8 {
            b == b'-'
        } else {
            b.is_ascii_digit()
        }
    }) {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &d[..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    );
    rfc3339.parse().ok()
}

#[cfg(test)]
mod tests;
