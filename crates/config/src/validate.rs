//! From the file's shape to a [`Config`]: defaults, rules between keys, paths
//! on this host, and secrets. Stops at the first problem, located.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bindir;
use crate::duration::parse_duration;
use crate::error::ConfigError;
use crate::locate::{KeyPath, Locator, Target};
use crate::net::{check_host_port, check_http_url, is_loopback, IpNet};
use crate::raw::{
    RawApi, RawConfig, RawCredential, RawHooks, RawMember, RawPeer, RawPostgresql, RawStore,
    RawTiming,
};
use crate::schema::{
    Api, Backend, Backup, Config, Credential, Credentials, Hooks, Member, ParamValue,
    PasswordSource, Peer, Postgresql, ReachTarget, Reachability, Store, Tags, Timing,
};
use crate::secret::{self, Secret};

mod backup;
mod bootstrap;

type Result<T> = std::result::Result<T, ConfigError>;

/// What validation reads from the machine besides the file, replaceable in tests.
pub(crate) struct Host<'a> {
    pub env_var: &'a dyn Fn(&str) -> Option<OsString>,
    pub pg_lib_root: &'a Path,
}

impl Host<'static> {
    pub(crate) fn real() -> Self {
        Host {
            env_var: &|name| std::env::var_os(name),
            pg_lib_root: Path::new("/usr/lib/postgresql"),
        }
    }
}

const WILDCARDS: [&str; 3] = ["*", "0.0.0.0", "::"];
const DURATION_HINT: &str =
    "write a whole number followed by ms, s, m or h, e.g. \"500ms\", \"3s\", \"1m\"";
const MEMBER_NAME_HINT: &str = "use 1 to 63 characters of a-z, 0-9 and _, starting with a letter; \
     the name becomes a replication slot name and application_name";
const CLUSTER_NAME_HINT: &str =
    "use 1 to 63 characters of a-z, 0-9, _ and -, starting with a letter";

/// etcd leases count whole seconds.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

/// A dead primary keeps the leader key for one TTL, so failover waits that
/// long: a TTL of hours is failover turned off. The file and the store's
/// dynamic configuration both hold to it.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(300);

/// Upper bounds of the file's other timing keys: beyond them a value is a
/// typo (or a way to hang the agent), not a choice.
const MAX_PG_CTL_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_CLONE_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(600);
/// A reachability check longer apart than this could not tell a primary
/// within the dynamic configuration's longest grace that its clients
/// lost it; targets beyond this many are a list of hosts, not of networks.
const MAX_REACHABILITY_INTERVAL: Duration = Duration::from_secs(60);
const MAX_REACHABILITY_TARGETS: usize = 32;

/// A healthy leader renews its lease at least twice per TTL. The file and
/// the store's dynamic configuration both hold to it.
pub fn heartbeat_fits(heartbeat: Duration, lease_ttl: Duration) -> bool {
    !heartbeat.is_zero() && heartbeat.saturating_mul(2) <= lease_ttl
}

pub(crate) fn validate(raw: RawConfig, loc: &Locator<'_>, host: &Host<'_>) -> Result<Config> {
    let v = Validator { loc, host };
    let member = v.member(raw.member)?;
    let config = Config {
        postgresql: v.postgresql(raw.postgresql)?,
        store: v.store(raw.store)?,
        timing: v.timing(raw.timing)?,
        api: v.api(raw.api)?,
        credentials: Credentials {
            superuser: v.credentials("superuser", raw.credentials.superuser)?,
            replication: v.credentials("replication", raw.credentials.replication)?,
        },
        peers: v.peers(raw.peers, &member.name)?,
        hooks: v.hooks(raw.hooks)?,
        bootstrap: raw
            .bootstrap
            .map(|b| v.bootstrap(b, raw.backup.is_some()))
            .transpose()?,
        backup: raw
            .backup
            .map(|b| v.backup(b, Some(&member.data_dir)))
            .transpose()?,
        file: None,
        member,
    };
    Ok(config)
}

/// Only the `[backup]` table (and nothing that reads secrets or looks for
/// PostgreSQL), for `pgwarden wal push` and `wal fetch`, which PostgreSQL
/// runs as its own user.
pub(crate) fn backup_only(
    raw: RawConfig,
    loc: &Locator<'_>,
    host: &Host<'_>,
) -> Result<Option<Backup>> {
    let v = Validator { loc, host };
    let data_dir = raw.member.as_ref().and_then(|m| m.data_dir.clone());
    raw.backup
        .map(|b| v.backup(b, data_dir.as_deref()))
        .transpose()
}

/// Only the `[store]` table, for files other than pgwarden.toml that share it.
pub(crate) fn store(raw: RawStore, loc: &Locator<'_>, host: &Host<'_>) -> Result<Store> {
    Validator { loc, host }.store(raw)
}

struct Validator<'a> {
    loc: &'a Locator<'a>,
    host: &'a Host<'a>,
}

impl Validator<'_> {
    fn err(
        &self,
        path: &KeyPath,
        target: Target,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> ConfigError {
        self.loc.error(path, target, message, hint)
    }

    fn required<T>(
        &self,
        table: &KeyPath,
        key: &str,
        value: Option<T>,
        example: &str,
    ) -> Result<T> {
        value.ok_or_else(|| {
            self.err(
                table,
                Target::Value,
                format!("missing required key `{key}` in {}", table.table_name()),
                format!("add e.g. {key} = {example}"),
            )
        })
    }

    fn absolute(&self, path: &KeyPath, value: &Path) -> Result<()> {
        if value.is_absolute() {
            return Ok(());
        }
        Err(self.err(
            path,
            Target::Value,
            format!("`{path}` must be an absolute path, found \"{}\"", value.display()),
            "write the full path, starting with /; relative paths would depend on the working directory",
        ))
    }

    fn existing_file(&self, path: &KeyPath, value: &Path) -> Result<()> {
        self.absolute(path, value)?;
        if value.is_file() {
            return Ok(());
        }
        Err(self.err(
            path,
            Target::Value,
            format!(
                "`{path}` {} does not exist or is not a file",
                value.display()
            ),
            "correct the path, or create the file before starting pgwarden",
        ))
    }

    /// `ca_file`, `cert_file` and `key_file` of `table`: each given one must
    /// exist, and a certificate comes with its key.
    fn tls_files(
        &self,
        table: &KeyPath,
        [ca_file, cert_file, key_file]: [&Option<PathBuf>; 3],
        pair_hint: &str,
    ) -> Result<()> {
        for (key, file) in [
            ("ca_file", ca_file),
            ("cert_file", cert_file),
            ("key_file", key_file),
        ] {
            if let Some(file) = file {
                self.existing_file(&table.key(key), file)?;
            }
        }
        let lone = match (cert_file, key_file) {
            (Some(_), None) => Some(("cert_file", "key_file")),
            (None, Some(_)) => Some(("key_file", "cert_file")),
            _ => None,
        };
        if let Some((set, unset)) = lone {
            return Err(self.err(
                &table.key(set),
                Target::Key,
                format!("`{}` is set without `{}`", table.key(set), table.key(unset)),
                pair_hint,
            ));
        }
        Ok(())
    }

    fn duration(&self, path: &KeyPath, value: Option<String>, default: &str) -> Result<Duration> {
        let text = value.unwrap_or_else(|| default.to_owned());
        let d = parse_duration(&text).map_err(|e| {
            self.err(
                path,
                Target::Value,
                format!("invalid duration for `{path}`: {e}"),
                DURATION_HINT,
            )
        })?;
        if d.is_zero() {
            return Err(self.err(
                path,
                Target::Value,
                format!("`{path}` must be greater than zero"),
                DURATION_HINT,
            ));
        }
        Ok(d)
    }

    /// `value` unless it is above `max`; the error gives the range.
    fn at_most(
        &self,
        path: &KeyPath,
        value: Duration,
        max: Duration,
        why: &str,
    ) -> Result<Duration> {
        if value <= max {
            return Ok(value);
        }
        Err(self.err(
            path,
            Target::Value,
            format!(
                "`{path}` ({}) is above {}",
                crate::format_duration(value),
                crate::format_duration(max)
            ),
            format!(
                "use a value above zero and at most \"{}\"; {why}",
                crate::format_duration(max)
            ),
        ))
    }

    fn name(&self, path: &KeyPath, what: &str, name: &str, allow_dash: bool) -> Result<()> {
        let Some(problem) = name_problem(name, allow_dash) else {
            return Ok(());
        };
        let hint = if allow_dash {
            CLUSTER_NAME_HINT
        } else {
            MEMBER_NAME_HINT
        };
        Err(self.err(
            path,
            Target::Value,
            format!("invalid {what} \"{name}\": {problem}"),
            hint,
        ))
    }

    fn member(&self, raw: Option<RawMember>) -> Result<Member> {
        let table = KeyPath::of(&["member"]);
        let m = raw.ok_or_else(|| {
            self.err(
                &table,
                Target::Value,
                "missing required section [member]",
                "add a [member] table with at least name and data_dir",
            )
        })?;
        let reach = self.reachability(&table, &m)?;
        let name = self.required(&table, "name", m.name, "\"db1\"")?;
        self.name(&table.key("name"), "member name", &name, false)?;

        let data_dir = self.required(
            &table,
            "data_dir",
            m.data_dir,
            "\"/var/lib/postgresql/15/main\"",
        )?;
        self.data_dir(&table.key("data_dir"), &data_dir)?;
        let bin_dir = self.bin_dir(&table, m.bin_dir)?;

        let listen_address = m.listen_address.unwrap_or_else(|| "127.0.0.1".to_owned());
        let connect_address = self.connect_address(&table, &listen_address, m.connect_address)?;

        let port = self.int_in(
            &table.key("port"),
            m.port.unwrap_or(5432),
            1,
            65535,
            "the TCP port PostgreSQL listens on; PostgreSQL's default is 5432",
        )?;

        let socket_dir = m
            .socket_dir
            .unwrap_or_else(|| PathBuf::from("/var/run/postgresql"));
        if !socket_dir.as_os_str().is_empty() {
            self.absolute(&table.key("socket_dir"), &socket_dir)?;
        }
        if let Some(log_file) = &m.log_file {
            self.absolute(&table.key("log_file"), log_file)?;
        }
        let priority = self.int_in(
            &table.key("tags").key("priority"),
            m.tags.priority.unwrap_or(100),
            0,
            u32::MAX.into(),
            "a whole number, 0 or more; the default is 100",
        )?;
        Ok(Member {
            name,
            data_dir,
            bin_dir,
            listen_address,
            connect_address,
            port: u16::try_from(port).expect("checked range"),
            socket_dir,
            log_file: m.log_file,
            tags: Tags {
                nofailover: m.tags.nofailover.unwrap_or(false),
                nosync: m.tags.nosync.unwrap_or(false),
                noloadbalance: m.tags.noloadbalance.unwrap_or(false),
                priority: u32::try_from(priority).expect("checked range"),
            },
            reachability: reach,
        })
    }

    /// `reachability` and its `reachability_*` keys: the targets, how many
    /// must answer (default 1), how often (default 2 s) and how long each
    /// may take (default 1 s, at most the interval).
    fn reachability(&self, table: &KeyPath, m: &RawMember) -> Result<Reachability> {
        let list = m.reachability.clone().unwrap_or_default();
        let path = table.key("reachability");
        if list.is_empty() {
            if m.reachability.is_some() {
                return Err(self.err(
                    &path,
                    Target::Value,
                    "`member.reachability` is an empty list",
                    "list the targets that stand for \"the clients can reach me\", e.g. \
                     [\"10.1.0.1:443\", \"http://10.1.0.2/health\"], or remove the key for no check",
                ));
            }
            for key in [
                "reachability_min",
                "reachability_interval",
                "reachability_timeout",
            ] {
                if self.loc.is_set(&table.key(key)) {
                    return Err(self.err(
                        &table.key(key),
                        Target::Key,
                        format!("`member.{key}` is set without `member.reachability`"),
                        "list the targets in `reachability` too, or remove this key",
                    ));
                }
            }
        }
        if list.len() > MAX_REACHABILITY_TARGETS {
            return Err(self.err(
                &path,
                Target::Value,
                format!(
                    "`member.reachability` lists {} targets, more than {MAX_REACHABILITY_TARGETS}",
                    list.len()
                ),
                "list a few targets per client network (a gateway, a load balancer, an application host)",
            ));
        }
        let mut targets: Vec<ReachTarget> = Vec::with_capacity(list.len());
        for (i, text) in list.iter().enumerate() {
            let entry = path.index(i);
            let target = if text.starts_with("http://") || text.starts_with("https://") {
                let rest = text.split_once("://").map_or("", |(_, r)| r);
                let authority = rest.split('/').next().unwrap_or("");
                let with_port = if authority.starts_with('[') {
                    if authority.contains("]:") {
                        authority.to_string()
                    } else {
                        format!("{authority}:80")
                    }
                } else if authority.contains(':') {
                    authority.to_string()
                } else {
                    format!("{authority}:80")
                };
                check_host_port(&with_port).map_err(|e| {
                    self.err(
                        &entry,
                        Target::Value,
                        format!("invalid reachability URL \"{text}\": {e}"),
                        "write an http:// or https:// URL with a host, e.g. \"http://10.1.0.2:8080/health\"",
                    )
                })?;
                ReachTarget::Http(text.clone())
            } else if text.contains("://") {
                return Err(self.err(
                    &entry,
                    Target::Value,
                    format!("reachability target \"{text}\" has a scheme pgwarden does not check"),
                    "write host:port for a TCP connect, or an http:// or https:// URL for a GET",
                ));
            } else {
                check_host_port(text).map_err(|e| {
                    self.err(
                        &entry,
                        Target::Value,
                        format!("invalid reachability target \"{text}\": {e}"),
                        "write host:port for a TCP connect (e.g. \"10.1.0.1:443\"), or an http:// URL for a GET",
                    )
                })?;
                ReachTarget::Tcp(text.clone())
            };
            if targets.contains(&target) {
                return Err(self.err(
                    &entry,
                    Target::Value,
                    format!("`member.reachability` lists \"{text}\" twice"),
                    "list each target once",
                ));
            }
            targets.push(target);
        }
        let min = match m.reachability_min {
            None => 1.min(targets.len() as i64),
            Some(n) => self.int_in(
                &table.key("reachability_min"),
                n,
                1,
                targets.len().max(1) as i64,
                "how many of the reachability targets must answer; 1 (the default): any one proves the client network works",
            )?,
        };
        let interval_path = table.key("reachability_interval");
        let interval = self.at_most(
            &interval_path,
            self.duration(&interval_path, m.reachability_interval.clone(), "2s")?,
            MAX_REACHABILITY_INTERVAL,
            "a primary learns that its clients lost it one interval late at most",
        )?;
        let timeout_path = table.key("reachability_timeout");
        let timeout = self.duration(&timeout_path, m.reachability_timeout.clone(), "1s")?;
        let interval_given = m.reachability_interval.is_some();
        if timeout > interval {
            return Err(self.err(
                &timeout_path,
                Target::Value,
                format!(
                    "`member.reachability_timeout` ({}) is longer than {}`member.reachability_interval` ({})",
                    crate::format_duration(timeout),
                    if interval_given { "" } else { "the default " },
                    crate::format_duration(interval)
                ),
                "a check must end before the next begins: lower the timeout or raise the interval",
            ));
        }
        Ok(Reachability {
            targets,
            min: min as u32,
            interval,
            timeout,
        })
    }

    fn int_in(&self, path: &KeyPath, value: i64, min: i64, max: i64, hint: &str) -> Result<i64> {
        if (min..=max).contains(&value) {
            return Ok(value);
        }
        Err(self.err(
            path,
            Target::Value,
            format!("`{path}` must be between {min} and {max}, found {value}"),
            hint,
        ))
    }

    fn data_dir(&self, path: &KeyPath, data_dir: &Path) -> Result<()> {
        self.absolute(path, data_dir)?;
        let parent = data_dir.parent().unwrap_or(Path::new(""));
        if parent.as_os_str().is_empty() || !parent.is_dir() {
            return Err(self.err(
                path,
                Target::Value,
                format!(
                    "`{path}` is in a directory that does not exist: {}",
                    parent.display()
                ),
                format!(
                    "create it for the user PostgreSQL runs as (`install -d -o postgres -g postgres -m 700 {}`) \
                     or correct the path; pgwarden creates data_dir itself, not its parents",
                    parent.display()
                ),
            ));
        }
        Ok(())
    }

    fn bin_dir(&self, table: &KeyPath, given: Option<PathBuf>) -> Result<PathBuf> {
        let path = table.key("bin_dir");
        let (dir, origin) = match given {
            Some(dir) => {
                self.absolute(&path, &dir)?;
                (dir, format!("`{path}`"))
            }
            None => {
                let path_var = (self.host.env_var)("PATH");
                let dir = bindir::detect(path_var.as_deref(), self.host.pg_lib_root).ok_or_else(|| {
                    self.err(
                        table,
                        Target::Value,
                        format!(
                            "no PostgreSQL found: `{path}` is not set, pg_config and pg_ctl are not on PATH, \
                             and no {}/*/bin holds pg_ctl",
                            self.host.pg_lib_root.display()
                        ),
                        "set bin_dir to the directory holding pg_ctl, e.g. bin_dir = \"/usr/lib/postgresql/15/bin\"",
                    )
                })?;
                (dir, "the detected bin_dir".to_owned())
            }
        };
        let missing = bindir::missing_programs(&dir);
        if missing.is_empty() {
            return Ok(dir);
        }
        Err(self.err(
            &path,
            Target::Value,
            format!("{origin} {} lacks {}", dir.display(), missing.join(", ")),
            format!(
                "point bin_dir at a PostgreSQL bin directory holding executable {}",
                bindir::PROGRAMS.join(", ")
            ),
        ))
    }

    fn connect_address(
        &self,
        table: &KeyPath,
        listen: &str,
        connect: Option<String>,
    ) -> Result<String> {
        let listen_path = table.key("listen_address");
        let connect_path = table.key("connect_address");
        let entries: Vec<&str> = listen.split(',').map(str::trim).collect();
        if entries.iter().all(|e| e.is_empty()) {
            return Err(self.err(
                &listen_path,
                Target::Value,
                format!("`{listen_path}` is empty"),
                "standbys reach PostgreSQL over TCP; give an address, e.g. listen_address = \"0.0.0.0\"",
            ));
        }
        if let Some(connect) = connect {
            if connect.is_empty() || connect.contains(',') || WILDCARDS.contains(&connect.as_str())
            {
                return Err(self.err(
                    &connect_path,
                    Target::Value,
                    format!("`{connect_path}` must be one host name or IP address, found \"{connect}\""),
                    "give the address other members use to reach this PostgreSQL, e.g. connect_address = \"10.0.0.1\"",
                ));
            }
            return Ok(connect);
        }
        let why = match entries.as_slice() {
            [one] if WILDCARDS.contains(one) => format!("is the wildcard \"{one}\""),
            [one] => return Ok((*one).to_owned()),
            _ => "lists several addresses".to_owned(),
        };
        Err(self.err(
            &listen_path,
            Target::Value,
            format!("`{connect_path}` is required because `{listen_path}` {why}"),
            "set connect_address to the host or IP other members use to reach this PostgreSQL, \
             e.g. connect_address = \"10.0.0.1\"",
        ))
    }

    fn postgresql(&self, raw: RawPostgresql) -> Result<Postgresql> {
        let table = KeyPath::of(&["postgresql"]);
        let mut parameters = std::collections::BTreeMap::new();
        for (key, value) in raw.parameters {
            let path = table.key("parameters").key(&key);
            if let Some(instead) = crate::managed_parameter(&key) {
                return Err(self.err(
                    &path,
                    Target::Key,
                    format!("`{key}` in [postgresql.parameters] is managed by pgwarden"),
                    instead,
                ));
            }
            if let Some(problem) = crate::bad_parameter_name(&key) {
                return Err(self.err(
                    &path,
                    Target::Key,
                    problem,
                    "write the name as PostgreSQL spells it; `SHOW ALL` on the server lists them",
                ));
            }
            let value = match value {
                toml::Value::String(s) => {
                    if let Some(problem) = crate::bad_parameter_value(&format!("`{path}`"), &s) {
                        return Err(self.err(
                            &path,
                            Target::Value,
                            problem,
                            "write the value on one line, without tabs or other control characters",
                        ));
                    }
                    ParamValue::String(s)
                }
                toml::Value::Integer(i) => ParamValue::Integer(i),
                toml::Value::Float(f) => ParamValue::Float(f),
                toml::Value::Boolean(b) => ParamValue::Bool(b),
                other => {
                    let (found, hint) = match other {
                        toml::Value::Array(_) => (
                            "an array",
                            format!("write a list as one string, e.g. {key} = \"a,b\""),
                        ),
                        toml::Value::Table(_) => (
                            "a table",
                            format!(
                                "quote a dotted setting name, e.g. \"{key}.some_setting\" = 100, \
                                 or TOML reads the dot as a nested table"
                            ),
                        ),
                        _ => (
                            "a datetime",
                            format!("quote the value, e.g. {key} = \"...\""),
                        ),
                    };
                    return Err(self.err(
                        &path,
                        Target::Value,
                        format!(
                            "`{path}` must be a string, integer, float or boolean, found {found}"
                        ),
                        hint,
                    ));
                }
            };
            parameters.insert(key, value);
        }
        let hba_path = table.key("hba_networks");
        let hba_networks = match raw.hba_networks {
            None => vec![
                "0.0.0.0/0".parse().expect("valid"),
                "::/0".parse().expect("valid"),
            ],
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    text.parse::<IpNet>().map_err(|e| {
                        self.err(
                            &hba_path.index(i),
                            Target::Value,
                            format!("invalid network in `{hba_path}`: {e}"),
                            "write address/prefix, e.g. \"10.0.0.0/8\" or \"fd00::/8\"",
                        )
                    })
                })
                .collect::<Result<_>>()?,
        };
        Ok(Postgresql {
            parameters,
            hba_networks,
        })
    }

    fn store(&self, raw: RawStore) -> Result<Store> {
        let table = KeyPath::of(&["store"]);
        let endpoints_path = table.key("endpoints");
        let endpoints = raw
            .endpoints
            .unwrap_or_else(|| vec!["http://127.0.0.1:2379".to_owned()]);
        if endpoints.is_empty() {
            return Err(self.err(
                &endpoints_path,
                Target::Value,
                format!("`{endpoints_path}` is empty"),
                "list at least one etcd endpoint, e.g. endpoints = [\"http://127.0.0.1:2379\"]",
            ));
        }
        for (i, endpoint) in endpoints.iter().enumerate() {
            check_http_url(endpoint).map_err(|e| {
                self.err(
                    &endpoints_path.index(i),
                    Target::Value,
                    format!("invalid endpoint in `{endpoints_path}`: {e}"),
                    "write scheme://host:port, e.g. \"http://10.0.0.5:2379\"",
                )
            })?;
        }
        let namespace = raw.namespace.unwrap_or_else(|| "/pgwarden".to_owned());
        if !namespace.starts_with('/') || namespace.ends_with('/') {
            let path = table.key("namespace");
            return Err(self.err(
                &path,
                Target::Value,
                format!("`{path}` must start with / and not end with /, found \"{namespace}\""),
                "e.g. namespace = \"/pgwarden\"",
            ));
        }
        let cluster = raw.cluster.unwrap_or_else(|| "main".to_owned());
        self.name(&table.key("cluster"), "cluster name", &cluster, true)?;
        let timeout_path = table.key("request_timeout");
        let request_timeout = self.at_most(
            &timeout_path,
            self.duration(&timeout_path, raw.request_timeout, "2s")?,
            MAX_REQUEST_TIMEOUT,
            "a store request that hangs longer holds up the agent's round and its lease",
        )?;
        let auth = self.store_auth(&table, raw.username, raw.password_file, raw.password_env)?;

        self.tls_files(
            &table,
            [&raw.ca_file, &raw.cert_file, &raw.key_file],
            "a client certificate needs its private key: set both cert_file and key_file, or neither",
        )?;
        // TLS towards etcd follows from the endpoints' scheme and the CA:
        // one without the other would fail at the first request, or not
        // encrypt what the operator believes encrypted.
        let https = endpoints[0].starts_with("https://");
        if let Some(i) = endpoints
            .iter()
            .position(|e| e.starts_with("https://") != https)
        {
            return Err(self.err(
                &endpoints_path.index(i),
                Target::Value,
                format!("`{endpoints_path}` mixes http:// and https://"),
                "every etcd endpoint of a cluster speaks the same protocol: use https:// for all, or http:// for all",
            ));
        }
        if https && raw.ca_file.is_none() {
            return Err(self.err(
                &endpoints_path.index(0),
                Target::Value,
                format!("`{endpoints_path}` use https:// but `store.ca_file` is not set"),
                "pgwarden trusts only the CA you name for etcd, not the system's: set ca_file to the CA that signed etcd's certificates",
            ));
        }
        if !https && (raw.ca_file.is_some() || raw.cert_file.is_some()) {
            let key = if raw.ca_file.is_some() {
                "ca_file"
            } else {
                "cert_file"
            };
            return Err(self.err(
                &table.key(key),
                Target::Value,
                format!("`store.{key}` is set but `{endpoints_path}` use http://"),
                "write the endpoints with https:// to talk TLS to etcd, or remove the TLS files",
            ));
        }
        Ok(Store {
            backend: raw.backend.unwrap_or(Backend::Etcd),
            endpoints,
            namespace,
            cluster,
            request_timeout,
            auth,
            ca_file: raw.ca_file,
            cert_file: raw.cert_file,
            key_file: raw.key_file,
        })
    }

    fn store_auth(
        &self,
        table: &KeyPath,
        username: Option<String>,
        password_file: Option<PathBuf>,
        password_env: Option<String>,
    ) -> Result<Option<Credential>> {
        let has_password = password_file.is_some() || password_env.is_some();
        match username {
            None if !has_password => Ok(None),
            None => {
                let key = if password_file.is_some() {
                    "password_file"
                } else {
                    "password_env"
                };
                Err(self.err(
                    &table.key(key),
                    Target::Key,
                    format!("`store.{key}` is set but `store.username` is not"),
                    "add username, or remove the password if the store needs no login",
                ))
            }
            Some(username) => {
                let raw = RawCredential {
                    username: Some(username),
                    password_file,
                    password_env,
                };
                self.credential(table, raw, "").map(Some)
            }
        }
    }

    fn credentials(&self, which: &str, raw: Option<RawCredential>) -> Result<Credential> {
        let table = KeyPath::of(&["credentials", which]);
        let raw = raw.ok_or_else(|| {
            self.err(
                &table,
                Target::Value,
                format!("missing required section [credentials.{which}]"),
                format!("add [credentials.{which}] with password_file or password_env"),
            )
        })?;
        let default_user = if which == "superuser" {
            "postgres"
        } else {
            "replicator"
        };
        self.credential(&table, raw, default_user)
    }

    /// `default_user` is empty when the username must be given (checked by the caller).
    fn credential(
        &self,
        table: &KeyPath,
        raw: RawCredential,
        default_user: &str,
    ) -> Result<Credential> {
        let username = raw.username.unwrap_or_else(|| default_user.to_owned());
        if username.is_empty() {
            let path = table.key("username");
            return Err(self.err(
                &path,
                Target::Value,
                format!("`{path}` is empty"),
                "give the PostgreSQL role name",
            ));
        }
        let section = table.last_key().unwrap_or_default().to_owned();
        let (source, key) = match (raw.password_file, raw.password_env) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    &table.key("password_env"),
                    Target::Key,
                    format!(
                        "{} sets both password_file and password_env",
                        table.table_name()
                    ),
                    "keep exactly one of them",
                ))
            }
            (None, None) => {
                return Err(self.err(
                    table,
                    Target::Value,
                    format!(
                        "{} has no password_file or password_env",
                        table.table_name()
                    ),
                    format!(
                        "set one, e.g. password_file = \"/etc/pgwarden/{section}.password\" \
                         or password_env = \"PGWARDEN_{}_PASSWORD\"",
                        section.to_ascii_uppercase()
                    ),
                ))
            }
            (Some(file), None) => (PasswordSource::File(file), "password_file"),
            (None, Some(var)) => (PasswordSource::Env(var), "password_env"),
        };
        let path = table.key(key);
        let password = self.read_password(&path, &source)?;
        Ok(Credential {
            username,
            source,
            password,
        })
    }

    fn read_password(&self, path: &KeyPath, source: &PasswordSource) -> Result<Secret> {
        match source {
            PasswordSource::File(file) => {
                self.absolute(path, file)?;
                secret::read_file(file).map_err(|e| {
                    self.err(
                        path,
                        Target::Value,
                        format!("`{path}`: {e}"),
                        "put the secret alone in that file, readable only by the user running pgwarden (chmod 600)",
                    )
                })
            }
            PasswordSource::Env(var) => {
                let problem = match (self.host.env_var)(var) {
                    None => "is not set",
                    Some(v) if v.is_empty() => "is empty",
                    Some(v) => match v.into_string() {
                        Ok(value) => return Ok(Secret::new(value)),
                        Err(_) => "is not valid UTF-8",
                    },
                };
                Err(self.err(
                    path,
                    Target::Value,
                    format!("environment variable {var} (from `{path}`) {problem}"),
                    "set it in pgwarden's environment, e.g. Environment= or EnvironmentFile= in the systemd unit",
                ))
            }
        }
    }

    fn timing(&self, raw: RawTiming) -> Result<Timing> {
        let table = KeyPath::of(&["timing"]);
        let heartbeat_path = table.key("heartbeat");
        let ttl_path = table.key("lease_ttl");
        let heartbeat = self.duration(&heartbeat_path, raw.heartbeat, "500ms")?;
        let lease_ttl = self.duration(&ttl_path, raw.lease_ttl, "3s")?;
        // The same rules as the dynamic configuration in the store, which
        // the agent seeds from these values: a file that passes here must
        // not be refused there.
        if lease_ttl < MIN_LEASE_TTL {
            return Err(self.err(
                &ttl_path,
                Target::Value,
                format!(
                    "`{ttl_path}` ({}) is below 1s",
                    crate::format_duration(lease_ttl)
                ),
                "etcd leases count whole seconds; use at least \"1s\" (the default is \"3s\")",
            ));
        }
        self.at_most(
            &ttl_path,
            lease_ttl,
            MAX_LEASE_TTL,
            "a dead primary keeps the leader key this long, so failover waits as long (the default is \"3s\")",
        )?;
        if !heartbeat_fits(heartbeat, lease_ttl) {
            let (hb, ttl) = (
                crate::format_duration(heartbeat),
                crate::format_duration(lease_ttl),
            );
            // Point at what the operator wrote: a lease_ttl left at its default
            // is made too short by the heartbeat, not the other way round.
            let at = if self.loc.is_set(&ttl_path) {
                &ttl_path
            } else {
                &heartbeat_path
            };
            return Err(self.err(
                at,
                Target::Value,
                format!(
                    "`{heartbeat_path}` ({hb}) must be above zero and at most half of `{ttl_path}` ({ttl})"
                ),
                "a healthy leader then renews its lease at least twice per TTL, so one slow round does not cost it",
            ));
        }
        Ok(Timing {
            heartbeat,
            lease_ttl,
            pg_ctl_timeout: self.at_most(
                &table.key("pg_ctl_timeout"),
                self.duration(&table.key("pg_ctl_timeout"), raw.pg_ctl_timeout, "60s")?,
                MAX_PG_CTL_TIMEOUT,
                "PostgreSQL that takes longer to start or stop is stuck",
            )?,
            clone_timeout: self.at_most(
                &table.key("clone_timeout"),
                self.duration(&table.key("clone_timeout"), raw.clone_timeout, "1h")?,
                MAX_CLONE_TIMEOUT,
                "a clone that takes longer is stuck",
            )?,
        })
    }

    fn hooks(&self, raw: RawHooks) -> Result<Hooks> {
        let table = KeyPath::of(&["hooks"]);
        if let Some(command) = &raw.command {
            if command.trim().is_empty() {
                return Err(self.err(
                    &table.key("command"),
                    Target::Value,
                    "`hooks.command` is empty",
                    "give a command line, e.g. \"/usr/local/bin/notify-oncall\", or remove the key",
                ));
            }
        }
        if let Some(url) = &raw.webhook {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                return Err(self.err(
                    &table.key("webhook"),
                    Target::Value,
                    format!("invalid `hooks.webhook` \"{url}\": not an http:// or https:// URL"),
                    "write the full URL, e.g. \"https://hooks.example.com/pgwarden\"",
                ));
            }
        }
        let retries_path = table.key("retries");
        let retries = match raw.retries {
            None => 3,
            Some(n) if (0..=20).contains(&n) => n as u32,
            Some(n) => {
                return Err(self.err(
                    &retries_path,
                    Target::Value,
                    format!("`{retries_path}` = {n} is out of range"),
                    "use 0 to 20 retries",
                ))
            }
        };
        Ok(Hooks {
            command: raw.command,
            webhook: raw.webhook,
            timeout: self.at_most(
                &table.key("timeout"),
                self.duration(&table.key("timeout"), raw.timeout, "10s")?,
                MAX_HOOK_TIMEOUT,
                "a hook that runs longer is stuck and is killed",
            )?,
            retries,
        })
    }

    fn api(&self, raw: RawApi) -> Result<Api> {
        let table = KeyPath::of(&["api"]);
        let token_file = raw.token_file;
        let listen = raw.listen.unwrap_or_else(|| "127.0.0.1:8008".to_owned());
        let listen_path = table.key("listen");
        check_host_port(&listen).map_err(|e| {
            self.err(
                &listen_path,
                Target::Value,
                format!("invalid `{listen_path}`: {e}"),
                "write host:port, e.g. \"127.0.0.1:8008\" or \"[::]:8008\"",
            )
        })?;
        let token = match &token_file {
            None => None,
            Some(file) => Some(self.read_password(
                &table.key("token_file"),
                &PasswordSource::File(file.clone()),
            )?),
        };
        self.tls_files(
            &table,
            [&raw.ca_file, &raw.cert_file, &raw.key_file],
            "HTTPS needs a certificate and its private key: set both cert_file and key_file, or neither for plain HTTP",
        )?;
        let insecure = raw.insecure.unwrap_or(false);
        if token.is_none() && !insecure && !is_loopback(&listen) {
            return Err(self.err(
                &listen_path,
                Target::Value,
                format!(
                    "`{listen_path}` = \"{listen}\" is reachable from other hosts and `api.token_file` is not set: \
                     anyone who reaches it could change the configuration, restart or take over PostgreSQL"
                ),
                "make a token with `pgwarden token > /etc/pgwarden/api.token; chmod 600 /etc/pgwarden/api.token`, \
                 copy it to every member and set api.token_file = \"/etc/pgwarden/api.token\"; \
                 or listen on 127.0.0.1 only; or write api.insecure = true to run without a token",
            ));
        }
        let auth_reads = raw.auth_reads.unwrap_or(false);
        if auth_reads && token.is_none() {
            return Err(self.err(
                &table.key("auth_reads"),
                Target::Key,
                "`api.auth_reads = true` needs a token, and `api.token_file` is not set".to_owned(),
                "set api.token_file to a file holding the token, or remove auth_reads",
            ));
        }
        Ok(Api {
            listen,
            token_file,
            token,
            auth_reads,
            insecure,
            cert_file: raw.cert_file,
            key_file: raw.key_file,
            ca_file: raw.ca_file,
        })
    }

    fn peers(&self, raw: Vec<RawPeer>, member_name: &str) -> Result<Vec<Peer>> {
        let mut peers: Vec<Peer> = Vec::with_capacity(raw.len());
        for (i, p) in raw.into_iter().enumerate() {
            let entry = KeyPath::of(&["peers"]).index(i);
            let name_path = entry.key("name");
            let name = self.required(&entry, "name", p.name, "\"db2\"")?;
            self.name(&name_path, "peer name", &name, false)?;
            if name == member_name {
                return Err(self.err(
                    &name_path,
                    Target::Value,
                    format!("peer \"{name}\" has this member's own name"),
                    "[[peers]] lists the other members only; remove this entry or fix the name",
                ));
            }
            if let Some(first) = peers.iter().position(|q| q.name == name) {
                let first_path = KeyPath::of(&["peers"]).index(first);
                return Err(self.err(
                    &name_path,
                    Target::Value,
                    format!("duplicate peer name \"{name}\""),
                    format!(
                        "{} (line {}) already uses it; list each member once",
                        first_path.table_name(),
                        self.loc.line_of(&first_path.key("name"))
                    ),
                ));
            }
            let api = self.required(&entry, "api", p.api, "\"http://10.0.0.2:8008\"")?;
            check_http_url(&api).map_err(|e| {
                self.err(
                    &entry.key("api"),
                    Target::Value,
                    format!("invalid api URL in {}: {e}", entry.table_name()),
                    "write the peer's REST API as http://host:port, e.g. \"http://10.0.0.2:8008\"",
                )
            })?;
            peers.push(Peer { name, api });
        }
        Ok(peers)
    }
}

/// What is wrong with a member, peer or cluster name, if anything.
fn name_problem(name: &str, allow_dash: bool) -> Option<String> {
    let Some(first) = name.chars().next() else {
        return Some("it is empty".to_owned());
    };
    if name.chars().count() > 63 {
        return Some(format!("it is {} characters long", name.chars().count()));
    }
    if !first.is_ascii_lowercase() {
        return Some(format!("it starts with `{first}`"));
    }
    let allowed = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (allow_dash && c == '-')
    };
    name.chars()
        .find(|c| !allowed(*c))
        .map(|c| format!("`{c}` is not allowed"))
}

#[cfg(test)]
mod tests {
    use super::name_problem;

    #[test]
    fn names_follow_the_replication_slot_rule() {
        assert_eq!(name_problem("db1", false), None);
        assert_eq!(name_problem("db_1", false), None);
        assert_eq!(name_problem(&"a".repeat(63), false), None);
        assert_eq!(name_problem("", false).unwrap(), "it is empty");
        assert_eq!(
            name_problem(&"a".repeat(64), false).unwrap(),
            "it is 64 characters long"
        );
        assert_eq!(name_problem("1db", false).unwrap(), "it starts with `1`");
        assert_eq!(name_problem("Db1", false).unwrap(), "it starts with `D`");
        assert_eq!(name_problem("db-1", false).unwrap(), "`-` is not allowed");
        assert_eq!(name_problem("db-1", true), None);
    }
}
