//! The shape of `pgwarden.toml` as written: every key optional, unknown keys
//! rejected. Whether values make sense, and defaults, are `validate`'s job, so
//! that its errors can name the key and the rule instead of a Rust type.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::ConfigError;
use crate::locate::Locator;
use crate::schema::Backend;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub member: Option<RawMember>,
    #[serde(default)]
    pub postgresql: RawPostgresql,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub timing: RawTiming,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub credentials: RawCredentials,
    #[serde(default)]
    pub peers: Vec<RawPeer>,
    #[serde(default)]
    pub hooks: RawHooks,
    pub backup: Option<RawBackup>,
    pub bootstrap: Option<RawBootstrap>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMember {
    pub name: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub bin_dir: Option<PathBuf>,
    pub listen_address: Option<String>,
    pub connect_address: Option<String>,
    // i64, not u16, so that 0 and 70000 get our message instead of serde's.
    pub port: Option<i64>,
    pub socket_dir: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
    #[serde(default)]
    pub tags: RawTags,
    pub reachability: Option<Vec<String>>,
    pub reachability_min: Option<i64>,
    pub reachability_interval: Option<String>,
    pub reachability_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTags {
    pub nofailover: Option<bool>,
    pub nosync: Option<bool>,
    pub noloadbalance: Option<bool>,
    pub priority: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPostgresql {
    #[serde(default)]
    pub parameters: BTreeMap<String, toml::Value>,
    pub hba_networks: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub backend: Option<Backend>,
    pub endpoints: Option<Vec<String>>,
    pub namespace: Option<String>,
    pub cluster: Option<String>,
    pub request_timeout: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTiming {
    pub heartbeat: Option<String>,
    pub lease_ttl: Option<String>,
    pub pg_ctl_timeout: Option<String>,
    pub clone_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHooks {
    pub command: Option<String>,
    pub webhook: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackup {
    pub repository: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_credentials_file: Option<PathBuf>,
    pub s3_profile: Option<String>,
    pub s3_ca_file: Option<PathBuf>,
    pub retention_full: Option<i64>,
    pub retention_window: Option<String>,
    pub replica_from: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBootstrap {
    pub from_backup: Option<String>,
    pub recovery_target: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApi {
    pub listen: Option<String>,
    pub token_file: Option<PathBuf>,
    pub auth_reads: Option<bool>,
    pub insecure: Option<bool>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCredentials {
    pub superuser: Option<RawCredential>,
    pub replication: Option<RawCredential>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCredential {
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPeer {
    pub name: Option<String>,
    pub api: Option<String>,
}

/// Deserializes `source`, turning serde's messages (which speak of fields,
/// variants and Rust types) into ones that speak of keys, values and TOML types.
pub(crate) fn deserialize<T: serde::de::DeserializeOwned>(
    loc: &Locator<'_>,
    source: &str,
) -> Result<T, ConfigError> {
    toml::from_str(source).map_err(|e| {
        let span = e.span();
        let path = loc.path_at(span.clone().map_or(0, |s| s.start));
        let (message, hint) = explain(e.message(), &path);
        loc.error_at(span, message, hint)
    })
}

fn explain(serde_message: &str, path: &crate::locate::KeyPath) -> (String, String) {
    let quoted: Vec<&str> = serde_message.split('`').skip(1).step_by(2).collect();
    let one_of = |names: &[&str]| {
        if names.is_empty() {
            "this table takes no keys".to_owned()
        } else {
            format!("expected one of: {}", names.join(", "))
        }
    };
    if serde_message.starts_with("unknown field") {
        let key = quoted.first().copied().unwrap_or_default();
        let message = format!("unknown key `{key}` {}", path.parent().in_table());
        return (message, one_of(&quoted[1..]));
    }
    if serde_message.starts_with("unknown variant") {
        let value = quoted.first().copied().unwrap_or_default();
        return (
            format!("unknown value \"{value}\" for {}", path.describe()),
            one_of(&quoted[1..]),
        );
    }
    if let Some(rest) = serde_message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            let expected = toml_type(expected);
            let found = found.replace('`', "");
            let found = found
                .replace("sequence", "an array")
                .replace("map", "a table")
                .replace("floating point", "float");
            let hint = match (expected, found.split(' ').next()) {
                ("an integer", Some("string")) => "write the number without quotes",
                ("a boolean", Some("string")) => "write true or false without quotes",
                ("a string", _) => "put the value in double quotes",
                _ => "see docs/configuration.md for the type of each key",
            };
            let message = format!(
                "wrong type for {}: expected {expected}, found {found}",
                path.describe()
            );
            return (message, hint.to_owned());
        }
    }
    (
        format!("{serde_message} at {}", path.describe()),
        "see docs/configuration.md".to_owned(),
    )
}

fn toml_type(serde_expected: &str) -> &str {
    match serde_expected {
        "i64" | "u64" | "i32" | "u32" | "u16" => "an integer",
        "a sequence" => "an array",
        "a map" => "a table",
        "path string" => "a string",
        s if s.starts_with("struct ") => "a table",
        s => s,
    }
}
