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
    /// Run a three-member cluster on this machine and show it working.
    Demo(cmd::demo::DemoArgs),
    /// Operate a cluster through a member's REST API: list, switchover,
    /// failover, restart, reinit, pause, resume, history, events, config.
    Ctl(cmd::ctl::CtlArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate FILE and print the effective configuration, secrets masked.
    Check {
        /// The configuration file (pgwarden.toml).
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();

    let result = match cli.command {
        Command::Agent { config } => cmd::agent::run(&config),
        Command::Config(ConfigCommand::Check { file }) => cmd::config_check::run(&file),
        Command::Demo(args) => cmd::demo::run(args),
        // ctl has its own exit codes (docs/ctl.md).
        Command::Ctl(args) => return cmd::ctl::run(args, Cli::command()),
        Command::Proxy { config } => cmd::proxy::run(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pgwarden: {err:#}");
            ExitCode::FAILURE
        }
    }
}
