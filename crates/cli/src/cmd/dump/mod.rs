//! `pgwarden dump run|list|fetch`: logical dumps (pg_dump) of named
//! databases in the repository of pgwarden.toml's [backup]
//! (docs/backup.md, "Logical dumps").

use std::num::NonZeroUsize;
use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use super::wal::DEFAULT_CONFIG;

mod fetch;
mod list;
mod take;

#[derive(Debug, Subcommand)]
pub enum DumpCommand {
    /// Dump each database with pg_dump from this member's PostgreSQL,
    /// unless nothing changed since its newest dump (no transaction ended).
    Run {
        /// The member's configuration (pgwarden.toml): [member],
        /// [credentials.superuser] and [backup] are read.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// A database to dump (repeat for several).
        #[arg(long = "database", required = true)]
        databases: Vec<String>,
        /// Dump even when nothing changed.
        #[arg(long)]
        force: bool,
        /// Then keep only the newest N dumps of each database.
        #[arg(long)]
        keep: Option<NonZeroUsize>,
    },
    /// The complete dumps in the repository.
    List {
        /// The configuration (pgwarden.toml); only [backup] is read.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Only this database's dumps.
        #[arg(long)]
        database: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write a dump back as one file for pg_restore (every chunk's
    /// checksum checked).
    Fetch {
        /// The configuration (pgwarden.toml); only [backup] is read.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The dump's id (`pgwarden dump list`).
        id: String,
        #[arg(long)]
        database: String,
        /// The file to write (replaced if it exists).
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(command: DumpCommand) -> Result<()> {
    match command {
        DumpCommand::Run {
            config,
            databases,
            force,
            keep,
        } => take::run(&config, &databases, force, keep),
        DumpCommand::List {
            config,
            database,
            json,
        } => list::run(&config, database.as_deref(), json),
        DumpCommand::Fetch {
            config,
            id,
            database,
            out,
        } => fetch::run(&config, &id, &database, &out),
    }
}
