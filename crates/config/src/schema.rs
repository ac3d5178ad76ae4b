//! The validated configuration: defaults applied, names checked, secrets read.
//! Field names are the keys of `pgwarden.toml`; docs/configuration.md has the
//! meaning of each.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;
use crate::net::IpNet;
use crate::secret::Secret;

#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub member: Member,
    pub postgresql: Postgresql,
    pub store: Store,
    pub timing: Timing,
    pub api: Api,
    pub credentials: Credentials,
    // Skipped when empty so that it does not open the output as `peers = []`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
    pub hooks: Hooks,
    /// Set when the file has a `[backup]` table: PostgreSQL then archives
    /// its WAL there (docs/backup.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<Backup>,
    /// How a new cluster starts: `None` is initdb; `Some` restores a base
    /// backup from `[backup]`'s repository instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Bootstrap>,
    /// The file this was loaded from, made absolute ([`crate::load`]);
    /// `None` when parsed from text. The agent names it in the
    /// `archive_command` it writes.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// What runs on every event of this member (a role change, a failover, a
/// switchover step). Neither ever delays a decision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Hooks {
    /// Run with `sh -c`, the event in `PGWARDEN_EVENT_*` variables and as
    /// JSON on stdin.
    pub command: Option<String>,
    /// POSTed the event as JSON.
    pub webhook: Option<String>,
    /// For one run of the command or one webhook attempt.
    #[serde(serialize_with = "duration::serialize")]
    pub timeout: Duration,
    /// Webhook attempts after the first, with doubling backoff.
    pub retries: u32,
}

impl Config {
    /// The configuration in force, as TOML: defaults filled in, bin_dir and
    /// log_file resolved, and each secret shown as `password = "********"`
    /// (or `token`) next to the key it was read from. Meant for reading
    /// (`pgwarden ctl config`, startup logs); the masked keys make it
    /// unloadable as is.
    pub fn effective_toml(&self) -> String {
        let mut shown = self.clone();
        shown.member.log_file = Some(self.member.effective_log_file());
        toml::to_string(&shown).expect("every Config value has a TOML form")
    }

    /// Where the other members, `pgwarden ctl` and the proxy reach this
    /// member's REST API: HTTPS when it serves a certificate, and the
    /// member's connect_address in place of a wildcard listen address.
    pub fn api_url(&self) -> String {
        self.api.url(|_| {
            let connect = &self.member.connect_address;
            if connect.contains(':') {
                format!("[{connect}]")
            } else {
                connect.clone()
            }
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Member {
    pub name: String,
    pub data_dir: PathBuf,
    /// Resolved: as given, or detected at load time.
    pub bin_dir: PathBuf,
    pub listen_address: String,
    /// Resolved: as given, or `listen_address` when that is a single host.
    pub connect_address: String,
    pub port: u16,
    /// Empty means no unix socket; see [`Member::unix_socket_dir`].
    pub socket_dir: PathBuf,
    pub log_file: Option<PathBuf>,
    /// `reachability` and its `reachability_*` keys.
    #[serde(flatten)]
    pub reachability: Reachability,
    pub tags: Tags,
}

/// `[member] reachability`: whether the network this member's clients live
/// on reaches it, checked by the agent off its rounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reachability {
    /// Targets that stand for "the clients can reach me"; empty: no check.
    pub targets: Vec<ReachTarget>,
    /// How many targets must answer for the check to pass.
    pub min: u32,
    /// From the start of one check to the start of the next.
    pub interval: Duration,
    /// How long each target may take to answer.
    pub timeout: Duration,
}

/// The keys as written, none when there are no targets.
impl Serialize for Reachability {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        if !self.targets.is_empty() {
            map.serialize_entry("reachability", &self.targets)?;
            map.serialize_entry("reachability_min", &self.min)?;
            map.serialize_entry(
                "reachability_interval",
                &crate::format_duration(self.interval),
            )?;
            map.serialize_entry(
                "reachability_timeout",
                &crate::format_duration(self.timeout),
            )?;
        }
        map.end()
    }
}

/// One target of `[member] reachability`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReachTarget {
    /// A TCP connection to `host:port` is accepted.
    Tcp(String),
    /// A GET of the URL answers 2xx or 3xx.
    Http(String),
}

impl fmt::Display for ReachTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReachTarget::Tcp(text) | ReachTarget::Http(text) => f.write_str(text),
        }
    }
}

impl Serialize for ReachTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Member {
    /// Where pg_ctl writes the server log.
    pub fn effective_log_file(&self) -> PathBuf {
        self.log_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("log").join("postmaster.log"))
    }

    /// The value for `unix_socket_directories`, or `None` for TCP only.
    pub fn unix_socket_dir(&self) -> Option<&Path> {
        (!self.socket_dir.as_os_str().is_empty()).then_some(self.socket_dir.as_path())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tags {
    /// Never promoted.
    pub nofailover: bool,
    /// Never made a synchronous standby.
    pub nosync: bool,
    /// Kept out of the proxy's read-only balancing.
    pub noloadbalance: bool,
    pub priority: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Postgresql {
    pub parameters: BTreeMap<String, ParamValue>,
    pub hba_networks: Vec<IpNet>,
}

/// The value of one PostgreSQL setting.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

/// The value as PostgreSQL reads it, unquoted (`on`/`off` for booleans).
impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::String(s) => f.write_str(s),
            ParamValue::Integer(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Bool(b) => f.write_str(if *b { "on" } else { "off" }),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Store {
    pub backend: Backend,
    pub endpoints: Vec<String>,
    pub namespace: String,
    pub cluster: String,
    #[serde(serialize_with = "duration::serialize")]
    pub request_timeout: Duration,
    /// Set when the store needs a user name and password.
    #[serde(flatten)]
    pub auth: Option<Credential>,
    pub ca_file: Option<PathBuf>,
    /// Set together with `key_file`, or neither is.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Etcd,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Timing {
    #[serde(serialize_with = "duration::serialize")]
    pub heartbeat: Duration,
    /// Greater than `heartbeat`.
    #[serde(serialize_with = "duration::serialize")]
    pub lease_ttl: Duration,
    #[serde(serialize_with = "duration::serialize")]
    pub pg_ctl_timeout: Duration,
    #[serde(serialize_with = "duration::serialize")]
    pub clone_timeout: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct Api {
    pub listen: String,
    pub token_file: Option<PathBuf>,
    /// The content of `token_file`.
    pub token: Option<Secret>,
    /// Reads (GET) need the token too; mutating calls always do when a
    /// token is set.
    pub auth_reads: bool,
    /// Written out by the operator: serve beyond loopback without a token.
    pub insecure: bool,
    /// Serve HTTPS with this certificate chain (PEM); set together with
    /// `key_file`, or neither is.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The CA (PEM) that signed the other members' API certificates, for
    /// forwarding requests to them over HTTPS; else the system's CAs.
    pub ca_file: Option<PathBuf>,
}

impl Api {
    /// Where a client on this host (`pgwarden ctl -c`) reaches this API:
    /// as [`Config::api_url`], with loopback in place of a wildcard.
    pub fn local_url(&self) -> String {
        self.url(|wildcard| {
            if wildcard == "0.0.0.0" {
                "127.0.0.1".to_string()
            } else {
                "[::1]".to_string()
            }
        })
    }

    /// `listen` as a URL: HTTPS when it serves a certificate, and
    /// `wildcard("0.0.0.0" or "[::]")` in place of such a host.
    fn url(&self, wildcard: impl FnOnce(&str) -> String) -> String {
        let scheme = if self.cert_file.is_some() {
            "https"
        } else {
            "http"
        };
        let (host, port) = self
            .listen
            .rsplit_once(':')
            .expect("api.listen is validated as host:port");
        let host = match host {
            "0.0.0.0" | "[::]" => wildcard(host),
            host => host.to_string(),
        };
        format!("{scheme}://{host}:{port}")
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Credentials {
    pub superuser: Credential,
    pub replication: Credential,
}

#[derive(Clone, Debug, Serialize)]
pub struct Credential {
    pub username: String,
    #[serde(flatten)]
    pub source: PasswordSource,
    /// Read from `source` at load time.
    pub password: Secret,
}

impl Config {
    /// The environment variables passwords are read from (`password_env`):
    /// pgwarden keeps them out of the processes it starts.
    pub fn secret_env_names(&self) -> Vec<String> {
        let credentials = [
            Some(&self.credentials.superuser),
            Some(&self.credentials.replication),
            self.store.auth.as_ref(),
        ];
        credentials
            .into_iter()
            .flatten()
            .filter_map(|c| match &c.source {
                PasswordSource::Env(name) => Some(name.clone()),
                PasswordSource::File(_) => None,
            })
            .collect()
    }
}

/// Where a password came from, kept so it can be shown and re-read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PasswordSource {
    #[serde(rename = "password_file")]
    File(PathBuf),
    #[serde(rename = "password_env")]
    Env(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Peer {
    pub name: String,
    pub api: String,
}

/// Where backups and the WAL archive live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    pub repository: Repository,
    pub retention: Retention,
    /// How a new standby, a re-clone or a reinit gets its data directory:
    /// the methods in the order they are tried, each failure falling back
    /// to the next.
    pub replica_from: Vec<ReplicaMethod>,
}

/// One way to build a standby's data directory (`[backup] replica_from`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaMethod {
    /// The newest complete backup of the cluster in the repository, then
    /// the WAL archive: no load on the primary but the last bit of WAL.
    Backup,
    /// pg_basebackup from the member it will stream from.
    Primary,
}

impl ReplicaMethod {
    /// The order with a repository: backup first, pg_basebackup when the
    /// repository has no usable backup or the restore fails.
    pub const DEFAULT_ORDER: [ReplicaMethod; 2] = [ReplicaMethod::Backup, ReplicaMethod::Primary];

    /// As written in the file.
    pub fn name(self) -> &'static str {
        match self {
            ReplicaMethod::Backup => "backup",
            ReplicaMethod::Primary => "primary",
        }
    }

    pub fn parse(text: &str) -> Option<ReplicaMethod> {
        [ReplicaMethod::Backup, ReplicaMethod::Primary]
            .into_iter()
            .find(|m| m.name() == text)
    }
}

/// Which backups `pgwarden backup expire` keeps: a backup goes only when
/// neither rule keeps it (and no kept backup needs it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// The newest this many full backups (and what they need).
    pub full: u32,
    /// Every backup a point in this window (back from now) needs.
    pub window: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            full: 2,
            window: None,
        }
    }
}

/// `[bootstrap]`: a new cluster from a backup instead of initdb. Only the
/// member that initializes the cluster reads it; the others clone from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bootstrap {
    /// A backup id, or `None` (`"latest"`) for the newest one that can
    /// reach the target.
    #[serde(rename = "from_backup", serialize_with = "latest_or")]
    pub backup_id: Option<String>,
    /// Where recovery stops, as `pgwarden restore --to` takes it (`latest`,
    /// a time, a WAL position, a restore point); checked by the agent.
    pub recovery_target: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repository {
    /// A directory, usually a mounted NFS share.
    Directory(PathBuf),
    S3(S3),
}

/// An S3-compatible object store (`repository = "s3://bucket/prefix"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3 {
    pub bucket: String,
    /// Repository path segments below the bucket; empty for its root.
    pub prefix: String,
    /// `None`: AWS's own endpoint for `region`.
    pub endpoint: Option<String>,
    pub region: String,
    /// An AWS shared-credentials file; `None`: the AWS environment
    /// (`AWS_ACCESS_KEY_ID`…, web identity, instance credentials).
    pub credentials_file: Option<PathBuf>,
    /// The section of `credentials_file` to use.
    pub profile: String,
    /// CA certificates (PEM) for an https endpoint; else the system's.
    pub ca_file: Option<PathBuf>,
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repository::Directory(dir) => write!(f, "{}", dir.display()),
            Repository::S3(s3) if s3.prefix.is_empty() => write!(f, "s3://{}", s3.bucket),
            Repository::S3(s3) => write!(f, "s3://{}/{}", s3.bucket, s3.prefix),
        }
    }
}

/// As written in the file: `repository` and the `s3_*` keys.
fn latest_or<S: serde::Serializer>(id: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(id.as_deref().unwrap_or("latest"))
}

impl Serialize for Backup {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            repository: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            s3_endpoint: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            s3_region: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            s3_credentials_file: Option<&'a Path>,
            #[serde(skip_serializing_if = "Option::is_none")]
            s3_profile: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            s3_ca_file: Option<&'a Path>,
            // Shown when not the default, like the s3_* keys.
            #[serde(skip_serializing_if = "Option::is_none")]
            retention_full: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            retention_window: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            replica_from: Option<&'a [ReplicaMethod]>,
        }
        let s3 = match &self.repository {
            Repository::S3(s3) => Some(s3),
            Repository::Directory(_) => None,
        };
        Shown {
            repository: self.repository.to_string(),
            s3_endpoint: s3.and_then(|s3| s3.endpoint.as_deref()),
            s3_region: s3.map(|s3| s3.region.as_str()),
            s3_credentials_file: s3.and_then(|s3| s3.credentials_file.as_deref()),
            s3_profile: s3
                .filter(|s3| s3.credentials_file.is_some())
                .map(|s3| s3.profile.as_str()),
            s3_ca_file: s3.and_then(|s3| s3.ca_file.as_deref()),
            retention_full: Some(self.retention.full).filter(|n| *n != Retention::default().full),
            retention_window: self.retention.window.map(crate::format_duration),
            replica_from: Some(self.replica_from.as_slice())
                .filter(|m| *m != ReplicaMethod::DEFAULT_ORDER.as_slice()),
        }
        .serialize(s)
    }
}
