//! The probe: what a PostgreSQL server says about itself, in one round of
//! queries over tokio-postgres.

use std::time::Duration;

use tokio_postgres::{Client, NoTls, Row};

use crate::conninfo::Endpoint;
use crate::error::PgError;
use crate::instance::{Instance, Role};
use crate::lsn::Lsn;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// One observation of the local server.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    /// Not accepting connections. `postmaster_alive` tells a crashed or
    /// stopped server from one that is starting, stopping or hung.
    Down {
        postmaster_alive: bool,
        reason: String,
    },
    Up(ServerState),
}

impl Probe {
    pub fn is_up(&self) -> bool {
        matches!(self, Probe::Up(_))
    }

    pub fn state(&self) -> Option<&ServerState> {
        match self {
            Probe::Up(state) => Some(state),
            Probe::Down { .. } => None,
        }
    }
}

/// A running server's role and positions.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerState {
    pub in_recovery: bool,
    pub timeline: u32,
    pub system_identifier: u64,
    /// Where a primary writes (`pg_current_wal_lsn`); `None` on a standby.
    pub current_lsn: Option<Lsn>,
    /// What a standby has received and flushed; `None` on a primary or a
    /// standby that has not streamed yet.
    pub received_lsn: Option<Lsn>,
    /// What a standby has replayed; `None` on a primary.
    pub replayed_lsn: Option<Lsn>,
    /// The standbys streaming from this server.
    pub replication: Vec<ReplicationRow>,
    /// This standby's WAL receiver, when it runs.
    pub wal_receiver: Option<WalReceiver>,
    /// On a standby: how old the last replayed commit is, 0 when it has
    /// replayed everything it received (an idle primary is no lag).
    pub replay_delay: Option<Duration>,
}

impl ServerState {
    /// The furthest position this server has: written on a primary,
    /// received or replayed on a standby.
    pub fn last_lsn(&self) -> Lsn {
        [self.current_lsn, self.received_lsn, self.replayed_lsn]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or_default()
    }
}

/// One row of pg_stat_replication.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicationRow {
    pub application_name: String,
    pub state: String,
    pub sync_state: String,
    pub sent_lsn: Option<Lsn>,
    pub write_lsn: Option<Lsn>,
    pub flush_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    /// Time between a commit and its replay on this standby, as PostgreSQL
    /// last measured it.
    pub replay_lag: Option<Duration>,
}

/// pg_stat_wal_receiver.
#[derive(Clone, Debug, PartialEq)]
pub struct WalReceiver {
    pub status: String,
    pub sender_host: Option<String>,
    pub sender_port: Option<u16>,
    pub received_timeline: Option<u32>,
    pub flushed_lsn: Option<Lsn>,
    pub slot_name: Option<String>,
    /// How long ago the receiver last heard from its upstream (data or a
    /// keepalive); `None` before its first message.
    pub quiet_for: Option<Duration>,
}

/// A connection to the server at `endpoint` as `role`, with a short connect
/// timeout; the connection task runs on the current runtime.
pub async fn connect(endpoint: &Endpoint, role: &Role) -> Result<Client, PgError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&endpoint.host)
        .port(endpoint.port)
        .user(&role.name)
        .password(&role.password)
        .dbname("postgres")
        .application_name("pgwarden")
        .connect_timeout(CONNECT_TIMEOUT);
    let what = || format!("connect to PostgreSQL at {endpoint} as {}", role.name);
    // tokio-postgres bounds only the TCP connect; a server that accepts the
    // connection and never answers (a stopped postmaster: the kernel still
    // queues connections) would hang the startup exchange for ever.
    let (client, connection) = tokio::time::timeout(2 * CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| {
            PgError::Refused(format!(
                "{}: no answer within {:?}",
                what(),
                2 * CONNECT_TIMEOUT
            ))
        })?
        .map_err(|e| PgError::sql(what(), e))?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped; errors surface on
        // the client's queries.
        let _ = connection.await;
    });
    Ok(client)
}

pub(crate) async fn probe(instance: &Instance) -> Probe {
    let down = |reason: String| Probe::Down {
        postmaster_alive: instance.postmaster_pid().is_some(),
        reason,
    };
    let client = match instance.client().await {
        Ok(client) => client,
        Err(err) => return down(err.to_string()),
    };
    // A server that accepts a connection but hangs on a query must not hang
    // the agent's round with it.
    match tokio::time::timeout(QUERY_TIMEOUT, query_state(&client)).await {
        Ok(Ok(state)) => Probe::Up(state),
        Ok(Err(err)) => down(err.to_string()),
        Err(_) => down(format!("the probe got no answer within {QUERY_TIMEOUT:?}")),
    }
}

/// One row of text columns; LSNs and intervals come back as text so no
/// extra type support is needed.
async fn query_state(client: &Client) -> Result<ServerState, PgError> {
    let sql = |what: &'static str| move |e| PgError::sql(what, e);
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), \
                    (SELECT system_identifier::text FROM pg_control_system()), \
                    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END, \
                    pg_last_wal_receive_lsn()::text, \
                    pg_last_wal_replay_lsn()::text, \
                    CASE WHEN pg_is_in_recovery() \
                         THEN (SELECT timeline_id FROM pg_control_checkpoint()) \
                         ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
                    CASE WHEN NOT pg_is_in_recovery() THEN NULL \
                         WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0::float8 \
                         ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END, \
                    CASE WHEN pg_is_in_recovery() \
                         THEN (SELECT max(('x' || substr(name, 1, 8))::bit(32)::int) \
                               FROM pg_ls_waldir() WHERE name LIKE '%.history') END",
            &[],
        )
        .await
        .map_err(sql("probe the server's role and positions"))?;
    let in_recovery: bool = row.get(0);
    let system_identifier = parse_number(row.get::<_, String>(1), "system_identifier")?;
    let checkpoint_timeline = row.get::<_, i32>(5) as u32;

    let replication = client
        .query(
            "SELECT application_name, state, sync_state, sent_lsn::text, write_lsn::text, \
                    flush_lsn::text, replay_lsn::text, \
                    extract(epoch FROM replay_lag)::float8 \
             FROM pg_stat_replication ORDER BY application_name",
            &[],
        )
        .await
        .map_err(sql("read pg_stat_replication"))?
        .iter()
        .map(replication_row)
        .collect::<Result<Vec<_>, _>>()?;

    let wal_receiver = client
        .query(
            "SELECT status, sender_host, sender_port, received_tli, flushed_lsn::text, slot_name, \
                    extract(epoch FROM clock_timestamp() - last_msg_receipt_time)::float8 \
             FROM pg_stat_wal_receiver",
            &[],
        )
        .await
        .map_err(sql("read pg_stat_wal_receiver"))?
        .first()
        .map(wal_receiver_row)
        .transpose()?;

    // On a standby the checkpoint's timeline lags behind a timeline switch
    // it has already streamed; the receiver knows better. Without a
    // receiver (its primary is gone) the newest history file in pg_wal
    // stands in for it. Not with one: a standby that streamed past the
    // point where a new primary forked fetches that primary's history file
    // but cannot switch to it ("forked off … before current recovery
    // point"), and stays on the old timeline until it is rewound.
    let newest_history = row.get::<_, Option<i32>>(7).map(|t| t as u32);
    let timeline = match wal_receiver.as_ref().and_then(|r| r.received_timeline) {
        Some(received) if received > 0 => received.max(checkpoint_timeline),
        _ => newest_history.map_or(checkpoint_timeline, |h| h.max(checkpoint_timeline)),
    };

    Ok(ServerState {
        in_recovery,
        timeline,
        system_identifier,
        current_lsn: lsn(row.get(2))?,
        received_lsn: lsn(row.get(3))?,
        replayed_lsn: lsn(row.get(4))?,
        replication,
        wal_receiver,
        replay_delay: row
            .get::<_, Option<f64>>(6)
            .filter(|secs| secs.is_finite())
            .map(|secs| Duration::from_secs_f64(secs.max(0.0))),
    })
}

/// What a running server says of its configuration files: parameters
/// that wait for a restart, and lines it could not apply (a bad value it
/// ignores now and would refuse to start with). Not part of the probe:
/// `pg_file_settings` parses the files on every call.
pub async fn config_report(client: &Client) -> Result<ConfigReport, PgError> {
    let row = client
        .query_one(
            "SELECT (SELECT coalesce(string_agg(name, ',' ORDER BY name), '') \
                     FROM pg_settings WHERE pending_restart), \
                    (SELECT coalesce(string_agg(coalesce(name, sourcefile || ':' || sourceline) \
                                                || ': ' || error, E'\\n'), '') \
                     FROM pg_file_settings f WHERE error IS NOT NULL AND NOT EXISTS \
                         (SELECT 1 FROM pg_settings s WHERE s.name = f.name AND s.pending_restart))",
            &[],
        )
        .await
        .map_err(|e| PgError::sql("read pg_settings and pg_file_settings", e))?;
    Ok(ConfigReport {
        pending_restart: row
            .get::<_, String>(0)
            .split(',')
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect(),
        errors: row
            .get::<_, String>(1)
            .lines()
            .map(str::to_string)
            .collect(),
    })
}

/// See [`config_report`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigReport {
    pub pending_restart: Vec<String>,
    pub errors: Vec<String>,
}

fn replication_row(row: &Row) -> Result<ReplicationRow, PgError> {
    Ok(ReplicationRow {
        application_name: row.get(0),
        state: row.get::<_, Option<String>>(1).unwrap_or_default(),
        sync_state: row.get::<_, Option<String>>(2).unwrap_or_default(),
        sent_lsn: lsn(row.get(3))?,
        write_lsn: lsn(row.get(4))?,
        flush_lsn: lsn(row.get(5))?,
        replay_lsn: lsn(row.get(6))?,
        replay_lag: row
            .get::<_, Option<f64>>(7)
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            .map(Duration::from_secs_f64),
    })
}

fn wal_receiver_row(row: &Row) -> Result<WalReceiver, PgError> {
    Ok(WalReceiver {
        status: row.get(0),
        sender_host: row.get(1),
        sender_port: row
            .get::<_, Option<i32>>(2)
            .and_then(|p| u16::try_from(p).ok()),
        received_timeline: row.get::<_, Option<i32>>(3).map(|t| t as u32),
        flushed_lsn: lsn(row.get(4))?,
        slot_name: row.get(5),
        quiet_for: row
            .get::<_, Option<f64>>(6)
            .filter(|secs| secs.is_finite())
            .map(|secs| Duration::from_secs_f64(secs.max(0.0))),
    })
}

fn lsn(text: Option<String>) -> Result<Option<Lsn>, PgError> {
    text.map(|t| {
        t.parse().map_err(|detail| PgError::Unexpected {
            program: "postgres".into(),
            detail,
        })
    })
    .transpose()
}

fn parse_number(text: String, what: &str) -> Result<u64, PgError> {
    text.parse().map_err(|_| PgError::Unexpected {
        program: "postgres".into(),
        detail: format!("{what} `{text}` is not a number"),
    })
}
