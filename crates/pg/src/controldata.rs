//! What pg_controldata says about a stopped (or running) data directory.

use crate::error::PgError;
use crate::lsn::Lsn;

/// The lines of pg_controldata pgwarden decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlData {
    pub system_identifier: u64,
    pub state: ClusterState,
    /// The timeline of the latest checkpoint.
    pub timeline: u32,
    /// Where the latest checkpoint record starts: after a clean shutdown,
    /// the shutdown checkpoint, the last record of the WAL.
    pub checkpoint_lsn: Lsn,
}

/// "Database cluster state" from pg_control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterState {
    ShutDown,
    ShutDownInRecovery,
    InProduction,
    InArchiveRecovery,
    /// A primary that crashed, crashed again while recovering.
    InCrashRecovery,
    /// A primary that crashed while shutting down.
    ShuttingDown,
    Other(String),
}

impl ClusterState {
    /// Last ran as a primary (standbys are in, or shut down in, archive
    /// recovery), so it may hold WAL no standby has.
    pub fn was_primary(&self) -> bool {
        matches!(
            self,
            ClusterState::ShutDown
                | ClusterState::InProduction
                | ClusterState::InCrashRecovery
                | ClusterState::ShuttingDown
        )
    }

    /// Shut down cleanly, so pg_rewind can use it as a target as is.
    pub fn is_clean_shutdown(&self) -> bool {
        matches!(
            self,
            ClusterState::ShutDown | ClusterState::ShutDownInRecovery
        )
    }
}

pub(crate) fn parse(text: &str) -> Result<ControlData, PgError> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .ok_or_else(|| PgError::Unexpected {
                program: "pg_controldata".into(),
                detail: format!("no `{name}` line in:\n{text}"),
            })
    };
    let number = |name: &str| -> Result<u64, PgError> {
        let value = field(name)?;
        value.parse().map_err(|_| PgError::Unexpected {
            program: "pg_controldata".into(),
            detail: format!("`{name}` is `{value}`, not a number"),
        })
    };
    let state = match field("Database cluster state")? {
        "shut down" => ClusterState::ShutDown,
        "shut down in recovery" => ClusterState::ShutDownInRecovery,
        "in production" => ClusterState::InProduction,
        "in archive recovery" => ClusterState::InArchiveRecovery,
        "in crash recovery" => ClusterState::InCrashRecovery,
        "shutting down" => ClusterState::ShuttingDown,
        other => ClusterState::Other(other.to_string()),
    };
    Ok(ControlData {
        system_identifier: number("Database system identifier")?,
        state,
        timeline: number("Latest checkpoint's TimeLineID")? as u32,
        checkpoint_lsn: {
            let value = field("Latest checkpoint location")?;
            value.parse().map_err(|detail| PgError::Unexpected {
                program: "pg_controldata".into(),
                detail: format!("`Latest checkpoint location` is `{value}`: {detail}"),
            })?
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "pg_control version number:            1300\n\
        Catalog version number:               202209061\n\
        Database system identifier:           7311234567890123456\n\
        Database cluster state:               shut down in recovery\n\
        Latest checkpoint location:           0/3000060\n\
        Latest checkpoint's TimeLineID:       3\n\
        Latest checkpoint's PrevTimeLineID:   3\n";

    #[test]
    fn reads_identity_state_and_timeline() {
        let data = parse(SAMPLE).unwrap();
        assert_eq!(data.system_identifier, 7311234567890123456);
        assert_eq!(data.state, ClusterState::ShutDownInRecovery);
        assert!(data.state.is_clean_shutdown());
        assert_eq!(data.timeline, 3);
        assert_eq!(data.checkpoint_lsn, Lsn(0x3000060));
    }

    #[test]
    fn says_which_line_is_missing() {
        let err = parse("Database cluster state: in production\n").unwrap_err();
        assert!(
            err.to_string().contains("Database system identifier"),
            "{err}"
        );
    }
}
