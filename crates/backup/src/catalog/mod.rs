//! What a repository holds for one database cluster: its complete backups
//! (those with a manifest), the directories of backups that never completed,
//! the archived WAL by timeline, and the recovery window of each timeline —
//! the points a restore can reach (docs/backup.md, "Listing backups").
//!
//! [`list`] is what `pgwarden backup list` prints and the API serves;
//! [`Snapshot`] is the raw material retention and verify work from.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, TryStreamExt};
use pg::Lsn;
use serde::{Deserialize, Serialize};

use crate::manifest::{self, BackupKind, Manifest, ManifestError, Position, BACKUPS};
use crate::repo::{Entry, RepoError, RepoPath, Repository};
use crate::wal::{object, WalKind, WalName};

pub mod timeline;
pub mod window;

pub use timeline::{Path, Switch};
pub use window::{Gap, Point, Range, Run, Segments, Span};

/// Objects read at once when listing (manifests, history files).
const READ_AHEAD: usize = 8;
/// PostgreSQL's default, for a cluster with neither backups nor segments.
const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(
        "the repository {repo} holds no backup and no WAL of any cluster; check [backup] \
         repository (is the share mounted, the bucket and prefix right?)"
    )]
    Empty { repo: String },
    #[error(
        "the repository {repo} holds the WAL or backups of several clusters (system \
         identifiers {}); name one with --system-identifier",
        .found.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    )]
    Several { repo: String, found: Vec<u64> },
}

/// A repository's content for one cluster, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub repository: String,
    /// As text, as in manifests: JSON readers lose 64-bit integers.
    pub system_identifier: String,
    pub wal_segment_size: u64,
    /// Complete backups, oldest first.
    pub backups: Vec<BackupEntry>,
    /// Directories under `backups/` without a manifest: a backup that was
    /// interrupted (retention removes it) or is still running. Of any
    /// cluster: their objects do not say which.
    pub incomplete: Vec<Incomplete>,
    /// Archived timelines, newest first, each with its recovery window.
    pub timelines: Vec<TimelineWindow>,
    /// What could not be read or does not fit (a damaged manifest or
    /// history file, a timeline without its history file).
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupEntry {
    pub id: String,
    pub kind: BackupKind,
    pub parent: Option<String>,
    pub label: String,
    pub start: Position,
    pub stop: Position,
    /// Uncompressed bytes of the data directory it restores.
    pub bytes: u64,
    /// Bytes of its own objects in the repository (chunks and manifest).
    pub stored_bytes: u64,
    /// The earlier backups whose chunks it reads (an incremental's chain).
    pub references: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incomplete {
    pub id: String,
    pub objects: u64,
    pub stored_bytes: u64,
}

/// One timeline: where it branched, how far its archive goes, and which
/// points on it (or on its ancestors, before it branched) can be restored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineWindow {
    pub timeline: u32,
    /// Its ancestors and where each ended (its history file).
    pub history: Vec<Switch>,
    /// The end of the last archived segment on its path.
    #[serde(with = "lsn_option")]
    pub archive_end: Option<Lsn>,
    /// Every point in these ranges can be restored to (following this
    /// timeline); the earliest is the oldest usable backup's end.
    pub reachable: Vec<Range>,
    /// Points after the oldest backup's end that cannot be.
    pub unreachable: Vec<Gap>,
}

impl TimelineWindow {
    pub fn earliest(&self) -> Option<&Point> {
        self.reachable.first().map(|r| &r.from)
    }

    pub fn latest(&self) -> Option<&Point> {
        self.reachable.last().map(|r| &r.to)
    }
}

impl Catalog {
    /// The newest timeline's window: where a restore to "latest" goes.
    pub fn newest(&self) -> Option<&TimelineWindow> {
        self.timelines.first()
    }
}

/// Lists the backups and the recovery windows of cluster `system_identifier`.
pub async fn list(repo: &dyn Repository, system_identifier: u64) -> Result<Catalog, CatalogError> {
    Ok(Snapshot::read(repo, system_identifier).await?.catalog())
}

/// The system identifiers of the clusters with WAL or backups in `repo`.
pub async fn system_identifiers(repo: &dyn Repository) -> Result<Vec<u64>, CatalogError> {
    let mut found = BTreeSet::new();
    for entry in repo.list(&RepoPath::new("wal")?).await? {
        let mut parts = entry.path.as_str().split('/').skip(1);
        if let Some(id) = parts.next().and_then(|id| id.parse::<u64>().ok()) {
            found.insert(id);
        }
    }
    let ids = manifest::list(repo).await?;
    let manifests: Vec<Result<Manifest, ManifestError>> = futures::stream::iter(ids)
        .map(|id| async move { manifest::read(repo, &id).await })
        .buffered(READ_AHEAD)
        .collect()
        .await;
    for manifest in manifests.into_iter().flatten() {
        if let Ok(id) = manifest.system_identifier.parse::<u64>() {
            found.insert(id);
        }
    }
    Ok(found.into_iter().collect())
}

/// The one cluster in `repo` (an error when there is none or several).
pub async fn only_system_identifier(repo: &dyn Repository) -> Result<u64, CatalogError> {
    match system_identifiers(repo).await?.as_slice() {
        [] => Err(CatalogError::Empty {
            repo: repo.describe(),
        }),
        [one] => Ok(*one),
        several => Err(CatalogError::Several {
            repo: repo.describe(),
            found: several.to_vec(),
        }),
    }
}

/// An archived WAL file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalObject {
    pub name: WalName,
    pub path: RepoPath,
    pub size: u64,
}

/// Everything read from the repository for one cluster.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub repository: String,
    pub system_identifier: u64,
    /// This cluster's complete backups, oldest first.
    pub manifests: Vec<Manifest>,
    /// Every object under `backups/<id>/`, by id (every cluster's).
    pub backup_objects: BTreeMap<String, Vec<Entry>>,
    /// Backups (of any cluster) whose manifest cannot be read, and why.
    pub unreadable: BTreeMap<String, String>,
    /// Every file under `wal/<id>/` that is a WAL file.
    pub wal: Vec<WalObject>,
    pub histories: BTreeMap<u32, Vec<Switch>>,
    pub segments: Segments,
    pub problems: Vec<String>,
}

impl Snapshot {
    pub async fn read(
        repo: &dyn Repository,
        system_identifier: u64,
    ) -> Result<Snapshot, RepoError> {
        let mut backup_objects: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        let prefix = format!("{BACKUPS}/");
        for entry in repo.list(&RepoPath::new(BACKUPS)?).await? {
            let rest = entry.path.as_str().strip_prefix(&prefix).unwrap_or("");
            if let Some((id, _)) = rest.split_once('/') {
                backup_objects
                    .entry(id.to_string())
                    .or_default()
                    .push(entry);
            }
        }
        let ids = manifest::list(repo).await?;
        let read: Vec<(String, Result<Manifest, ManifestError>)> = futures::stream::iter(ids)
            .map(|id| async move {
                let manifest = manifest::read(repo, &id).await;
                (id, manifest)
            })
            .buffered(READ_AHEAD)
            .collect()
            .await;
        let mut manifests = Vec::new();
        let mut unreadable = BTreeMap::new();
        let mut problems = Vec::new();
        let ours = system_identifier.to_string();
        for (id, manifest) in read {
            match manifest {
                Ok(m) if m.system_identifier == ours => manifests.push(m),
                Ok(_) => {}
                Err(ManifestError::Repo(e)) => return Err(e),
                Err(e) => {
                    problems.push(e.to_string());
                    unreadable.insert(id, e.to_string());
                }
            }
        }

        let dir = RepoPath::new(format!("wal/{system_identifier}"))?;
        let mut wal = Vec::new();
        for entry in repo.list(&dir).await? {
            let file = entry.path.as_str().rsplit('/').next().unwrap_or("");
            let Some(name) = file
                .strip_suffix(".zst")
                .and_then(|n| WalName::parse(n).ok())
            else {
                continue;
            };
            wal.push(WalObject {
                name,
                path: entry.path,
                size: entry.size,
            });
        }
        // Owned, not borrowed: a stream over references makes the whole
        // read's future lose Send (a higher-ranked lifetime), which the
        // API's handlers and the agent's tasks need.
        let history_files: Vec<WalObject> = wal
            .iter()
            .filter(|w| w.name.kind() == WalKind::History)
            .cloned()
            .collect();
        let read: Vec<(u32, Result<Vec<Switch>, String>)> = futures::stream::iter(history_files)
            .map(|w| async move {
                let parsed = match repo.get(&w.path).await {
                    Ok(bytes) => object::decode(&bytes).and_then(|(_, data)| {
                        timeline::parse_history(&String::from_utf8_lossy(&data))
                    }),
                    Err(e) => return Err(e),
                };
                Ok((w.name.timeline(), parsed))
            })
            .buffered(READ_AHEAD)
            .try_collect()
            .await?;
        let mut histories = BTreeMap::new();
        for (tli, parsed) in read {
            match parsed {
                Ok(history) => {
                    histories.insert(tli, history);
                }
                Err(problem) => problems.push(format!(
                    "the history file of timeline {tli} is damaged ({problem}); recovery \
                     cannot follow timeline {tli}: run `pgwarden backup verify`"
                )),
            }
        }

        let segment_size = match manifests.last() {
            Some(m) => m.wal_segment_size,
            None => segment_size_of(repo, &wal).await?,
        };
        let mut segments = Segments {
            segment_size,
            present: BTreeSet::new(),
        };
        for w in &wal {
            if w.name.kind() == WalKind::Segment {
                segments
                    .present
                    .insert((w.name.timeline(), segment_number(&w.name, segment_size)));
            }
        }
        let mut snapshot = Snapshot {
            repository: repo.describe(),
            system_identifier,
            manifests,
            backup_objects,
            unreadable,
            wal,
            histories,
            segments,
            problems,
        };
        for tli in snapshot.timelines() {
            if tli > 1 && !snapshot.histories.contains_key(&tli) {
                snapshot.problems.push(format!(
                    "timeline {tli} has no history file ({:08X}.history) in the archive; \
                     recovery cannot follow it from its parent: copy it from a server's \
                     pg_wal into the archive (`pgwarden wal push`)",
                    tli
                ));
            }
        }
        Ok(snapshot)
    }

    /// Every timeline something is archived or backed up on, oldest first.
    pub fn timelines(&self) -> Vec<u32> {
        let mut tlis: BTreeSet<u32> = self.wal.iter().map(|w| w.name.timeline()).collect();
        for m in &self.manifests {
            tlis.insert(m.start.timeline);
            tlis.insert(m.stop.timeline);
        }
        tlis.into_iter().collect()
    }

    /// The path recovery follows to `timeline`.
    pub fn path(&self, timeline: u32) -> Path {
        Path::new(
            timeline,
            self.histories.get(&timeline).map_or(&[][..], Vec::as_slice),
        )
    }

    /// The WAL positions of the backups.
    pub fn spans(&self) -> Vec<Span> {
        self.manifests
            .iter()
            .map(|m| Span {
                id: m.id.clone(),
                start: m.start.clone(),
                stop: m.stop.clone(),
            })
            .collect()
    }

    /// The segment number of an archived file.
    pub fn segment_number(&self, name: &WalName) -> u64 {
        segment_number(name, self.segments.segment_size)
    }

    /// The directories under `backups/` without a manifest.
    pub fn incomplete(&self) -> Vec<Incomplete> {
        self.backup_objects
            .iter()
            .filter(|(id, objects)| {
                !self.unreadable.contains_key(*id)
                    && !objects
                        .iter()
                        .any(|e| manifest::manifest_path(id).is_ok_and(|p| p == e.path))
            })
            .map(|(id, objects)| Incomplete {
                id: id.clone(),
                objects: objects.len() as u64,
                stored_bytes: objects.iter().map(|e| e.size).sum(),
            })
            .collect()
    }

    /// The windows of every timeline, newest first, with `segments` as
    /// the archived ones (verify passes the undamaged ones) and `spans` as
    /// the backups (verify leaves out the damaged ones).
    pub fn windows(&self, segments: &Segments, spans: &[Span]) -> Vec<TimelineWindow> {
        self.timelines()
            .into_iter()
            .rev()
            .map(|tli| {
                let path = self.path(tli);
                let window = window::window(&path, segments, spans);
                let end = segments.end(&path);
                TimelineWindow {
                    timeline: tli,
                    history: self.histories.get(&tli).cloned().unwrap_or_default(),
                    archive_end: (end > 0).then(|| Lsn(end * segments.segment_size)),
                    reachable: window.reachable,
                    unreachable: window.unreachable,
                }
            })
            .collect()
    }

    pub fn catalog(&self) -> Catalog {
        let backups = self
            .manifests
            .iter()
            .map(|m| BackupEntry {
                id: m.id.clone(),
                kind: m.kind,
                parent: m.parent.clone(),
                label: m.label.clone(),
                start: m.start.clone(),
                stop: m.stop.clone(),
                bytes: m.totals.bytes,
                stored_bytes: self
                    .backup_objects
                    .get(&m.id)
                    .map_or(0, |objects| objects.iter().map(|e| e.size).sum()),
                references: m
                    .referenced_backups()
                    .into_iter()
                    .filter(|id| *id != m.id)
                    .collect(),
            })
            .collect();
        Catalog {
            repository: self.repository.clone(),
            system_identifier: self.system_identifier.to_string(),
            wal_segment_size: self.segments.segment_size,
            backups,
            incomplete: self.incomplete(),
            timelines: self.windows(&self.segments, &self.spans()),
            problems: self.problems.clone(),
        }
    }
}

/// A segment-named file's number: its log and segment parts, as
/// PostgreSQL splits it.
pub fn segment_number(name: &WalName, segment_size: u64) -> u64 {
    let text = name.as_str();
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap_or(0);
    if name.kind() == WalKind::History {
        return 0;
    }
    hex(&text[8..16]) * (0x1_0000_0000 / segment_size) + hex(&text[16..24])
}

/// The segment size of a cluster without backups: the size one archived
/// segment's header records.
async fn segment_size_of(repo: &dyn Repository, wal: &[WalObject]) -> Result<u64, RepoError> {
    let Some(segment) = wal.iter().rev().find(|w| w.name.kind() == WalKind::Segment) else {
        return Ok(DEFAULT_SEGMENT_SIZE);
    };
    let bytes = repo.get(&segment.path).await?;
    Ok(object::header(&bytes)
        .map(|h| h.fingerprint.size)
        .ok()
        .filter(|size| size.is_power_of_two())
        .unwrap_or(DEFAULT_SEGMENT_SIZE))
}

mod lsn_option {
    use pg::Lsn;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(lsn: &Option<Lsn>, s: S) -> Result<S::Ok, S::Error> {
        match lsn {
            Some(lsn) => s.collect_str(lsn),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Lsn>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| text.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod send {
    /// The API and the agent run these on their multi-threaded runtimes.
    #[allow(dead_code)]
    fn reading_a_repository_can_move_between_threads(
        repo: &dyn crate::Repository,
        policy: &crate::retention::Policy,
    ) {
        fn send<T: Send>(_: T) {}
        send(super::list(repo, 1));
        send(crate::retention::expire(repo, 1, policy));
    }
}
