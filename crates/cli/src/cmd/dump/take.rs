//! `pgwarden dump run`: dumps from this member's own PostgreSQL, over TCP
//! at [member] connect_address and port as [credentials.superuser] (local
//! connections are peer-authenticated, for the postgres system user only).

use std::num::NonZeroUsize;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use backup::dump::{self, DumpStatus, DumpTarget};

use super::super::backup_repo::{self, size};

pub fn run(
    config_path: &Path,
    databases: &[String],
    force: bool,
    keep: Option<NonZeroUsize>,
) -> Result<()> {
    let config = config::load(config_path)?;
    let (repo, _) = backup_repo::open(config_path)?;
    let target = DumpTarget {
        bin_dir: config.member.bin_dir.clone(),
        host: config.member.connect_address.clone(),
        port: config.member.port,
        user: config.credentials.superuser.username.clone(),
        password: config.credentials.superuser.password.expose().to_string(),
        run_as: pg::RunAs::detect()?,
        chunk_size: DumpTarget::DEFAULT_CHUNK_SIZE,
    };
    let outcomes = backup_repo::runtime()?
        .block_on(async { dump::run(&*repo, &target, databases, force, keep).await });
    let mut failed = 0;
    for outcome in &outcomes {
        let db = &outcome.database;
        match &outcome.status {
            DumpStatus::Taken(m) => println!(
                "{db}: taken {} ({}, {} stored, WAL at {})",
                m.id,
                size(m.bytes),
                size(m.stored_bytes),
                m.wal_position
            ),
            DumpStatus::Skipped {
                newest,
                wal_position,
            } => println!(
                "{db}: skipped, nothing changed since {newest} (no transaction ended since; WAL at {wal_position}; --force dumps anyway)"
            ),
            DumpStatus::Failed(e) => {
                failed += 1;
                eprintln!("{db}: FAILED: {e}");
            }
        }
        if !outcome.expired.is_empty() {
            println!("{db}: expired {}", outcome.expired.join(", "));
        }
    }
    match failed {
        0 => Ok(()),
        n if n == outcomes.len() => Err(anyhow!("no dump was taken")),
        n => bail!("{n} of {} databases were not dumped", outcomes.len()),
    }
}
