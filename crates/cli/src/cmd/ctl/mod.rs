//! `pgwarden ctl`: the operator's commands, spoken to a member's REST API.
//! docs/ctl.md describes them and the exit codes.

mod backup;
mod catalog;
mod config_cmd;
mod error;
mod list;
mod members;
mod render;
mod switchover;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

pub use error::CtlError;
use target::Target;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// A member's API URL, e.g. http://10.0.0.1:8008; repeat it to list
    /// several: each is tried in turn until one answers.
    #[arg(
        long = "api",
        global = true,
        env = "PGWARDEN_API",
        value_delimiter = ','
    )]
    pub api: Vec<String>,
    /// Take the API address, token and peers from a member's pgwarden.toml
    /// (else $PGWARDEN_CONFIG; else, without --api, /etc/pgwarden/pgwarden.toml
    /// when it exists).
    #[arg(short = 'c', long = "config", global = true, env = "PGWARDEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// File holding the API token (else $PGWARDEN_API_TOKEN, else the
    /// token of -c's configuration).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the members' API certificates.
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// The members, their roles, state, timeline and lag.
    ///
    /// The first line names the leader and its term: the store revision its
    /// leadership began at. A larger term is a later leadership; how far
    /// apart two terms are means nothing (every store write counts).
    List {
        /// Redraw every SECS seconds (2 when no value is given).
        #[arg(long, short = 'w', num_args = 0..=1, default_missing_value = "2", value_name = "SECS")]
        watch: Option<u64>,
    },
    /// Hand the primary role to a standby, cleanly.
    Switchover {
        /// The current leader (checked: refused if another member leads).
        #[arg(long)]
        from: Option<String>,
        /// The standby to promote; without it the agents pick the best.
        #[arg(long)]
        to: Option<String>,
        /// When: RFC 3339 (2026-11-21T03:00:00Z) or unix seconds.
        #[arg(long)]
        at: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
        /// Cancel the pending switchover instead.
        #[arg(long, conflicts_with_all = ["from", "to", "at"])]
        cancel: bool,
    },
    /// Promote a member when no healthy leader exists.
    Failover {
        #[arg(long)]
        to: String,
        #[arg(long)]
        force: bool,
    },
    /// Restart a member's PostgreSQL in place.
    Restart { member: String },
    /// Throw a standby's data away and clone it afresh from the leader.
    Reinit {
        member: String,
        /// Return once the agent accepted; do not follow the clone.
        #[arg(long)]
        no_wait: bool,
    },
    /// Retire a member for good: its slot on the primary is dropped, every
    /// reference to it removed, and its agent refuses to rejoin until its
    /// data directory is re-cloned.
    ///
    /// Refused for the leader (switch over first) and for a member whose
    /// agent runs, unless --force.
    Remove {
        member: String,
        /// Also when its agent runs: that agent stops PostgreSQL first,
        /// then retires.
        #[arg(long)]
        force: bool,
    },
    /// Let a removed member rejoin with its data directory as it is.
    Readmit { member: String },
    /// Suspend automatic failover (maintenance).
    Pause,
    /// Resume automatic failover.
    Resume,
    /// The timeline history: every promotion.
    ///
    /// LSN is where the new primary's WAL stood right after its promotion,
    /// written as PostgreSQL writes WAL positions (0/516CD60).
    History,
    /// The cluster's event log.
    ///
    /// Terms and WAL positions in the details read as in `list` and
    /// `history`.
    Events {
        /// Keep printing new events as they come.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Show or change the cluster-wide dynamic configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Base backups: take one now, see the running and the last one, list
    /// the repository.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the dynamic configuration.
    Show,
    /// Set values: ttl_ms=10000 parameters.work_mem=8MB (KEY=null removes).
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// Edit it in $EDITOR; saved only if valid and unchanged meanwhile.
    Edit,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Ask for a base backup now and follow it to its end (exit 1 if it
    /// fails). The leader picks the member: a streaming standby, the
    /// primary only if none can. Skipped when the WAL has not moved since
    /// the last backup, unless --force.
    Run {
        /// A full backup (else incremental on the last one, unless the
        /// schedule's full interval says a full one is due).
        #[arg(long)]
        full: bool,
        /// Take it even if nothing changed since the last backup.
        #[arg(long)]
        force: bool,
        /// Return once it is asked for; do not follow it.
        #[arg(long)]
        no_wait: bool,
    },
    /// The running backup (with its progress), a pending request, the last
    /// backup and the last failure.
    Status,
    /// Each backup in the repository and the recovery window of each
    /// timeline (the earliest and latest point a restore can reach), as a
    /// member with a [backup] repository reads them.
    List,
}

/// Runs a ctl command; `cli` is the whole command line's definition, for
/// completions.
pub fn run(args: CtlArgs, cli: clap::Command) -> ExitCode {
    if let CtlCommand::Completions { shell } = args.command {
        let mut cli = cli;
        clap_complete::generate(shell, &mut cli, "pgwarden", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pgwarden ctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pgwarden ctl: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

async fn dispatch(args: CtlArgs) -> Result<(), CtlError> {
    let target = Target::new(&args)?;
    let output = args.output;
    match args.command {
        CtlCommand::List { watch } => list::run(&target, output, watch).await,
        CtlCommand::Switchover {
            from,
            to,
            at,
            force,
            cancel,
        } => {
            if cancel {
                switchover::cancel(&target, output).await
            } else {
                switchover::switchover(&target, output, from, to, at, force).await
            }
        }
        CtlCommand::Failover { to, force } => {
            switchover::failover(&target, output, to, force).await
        }
        CtlCommand::Restart { member } => members::restart(&target, output, &member).await,
        CtlCommand::Reinit { member, no_wait } => {
            members::reinit(&target, output, &member, !no_wait).await
        }
        CtlCommand::Remove { member, force } => {
            members::remove(&target, output, &member, force).await
        }
        CtlCommand::Readmit { member } => members::readmit(&target, output, &member).await,
        CtlCommand::Pause => config_cmd::pause(&target, output, true).await,
        CtlCommand::Resume => config_cmd::pause(&target, output, false).await,
        CtlCommand::History => list::history(&target, output).await,
        CtlCommand::Events { follow } => list::events(&target, output, follow).await,
        CtlCommand::Config(ConfigCommand::Show) => config_cmd::show(&target, output).await,
        CtlCommand::Config(ConfigCommand::Set { settings }) => {
            config_cmd::set(&target, output, &settings).await
        }
        CtlCommand::Config(ConfigCommand::Edit) => config_cmd::edit(&target, output).await,
        CtlCommand::Backup(BackupCommand::Run {
            full,
            force,
            no_wait,
        }) => backup::run(&target, output, full, force, !no_wait).await,
        CtlCommand::Backup(BackupCommand::Status) => backup::status(&target, output).await,
        CtlCommand::Backup(BackupCommand::List) => catalog::list(&target, output).await,
        CtlCommand::Completions { .. } => unreachable!("handled before the runtime starts"),
    }
}
