//! Timelines as PostgreSQL's history files describe them: timeline N's
//! file lists every ancestor and the WAL position where the next one
//! branched off. Recovery that follows timeline N reads each segment from
//! the newest timeline on that path that had begun by the segment (the
//! segment holding a switch point is the new timeline's: PostgreSQL copies
//! the old timeline's WAL up to the switch into it).

use pg::Lsn;
use serde::{Deserialize, Serialize};

/// One line of a history file: the timeline was `parent` until `at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    pub parent: u32,
    #[serde(with = "crate::manifest::lsn_text")]
    pub at: Lsn,
}

/// Reads a `.history` file: `<parent timeline>\t<switch point>\t<reason>`
/// per line, oldest first; blank and `#` lines skipped.
pub fn parse_history(text: &str) -> Result<Vec<Switch>, String> {
    let mut switches = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let parsed = match (fields.next(), fields.next()) {
            (Some(parent), Some(at)) => parent.parse::<u32>().ok().zip(at.parse::<Lsn>().ok()),
            _ => None,
        };
        let (parent, at) = parsed
            .ok_or_else(|| format!("the line {line:?} is not `<timeline> <lsn> <reason>`"))?;
        if switches
            .last()
            .is_some_and(|s: &Switch| s.parent >= parent || s.at > at)
        {
            return Err(format!(
                "the line {line:?} does not follow the one before it (timelines and switch points rise)"
            ));
        }
        switches.push(Switch { parent, at });
    }
    Ok(switches)
}

/// The timelines WAL passes through on the way to one timeline, oldest
/// first, each with the position where it begins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    pub timeline: u32,
    steps: Vec<(u32, Lsn)>,
}

impl Path {
    /// The path to `timeline`, whose history file says `history` (empty for
    /// timeline 1, or when the history file is missing: then the timeline is
    /// taken on its own).
    pub fn new(timeline: u32, history: &[Switch]) -> Path {
        let mut steps = Vec::with_capacity(history.len() + 1);
        let mut begin = Lsn(0);
        for switch in history {
            steps.push((switch.parent, begin));
            begin = switch.at;
        }
        steps.push((timeline, begin));
        Path { timeline, steps }
    }

    /// Where this path's own timeline begins.
    pub fn begin(&self) -> Lsn {
        self.steps.last().expect("a path has its timeline").1
    }

    /// The timeline WAL at `lsn` is on.
    pub fn timeline_at(&self, lsn: Lsn) -> u32 {
        self.steps
            .iter()
            .rev()
            .find(|(_, begin)| *begin <= lsn)
            .map_or(self.timeline, |(tli, _)| *tli)
    }

    /// The timeline whose file recovery reads for segment number `segment`.
    pub fn segment_timeline(&self, segment: u64, segment_size: u64) -> u32 {
        self.steps
            .iter()
            .rev()
            .find(|(_, begin)| begin.0 / segment_size <= segment)
            .map_or(self.timeline, |(tli, _)| *tli)
    }

    /// Whether `timeline` is on this path.
    pub fn contains(&self, timeline: u32) -> bool {
        self.steps.iter().any(|(tli, _)| *tli == timeline)
    }

    /// The first segment this path reads from `timeline` and the first it
    /// no longer does (`None`: it never stops, the path's own timeline).
    /// `None` when the path does not read `timeline` at all.
    pub fn segments_of(&self, timeline: u32, segment_size: u64) -> Option<(u64, Option<u64>)> {
        let at = self.steps.iter().position(|(tli, _)| *tli == timeline)?;
        let first = self.steps[at].1 .0 / segment_size;
        let until = self
            .steps
            .get(at + 1)
            .map(|(_, next)| next.0 / segment_size);
        match until {
            Some(until) if until <= first => None,
            _ => Some((first, until)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 << 20;

    fn lsn(text: &str) -> Lsn {
        text.parse().unwrap()
    }

    #[test]
    fn reads_what_postgresql_writes() {
        let text = "1\t0/5000100\tno recovery target specified\n\n\
                    2\t0/7000000\tbefore 2026-01-01 00:00:00+00\n";
        assert_eq!(
            parse_history(text).unwrap(),
            [
                Switch {
                    parent: 1,
                    at: lsn("0/5000100")
                },
                Switch {
                    parent: 2,
                    at: lsn("0/7000000")
                }
            ]
        );
        assert!(parse_history("x 0/1 y").is_err());
        assert!(parse_history("2\t0/5000000\tr\n1\t0/6000000\tr").is_err());
        assert_eq!(parse_history("").unwrap(), []);
    }

    #[test]
    fn a_path_reads_each_segment_from_the_newest_timeline_begun() {
        let history = parse_history("1\t0/5000100\tr\n2\t0/7000000\tr\n").unwrap();
        let path = Path::new(3, &history);
        assert_eq!(path.begin(), lsn("0/7000000"));
        assert_eq!(path.timeline_at(lsn("0/5000000")), 1);
        assert_eq!(path.timeline_at(lsn("0/5000100")), 2);
        assert_eq!(path.timeline_at(lsn("0/9000000")), 3);
        // The segment holding 2's switch point is 2's; 3 begins on a
        // segment boundary.
        assert_eq!(path.segment_timeline(4, MB16), 1);
        assert_eq!(path.segment_timeline(5, MB16), 2);
        assert_eq!(path.segment_timeline(6, MB16), 2);
        assert_eq!(path.segment_timeline(7, MB16), 3);
        assert_eq!(path.segments_of(1, MB16), Some((0, Some(5))));
        assert_eq!(path.segments_of(2, MB16), Some((5, Some(7))));
        assert_eq!(path.segments_of(3, MB16), Some((7, None)));
        assert_eq!(path.segments_of(4, MB16), None);
        assert!(path.contains(2) && !path.contains(4));
        let root = Path::new(1, &[]);
        assert_eq!(root.segment_timeline(12, MB16), 1);
        assert_eq!(root.timeline_at(lsn("0/1")), 1);
    }

    #[test]
    fn a_timeline_that_branched_twice_in_one_segment_reads_none_of_the_middle_one() {
        let history = parse_history("1\t0/5000100\tr\n2\t0/5000200\tr\n").unwrap();
        let path = Path::new(3, &history);
        assert_eq!(path.segment_timeline(5, MB16), 3);
        assert_eq!(path.segments_of(2, MB16), None);
    }
}
