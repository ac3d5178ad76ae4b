//! `pgwarden backup verify`: every chunk of every backup and every archived
//! WAL file re-read and checked, and the WAL checked for continuity from
//! each backup's start to the end of the archive on every timeline
//! (segments consecutive, timelines switching where their history files
//! say). A missing or damaged piece is reported with what it breaks —
//! which backups can no longer be restored, which points can no longer be
//! reached — and what to do.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::catalog::window::{on_path, Reach};
use crate::catalog::{Gap, Snapshot, TimelineWindow};
use crate::repo::{RepoError, Repository};
use crate::wal::WalKind;

pub mod chunks;
mod report;
pub mod segments;

pub use chunks::DamagedChunk;
pub use segments::DamagedWal;

#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Only this backup (its chunks, wherever they live, and the WAL from
    /// its start); `None`: everything.
    pub backup: Option<String>,
    /// Objects read at once.
    pub parallelism: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            backup: None,
            parallelism: 4,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("backup {id} is not a complete backup of cluster {system_identifier} in {repo}; `pgwarden backup list` shows them")]
    NoSuchBackup {
        id: String,
        system_identifier: u64,
        repo: String,
    },
}

/// What verify found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub repository: String,
    pub system_identifier: String,
    pub backups: u64,
    pub chunks: u64,
    pub wal_files: u64,
    pub bytes_read: u64,
    pub damaged_chunks: Vec<DamagedChunk>,
    pub damaged_wal: Vec<DamagedWal>,
    /// Backups that can no longer be restored, and why.
    pub broken_backups: Vec<BrokenBackup>,
    /// Points after the oldest backup's end that no backup reaches.
    pub unreachable: Vec<Unreachable>,
    /// Backups that restore, but not as far as the archive goes.
    pub cut_short: Vec<CutShort>,
    /// What else does not fit: a damaged manifest or history file, a
    /// timeline without its history file or with segments before its
    /// switch point.
    pub problems: Vec<String>,
    /// The recovery windows as they are now, damage left out.
    pub timelines: Vec<TimelineWindow>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BrokenBackup {
    pub id: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unreachable {
    pub timeline: u32,
    #[serde(flatten)]
    pub gap: Gap,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CutShort {
    pub id: String,
    pub timeline: u32,
    /// It reaches no further than this.
    #[serde(with = "crate::manifest::lsn_text")]
    pub until: pg::Lsn,
}

impl VerifyReport {
    /// Whether every backup restores and every point after the oldest
    /// backup's end can be reached.
    pub fn is_ok(&self) -> bool {
        self.damaged_chunks.is_empty()
            && self.damaged_wal.is_empty()
            && self.broken_backups.is_empty()
            && self.unreachable.is_empty()
            && self.problems.is_empty()
    }
}

/// Verifies cluster `system_identifier`'s backups and archived WAL.
pub async fn verify(
    repo: &dyn Repository,
    system_identifier: u64,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let snapshot = Snapshot::read(repo, system_identifier).await?;
    let size = snapshot.segments.segment_size;
    let chosen: Vec<&crate::manifest::Manifest> = match &options.backup {
        None => snapshot.manifests.iter().collect(),
        Some(id) => vec![snapshot
            .manifests
            .iter()
            .find(|m| m.id == *id)
            .ok_or_else(|| VerifyError::NoSuchBackup {
                id: id.clone(),
                system_identifier,
                repo: repo.describe(),
            })?],
    };
    let from_segment = match &options.backup {
        Some(_) => chosen[0].start.lsn.0 / size,
        None => 0,
    };

    let checked_chunks = chunks::check(repo, &chosen, options.parallelism).await?;
    let wal_files: Vec<_> = snapshot
        .wal
        .iter()
        .filter(|w| {
            w.name.kind() == WalKind::History || snapshot.segment_number(&w.name) >= from_segment
        })
        .collect();
    let wal_bytes: u64 = wal_files.iter().map(|w| w.size).sum();
    let checked_wal = segments::check(repo, wal_files, options.parallelism).await?;

    let mut report = VerifyReport {
        repository: snapshot.repository.clone(),
        system_identifier: system_identifier.to_string(),
        backups: chosen.len() as u64,
        chunks: checked_chunks.chunks,
        wal_files: checked_wal.files,
        bytes_read: checked_chunks.bytes + wal_bytes,
        problems: snapshot.problems.clone(),
        ..VerifyReport::default()
    };
    for (id, why) in &snapshot.unreadable {
        report.broken_backups.push(BrokenBackup {
            id: id.clone(),
            reason: why.clone(),
        });
    }

    // Damaged backups and segments count as absent from here on.
    let mut damaged_backups: BTreeSet<String> = BTreeSet::new();
    for chunk in &checked_chunks.damaged {
        if damaged_backups.insert(chunk.backup.clone()) {
            report.broken_backups.push(BrokenBackup {
                id: chunk.backup.clone(),
                reason: format!(
                    "the chunk of {} at offset {} of {} is damaged: {}",
                    chunk.file, chunk.offset, chunk.object, chunk.problem
                ),
            });
        }
    }
    let mut segments = snapshot.segments.clone();
    for damaged in &checked_wal.damaged {
        let name = crate::wal::WalName::parse(&damaged.name).expect("listed by name");
        if name.kind() == WalKind::Segment {
            segments
                .present
                .remove(&(name.timeline(), snapshot.segment_number(&name)));
        }
    }
    let spans: Vec<_> = snapshot
        .spans()
        .into_iter()
        .filter(|s| chosen.iter().any(|m| m.id == s.id) && !damaged_backups.contains(&s.id))
        .collect();

    for span in &spans {
        let path = snapshot.path(span.stop.timeline);
        if let Reach::Broken(segment) = segments.reach(&path, span) {
            report.broken_backups.push(BrokenBackup {
                id: span.id.clone(),
                reason: format!(
                    "its WAL from {} to {} is not whole: {} is {}",
                    span.start.lsn,
                    span.stop.lsn,
                    segments.name(&path, segment),
                    what_happened(&checked_wal.damaged, &segments.name(&path, segment)),
                ),
            });
        }
    }
    for tli in snapshot.timelines() {
        let path = snapshot.path(tli);
        if let Some((tli_first, _)) = path.segments_of(tli, size) {
            let early: Vec<&crate::catalog::WalObject> = snapshot
                .wal
                .iter()
                .filter(|w| w.name.kind() == WalKind::Segment && w.name.timeline() == tli)
                .filter(|w| snapshot.segment_number(&w.name) < tli_first)
                .collect();
            if let Some(first) = early.first() {
                report.problems.push(format!(
                    "timeline {tli} has {} (and {} more) before its switch point {} in \
                     {tli:08X}.history: its WAL and its history do not belong together (two \
                     clusters with one system identifier?)",
                    first.name,
                    early.len() - 1,
                    path.begin()
                ));
            }
        }
    }

    report.timelines = snapshot.windows(&segments, &spans);
    for window in &report.timelines {
        let path = snapshot.path(window.timeline);
        for gap in &window.unreachable {
            // A gap wholly before this timeline began is its ancestor's,
            // reported there.
            if gap.to.lsn <= path.begin() {
                continue;
            }
            report.unreachable.push(Unreachable {
                timeline: window.timeline,
                gap: gap.clone(),
            });
            for span in spans.iter().filter(|s| on_path(&path, s)) {
                if let Reach::Until(until) = segments.reach(&path, span) {
                    if until * size == gap.from.lsn.0 {
                        report.cut_short.push(CutShort {
                            id: span.id.clone(),
                            timeline: window.timeline,
                            until: gap.from.lsn,
                        });
                    }
                }
            }
        }
    }
    report.damaged_chunks = checked_chunks.damaged;
    report.damaged_wal = checked_wal.damaged;
    Ok(report)
}

fn what_happened(damaged: &[DamagedWal], name: &str) -> String {
    match damaged.iter().find(|d| d.name == name) {
        Some(d) => format!("damaged ({})", d.problem),
        None => "missing from the archive".to_string(),
    }
}

#[cfg(test)]
mod tests;
