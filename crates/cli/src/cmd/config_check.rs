//! `pgwarden config check FILE [--agent-user USER]`.
//!
//! Besides validating the file, checks what the agent and PostgreSQL will
//! need on this host, as the users they run as: a file root can read and
//! a directory root can write are no proof for the `postgres` user.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use config::access::{self, Denied, Who};

/// Prints the effective configuration, or the one error that stops it;
/// then every path the agent's or PostgreSQL's user cannot use, each with
/// the command that fixes it.
pub fn run(file: &Path, agent_user: Option<&str>) -> Result<()> {
    let config = config::load(file)?;
    // Read by the backup crate, which the config crate does not know.
    if let Some(bootstrap) = &config.bootstrap {
        backup::restore::point::parse_target(&bootstrap.recovery_target)
            .map_err(|e| anyhow!("{}: [bootstrap] recovery_target: {e}", file.display()))?;
    }
    let (agent, postgres) = users(agent_user)?;
    print!("{}", config.effective_toml());
    let problems = check(&config, file, &agent, &postgres);
    let users = if agent == postgres {
        format!(
            "as {}, the user the agent and PostgreSQL run as",
            agent.name
        )
    } else {
        format!(
            "as {} (the agent) and {} (PostgreSQL)",
            agent.name, postgres.name
        )
    };
    if problems.is_empty() {
        eprintln!("{}: ok (paths checked {users})", file.display());
        return Ok(());
    }
    for problem in &problems {
        eprintln!(
            "{}: {}\n  fix: {}",
            file.display(),
            problem.problem,
            problem.fix
        );
    }
    bail!(
        "{}: {} problem(s) on this host, checked {users}; run the commands above (as root), then check again{}",
        file.display(),
        problems.len(),
        if agent_user.is_none() && Who::current().is_root() {
            "; if your agent runs as root, not as postgres, check again with --agent-user root"
        } else {
            ""
        }
    )
}

/// The agent's user (`--agent-user`, else this process's, but `postgres`
/// for root: the packaged unit runs the agent as `postgres`), and
/// PostgreSQL's (`postgres` when the agent runs as root).
fn users(agent_user: Option<&str>) -> Result<(Who, Who)> {
    let named = |name: &str| {
        Who::named(name).ok_or_else(|| {
            anyhow!(
                "there is no user {name} on this host: an agent run as root runs PostgreSQL as {}, which \
                 PostgreSQL's package creates (install it); an agent run as another user: name that user \
                 with --agent-user",
                pg::RunAs::SYSTEM_USER
            )
        })
    };
    let current = Who::current();
    let agent = match agent_user {
        Some(name) => named(name)?,
        None if current.is_root() => named(pg::RunAs::SYSTEM_USER)?,
        None => current,
    };
    let postgres = if agent.is_root() {
        // A root agent starts PostgreSQL with the user's primary group
        // only (pg::RunAs: std drops supplementary groups from root).
        let mut postgres = named(pg::RunAs::SYSTEM_USER)?;
        postgres.groups = vec![postgres.gid];
        postgres
    } else {
        agent.clone()
    };
    Ok((agent, postgres))
}

/// Every problem found, in the order the agent would meet them.
fn check(config: &config::Config, file: &Path, agent: &Who, postgres: &Who) -> Vec<Denied> {
    let mut problems = Vec::new();
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
    problems.extend(access::readable(&absolute, agent).err());
    if config.backup.is_some() && postgres != agent {
        // PostgreSQL's archive_command (`pgwarden wal push`) reads it.
        problems.extend(access::readable(&absolute, postgres).err());
    }
    for secret in secrets(config) {
        problems.extend(access::readable(&secret, agent).err());
    }
    // The object store's files: read by the agent (backups) and by
    // `pgwarden wal push` as PostgreSQL's user (archive_command).
    for file in s3_files(config) {
        problems.extend(access::readable(&file, agent).err());
        if postgres != agent {
            problems.extend(access::readable(&file, postgres).err());
        }
    }
    problems.extend(data_dir(&config.member.data_dir, agent, postgres));
    if let Some(socket_dir) = config.member.unix_socket_dir() {
        problems.extend(existing_dir(socket_dir, postgres, "2775"));
    }
    let log_file = config.member.effective_log_file();
    if !log_file.starts_with(&config.member.data_dir) {
        if let Some(dir) = log_file.parent() {
            problems.extend(log_dir(dir, agent, postgres));
        }
    }
    if let Some(config::Backup {
        repository: config::Repository::Directory(repo),
        ..
    }) = &config.backup
    {
        if repo.is_dir() {
            problems.extend(access::writable_dir(repo, postgres).err());
        }
    }
    problems.dedup();
    problems
}

/// The files holding secrets and keys the agent reads.
fn secrets(config: &config::Config) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let credentials = [
        Some(&config.credentials.superuser),
        Some(&config.credentials.replication),
        config.store.auth.as_ref(),
    ];
    for credential in credentials.into_iter().flatten() {
        if let config::PasswordSource::File(path) = &credential.source {
            files.push(path.clone());
        }
    }
    let api = &config.api;
    let store = &config.store;
    files.extend(
        [
            &api.token_file,
            &api.cert_file,
            &api.key_file,
            &api.ca_file,
            &store.ca_file,
            &store.cert_file,
            &store.key_file,
        ]
        .into_iter()
        .flatten()
        .cloned(),
    );
    files
}

/// An S3 repository's credentials and CA files.
fn s3_files(config: &config::Config) -> Vec<PathBuf> {
    match config.backup.as_ref().map(|b| &b.repository) {
        Some(config::Repository::S3(s3)) => [&s3.credentials_file, &s3.ca_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

/// The data directory: if it exists, PostgreSQL's user owns it and nobody
/// else may write it; if not, the agent creates it (and writes initdb's
/// password file, and moves a diverged directory aside) in its parent.
fn data_dir(data_dir: &Path, agent: &Who, postgres: &Who) -> Vec<Denied> {
    let pg = postgres.owner_spec();
    match std::fs::metadata(data_dir) {
        Ok(meta) => {
            let mut problems = Vec::new();
            if let Err(denied) = access::reach(data_dir, postgres) {
                problems.push(denied);
            }
            if !meta.is_dir() {
                problems.push(Denied {
                    path: data_dir.to_owned(),
                    problem: format!("data_dir {} is not a directory", data_dir.display()),
                    fix: "correct member.data_dir".to_string(),
                });
            } else if meta.uid() != postgres.uid {
                problems.push(Denied {
                    path: data_dir.to_owned(),
                    problem: format!(
                        "data_dir {} is not owned by {}, the user PostgreSQL runs as",
                        data_dir.display(),
                        postgres.name
                    ),
                    fix: format!("chown -R {pg} {}", data_dir.display()),
                });
            } else if meta.mode() & 0o027 != 0 {
                problems.push(Denied {
                    path: data_dir.to_owned(),
                    problem: format!(
                        "data_dir {} has mode {:o}: PostgreSQL refuses a data directory others may read or its group may write",
                        data_dir.display(),
                        meta.mode() & 0o777
                    ),
                    fix: format!("chmod 700 {}", data_dir.display()),
                });
            }
            problems
        }
        Err(_) => {
            let parent = data_dir.parent().unwrap_or(Path::new("/"));
            let install = format!(
                "install -d -o {} -m 700 {}",
                pg.replace(':', " -g "),
                parent.display()
            );
            let result = if agent.is_root() {
                // Root creates the data directory and hands it over:
                // PostgreSQL's user only has to get through to it.
                access::reach(data_dir, postgres)
            } else {
                access::writable_dir(parent, agent)
            };
            match result {
                Ok(()) => Vec::new(),
                Err(mut denied) => {
                    if denied.path == parent || !parent.exists() {
                        denied.problem = format!(
                            "{} (the agent creates data_dir {} in it)",
                            denied.problem,
                            data_dir.display()
                        );
                        denied.fix = if parent.exists() {
                            format!("chown {pg} {}", parent.display())
                        } else {
                            install
                        };
                    }
                    vec![denied]
                }
            }
        }
    }
}

/// A directory PostgreSQL writes in, that nobody creates for it (the
/// socket directory: postgresql-common makes `/var/run/postgresql` at boot).
fn existing_dir(dir: &Path, postgres: &Who, mode: &str) -> Option<Denied> {
    if !dir.is_dir() {
        return Some(Denied {
            path: dir.to_owned(),
            problem: format!("socket_dir {} does not exist", dir.display()),
            fix: format!(
                "install -d -o {} -m {mode} {}",
                postgres.owner_spec().replace(':', " -g "),
                dir.display()
            ),
        });
    }
    access::writable_dir(dir, postgres).err()
}

/// The log file's directory: PostgreSQL's user writes the file there; the
/// agent creates the directory when it is missing.
fn log_dir(dir: &Path, agent: &Who, postgres: &Who) -> Option<Denied> {
    if dir.is_dir() {
        return access::writable_dir(dir, postgres).err();
    }
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let mut denied = match access::writable_dir(parent, agent) {
        Ok(()) => return None,
        Err(denied) => denied,
    };
    denied.problem = format!(
        "{} (the log file's directory {} is missing and cannot be created)",
        denied.problem,
        dir.display()
    );
    denied.fix = format!(
        "install -d -o {} -m 750 {}",
        postgres.owner_spec().replace(':', " -g "),
        dir.display()
    );
    Some(denied)
}
