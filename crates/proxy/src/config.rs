//! `proxy.toml`: parsed and validated with crates/config's machinery, so
//! every problem is reported as `file:line:column: what` plus a hint.
//! docs/proxy.md lists the keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use config::{parse_duration, ConfigError, StoreTable, TomlFile};
use serde::Deserialize;

use crate::routing::ReadPolicy;

/// Everything the proxy needs, checked.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub store: config::Store,
    pub settings: Settings,
}

/// The proxy's own settings (without the store connection).
#[derive(Clone, Debug)]
pub struct Settings {
    pub read_write: SocketAddr,
    pub read_only: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub hold_timeout: Duration,
    pub store_grace: Duration,
    /// How often the whole cluster prefix is re-read besides the watch.
    pub refresh: Duration,
    pub policy: ReadPolicy,
    /// Forward established sessions in the kernel (BPF sockmap) when it can.
    pub kernel_forwarding: bool,
    /// How long a new client may take to send its first bytes.
    pub startup_timeout: Duration,
    /// Client connections (both ports) beyond which new ones are refused.
    pub max_client_connections: u64,
    /// Drop the capabilities kernel forwarding needed once it is loaded
    /// (every thread of the process): `pgwarden proxy` does; a process that
    /// embeds the proxy (a test) may still need them.
    pub drop_capabilities: bool,
}

impl Settings {
    /// Defaults around a read-write address, for tests and embedding.
    pub fn new(read_write: SocketAddr) -> Settings {
        Settings {
            read_write,
            read_only: None,
            http: None,
            hold_timeout: Duration::from_secs(30),
            store_grace: DEFAULT_STORE_GRACE,
            refresh: refresh_for(DEFAULT_STORE_GRACE),
            policy: ReadPolicy {
                fallback_to_primary: true,
                ..ReadPolicy::default()
            },
            kernel_forwarding: true,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            max_client_connections: DEFAULT_MAX_CLIENT_CONNECTIONS,
            drop_capabilities: false,
        }
    }
}

const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Far longer than any client takes to send its startup packet.
const MAX_STARTUP_TIMEOUT: Duration = Duration::from_secs(300);
/// Two descriptors each: fits the packaged unit's LimitNOFILE=65536.
const DEFAULT_MAX_CLIENT_CONNECTIONS: u64 = 10_000;

/// About the agents' default lease TTL: a primary that lost the store has
/// demoted itself by then.
const DEFAULT_STORE_GRACE: Duration = Duration::from_secs(3);

/// Re-read often enough to notice a lost store well within the grace.
pub fn refresh_for(store_grace: Duration) -> Duration {
    (store_grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    store: StoreTable,
    proxy: Option<RawProxy>,
    #[serde(default)]
    http: RawHttp,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    read_write: Option<String>,
    read_only: Option<String>,
    hold_timeout: Option<String>,
    // i64 so that a negative number gets our message rather than serde's.
    max_lag_bytes: Option<i64>,
    max_lag: Option<String>,
    read_only_fallback_to_primary: Option<bool>,
    store_grace: Option<String>,
    kernel_forwarding: Option<bool>,
    startup_timeout: Option<String>,
    max_client_connections: Option<i64>,
    #[serde(default)]
    weights: BTreeMap<String, i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
}

pub fn load(path: &Path) -> Result<ProxyConfig, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|io| ConfigError::unreadable(path, io))?;
    parse(&source, &path.display().to_string())
}

pub fn parse(source: &str, file_name: &str) -> Result<ProxyConfig, ConfigError> {
    let file = TomlFile::new(source, file_name)?;
    let raw: RawFile = file.deserialize()?;
    let store = file.store(raw.store)?;
    let Some(proxy) = raw.proxy else {
        return Err(file.value_error(
            &[],
            "missing required section [proxy]",
            "add [proxy] with at least read_write = \"127.0.0.1:5000\"",
        ));
    };
    let Some(read_write) = proxy.read_write.as_deref() else {
        return Err(file.value_error(
            &["proxy"],
            "missing required key `read_write` in [proxy]",
            "add e.g. read_write = \"127.0.0.1:5000\"",
        ));
    };
    let read_write = address(&file, &["proxy", "read_write"], read_write)?;
    let read_only = proxy
        .read_only
        .as_deref()
        .map(|a| address(&file, &["proxy", "read_only"], a))
        .transpose()?;
    let http = raw
        .http
        .listen
        .as_deref()
        .map(|a| address(&file, &["http", "listen"], a))
        .transpose()?;
    let mut taken = vec![("proxy.read_write", read_write)];
    for (key, addr) in [("proxy.read_only", read_only), ("http.listen", http)] {
        let Some(addr) = addr else { continue };
        if let Some((other, _)) = taken.iter().find(|(_, a)| *a == addr && addr.port() != 0) {
            let path: Vec<&str> = key.split('.').collect();
            return Err(file.value_error(
                &path,
                format!("`{key}` is the same address as `{other}` ({addr})"),
                "give each listener its own port",
            ));
        }
        taken.push((key, addr));
    }
    let hold_timeout = duration(
        &file,
        &["proxy", "hold_timeout"],
        proxy.hold_timeout,
        "30s",
        true,
    )?;
    let store_grace = duration(
        &file,
        &["proxy", "store_grace"],
        proxy.store_grace,
        "3s",
        false,
    )?;
    let startup_timeout = duration(
        &file,
        &["proxy", "startup_timeout"],
        proxy.startup_timeout,
        "10s",
        false,
    )?;
    if startup_timeout > MAX_STARTUP_TIMEOUT {
        return Err(file.value_error(
            &["proxy", "startup_timeout"],
            format!("`proxy.startup_timeout` is at most 5m, found {startup_timeout:?}"),
            "a client sends its startup packet at once; the default \"10s\" suits slow networks too",
        ));
    }
    let max_client_connections = match proxy.max_client_connections {
        None => DEFAULT_MAX_CLIENT_CONNECTIONS,
        Some(n @ 1..=1_000_000) => n as u64,
        Some(n) => {
            return Err(file.value_error(
                &["proxy", "max_client_connections"],
                format!("`proxy.max_client_connections` must be from 1 to 1000000, found {n}"),
                "each connection takes two file descriptors: keep it under half the proxy's LimitNOFILE",
            ))
        }
    };
    let max_lag = proxy
        .max_lag
        .map(|text| duration(&file, &["proxy", "max_lag"], Some(text), "", true))
        .transpose()?;
    let max_lag_bytes = match proxy.max_lag_bytes {
        Some(n) if n < 0 => {
            return Err(file.value_error(
                &["proxy", "max_lag_bytes"],
                format!("`proxy.max_lag_bytes` must be 0 or more, found {n}"),
                "write a number of bytes, e.g. max_lag_bytes = 1048576 (1 MiB)",
            ))
        }
        other => other.map(|n| n as u64),
    };
    let mut weights = BTreeMap::new();
    for (member, weight) in proxy.weights {
        if let Err(err) = store::cluster::check_name("member name", &member) {
            return Err(file.value_error(
                &["proxy", "weights", &member],
                err.to_string(),
                "use the member's name as its agent publishes it, e.g. db1 = 2",
            ));
        }
        let Ok(weight) = u32::try_from(weight) else {
            return Err(file.value_error(
                &["proxy", "weights", &member],
                format!(
                    "weight {weight} for `{member}` is not a whole number from 0 to 4294967295"
                ),
                "write e.g. db1 = 2; 0 keeps the member out of reads",
            ));
        };
        weights.insert(member, weight);
    }
    Ok(ProxyConfig {
        store,
        settings: Settings {
            read_write,
            read_only,
            http,
            hold_timeout,
            store_grace,
            refresh: refresh_for(store_grace),
            policy: ReadPolicy {
                max_lag_bytes,
                max_lag,
                fallback_to_primary: proxy.read_only_fallback_to_primary.unwrap_or(true),
                weights,
            },
            kernel_forwarding: proxy.kernel_forwarding.unwrap_or(true),
            startup_timeout,
            max_client_connections,
            drop_capabilities: true,
        },
    })
}

fn address(file: &TomlFile<'_>, path: &[&str], text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        file.value_error(
            path,
            format!("`{}` is not an IP address and port: \"{text}\"", path.join(".")),
            "write ip:port, e.g. \"127.0.0.1:5000\" or \"[::1]:5000\" (host names are not resolved)",
        )
    })
}

fn duration(
    file: &TomlFile<'_>,
    path: &[&str],
    value: Option<String>,
    default: &str,
    zero_ok: bool,
) -> Result<Duration, ConfigError> {
    let text = value.unwrap_or_else(|| default.to_string());
    let hint = "write a whole number followed by ms, s, m or h, e.g. \"500ms\", \"30s\"";
    let d = parse_duration(&text).map_err(|e| {
        file.value_error(
            path,
            format!("invalid duration for `{}`: {e}", path.join(".")),
            hint,
        )
    })?;
    if d.is_zero() && !zero_ok {
        return Err(file.value_error(
            path,
            format!("`{}` must be greater than zero", path.join(".")),
            hint,
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(source: &str) -> String {
        parse(source, "proxy.toml").unwrap_err().to_string()
    }

    #[test]
    fn a_full_file_parses() {
        let config = parse(
            r#"
[store]
endpoints = ["http://10.0.0.5:2379"]
cluster = "main"

[proxy]
read_write = "127.0.0.1:5000"
read_only = "127.0.0.1:5001"
hold_timeout = "10s"
max_lag_bytes = 1048576
max_lag = "5s"
read_only_fallback_to_primary = false
store_grace = "4s"
kernel_forwarding = false
startup_timeout = "3s"
max_client_connections = 200

[proxy.weights]
db1 = 2
db2 = 0

[http]
listen = "127.0.0.1:8009"
"#,
            "proxy.toml",
        )
        .unwrap();
        let s = config.settings;
        assert_eq!(config.store.cluster, "main");
        assert_eq!(s.read_write.port(), 5000);
        assert_eq!(s.read_only.unwrap().port(), 5001);
        assert_eq!(s.http.unwrap().port(), 8009);
        assert_eq!(s.hold_timeout, Duration::from_secs(10));
        assert_eq!(s.store_grace, Duration::from_secs(4));
        assert_eq!(s.refresh, Duration::from_secs(1));
        assert_eq!(s.policy.max_lag_bytes, Some(1 << 20));
        assert_eq!(s.policy.max_lag, Some(Duration::from_secs(5)));
        assert!(!s.policy.fallback_to_primary);
        assert!(!s.kernel_forwarding);
        assert_eq!(s.startup_timeout, Duration::from_secs(3));
        assert_eq!(s.max_client_connections, 200);
        assert_eq!(s.policy.weights["db1"], 2);
        assert_eq!(s.policy.weights["db2"], 0);
    }

    #[test]
    fn the_packaged_example_parses() {
        let source = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../packaging/proxy.toml.example"
        ));
        let config = match parse(source, "proxy.toml.example") {
            Ok(config) => config,
            Err(e) => panic!("packaging/proxy.toml.example does not load:\n{e}"),
        };
        let s = config.settings;
        assert_eq!(config.store.endpoints.len(), 3);
        assert_eq!(config.store.cluster, "main");
        assert_eq!(s.read_write.port(), 5000);
        assert_eq!(s.read_only.unwrap().port(), 5001);
        assert_eq!(s.http.unwrap().port(), 8009);
        assert_eq!(s.policy.weights.len(), 3);
    }

    #[test]
    fn defaults_apply() {
        let config = parse("[proxy]\nread_write = \"127.0.0.1:5000\"\n", "p.toml").unwrap();
        let s = config.settings;
        assert_eq!(s.read_only, None);
        assert_eq!(s.hold_timeout, Duration::from_secs(30));
        assert_eq!(s.store_grace, Duration::from_secs(3));
        assert!(s.policy.fallback_to_primary);
        assert!(s.kernel_forwarding);
        assert_eq!(s.startup_timeout, Duration::from_secs(10));
        assert_eq!(s.max_client_connections, 10_000);
        // `pgwarden proxy` gives up kernel forwarding's capabilities.
        assert!(s.drop_capabilities);
        assert_eq!(s.policy.max_lag_bytes, None);
        assert_eq!(config.store.endpoints, ["http://127.0.0.1:2379"]);
    }

    #[test]
    fn errors_name_the_spot_and_say_what_to_do() {
        let cases = [
            ("", "proxy.toml:1:1: missing required section [proxy]"),
            (
                "[proxy]\n",
                "proxy.toml:1:1: missing required key `read_write`",
            ),
            (
                "[proxy]\nread_write = \"localhost:5000\"\n",
                "proxy.toml:2:14: `proxy.read_write` is not an IP address and port",
            ),
            (
                "[proxy]\nread_write = \"127.0.0.1:5000\"\nhold_timeout = \"3x\"\n",
                "proxy.toml:3:16: invalid duration for `proxy.hold_timeout`",
            ),
            (
                "[proxy]\nread_write = \"127.0.0.1:5000\"\nmax_lag_bytes = -1\n",
                "proxy.toml:3:17: `proxy.max_lag_bytes` must be 0 or more",
            ),
            (
                "[proxy]\nread_write = \"127.0.0.1:5000\"\nread_only = \"127.0.0.1:5000\"\n",
                "proxy.toml:3:13: `proxy.read_only` is the same address as `proxy.read_write`",
            ),
            (
                "[proxy]\nread_write = \"127.0.0.1:5000\"\nkernel_forwarding = \"yes\"\n",
                "proxy.toml:3:21: wrong type for `proxy.kernel_forwarding`: expected a boolean",
            ),
            (
                "[proxy]\nread_write = \"127.0.0.1:5000\"\nhold = \"1s\"\n",
                "proxy.toml:3:1: unknown key `hold` in [proxy]",
            ),
            (
                "[proxy]\nread_write = \"127.0.0.1:5000\"\n[proxy.weights]\ndb1 = -2\n",
                "proxy.toml:4:7: weight -2 for `db1`",
            ),
            (
                "[proxy]\nread_write = \"127.0.0.1:5000\"\n[store]\nendpoints = []\n",
                "proxy.toml:4:13: `store.endpoints` is empty",
            ),
            (
                "[proxy]\nread_write = \"127.0.0.1:5000\"\nstore_grace = \"0s\"\n",
                "must be greater than zero",
            ),
            (
                "[proxy]\nread_write = \"127.0.0.1:5000\"\nstartup_timeout = \"1h\"\n",
                "proxy.toml:3:19: `proxy.startup_timeout` is at most 5m",
            ),
            (
                "[proxy]\nread_write = \"127.0.0.1:5000\"\nmax_client_connections = 0\n",
                "proxy.toml:3:26: `proxy.max_client_connections` must be from 1 to 1000000",
            ),
        ];
        for (source, expected) in cases {
            let message = error(source);
            assert!(
                message.contains(expected),
                "{source:?}:\n{message}\nshould contain {expected}"
            );
            assert!(message.contains("\n  hint: "), "{message}");
        }
    }
}
