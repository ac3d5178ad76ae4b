//! Which backup a restore starts from: the newest complete one that ends
//! before the target (by stop time for a time, by stop position for a WAL
//! position), or the one the operator named.

use crate::catalog::window::{on_path, Reach};
use crate::catalog::Snapshot;
use crate::manifest::{self, Manifest};
use crate::repo::Repository;

use super::point::Timeline;
use super::RecoveryTarget;

/// The backup to restore, and a note for the operator when the choice is
/// a guess (a restore point's position is not known before replay).
#[derive(Debug)]
pub struct Choice<'a> {
    pub manifest: &'a Manifest,
    pub note: Option<String>,
}

/// Picks from `backups` (complete ones, any order).
pub fn choose<'a>(
    backups: &'a [Manifest],
    target: &RecoveryTarget,
    timeline: Timeline,
    repo: &str,
) -> Result<Choice<'a>, String> {
    if backups.is_empty() {
        return Err(format!(
            "the repository {repo} has no complete backup to restore from; take one with \
             `pgwarden ctl backup run` (a restore starts from a base backup, then replays the \
             archived WAL)"
        ));
    }
    // A backup on a later timeline than the one asked for cannot be on its
    // history.
    let on_timeline: Vec<&Manifest> = backups
        .iter()
        .filter(|m| match timeline {
            Timeline::Id(id) => m.stop.timeline <= id,
            _ => true,
        })
        .collect();
    let Some(oldest) = on_timeline.iter().min_by(|a, b| stop_order(a, b)) else {
        return Err(format!(
            "every backup in {repo} was taken on a timeline after {timeline}; restore with \
             --timeline latest, or name a later timeline"
        ));
    };
    let newest_where = |fits: &dyn Fn(&Manifest) -> bool| {
        on_timeline
            .iter()
            .copied()
            .filter(|m| fits(m))
            .max_by(|a, b| stop_order(a, b))
    };
    let choice = match target {
        RecoveryTarget::Time(time) => newest_where(&|m| stop_time(m).is_some_and(|s| s <= *time))
            .ok_or_else(|| {
            format!(
                "no backup in {repo} ends before {time}: the earliest point it can restore \
                     to is {} (the end of backup {}). Pick a later time",
                oldest.stop.time, oldest.id
            )
        })?,
        RecoveryTarget::Lsn(lsn) => newest_where(&|m| m.stop.lsn <= *lsn).ok_or_else(|| {
            format!(
                "no backup in {repo} ends before WAL position {lsn}: the earliest position it \
                 can restore to is {} (the end of backup {}, timeline {}). Pick a later one",
                oldest.stop.lsn, oldest.id, oldest.stop.timeline
            )
        })?,
        RecoveryTarget::Name(name) => {
            let newest = newest_where(&|_| true).expect("on_timeline is not empty");
            let note = format!(
                "where restore point `{name}` is in the WAL is known only once recovery meets \
                 it, so this restores the newest backup, {} (ended {}). If the restore point \
                 was made before that, recovery cannot reach it: restore an older backup with \
                 --backup ID (the earliest is {}, ended {})",
                newest.id, newest.stop.time, oldest.id, oldest.stop.time
            );
            return Ok(Choice {
                manifest: newest,
                note: Some(note),
            });
        }
        RecoveryTarget::Latest | RecoveryTarget::Immediate => {
            newest_where(&|_| true).expect("on_timeline is not empty")
        }
    };
    Ok(Choice {
        manifest: choice,
        note: None,
    })
}

/// A backup to restore, and what the operator should hear about the choice.
#[derive(Debug)]
pub struct Picked {
    pub manifest: Manifest,
    /// Unreadable manifests skipped, and why a choice is a guess.
    pub notes: Vec<String>,
}

/// The backup `named`, or the newest in `repo` (shown as `where_`) that can
/// reach `target` on `timeline`.
pub async fn pick(
    repo: &dyn Repository,
    named: Option<&str>,
    target: &RecoveryTarget,
    timeline: Timeline,
    where_: &str,
) -> Result<Picked, String> {
    let ids = manifest::list(repo)
        .await
        .map_err(|e| format!("cannot list the backups in {where_}: {e}"))?;
    if let Some(id) = named {
        if !ids.iter().any(|i| i == id) {
            return Err(format!(
                "there is no complete backup {id} in {where_}; the backups there are: {} \
                 (`pgwarden backup list` shows them with their times)",
                if ids.is_empty() {
                    "none".to_string()
                } else {
                    ids.join(", ")
                }
            ));
        }
        let manifest = manifest::read(repo, id).await.map_err(|e| e.to_string())?;
        return Ok(Picked {
            manifest,
            notes: Vec::new(),
        });
    }
    let mut manifests = Vec::new();
    let mut notes = Vec::new();
    for id in &ids {
        match manifest::read(repo, id).await {
            Ok(m) => manifests.push(m),
            Err(e) => notes.push(format!("skipping backup {id}: {e}")),
        }
    }
    let choice = choose(&manifests, target, timeline, where_)?;
    notes.extend(choice.note);
    Ok(Picked {
        manifest: choice.manifest.clone(),
        notes,
    })
}

/// The backup a new standby starts from: the newest complete backup of
/// `snapshot`'s cluster on the path of `timeline` (its primary's) from
/// which the archive is continuous to its end, so that replay reaches the
/// WAL the primary still streams. The error says why there is none.
pub fn for_standby(snapshot: &Snapshot, timeline: u32) -> Result<&Manifest, String> {
    let repo = &snapshot.repository;
    let cluster = snapshot.system_identifier;
    if snapshot.manifests.is_empty() {
        return Err(format!(
            "the repository {repo} has no complete backup of this cluster (system identifier {cluster})"
        ));
    }
    if timeline > 1 && !snapshot.histories.contains_key(&timeline) {
        return Err(format!(
            "the archive in {repo} has no history file of timeline {timeline}, the primary's, \
             so recovery could not follow it from a backup"
        ));
    }
    let path = snapshot.path(timeline);
    let segments = &snapshot.segments;
    let end = segments.end(&path);
    let switches = unsafe_switches(snapshot, timeline);
    let mut unusable = Vec::new();
    let mut best: Option<&Manifest> = None;
    for (manifest, span) in snapshot.manifests.iter().zip(snapshot.spans()) {
        let id = &manifest.id;
        if !on_path(&path, &span) {
            unusable.push(format!("{id} is not on timeline {timeline}'s history"));
            continue;
        }
        let first = span.start.lsn.0 / segments.segment_size;
        if let Some((_, why)) = switches.iter().find(|(segment, _)| *segment >= first) {
            unusable.push(format!("{id}: {why}"));
            continue;
        }
        match segments.reach(&path, &span) {
            Reach::Until(until) if until >= end => {
                if best.is_none_or(|b| stop_order(b, manifest).is_lt()) {
                    best = Some(manifest);
                }
            }
            Reach::Until(missing) | Reach::Broken(missing) => unusable.push(format!(
                "{id} needs {}, missing from the archive",
                segments.name(&path, missing)
            )),
        }
    }
    best.ok_or_else(|| {
        format!(
            "the repository {repo} has no backup of this cluster a standby can start from: {}",
            unusable.join("; ")
        )
    })
}

/// The segments where the path to `timeline` switches timelines whose new
/// timeline's file is not archived yet while an older one's on the path is:
/// recovery reads the newest file there is, and would replay the older
/// timeline's WAL past the switch (what a lost primary wrote and the new
/// one never had). Once the new timeline's file is archived it is safe.
fn unsafe_switches(snapshot: &Snapshot, timeline: u32) -> Vec<(u64, String)> {
    let segments = &snapshot.segments;
    let path = snapshot.path(timeline);
    let history = snapshot
        .histories
        .get(&timeline)
        .map_or(&[][..], Vec::as_slice);
    let mut found = Vec::new();
    for (i, switch) in history.iter().enumerate() {
        let next = history.get(i + 1).map_or(timeline, |s| s.parent);
        let segment = switch.at.0 / segments.segment_size;
        let older = segments
            .present
            .iter()
            .any(|&(tli, s)| s == segment && tli < next && path.contains(tli));
        if older && !segments.present.contains(&(next, segment)) {
            found.push((
                segment,
                format!(
                    "{}, where timeline {next} begins, is not archived yet while timeline {}'s \
                     version of it is: recovery would replay the older timeline past the switch",
                    segments.name(&path, segment),
                    switch.parent
                ),
            ));
        }
    }
    found
}

fn stop_time(manifest: &Manifest) -> Option<jiff::Timestamp> {
    manifest.stop.time.parse().ok()
}

/// By where the backup ends: position, then time, then id.
fn stop_order(a: &Manifest, b: &Manifest) -> std::cmp::Ordering {
    (a.stop.lsn, stop_time(a), &a.id).cmp(&(b.stop.lsn, stop_time(b), &b.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Position;
    use pg::Lsn;

    /// `manifest::sample`, ending at `lsn` and `time` on `timeline`.
    fn backup(id: &str, lsn: u64, time: &str, timeline: u32) -> Manifest {
        let position = |lsn: u64| Position {
            lsn: Lsn(lsn),
            timeline,
            time: time.into(),
        };
        Manifest {
            start: position(lsn - 0x10),
            stop: position(lsn),
            ..crate::manifest::sample(id)
        }
    }

    fn three() -> Vec<Manifest> {
        vec![
            backup("B2", 0x200, "2026-03-01T12:00:00Z", 1),
            backup("B1", 0x100, "2026-03-01T11:00:00Z", 1),
            backup("B3", 0x300, "2026-03-01T13:00:00Z", 2),
        ]
    }

    fn chosen(target: RecoveryTarget, timeline: Timeline) -> Result<String, String> {
        let backups = three();
        choose(&backups, &target, timeline, "/repo").map(|c| c.manifest.id.clone())
    }

    #[test]
    fn the_newest_backup_that_ends_before_the_target() {
        let at = |t: &str| RecoveryTarget::Time(t.parse().unwrap());
        assert_eq!(
            chosen(at("2026-03-01T12:30:00Z"), Timeline::Latest),
            Ok("B2".into())
        );
        assert_eq!(
            chosen(at("2026-03-01T12:00:00Z"), Timeline::Latest),
            Ok("B2".into())
        );
        assert_eq!(
            chosen(RecoveryTarget::Lsn(Lsn(0x2ff)), Timeline::Latest),
            Ok("B2".into())
        );
        assert_eq!(
            chosen(RecoveryTarget::Latest, Timeline::Latest),
            Ok("B3".into())
        );
        assert_eq!(
            chosen(RecoveryTarget::Latest, Timeline::Id(1)),
            Ok("B2".into())
        );
    }

    #[test]
    fn a_target_before_every_backup_names_the_earliest_reachable_point() {
        let err = chosen(
            RecoveryTarget::Time("2026-03-01T10:59:59Z".parse().unwrap()),
            Timeline::Latest,
        )
        .unwrap_err();
        assert!(err.contains("earliest point"), "{err}");
        assert!(err.contains("2026-03-01T11:00:00Z"), "{err}");
        assert!(err.contains("B1"), "{err}");
        let err = chosen(RecoveryTarget::Lsn(Lsn(0xff)), Timeline::Latest).unwrap_err();
        assert!(err.contains("0/100"), "{err}");
        let err = choose(&[], &RecoveryTarget::Latest, Timeline::Latest, "/repo").unwrap_err();
        assert!(err.contains("no complete backup"), "{err}");
    }

    #[tokio::test]
    async fn a_standby_starts_from_the_newest_backup_the_archive_continues() {
        use crate::catalog::fixture::{Fixture, SYSID};
        const T: &str = "2026-12-01T00:00:00Z";
        let f = Fixture::new();
        let read = || async { Snapshot::read(&*f.repo, SYSID).await.unwrap() };
        let err = for_standby(&read().await, 1).unwrap_err();
        assert!(err.contains("no complete backup of this cluster"), "{err}");

        f.backup("B1", None, ("0/2000028", "0/2000100"), 1, T).await;
        f.backup("B2", None, ("0/4000028", "0/4000100"), 1, T).await;
        f.segments(1, 2..4).await;
        // Segment 4, which B2 needs, is not archived: B1 then replays up
        // to it only, short of the archive's end.
        f.segments(1, 5..7).await;
        let err = for_standby(&read().await, 1).unwrap_err();
        assert!(
            err.contains("B1 needs 000000010000000000000004, missing from the archive"),
            "{err}"
        );
        assert!(err.contains("B2 needs 000000010000000000000004"), "{err}");

        f.segments(1, 4..5).await;
        assert_eq!(for_standby(&read().await, 1).unwrap().id, "B2");

        // The primary is on timeline 2: its history file first.
        let err = for_standby(&read().await, 2).unwrap_err();
        assert!(err.contains("no history file of timeline 2"), "{err}");
        f.history(2, "1\t0/6000100\tno recovery target specified\n")
            .await;
        f.segments(2, 6..8).await;
        assert_eq!(for_standby(&read().await, 2).unwrap().id, "B2");
        // A backup taken on timeline 2 after it branched is the newest.
        f.backup("B3", None, ("0/7000028", "0/7000100"), 2, T).await;
        assert_eq!(for_standby(&read().await, 2).unwrap().id, "B3");
        // Timeline 1's path never had B3.
        assert_eq!(for_standby(&read().await, 1).unwrap().id, "B2");

        // Timeline 3 branches off in segment 7, which timeline 2 completed
        // and archived; until timeline 3's own copy of it is archived,
        // recovery would read timeline 2's, past the switch.
        f.history(
            3,
            "1\t0/6000100\tno recovery target specified\n\
             2\t0/7000200\tno recovery target specified\n",
        )
        .await;
        let err = for_standby(&read().await, 3).unwrap_err();
        assert!(
            err.contains(
                "B3: 000000030000000000000007, where timeline 3 begins, is not archived yet \
                 while timeline 2's version of it is"
            ),
            "{err}"
        );
        f.segments(3, 7..8).await;
        assert_eq!(for_standby(&read().await, 3).unwrap().id, "B3");
    }

    #[test]
    fn a_restore_point_takes_the_newest_and_says_what_if_it_is_earlier() {
        let backups = three();
        let choice = choose(
            &backups,
            &RecoveryTarget::Name("before".into()),
            Timeline::Latest,
            "/repo",
        )
        .unwrap();
        assert_eq!(choice.manifest.id, "B3");
        let note = choice.note.unwrap();
        assert!(note.contains("--backup"), "{note}");
        assert!(note.contains("B1"), "{note}");
    }
}
