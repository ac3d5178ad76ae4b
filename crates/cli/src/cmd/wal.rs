//! `pgwarden wal push PATH` and `pgwarden wal fetch NAME PATH`: the
//! `archive_command` and `restore_command` the agent writes for PostgreSQL
//! when pgwarden.toml has a `[backup]` table. PostgreSQL runs them in its
//! data directory, as its own user, and reads their exit status: 0 is done;
//! anything else is "not archived, retry" for a push and "not in the
//! archive" for a fetch. What went wrong goes to stderr, into PostgreSQL's
//! log.
//!
//! A fetch of a segment starts `wal prefetch` (not for operators: a
//! process that outlives the call) to fetch the next segments into a spool
//! in pg_wal, so that recovery does not wait on the archive for each
//! (backup::wal::prefetch).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use backup::wal::prefetch::{self, Spool};
use backup::wal::{Fetched, Pushed, WalArchive, WalName};

/// Where the agent's packaged unit keeps the file, for a `wal` command
/// written without `-c`.
pub const DEFAULT_CONFIG: &str = "/etc/pgwarden/pgwarden.toml";

fn archive(config: &Path, wal_path: &Path) -> Result<WalArchive> {
    let backup = config::load_backup(config)?.ok_or_else(|| {
        anyhow!(
            "{} has no [backup] table, so there is no archive; add one with the repository \
             (docs/configuration.md), or stop PostgreSQL from calling pgwarden wal",
            config.display()
        )
    })?;
    let repo = backup::open(&backup)?;
    Ok(WalArchive::for_wal_path(repo, wal_path)?)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

/// Archives `path`; an error means PostgreSQL keeps the file and retries.
pub fn push(config: &Path, path: &Path) -> Result<()> {
    let archive = archive(config, path)?;
    // A server that archives has ended recovery: what was fetched ahead
    // for it is of no use any more.
    Spool::for_wal_path(path).remove();
    let pushed = runtime()?.block_on(archive.push(path))?;
    if let Pushed::AlreadyArchived(fingerprint) = pushed {
        eprintln!(
            "pgwarden wal push: {} was archived already with the same content ({fingerprint})",
            path.display()
        );
    }
    Ok(())
}

/// Restores `name` to `path`: `Ok(true)` when restored, `Ok(false)` when
/// the archive does not have it.
pub fn fetch(config: &Path, name: &str, path: &Path) -> Result<bool> {
    let name = WalName::parse(name).map_err(|e| anyhow!(e))?;
    let archive = archive(config, path)?;
    let answer = runtime()?.block_on(prefetch::fetch(&archive, &name, path))?;
    if answer.prefetch {
        if let Err(err) = start_prefetcher(config, path) {
            // Only slower: the next fetch goes to the archive itself.
            eprintln!("pgwarden wal fetch: could not start fetching ahead: {err}");
        }
    }
    Ok(match answer.fetched {
        Fetched::Restored(_) => true,
        Fetched::NotInArchive => false,
    })
}

/// Starts `pgwarden wal prefetch` and leaves it running. It stays in
/// PostgreSQL's process group, so a server shutting down stops it too.
fn start_prefetcher(config: &Path, path: &Path) -> Result<()> {
    let program = std::env::current_exe().context("find the pgwarden binary")?;
    std::process::Command::new(program)
        .arg("wal")
        .arg("prefetch")
        .arg("-c")
        .arg(config)
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("start pgwarden wal prefetch")?;
    Ok(())
}

/// Fetches the segments after the last one fetched for the data directory
/// `path` is in into its spool; returns when there is nothing left to
/// fetch ahead.
pub fn prefetch(config: &Path, path: &Path) -> Result<()> {
    let archive = archive(config, path)?;
    let spool = Spool::for_wal_path(path);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    Ok(runtime.block_on(prefetch::prefetch(&archive, &spool))?)
}
