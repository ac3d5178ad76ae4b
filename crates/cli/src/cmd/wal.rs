//! `pgwarden wal push PATH` and `pgwarden wal fetch NAME PATH`: the
//! `archive_command` and `restore_command` the agent writes for PostgreSQL
//! when pgwarden.toml has a `[backup]` table. PostgreSQL runs them in its
//! data directory, as its own user, and reads their exit status: 0 is done;
//! anything else is "not archived, retry" for a push and "not in the
//! archive" for a fetch. What went wrong goes to stderr, into PostgreSQL's
//! log.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
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
    Ok(match runtime()?.block_on(archive.fetch(&name, path))? {
        Fetched::Restored(_) => true,
        Fetched::NotInArchive => false,
    })
}
