//! `pgwarden restore --to TARGET --target-dir DIR`: a base backup from the
//! repository in pgwarden.toml's `[backup]`, written into DIR as a server
//! of its own (not a member: it streams from no one and archives nowhere),
//! set up to replay the archived WAL up to TARGET and be promoted there;
//! with `--start`, started and waited for (docs/backup.md, "Restore").

mod standalone;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use backup::manifest::Manifest;
use backup::restore::{self, Recovery, RecoveryTarget, RestoreOptions};
use backup::Repository;
use pg::{Endpoint, Instance, InstanceSpec, Role, RunAs, Timeouts};

use backup::restore::choose;
use backup::restore::point::{self as target, Timeline};
use standalone::Standalone;

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Where recovery stops: a time (RFC 3339, or `YYYY-MM-DD HH:MM:SS`
    /// with an optional offset such as `+01`; UTC without one), a WAL
    /// position (`0/3000148`), a restore point's name (`name:NAME` when it
    /// looks like a time), or `latest` (the end of the archive).
    #[arg(long, value_parser = target::parse_target)]
    to: RecoveryTarget,
    /// The directory to restore into: new or empty (or, with --delta, an
    /// old copy to update).
    #[arg(long)]
    target_dir: PathBuf,
    /// Restore into an existing data directory, writing only what differs
    /// and removing what the backup does not have.
    #[arg(long)]
    delta: bool,
    /// The backup to start from (an id from `pgwarden backup list`);
    /// default: the newest that ends before the target.
    #[arg(long)]
    backup: Option<String>,
    /// The timeline recovery follows: `latest` (across failovers), `current`
    /// (the backup's) or a number.
    #[arg(long, default_value = "latest", value_parser = target::parse_timeline)]
    timeline: Timeline,
    /// This host's pgwarden.toml: the repository ([backup]), PostgreSQL's
    /// programs and user.
    #[arg(short, long, default_value = super::wal::DEFAULT_CONFIG)]
    config: PathBuf,
    /// The port the restored server listens on. The default is PostgreSQL's
    /// usual one, which this host's member may have taken already.
    #[arg(long, default_value_t = 5432)]
    port: u16,
    /// `listen_addresses` of the restored server.
    #[arg(long, default_value = "localhost")]
    listen: String,
    /// Start the restored server and wait until it reached the target and
    /// accepts writes.
    #[arg(long)]
    start: bool,
    /// Objects fetched and files compared at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
}

pub fn run(args: RestoreArgs) -> Result<()> {
    let config = config::load(&args.config)?;
    let backup_table = config.backup.as_ref().ok_or_else(|| {
        anyhow!(
            "{} has no [backup] table, so there is no repository to restore from; give the \
             configuration of a member that archives (-c FILE)",
            args.config.display()
        )
    })?;
    let target_dir = std::path::absolute(&args.target_dir)
        .with_context(|| format!("resolve {}", args.target_dir.display()))?;
    check_not_a_member(&config, &target_dir, args.port)?;
    if args.start {
        check_port_free(args.port)?;
    }
    let repo = backup::open(backup_table)?;
    let run_as = RunAs::detect()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.parallel.clamp(1, 8))
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        let where_ = backup_table.repository.to_string();
        let manifest = pick(repo.as_ref(), &args, &where_).await?;
        let restore_command = agent::archive::commands(&config)?
            .expect("a [backup] table gives commands")
            .restore_command;
        eprintln!(
            "restoring backup {} (ended {} at {}, timeline {}) into {}",
            manifest.id,
            manifest.stop.time,
            manifest.stop.lsn,
            manifest.stop.timeline,
            target_dir.display()
        );
        let options = RestoreOptions {
            parallelism: args.parallel.max(1),
            delta: args.delta,
            run_as: run_as.clone(),
            recovery: Recovery {
                restore_command,
                target: args.to.clone(),
                keep_archiving: false,
            },
        };
        let report = restore::restore(repo.as_ref(), &manifest.id, &target_dir, &options).await?;
        Standalone {
            listen_addresses: args.listen.clone(),
            port: args.port,
            socket_dir: socket_dir(&config),
            timeline: args.timeline.setting(),
        }
        .write(&target_dir, &run_as)
        .with_context(|| {
            format!(
                "write the standalone settings into {}",
                target_dir.display()
            )
        })?;
        eprintln!(
            "restored {} files ({} MB written{}), owned by {}",
            report.files,
            report.bytes_written >> 20,
            if args.delta {
                format!(
                    ", {} unchanged, {} removed",
                    report.unchanged_files, report.removed
                )
            } else {
                String::new()
            },
            run_as.name()
        );
        let instance = instance(&config, &target_dir, args.port, run_as.clone());
        let log_dir = target_dir.join("log");
        std::fs::create_dir_all(&log_dir)
            .and_then(|()| {
                run_as
                    .chown(&log_dir)
                    .map_err(|e| std::io::Error::other(e.to_string()))
            })
            .with_context(|| format!("create {}", log_dir.display()))?;
        if args.start {
            eprintln!(
                "starting it on port {}; recovery replays the archived WAL up to {}",
                args.port,
                describe(&args.to)
            );
            let log = instance.spec().log_file.display().to_string();
            restore::start::start_and_wait(&instance, |after| {
                eprintln!(
                    "still recovering after {}s (the server log: {log})",
                    after.as_secs()
                )
            })
            .await?;
            println!("{}", connect_hint(&config, &args, &instance));
        } else {
            println!("{}", start_hint(&instance, &args.to));
        }
        Ok(())
    })
}

/// The backup named with --backup, or the newest that can reach the target.
async fn pick(repo: &dyn Repository, args: &RestoreArgs, where_: &str) -> Result<Manifest> {
    let picked = choose::pick(
        repo,
        args.backup.as_deref(),
        &args.to,
        args.timeline,
        where_,
    )
    .await
    .map_err(|e| anyhow!(e))?;
    for note in &picked.notes {
        eprintln!("{note}");
    }
    Ok(picked.manifest)
}

/// A restore must not land on this member's own data directory or port:
/// the agent owns those.
fn check_not_a_member(config: &config::Config, target_dir: &Path, port: u16) -> Result<()> {
    let member_dir = std::path::absolute(&config.member.data_dir).unwrap_or_default();
    if member_dir == target_dir {
        bail!(
            "{} is member {}'s data directory, which its agent manages; restore into another \
             directory (a restored server is a standalone copy, not a member)",
            target_dir.display(),
            config.member.name
        );
    }
    if config.member.port == port {
        bail!(
            "port {port} is member {}'s (pgwarden.toml [member] port); give the restored server \
             another with --port",
            config.member.name
        );
    }
    Ok(())
}

fn check_port_free(port: u16) -> Result<()> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .map_err(|e| {
            anyhow!(
                "port {port} is taken on this host ({e}); give the restored server a free one \
                 with --port"
            )
        })
}

fn socket_dir(config: &config::Config) -> String {
    config
        .member
        .unix_socket_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default()
}

fn instance(config: &config::Config, data_dir: &Path, port: u16, run_as: RunAs) -> Instance {
    let role = |c: &config::Credential| Role {
        name: c.username.clone(),
        password: c.password.expose().to_string(),
    };
    Instance::new(InstanceSpec {
        data_dir: data_dir.to_path_buf(),
        bin_dir: config.member.bin_dir.clone(),
        log_file: data_dir.join("log").join("postmaster.log"),
        endpoint: Endpoint::new("127.0.0.1", port),
        superuser: role(&config.credentials.superuser),
        replication: role(&config.credentials.replication),
        hba_networks: Vec::new(),
        run_as,
        timeouts: Timeouts {
            pg_ctl: config.timing.pg_ctl_timeout,
            clone: config.timing.clone_timeout,
        },
    })
}

fn describe(target: &RecoveryTarget) -> String {
    match target {
        RecoveryTarget::Latest => "the end of the archive".into(),
        RecoveryTarget::Immediate => "the end of the backup".into(),
        RecoveryTarget::Time(t) => format!("{t} (the last transaction committed by then)"),
        RecoveryTarget::Lsn(lsn) => format!("WAL position {lsn}"),
        RecoveryTarget::Name(name) => format!("restore point `{name}`"),
    }
}

fn connect_hint(config: &config::Config, args: &RestoreArgs, instance: &Instance) -> String {
    let user = &config.credentials.superuser.username;
    let socket = socket_dir(config);
    let mut text = format!(
        "the restored server runs in {dir}, recovered to {target}, and accepts writes.\n\
         connect: psql \"host=127.0.0.1 port={port} user={user} dbname=postgres\" \
         (the superuser's password as of that point)",
        dir = instance.data_dir().display(),
        target = describe(&args.to),
        port = args.port,
    );
    if !socket.is_empty() {
        text.push_str(&format!(
            "\n     or: sudo -u {} psql -h {socket} -p {} -U {user} postgres",
            instance.spec().run_as.name(),
            args.port
        ));
    }
    text.push_str(&format!(
        "\nstop it: sudo -u {} {}/pg_ctl -D {} stop",
        instance.spec().run_as.name(),
        instance.spec().bin_dir.display(),
        instance.data_dir().display()
    ));
    text
}

fn start_hint(instance: &Instance, target: &RecoveryTarget) -> String {
    format!(
        "restored; start it to recover to {} (it is promoted there and then accepts writes):\n\
         sudo -u {} {}/pg_ctl -D {} -l {} start",
        describe(target),
        instance.spec().run_as.name(),
        instance.spec().bin_dir.display(),
        instance.data_dir().display(),
        instance.spec().log_file.display()
    )
}
