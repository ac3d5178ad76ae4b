//! Which points can be restored to, from the backups and the archived
//! segments alone (no I/O): a backup can be restored on a timeline's path
//! when every segment from its start to its stop is archived there, and
//! then reaches every point from its stop to the first segment missing
//! after it. What lies between the oldest backup's stop and the end of the
//! archive and no backup reaches is a gap.

use std::collections::BTreeSet;

use pg::Lsn;
use serde::{Deserialize, Serialize};

use super::timeline::Path;
use crate::backup::wal_needed::segment_name;
use crate::manifest::Position;

/// What a window is computed from: the WAL positions of one backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub id: String,
    pub start: Position,
    pub stop: Position,
}

/// The archived segments, by timeline and segment number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Segments {
    pub segment_size: u64,
    pub present: BTreeSet<(u32, u64)>,
}

/// A point to restore to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    #[serde(with = "crate::manifest::lsn_text")]
    pub lsn: Lsn,
    /// Known for a backup's end (RFC 3339, UTC); a segment's end has none.
    pub time: Option<String>,
    /// The backup whose end this is.
    pub backup: Option<String>,
}

impl Point {
    fn end_of(span: &Span) -> Point {
        Point {
            lsn: span.stop.lsn,
            time: Some(span.stop.time.clone()),
            backup: Some(span.id.clone()),
        }
    }

    fn at(lsn: Lsn) -> Point {
        Point {
            lsn,
            time: None,
            backup: None,
        }
    }
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.time, &self.backup) {
            (Some(time), Some(id)) => write!(f, "{} ({time}, end of backup {id})", self.lsn),
            (Some(time), None) => write!(f, "{} ({time})", self.lsn),
            _ => write!(f, "{}", self.lsn),
        }
    }
}

/// Every point from `from` to `to` can be restored to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub from: Point,
    pub to: Point,
}

/// Consecutive segments that are not archived (or are damaged).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub first: String,
    pub last: String,
    pub count: u64,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 1 {
            write!(f, "{}", self.first)
        } else {
            write!(
                f,
                "{} to {} ({} segments)",
                self.first, self.last, self.count
            )
        }
    }
}

/// Points after the oldest backup's end that no backup reaches, and the
/// segments whose absence cuts them off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub from: Point,
    pub to: Point,
    pub missing: Vec<Run>,
}

/// How far a backup gets on a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Consistent at its stop, and every point up to the start of this
    /// segment (the first one missing after it, or the archive's end).
    Until(u64),
    /// This segment, between its start and stop, is missing: it cannot be
    /// restored on this path at all.
    Broken(u64),
}

/// Whether a backup's WAL is on this path (a standby's backup may span a
/// timeline switch; its stop is exclusive).
pub fn on_path(path: &Path, span: &Span) -> bool {
    path.timeline_at(span.start.lsn) == span.start.timeline
        && path.timeline_at(Lsn(span.stop.lsn.0.saturating_sub(1))) == span.stop.timeline
}

impl Segments {
    fn has(&self, path: &Path, segment: u64) -> bool {
        let tli = path.segment_timeline(segment, self.segment_size);
        self.present.contains(&(tli, segment))
    }

    /// The name of the file `path` reads for `segment`.
    pub fn name(&self, path: &Path, segment: u64) -> String {
        let tli = path.segment_timeline(segment, self.segment_size);
        segment_name(tli, segment, self.segment_size)
    }

    /// One past the last archived segment `path` reads; 0 when none.
    pub fn end(&self, path: &Path) -> u64 {
        self.present
            .iter()
            .filter(|(tli, seg)| path.segment_timeline(*seg, self.segment_size) == *tli)
            .map(|(_, seg)| seg + 1)
            .max()
            .unwrap_or(0)
    }

    fn segment_of(&self, lsn: Lsn) -> u64 {
        lsn.0 / self.segment_size
    }

    /// How far `span` gets on `path` (which it must be on).
    pub fn reach(&self, path: &Path, span: &Span) -> Reach {
        let first = self.segment_of(span.start.lsn);
        let last_needed = self
            .segment_of(Lsn(span.stop.lsn.0.saturating_sub(1)))
            .max(first);
        let until = self.end(path).max(last_needed + 1);
        let mut segment = first;
        while segment < until && self.has(path, segment) {
            segment += 1;
        }
        if segment <= last_needed {
            Reach::Broken(segment)
        } else {
            Reach::Until(segment)
        }
    }

    /// The runs of segments `path` reads from `from` up to (not including)
    /// `until` that are not there.
    pub fn missing(&self, path: &Path, from: u64, until: u64) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for segment in from..until {
            if self.has(path, segment) {
                continue;
            }
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == segment => *last = segment,
                _ => runs.push((segment, segment)),
            }
        }
        runs
    }

    fn run(&self, path: &Path, (first, last): (u64, u64)) -> Run {
        Run {
            first: self.name(path, first),
            last: self.name(path, last),
            count: last - first + 1,
        }
    }
}

/// The points reachable on one timeline's path, and the gaps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub reachable: Vec<Range>,
    pub unreachable: Vec<Gap>,
}

/// The window of `path` given these backups (any order; those not on the
/// path are left out).
pub fn window(path: &Path, segments: &Segments, spans: &[Span]) -> Window {
    let mut spans: Vec<&Span> = spans.iter().filter(|s| on_path(path, s)).collect();
    spans.sort_by_key(|s| s.stop.lsn);
    let Some(earliest) = spans.first() else {
        return Window::default();
    };
    let size = segments.segment_size;
    let end = segments.end(path);
    let mut ranges: Vec<Range> = Vec::new();
    for span in &spans {
        let Reach::Until(until) = segments.reach(path, span) else {
            continue;
        };
        let to = Lsn(until * size);
        match ranges.last_mut() {
            Some(last) if span.stop.lsn <= last.to.lsn => {
                if to > last.to.lsn {
                    last.to = Point::at(to);
                }
            }
            _ => ranges.push(Range {
                from: Point::end_of(span),
                to: Point::at(to),
            }),
        }
    }
    // What should be reachable: from the oldest backup's end to the end of
    // the archive (or of the newest backup, if its WAL is gone).
    let latest = spans.iter().map(|s| s.stop.lsn).max().expect("not empty");
    let expected_end = Lsn((end * size).max(latest.0));
    let mut gaps = Vec::new();
    let mut cursor = Point::end_of(earliest);
    for range in &ranges {
        if range.from.lsn > cursor.lsn {
            gaps.push((cursor.clone(), range.from.clone()));
        }
        if range.to.lsn > cursor.lsn {
            cursor = range.to.clone();
        }
    }
    if expected_end > cursor.lsn {
        gaps.push((cursor, Point::at(expected_end)));
    }
    let first_start = spans
        .iter()
        .map(|s| segments.segment_of(s.start.lsn))
        .min()
        .expect("not empty");
    let runs = segments.missing(path, first_start, end.max(segments.segment_of(latest) + 1));
    let unreachable = gaps
        .into_iter()
        .map(|(from, to)| {
            let cause = |(first, last): &&(u64, u64)| {
                first * size < to.lsn.0 && (last + 1) * size > from.lsn.0
            };
            let mut missing: Vec<Run> = runs
                .iter()
                .filter(cause)
                .map(|r| segments.run(path, *r))
                .collect();
            if missing.is_empty() {
                // A backup whose own WAL is gone: the run before its end.
                missing.extend(
                    runs.iter()
                        .rev()
                        .find(|(first, _)| first * size < to.lsn.0)
                        .map(|r| segments.run(path, *r)),
                );
            }
            Gap { from, to, missing }
        })
        .collect();
    Window {
        reachable: ranges,
        unreachable,
    }
}

#[cfg(test)]
mod tests;
