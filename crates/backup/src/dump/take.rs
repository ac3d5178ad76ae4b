//! Taking one dump: the server's version and WAL position, then pg_dump's
//! output read in chunks, each compressed, checksummed and stored, and the
//! manifest last. A failed pg_dump leaves no manifest and its chunks are
//! removed.

use std::process::Stdio;

use pg::Lsn;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_postgres::NoTls;

use super::manifest::{chunk_path, dump_dir, encode, manifest_path, DumpChunk, DumpManifest};
use super::{DumpError, DumpTarget};
use crate::checksum::sha256_hex;
use crate::compress;
use crate::repo::Repository;

pub(crate) struct ServerState {
    pub version: String,
    pub taken_from: &'static str,
    pub wal_position: Lsn,
    /// Which transactions had ended (see [`DumpManifest::transactions`]).
    pub transactions: Option<String>,
}

/// On a primary its snapshot says which transactions ended; a standby's
/// lists none in progress (they are its "subtransactions"), so the time of
/// the last commit or abort it replayed stands in for those (NULL, so no
/// comparison, until it replayed one).
const STATE: &str = "SELECT current_setting('server_version'), pg_is_in_recovery(), \
     (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
      ELSE pg_current_wal_lsn() END)::text, \
     CASE WHEN pg_is_in_recovery() \
      THEN 'standby ' || pg_snapshot_xmin(pg_current_snapshot()) || ':' || \
           pg_snapshot_xmax(pg_current_snapshot()) || ' ' || pg_last_xact_replay_timestamp() \
      ELSE 'primary ' || pg_current_snapshot() END";

/// What the server is and where its WAL is now (replayed, on a standby).
pub(crate) async fn server_state(
    target: &DumpTarget,
    database: &str,
) -> Result<ServerState, DumpError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&target.host)
        .port(target.port)
        .user(&target.user)
        .password(&target.password)
        .dbname("postgres")
        .application_name("pgwarden dump")
        .connect_timeout(std::time::Duration::from_secs(10));
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| DumpError::Connect {
            database: database.to_string(),
            host: target.host.clone(),
            port: target.port,
            user: target.user.clone(),
            message: e.to_string(),
        })?;
    let connection = tokio::spawn(connection);
    let query = |e: tokio_postgres::Error| DumpError::Query {
        database: database.to_string(),
        query: STATE,
        message: e.to_string(),
    };
    let row = client.query_one(STATE, &[]).await.map_err(query);
    drop(client);
    let _ = connection.await;
    let row = row?;
    let lsn: Option<String> = row.get(2);
    let bad = |value: String| DumpError::Query {
        database: database.to_string(),
        query: STATE,
        message: format!("answered {value:?} for the WAL position"),
    };
    let lsn = lsn.ok_or_else(|| bad("NULL".into()))?;
    Ok(ServerState {
        version: row.get(0),
        taken_from: if row.get::<_, bool>(1) {
            "standby"
        } else {
            "primary"
        },
        wal_position: lsn.parse().map_err(|_| bad(lsn.clone()))?,
        transactions: row.get(3),
    })
}

/// Takes a dump of `database` now, whatever the newest one recorded.
pub async fn take(
    repo: &dyn Repository,
    target: &DumpTarget,
    database: &str,
) -> Result<DumpManifest, DumpError> {
    // Checked first: a name the repository cannot hold fails before pg_dump.
    let start = jiff::Timestamp::now();
    let id = start.strftime("%Y%m%d-%H%M%S").to_string();
    let dir = dump_dir(database, &id)?;
    if !repo.list(&dir).await?.is_empty() {
        return Err(DumpError::IdTaken {
            database: database.to_string(),
            id,
        });
    }
    let state = server_state(target, database).await?;
    let result = stream(repo, target, database, &id).await;
    let chunks = match result {
        Ok(chunks) => chunks,
        Err(e) => {
            // Nothing of a failed dump stays (no manifest was written).
            if let Ok(entries) = repo.list(&dir).await {
                for entry in entries {
                    let _ = repo.delete(&entry.path).await;
                }
            }
            return Err(e);
        }
    };
    let manifest = DumpManifest {
        database: database.to_string(),
        id: id.clone(),
        server_version: state.version,
        taken_from: state.taken_from.to_string(),
        wal_position: state.wal_position,
        transactions: state.transactions,
        start_time: start.to_string(),
        end_time: jiff::Timestamp::now().to_string(),
        bytes: chunks.iter().map(|c| c.size).sum(),
        stored_bytes: chunks.iter().map(|c| c.stored_size).sum(),
        chunks,
        pgwarden_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    repo.put_new(&manifest_path(database, &id)?, encode(&manifest))
        .await?;
    Ok(manifest)
}

/// Runs pg_dump and stores its output; Ok only when pg_dump succeeded.
async fn stream(
    repo: &dyn Repository,
    target: &DumpTarget,
    database: &str,
    id: &str,
) -> Result<Vec<DumpChunk>, DumpError> {
    let program = target.bin_dir.join("pg_dump");
    let mut command = tokio::process::Command::new(&program);
    command
        .args(["--format=custom", "--compress=0", "--no-password"])
        .arg(format!("--host={}", target.host))
        .arg(format!("--port={}", target.port))
        .arg(format!("--username={}", target.user))
        .arg(format!("--dbname={database}"))
        .env("PGPASSWORD", &target.password)
        .env("PGAPPNAME", "pgwarden dump")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    target.run_as.apply(&mut command);
    let mut child = command.spawn().map_err(|source| DumpError::Spawn {
        database: database.to_string(),
        program: program.display().to_string(),
        source,
    })?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let chunks = store_chunks(repo, &mut stdout, database, id, target.chunk_size).await;
    drop(stdout);
    let status = child.wait().await.map_err(DumpError::Io)?;
    let stderr = stderr.await.unwrap_or_default();
    // A repository that failed stopped the reading (pg_dump then dies of a
    // broken pipe): its error is the one that says what to fix.
    let chunks = chunks?;
    if !status.success() {
        return Err(DumpError::PgDump {
            database: database.to_string(),
            status: status.to_string(),
            stderr: stderr.trim().to_string(),
        });
    }
    Ok(chunks)
}

async fn store_chunks(
    repo: &dyn Repository,
    output: &mut (impl AsyncRead + Unpin),
    database: &str,
    id: &str,
    chunk_size: usize,
) -> Result<Vec<DumpChunk>, DumpError> {
    let mut chunks = Vec::new();
    loop {
        let data = read_up_to(output, chunk_size.max(1)).await?;
        if data.is_empty() && !chunks.is_empty() {
            return Ok(chunks);
        }
        let frame = compress::compress(&data, compress::DEFAULT_LEVEL).map_err(DumpError::Io)?;
        let chunk = DumpChunk {
            size: data.len() as u64,
            stored_size: frame.len() as u64,
            sha256: sha256_hex(&data),
        };
        repo.put_new(&chunk_path(database, id, chunks.len())?, frame.into())
            .await?;
        chunks.push(chunk);
        if data.len() < chunk_size {
            return Ok(chunks);
        }
    }
}

/// `size` bytes, or fewer at the end of the output.
async fn read_up_to(
    output: &mut (impl AsyncRead + Unpin),
    size: usize,
) -> Result<Vec<u8>, DumpError> {
    let mut data = Vec::with_capacity(size);
    let mut limited = output.take(size as u64);
    limited
        .read_to_end(&mut data)
        .await
        .map_err(DumpError::Io)?;
    Ok(data)
}
