//! The files PostgreSQL archives, by name, and where each lives in the
//! repository.

use std::fmt;

use crate::repo::{RepoError, RepoPath};

/// A file `archive_command` is given or `restore_command` is asked for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalName {
    name: String,
    kind: WalKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalKind {
    /// `000000010000000000000001`: a completed segment.
    Segment,
    /// `000000010000000000000001.partial`: the last, incomplete segment of
    /// a timeline a standby was promoted away from.
    Partial,
    /// `00000002.history`: how timeline 2 branched off its parents.
    History,
    /// `000000010000000000000001.00000028.backup`: a base backup's label.
    BackupLabel,
}

impl WalName {
    pub fn parse(name: &str) -> Result<WalName, String> {
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        };
        let kind = match name.split('.').collect::<Vec<_>>().as_slice() {
            [segment] if hex(segment, 24) => WalKind::Segment,
            [segment, "partial"] if hex(segment, 24) => WalKind::Partial,
            [timeline, "history"] if hex(timeline, 8) => WalKind::History,
            [segment, offset, "backup"] if hex(segment, 24) && hex(offset, 8) => {
                WalKind::BackupLabel
            }
            _ => {
                return Err(format!(
                    "\"{name}\" is not the name of a WAL file (a segment such as \
                     000000010000000000000001, a .partial or .backup file of one, or a \
                     timeline's 00000002.history)"
                ))
            }
        };
        Ok(WalName {
            name: name.to_string(),
            kind,
        })
    }

    pub fn kind(&self) -> WalKind {
        self.kind
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The timeline the file belongs to (a history file: the one it
    /// describes).
    pub fn timeline(&self) -> u32 {
        u32::from_str_radix(&self.name[..8], 16).expect("checked hex")
    }

    /// Where it lives under a cluster's WAL directory: history files in
    /// `history/`, everything else in a directory per timeline and 4 GiB
    /// of WAL (the first 16 hex digits), so no directory grows past a few
    /// hundred entries.
    pub fn repo_path(&self, cluster_dir: &RepoPath) -> Result<RepoPath, RepoError> {
        let file = format!("{}.zst", self.name);
        match self.kind {
            WalKind::History => cluster_dir.join(&format!("history/{file}")),
            _ => cluster_dir.join(&format!("{}/{file}", &self.name[..16])),
        }
    }
}

impl fmt::Display for WalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_postgresql_archives() {
        for (name, kind) in [
            ("000000010000000000000001", WalKind::Segment),
            ("0000000A00000001000000FF.partial", WalKind::Partial),
            ("00000002.history", WalKind::History),
            (
                "000000010000000000000002.00000028.backup",
                WalKind::BackupLabel,
            ),
        ] {
            assert_eq!(WalName::parse(name).unwrap().kind(), kind, "{name}");
        }
        assert_eq!(
            WalName::parse("0000000A00000001000000FF")
                .unwrap()
                .timeline(),
            10
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "00000001000000000000001",
            "0000000100000000000000010",
            "00000001000000000000000a",
            "000000010000000000000001.ready",
            "00000002.history.1",
            "../etc/passwd",
            "RECOVERYXLOG",
        ] {
            assert!(WalName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_group_segments_by_timeline_and_4_gib() {
        let dir = RepoPath::new("wal/7301234567890123456").unwrap();
        let path = |name: &str| {
            WalName::parse(name)
                .unwrap()
                .repo_path(&dir)
                .unwrap()
                .to_string()
        };
        assert_eq!(
            path("0000000200000001000000FE"),
            "wal/7301234567890123456/0000000200000001/0000000200000001000000FE.zst"
        );
        assert_eq!(
            path("0000000200000001000000FE.partial"),
            "wal/7301234567890123456/0000000200000001/0000000200000001000000FE.partial.zst"
        );
        assert_eq!(
            path("00000002.history"),
            "wal/7301234567890123456/history/00000002.history.zst"
        );
    }
}
