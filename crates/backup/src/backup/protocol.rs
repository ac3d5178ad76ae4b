//! The PostgreSQL side of a base backup, on one connection: what the server
//! is, `pg_backup_start` (a fast checkpoint), and `pg_backup_stop`, which
//! returns the backup_label and tablespace_map the copy must carry. If the
//! connection drops in between, PostgreSQL ends the backup itself.

use std::path::PathBuf;

use pg::Lsn;
use tokio_postgres::Client;

use crate::manifest::TakenFrom;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("base backup: PostgreSQL refused `{query}`: {source}")]
    Query {
        query: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("base backup: PostgreSQL answered `{query}` with {value:?}, which pgwarden does not understand")]
    Answer { query: &'static str, value: String },
    #[error("base backup: PostgreSQL {0} is too old: pgwarden backs up PostgreSQL 15 and later (pg_backup_start)")]
    TooOld(u32),
}

/// What the server is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub version_num: u32,
    pub taken_from: TakenFrom,
    pub system_identifier: String,
    pub wal_segment_size: u64,
    pub data_directory: PathBuf,
}

/// Where the backup starts: WAL replay begins here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub lsn: Lsn,
}

/// Where it ends: a restore is consistent once replay got here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    pub lsn: Lsn,
    pub start_timeline: u32,
    pub stop_timeline: u32,
    pub backup_label: String,
    pub tablespace_map: Option<String>,
}

const INSPECT: &str = "SELECT current_setting('server_version_num'), \
     pg_is_in_recovery(), \
     (SELECT system_identifier::text FROM pg_control_system()), \
     (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'), \
     current_setting('data_directory')";

pub async fn inspect(client: &Client) -> Result<Server, ProtocolError> {
    let row = query_one(client, INSPECT, &[]).await?;
    let version: String = row.get(0);
    let version_num = parse(INSPECT, &version)?;
    if version_num < 150000 {
        return Err(ProtocolError::TooOld(version_num));
    }
    let in_recovery: bool = row.get(1);
    let segment: String = row.get(3);
    Ok(Server {
        version_num,
        taken_from: if in_recovery {
            TakenFrom::Standby
        } else {
            TakenFrom::Primary
        },
        system_identifier: row.get(2),
        wal_segment_size: parse(INSPECT, &segment)?,
        data_directory: PathBuf::from(row.get::<_, String>(4)),
    })
}

const START: &str = "SELECT pg_backup_start($1, fast => true)::text";

/// Starts the backup with an immediate checkpoint (restartpoint on a
/// standby), so it does not wait for the next scheduled one.
pub async fn start(client: &Client, label: &str) -> Result<Started, ProtocolError> {
    let row = query_one(client, START, &[&label]).await?;
    let lsn: String = row.get(0);
    Ok(Started {
        lsn: parse(START, &lsn)?,
    })
}

const STOP: &str =
    "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(wait_for_archive => false)";
const STANDBY_TIMELINE: &str = "SELECT min_recovery_end_timeline::text FROM pg_control_recovery()";

/// Ends the backup. It does not wait for the archive here: PostgreSQL would
/// wait forever behind a failing archive_command, and on a standby it
/// cannot wait at all. The caller checks the repository itself, with a
/// deadline.
pub async fn stop(client: &Client, taken_from: TakenFrom) -> Result<Stopped, ProtocolError> {
    let row = query_one(client, STOP, &[]).await?;
    let lsn: String = row.get(0);
    let backup_label: String = row.get(1);
    let tablespace_map: Option<String> = row.get(2);
    let start_timeline = label_timeline(&backup_label).ok_or_else(|| ProtocolError::Answer {
        query: STOP,
        value: backup_label.clone(),
    })?;
    // A primary cannot change timeline; a standby can follow its upstream
    // onto a new one during the backup. PostgreSQL ends a standby's backup
    // at its minimum recovery point, on that point's timeline.
    let stop_timeline = match taken_from {
        TakenFrom::Primary => start_timeline,
        TakenFrom::Standby => {
            let row = query_one(client, STANDBY_TIMELINE, &[]).await?;
            parse(STANDBY_TIMELINE, &row.get::<_, String>(0))?
        }
    };
    Ok(Stopped {
        lsn: parse(STOP, &lsn)?,
        start_timeline,
        stop_timeline,
        backup_label,
        tablespace_map: tablespace_map.filter(|m| !m.is_empty()),
    })
}

/// Ends a backup that failed, so the session can be used again; errors are
/// not interesting (the backup may not have started).
pub async fn abort(client: &Client) {
    let _ = client
        .simple_query("SELECT pg_backup_stop(wait_for_archive => false)")
        .await;
}

/// `START TIMELINE: 1` in a backup_label.
fn label_timeline(label: &str) -> Option<u32> {
    label
        .lines()
        .find_map(|line| line.strip_prefix("START TIMELINE:"))
        .and_then(|n| n.trim().parse().ok())
}

async fn query_one(
    client: &Client,
    query: &'static str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<tokio_postgres::Row, ProtocolError> {
    client
        .query_one(query, params)
        .await
        .map_err(|source| ProtocolError::Query { query, source })
}

fn parse<T: std::str::FromStr>(query: &'static str, value: &str) -> Result<T, ProtocolError> {
    value.trim().parse().map_err(|_| ProtocolError::Answer {
        query,
        value: value.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_timeline_from_a_backup_label() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                     CHECKPOINT LOCATION: 0/2000060\n\
                     BACKUP METHOD: streamed\n\
                     BACKUP FROM: primary\n\
                     START TIME: 2025-01-02 03:04:05 UTC\n\
                     LABEL: pgwarden\n\
                     START TIMELINE: 3\n";
        assert_eq!(label_timeline(label), Some(3));
        assert_eq!(label_timeline("LABEL: x\n"), None);
    }
}
