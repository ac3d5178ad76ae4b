//! `pgwarden`: one binary, one subcommand per role.

mod cmd;
mod logging;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// pgwarden keeps a PostgreSQL cluster available: it bootstraps and clones
/// standbys, fails over automatically, and routes clients to the primary.
#[derive(Debug, Parser)]
#[command(name = "pgwarden", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent of one member: it owns the local PostgreSQL and takes
    /// part in leader election.
    Agent {
        /// The member's configuration (pgwarden.toml).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Work with a pgwarden.toml configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Route clients: a read-write port to the current primary, a read-only
    /// port over healthy standbys (docs/proxy.md).
    Proxy {
        /// The proxy's configuration (proxy.toml).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Print a new random API token (for api.token_file) and where it goes.
    Token,
    /// Run a three-member cluster on this machine and show it working.
    Demo(cmd::demo::DemoArgs),
    /// Operate a cluster through a member's REST API: list, switchover,
    /// failover, restart, reinit, pause, resume, history, events, config.
    Ctl(cmd::ctl::CtlArgs),
    /// The continuous WAL archive: what PostgreSQL runs as archive_command
    /// and restore_command when pgwarden.toml has a [backup] table.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Restore a base backup from the repository and recover it to a point
    /// in time, as a standalone server (not a member of the cluster).
    Restore(cmd::restore::RestoreArgs),
    /// The backups in the repository of pgwarden.toml's [backup]: list them
    /// with the recovery window, expire what retention no longer keeps,
    /// verify every chunk and segment. Reads the repository directly.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Logical dumps (pg_dump) of named databases in the repository of
    /// pgwarden.toml's [backup]: take them (skipped when nothing changed),
    /// list them, fetch one for pg_restore.
    #[command(subcommand)]
    Dump(cmd::dump::DumpCommand),
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// The complete backups and each timeline's recovery window (the
    /// points a restore can reach).
    List {
        /// The configuration (pgwarden.toml); only [backup] is read.
        #[arg(short, long, default_value = cmd::wal::DEFAULT_CONFIG)]
        config: PathBuf,
        /// The cluster, when the repository holds several.
        #[arg(long)]
        system_identifier: Option<u64>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove the backups and archived WAL that retention_full and
    /// retention_window no longer keep.
    Expire {
        /// The configuration (pgwarden.toml); only [backup] is read.
        #[arg(short, long, default_value = cmd::wal::DEFAULT_CONFIG)]
        config: PathBuf,
        /// The cluster, when the repository holds several.
        #[arg(long)]
        system_identifier: Option<u64>,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-read every chunk and archived WAL file, check the WAL has no gap
    /// from each backup to the end of the archive, and say what anything
    /// missing breaks. Exit status 1 when something is broken.
    Verify {
        /// The configuration (pgwarden.toml); only [backup] is read.
        #[arg(short, long, default_value = cmd::wal::DEFAULT_CONFIG)]
        config: PathBuf,
        /// The cluster, when the repository holds several.
        #[arg(long)]
        system_identifier: Option<u64>,
        /// Only this backup (its chunks and the WAL from its start).
        #[arg(long)]
        backup: Option<String>,
        /// Objects read at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum WalCommand {
    /// Archive a WAL file (archive_command: `pgwarden wal push -c FILE %p`).
    /// Exit status 0 once it is in the repository (also when it was already,
    /// with the same content).
    Push {
        /// The member's configuration (pgwarden.toml); only [backup] is read.
        #[arg(short, long, default_value = cmd::wal::DEFAULT_CONFIG)]
        config: PathBuf,
        /// The file, as PostgreSQL gives it (pg_wal/NAME, relative to the
        /// data directory).
        path: PathBuf,
    },
    /// Restore an archived WAL file (restore_command:
    /// `pgwarden wal fetch -c FILE %f %p`). Exit status 0 when restored, 1
    /// when the archive does not have it (or it cannot be read: see stderr).
    Fetch {
        /// The member's configuration (pgwarden.toml); only [backup] is read.
        #[arg(short, long, default_value = cmd::wal::DEFAULT_CONFIG)]
        config: PathBuf,
        /// The file's name (%f).
        name: String,
        /// Where to write it (%p, relative to the data directory).
        path: PathBuf,
    },
    /// Started by `wal fetch`: fetches the segments after the last one
    /// fetched into pg_wal/pgwarden-prefetch.
    #[command(hide = true)]
    Prefetch {
        #[arg(short, long, default_value = cmd::wal::DEFAULT_CONFIG)]
        config: PathBuf,
        /// The path `wal fetch` was given (%p).
        path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate FILE and print the effective configuration, secrets masked;
    /// then check, as the users the agent and PostgreSQL run as, every
    /// path they need on this host (with the command that fixes each).
    Check {
        /// The configuration file (pgwarden.toml).
        file: PathBuf,
        /// The user the agent runs as (default: the current user; for root,
        /// `postgres`, as the packaged unit runs it). PostgreSQL runs as
        /// this user, or as `postgres` when it is root.
        #[arg(long, value_name = "USER")]
        agent_user: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();

    let result = match cli.command {
        Command::Agent { config } => cmd::agent::run(&config),
        Command::Config(ConfigCommand::Check { file, agent_user }) => {
            cmd::config_check::run(&file, agent_user.as_deref())
        }
        Command::Demo(args) => cmd::demo::run(args),
        Command::Token => cmd::token::run(),
        // ctl has its own exit codes (docs/ctl.md).
        Command::Ctl(args) => return cmd::ctl::run(args, Cli::command()),
        Command::Proxy { config } => cmd::proxy::run(&config),
        Command::Restore(args) => cmd::restore::run(args),
        Command::Dump(command) => cmd::dump::run(command),
        Command::Backup(BackupCommand::List {
            config,
            system_identifier,
            json,
        }) => cmd::backup_list::run(&config, system_identifier, json),
        Command::Backup(BackupCommand::Expire {
            config,
            system_identifier,
            dry_run,
        }) => cmd::backup_expire::run(&config, system_identifier, dry_run),
        Command::Backup(BackupCommand::Verify {
            config,
            system_identifier,
            backup,
            parallel,
            json,
        }) => match cmd::backup_verify::run(&config, system_identifier, backup, parallel, json) {
            Ok(true) => Ok(()),
            // The report said what is broken.
            Ok(false) => return ExitCode::FAILURE,
            Err(err) => Err(err),
        },
        Command::Wal(WalCommand::Push { config, path }) => cmd::wal::push(&config, &path),
        Command::Wal(WalCommand::Prefetch { config, path }) => cmd::wal::prefetch(&config, &path),
        Command::Wal(WalCommand::Fetch { config, name, path }) => {
            match cmd::wal::fetch(&config, &name, &path) {
                Ok(true) => Ok(()),
                // The end of the archive, as PostgreSQL expects to meet it:
                // nothing to say.
                Ok(false) => return ExitCode::FAILURE,
                Err(err) => Err(err),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pgwarden: {err:#}");
            ExitCode::FAILURE
        }
    }
}
