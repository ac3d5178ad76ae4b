//! The configuration of one pgwarden agent process (`pgwarden.toml`).
//!
//! [`load`] reads, parses and validates the file, reads the secrets it names
//! and resolves `bin_dir`, so the rest of pgwarden gets a [`Config`] it can use
//! without further checks. Every problem is a [`ConfigError`] that names the
//! file, line and column, and says what to do. docs/configuration.md lists the
//! keys.

pub mod access;
mod bindir;
mod duration;
mod error;
mod file;
mod locate;
mod net;
mod parameters;
mod raw;
mod schema;
mod secret;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use duration::{format_duration, parse_duration};
pub use error::ConfigError;
pub use file::{StoreTable, TomlFile};
pub use net::IpNet;
pub use parameters::{bad_parameter_name, bad_parameter_value, managed_parameter, runs_code};
pub use schema::{
    Api, Backend, Backup, Bootstrap, Config, Credential, Credentials, Hooks, Member, ParamValue,
    PasswordSource, Peer, Postgresql, ReachTarget, Reachability, ReplicaMethod, Repository,
    Retention, Store, Tags, Timing, S3,
};
pub use secret::Secret;
pub use validate::{heartbeat_fits, MAX_LEASE_TTL, MIN_LEASE_TTL};

/// The PostgreSQL bin directory `member.bin_dir` defaults to: `pg_config
/// --bindir`, else `pg_ctl` on PATH, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
pub fn detect_bin_dir() -> Option<std::path::PathBuf> {
    bindir::detect(
        std::env::var_os("PATH").as_deref(),
        Path::new("/usr/lib/postgresql"),
    )
}

/// Reads `path` and does what [`parse`] does, naming the file as given;
/// [`Config::file`] is `path` made absolute.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|io| ConfigError::unreadable(path, io))?;
    let mut config = parse(&source, &path.display().to_string())?;
    config.file = Some(std::path::absolute(path).unwrap_or_else(|_| path.to_owned()));
    Ok(config)
}

/// Reads `path` and validates only its `[backup]` table (`None` without
/// one): the whole file must still parse, with no unknown key, but no
/// secret is read and PostgreSQL is not looked for. For `pgwarden wal
/// push` and `wal fetch`, which PostgreSQL runs as its own user.
pub fn load_backup(path: &Path) -> Result<Option<Backup>, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|io| ConfigError::unreadable(path, io))?;
    let file_name = path.display().to_string();
    let loc = locate::Locator::new(&source, &file_name)?;
    let raw = raw::deserialize(&loc, &source)?;
    validate::backup_only(raw, &loc, &validate::Host::real())
}

/// Parses and validates `source`; `file_name` is what errors call it. Secret
/// files and environment variables are read, and `bin_dir` detected, as in
/// [`load`].
pub fn parse(source: &str, file_name: &str) -> Result<Config, ConfigError> {
    parse_on(source, file_name, &validate::Host::real())
}

fn parse_on(
    source: &str,
    file_name: &str,
    host: &validate::Host<'_>,
) -> Result<Config, ConfigError> {
    let loc = locate::Locator::new(source, file_name)?;
    let raw = raw::deserialize(&loc, source)?;
    validate::validate(raw, &loc, host)
}
