//! Whole files in, `Config` or the exact two-line error out. `{dir}` in a
//! config stands for a temporary directory holding a fake PostgreSQL bin dir
//! and a password file, so nothing depends on the machine.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::*;

mod backup;
mod bootstrap;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        for program in ["pg_ctl", "initdb", "postgres", "pg_basebackup", "pg_rewind"] {
            let p = bin.join(program);
            fs::write(&p, "").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::write(dir.path().join("superuser.password"), "su-secret\n").unwrap();
        fs::write(dir.path().join("empty.password"), "\n").unwrap();
        Fixture { dir }
    }

    fn dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn parse(&self, source: &str) -> Result<Config, ConfigError> {
        let env = |name: &str| match name {
            "REPLICATION_PW" | "PGWARDEN_REPLICATION_PASSWORD" => {
                Some(OsString::from("rep-secret"))
            }
            "EMPTY_PW" => Some(OsString::new()),
            _ => None,
        };
        let no_postgres_here = self.dir.path().join("no-such-lib");
        let host = validate::Host {
            env_var: &env,
            pg_lib_root: &no_postgres_here,
        };
        parse_on(
            &source.replace("{dir}", &self.dir()),
            "pgwarden.toml",
            &host,
        )
    }

    fn error(&self, source: &str) -> String {
        match self.parse(source) {
            Ok(_) => panic!("expected an error for:\n{source}"),
            Err(e) => e.to_string().replace(&self.dir(), "{dir}"),
        }
    }
}

const MINIMAL: &str = r#"[member]
name = "db1"
data_dir = "{dir}/data"
bin_dir = "{dir}/bin"

[credentials.superuser]
password_file = "{dir}/superuser.password"

[credentials.replication]
password_env = "REPLICATION_PW"
"#;

#[test]
fn the_password_variables_are_named_for_hiding_from_children() {
    let fx = Fixture::new();
    let c = fx.parse(MINIMAL).unwrap();
    assert_eq!(c.secret_env_names(), ["REPLICATION_PW"]);
}

#[test]
fn minimal_config_gets_defaults() {
    let fx = Fixture::new();
    let c = fx.parse(MINIMAL).unwrap();
    assert_eq!(c.member.name, "db1");
    assert_eq!(c.member.bin_dir, fx.dir.path().join("bin"));
    assert_eq!(c.member.connect_address, "127.0.0.1");
    assert_eq!(c.api_url(), "http://127.0.0.1:8008");
    assert_eq!(c.member.port, 5432);
    assert_eq!(
        c.member.unix_socket_dir(),
        Some(std::path::Path::new("/var/run/postgresql"))
    );
    assert_eq!(
        c.member.effective_log_file(),
        fx.dir.path().join("data/log/postmaster.log")
    );
    assert_eq!(
        c.member.tags,
        Tags {
            nofailover: false,
            nosync: false,
            noloadbalance: false,
            priority: 100
        }
    );
    assert_eq!(c.postgresql.hba_networks.len(), 2);
    assert_eq!(c.store.backend, Backend::Etcd);
    assert_eq!(c.store.endpoints, ["http://127.0.0.1:2379"]);
    assert_eq!(c.store.namespace, "/pgwarden");
    assert_eq!(c.store.cluster, "main");
    assert!(c.store.auth.is_none());
    assert_eq!(c.timing.heartbeat, Duration::from_millis(500));
    assert_eq!(c.timing.lease_ttl, Duration::from_secs(3));
    assert_eq!(c.api.listen, "127.0.0.1:8008");
    assert_eq!(c.credentials.superuser.username, "postgres");
    assert_eq!(c.credentials.superuser.password.expose(), "su-secret");
    assert_eq!(c.credentials.replication.username, "replicator");
    assert_eq!(c.credentials.replication.password.expose(), "rep-secret");
    assert_eq!(
        c.credentials.replication.source,
        PasswordSource::Env("REPLICATION_PW".to_owned())
    );
    assert!(c.peers.is_empty());
}

#[test]
fn full_config_parses() {
    let fx = Fixture::new();
    fs::write(fx.dir.path().join("store.password"), "etcd-secret").unwrap();
    fs::write(fx.dir.path().join("api.token"), "api-secret\n").unwrap();
    fs::write(
        fx.dir.path().join("etcd-ca.pem"),
        "-----BEGIN CERTIFICATE-----\n",
    )
    .unwrap();
    let c = fx
        .parse(
            r#"[member]
name = "db1"
data_dir = "{dir}/data"
bin_dir = "{dir}/bin"
listen_address = "*"
connect_address = "10.0.0.1"
port = 5433
socket_dir = ""
log_file = "{dir}/pg.log"
tags = { nofailover = true, noloadbalance = true, priority = 7 }

[postgresql]
parameters = { max_connections = 200, shared_buffers = "1GB", jit = false, random_page_cost = 1.1 }
hba_networks = ["10.0.0.0/8", "fd00::/8"]

[store]
endpoints = ["https://10.0.0.5:2379", "https://[fd00::5]:2379"]
namespace = "/ha"
cluster = "prod-eu"
request_timeout = "1500ms"
username = "pgwarden"
password_file = "{dir}/store.password"
ca_file = "{dir}/etcd-ca.pem"

[timing]
heartbeat = "1s"
lease_ttl = "5s"

[api]
listen = "[::]:8008"
token_file = "{dir}/api.token"

[credentials.superuser]
username = "admin"
password_file = "{dir}/superuser.password"

[credentials.replication]
password_env = "REPLICATION_PW"

[[peers]]
name = "db2"
api = "http://10.0.0.2:8008"

[[peers]]
name = "db3"
api = "http://10.0.0.3:8008"
"#,
        )
        .unwrap();
    assert_eq!(c.member.connect_address, "10.0.0.1");
    // Published with the connect address in place of the wildcard.
    assert_eq!(c.api_url(), "http://10.0.0.1:8008");
    assert_eq!(c.member.unix_socket_dir(), None);
    assert_eq!(
        c.member.tags,
        Tags {
            nofailover: true,
            nosync: false,
            noloadbalance: true,
            priority: 7
        }
    );
    assert_eq!(
        c.postgresql.parameters["max_connections"],
        ParamValue::Integer(200)
    );
    assert_eq!(c.postgresql.parameters["jit"].to_string(), "off");
    assert_eq!(c.store.cluster, "prod-eu");
    assert_eq!(c.store.request_timeout, Duration::from_millis(1500));
    assert_eq!(
        c.store.auth.as_ref().unwrap().password.expose(),
        "etcd-secret"
    );
    assert_eq!(c.api.token.as_ref().unwrap().expose(), "api-secret");
    assert_eq!(
        c.peers[1],
        Peer {
            name: "db3".into(),
            api: "http://10.0.0.3:8008".into()
        }
    );
}

#[test]
fn wildcard_listen_addresses_become_loopback_for_a_local_client() {
    let api = |listen: &str, tls: bool| Api {
        listen: listen.to_string(),
        token_file: None,
        token: None,
        auth_reads: false,
        insecure: false,
        cert_file: tls.then(|| "api.pem".into()),
        key_file: None,
        ca_file: None,
    };
    assert_eq!(
        api("0.0.0.0:8008", false).local_url(),
        "http://127.0.0.1:8008"
    );
    assert_eq!(api("[::]:8008", true).local_url(), "https://[::1]:8008");
    assert_eq!(
        api("10.0.0.1:8008", false).local_url(),
        "http://10.0.0.1:8008"
    );
}

#[test]
fn documented_example_is_valid() {
    let fx = Fixture::new();
    let doc = include_str!("../../../docs/configuration.md");
    let example = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/configuration.md has a toml example");
    for file in [
        "etcd-ca.pem",
        "etcd-client.pem",
        "etcd-client.key",
        "api.token",
    ] {
        fs::write(fx.dir.path().join(file), "x").unwrap();
    }
    let example = example
        .replace("/var/lib/postgresql/15/main", "{dir}/data")
        .replace("/usr/lib/postgresql/15/bin", "{dir}/bin")
        .replace("/etc/pgwarden", "{dir}");
    let c = fx.parse(&example).unwrap();
    assert_eq!(c.peers.len(), 2);
}

#[test]
fn effective_toml_fills_defaults_and_masks_secrets() {
    let fx = Fixture::new();
    let shown = fx
        .parse(MINIMAL)
        .unwrap()
        .effective_toml()
        .replace(&fx.dir(), "{dir}");
    assert!(
        !shown.contains("su-secret") && !shown.contains("rep-secret"),
        "{shown}"
    );
    assert_eq!(
        shown,
        r#"[member]
name = "db1"
data_dir = "{dir}/data"
bin_dir = "{dir}/bin"
listen_address = "127.0.0.1"
connect_address = "127.0.0.1"
port = 5432
socket_dir = "/var/run/postgresql"
log_file = "{dir}/data/log/postmaster.log"

[member.tags]
nofailover = false
nosync = false
noloadbalance = false
priority = 100

[postgresql]
hba_networks = ["0.0.0.0/0", "::/0"]

[postgresql.parameters]

[store]
backend = "etcd"
endpoints = ["http://127.0.0.1:2379"]
namespace = "/pgwarden"
cluster = "main"
request_timeout = "2s"

[timing]
heartbeat = "500ms"
lease_ttl = "3s"
pg_ctl_timeout = "1m"
clone_timeout = "1h"

[api]
listen = "127.0.0.1:8008"
auth_reads = false
insecure = false

[credentials.superuser]
username = "postgres"
password_file = "{dir}/superuser.password"
password = "********"

[credentials.replication]
username = "replicator"
password_env = "REPLICATION_PW"
password = "********"

[hooks]
timeout = "10s"
retries = 3
"#
    );
}

#[test]
fn unreadable_file_names_the_path() {
    let err = load(std::path::Path::new("/nonexistent/pgwarden.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/pgwarden.toml: cannot read the configuration file: No such file or directory (os error 2)\n  \
         hint: check the path and that the user running pgwarden may read it"
    );
}

#[test]
fn invalid_toml_syntax() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error("[member\nname = \"db1\"\n"),
        "pgwarden.toml:1:8: invalid TOML: unclosed table, expected `]`\n  hint: fix the TOML syntax here (see https://toml.io)"
    );
}

#[test]
fn unknown_top_level_key() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!("cluster = \"main\"\n{MINIMAL}")),
        "pgwarden.toml:1:1: unknown key `cluster` at the top level\n  \
         hint: expected one of: member, postgresql, store, timing, api, credentials, peers, hooks, backup, bootstrap"
    );
}

#[test]
fn unknown_nested_key() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!(
            "{MINIMAL}\n[timing]\nheartbeat = \"1s\"\nlease_tl = \"3s\"\n"
        )),
        "pgwarden.toml:14:1: unknown key `lease_tl` in [timing]\n  \
         hint: expected one of: heartbeat, lease_ttl, pg_ctl_timeout, clone_timeout"
    );
}

#[test]
fn unknown_key_in_inline_table() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&MINIMAL.replace("name = \"db1\"\n", "name = \"db1\"\ntags = { nofailover = true, prio = 1 }\n")),
        "pgwarden.toml:3:29: unknown key `prio` in [member.tags]\n  hint: expected one of: nofailover, nosync, noloadbalance, priority"
    );
}

#[test]
fn wrong_type() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&MINIMAL.replace("name = \"db1\"\n", "name = \"db1\"\nport = \"5432\"\n")),
        "pgwarden.toml:3:8: wrong type for `member.port`: expected an integer, found string \"5432\"\n  \
         hint: write the number without quotes"
    );
}

#[test]
fn port_zero() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&MINIMAL.replace("name = \"db1\"\n", "name = \"db1\"\nport = 0\n")),
        "pgwarden.toml:3:8: `member.port` must be between 1 and 65535, found 0\n  \
         hint: the TCP port PostgreSQL listens on; PostgreSQL's default is 5432"
    );
}

#[test]
fn port_too_large() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&MINIMAL.replace("name = \"db1\"\n", "name = \"db1\"\nport = 70000\n")),
        "pgwarden.toml:3:8: `member.port` must be between 1 and 65535, found 70000\n  \
         hint: the TCP port PostgreSQL listens on; PostgreSQL's default is 5432"
    );
}

#[test]
fn heartbeat_at_most_half_the_lease_ttl() {
    let fx = Fixture::new();
    for (timing, at, heartbeat, lease_ttl) in [
        (
            "heartbeat = \"600ms\"\nlease_ttl = \"1000ms\"\n",
            "14:13",
            "600ms",
            "1s",
        ),
        (
            "heartbeat = \"2s\"\nlease_ttl = \"1s\"\n",
            "14:13",
            "2s",
            "1s",
        ),
        // Against the default lease_ttl, shown at the heartbeat.
        ("heartbeat = \"5s\"\n", "13:13", "5s", "3s"),
    ] {
        assert_eq!(
            fx.error(&format!("{MINIMAL}\n[timing]\n{timing}")),
            format!(
                "pgwarden.toml:{at}: `timing.heartbeat` ({heartbeat}) must be above zero and at most half of `timing.lease_ttl` ({lease_ttl})\n  \
                 hint: a healthy leader then renews its lease at least twice per TTL, so one slow round does not cost it"
            ),
            "{timing}"
        );
    }
}

#[test]
fn https_endpoints_need_the_ca_and_tls_files_need_https() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!("{MINIMAL}\n[store]\nendpoints = [\"https://10.0.0.5:2379\"]\n")),
        "pgwarden.toml:13:14: `store.endpoints` use https:// but `store.ca_file` is not set\n  \
         hint: pgwarden trusts only the CA you name for etcd, not the system's: set ca_file to the CA that signed etcd's certificates"
    );
    assert_eq!(
        fx.error(&format!(
            "{MINIMAL}\n[store]\nendpoints = [\"https://a:2379\", \"http://b:2379\"]\n"
        )),
        "pgwarden.toml:13:32: `store.endpoints` mixes http:// and https://\n  \
         hint: every etcd endpoint of a cluster speaks the same protocol: use https:// for all, or http:// for all"
    );
    assert_eq!(
        fx.error(&format!(
            "{MINIMAL}\n[store]\nca_file = \"{{dir}}/superuser.password\"\n"
        )),
        "pgwarden.toml:13:11: `store.ca_file` is set but `store.endpoints` use http://\n  \
         hint: write the endpoints with https:// to talk TLS to etcd, or remove the TLS files"
    );
}

#[test]
fn lease_ttl_below_a_second() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!(
            "{MINIMAL}\n[timing]\nheartbeat = \"100ms\"\nlease_ttl = \"500ms\"\n"
        )),
        "pgwarden.toml:14:13: `timing.lease_ttl` (500ms) is below 1s\n  \
         hint: etcd leases count whole seconds; use at least \"1s\" (the default is \"3s\")"
    );
}

#[test]
fn timing_keys_have_upper_bounds() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!("{MINIMAL}\n[timing]\nlease_ttl = \"1h\"\n")),
        "pgwarden.toml:13:13: `timing.lease_ttl` (1h) is above 5m\n  \
         hint: use a value above zero and at most \"5m\"; a dead primary keeps the leader key this long, \
         so failover waits as long (the default is \"3s\")"
    );
    assert!(fx
        .parse(&format!(
            "{MINIMAL}\n[timing]\nheartbeat = \"1m\"\nlease_ttl = \"5m\"\n"
        ))
        .is_ok());
    for (table, key, value, max) in [
        ("timing", "pg_ctl_timeout", "2h", "1h"),
        ("timing", "clone_timeout", "8d", "7d"),
        ("store", "request_timeout", "2m", "1m"),
        ("hooks", "timeout", "1h", "10m"),
    ] {
        let err = fx.error(&format!("{MINIMAL}\n[{table}]\n{key} = \"{value}\"\n"));
        assert!(
            err.contains(&format!("`{table}.{key}` ({value}) is above {max}"))
                && err.contains(&format!("at most \"{max}\"")),
            "{err}"
        );
    }
}

#[test]
fn an_api_beyond_loopback_needs_a_token_or_insecure_written_out() {
    let fx = Fixture::new();
    for listen in [
        "0.0.0.0:8008",
        "[::]:8008",
        "10.0.0.1:8008",
        "db1.example.com:8008",
    ] {
        let err = fx.error(&format!("{MINIMAL}\n[api]\nlisten = \"{listen}\"\n"));
        assert!(
            err.starts_with(&format!(
                "pgwarden.toml:13:10: `api.listen` = \"{listen}\" is reachable from other hosts and `api.token_file` is not set"
            )) && err.contains("pgwarden token")
                && err.contains("api.insecure = true"),
            "{err}"
        );
        let open = fx
            .parse(&format!(
                "{MINIMAL}\n[api]\nlisten = \"{listen}\"\ninsecure = true\n"
            ))
            .unwrap();
        assert!(open.api.insecure && open.api.token.is_none());
        let guarded = fx
            .parse(&format!(
                "{MINIMAL}\n[api]\nlisten = \"{listen}\"\ntoken_file = \"{{dir}}/superuser.password\"\n"
            ))
            .unwrap();
        assert!(!guarded.api.insecure && guarded.api.token.is_some());
    }
    for listen in [
        "127.0.0.1:8008",
        "127.0.0.2:8008",
        "[::1]:8008",
        "localhost:8008",
    ] {
        let local = fx
            .parse(&format!("{MINIMAL}\n[api]\nlisten = \"{listen}\"\n"))
            .unwrap();
        assert!(local.api.token.is_none(), "{listen}");
    }
}

#[test]
fn bad_duration_unit() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!("{MINIMAL}\n[timing]\nheartbeat = \"500us\"\n")),
        "pgwarden.toml:13:13: invalid duration for `timing.heartbeat`: \"500us\" has an unknown unit `us`\n  \
         hint: write a whole number followed by ms, s, m or h, e.g. \"500ms\", \"3s\", \"1m\""
    );
}

#[test]
fn data_dir_parent_missing() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&MINIMAL.replace("{dir}/data", "{dir}/absent/data")),
        "pgwarden.toml:3:12: `member.data_dir` is in a directory that does not exist: {dir}/absent\n  \
         hint: create it for the user PostgreSQL runs as (`install -d -o postgres -g postgres -m 700 {dir}/absent`) \
         or correct the path; pgwarden creates data_dir itself, not its parents"
    );
}

#[test]
fn relative_data_dir() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&MINIMAL.replace("{dir}/data", "pgdata")),
        "pgwarden.toml:3:12: `member.data_dir` must be an absolute path, found \"pgdata\"\n  \
         hint: write the full path, starting with /; relative paths would depend on the working directory"
    );
}

#[test]
fn missing_member_name() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&MINIMAL.replace("name = \"db1\"\n", "")),
        "pgwarden.toml:1:1: missing required key `name` in [member]\n  hint: add e.g. name = \"db1\""
    );
}

#[test]
fn bad_member_name() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&MINIMAL.replace("\"db1\"", "\"db-1\"")),
        "pgwarden.toml:2:8: invalid member name \"db-1\": `-` is not allowed\n  \
         hint: use 1 to 63 characters of a-z, 0-9 and _, starting with a letter; \
         the name becomes a replication slot name and application_name"
    );
}

#[test]
fn bin_dir_lacking_programs() {
    let fx = Fixture::new();
    fs::remove_file(fx.dir.path().join("bin/pg_rewind")).unwrap();
    assert_eq!(
        fx.error(MINIMAL),
        "pgwarden.toml:4:11: `member.bin_dir` {dir}/bin lacks pg_rewind\n  \
         hint: point bin_dir at a PostgreSQL bin directory holding executable pg_ctl, initdb, postgres, pg_basebackup, pg_rewind"
    );
}

#[test]
fn bin_dir_not_found() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&MINIMAL.replace("bin_dir = \"{dir}/bin\"\n", "")),
        "pgwarden.toml:1:1: no PostgreSQL found: `member.bin_dir` is not set, pg_config and pg_ctl are not on PATH, \
         and no {dir}/no-such-lib/*/bin holds pg_ctl\n  \
         hint: set bin_dir to the directory holding pg_ctl, e.g. bin_dir = \"/usr/lib/postgresql/15/bin\""
    );
}

#[test]
fn connect_address_missing_with_wildcard_listen() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&MINIMAL.replace("name = \"db1\"\n", "name = \"db1\"\nlisten_address = \"0.0.0.0\"\n")),
        "pgwarden.toml:3:18: `member.connect_address` is required because `member.listen_address` is the wildcard \"0.0.0.0\"\n  \
         hint: set connect_address to the host or IP other members use to reach this PostgreSQL, e.g. connect_address = \"10.0.0.1\""
    );
}

#[test]
fn duplicate_peer_names() {
    let fx = Fixture::new();
    let peers = "\n[[peers]]\nname = \"db2\"\napi = \"http://10.0.0.2:8008\"\n\n\
                 [[peers]]\nname = \"db2\"\napi = \"http://10.0.0.3:8008\"\n";
    assert_eq!(
        fx.error(&format!("{MINIMAL}{peers}")),
        "pgwarden.toml:17:8: duplicate peer name \"db2\"\n  \
         hint: [[peers]] entry 1 (line 13) already uses it; list each member once"
    );
}

#[test]
fn peer_named_like_the_member() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!(
            "{MINIMAL}\n[[peers]]\nname = \"db1\"\napi = \"http://10.0.0.2:8008\"\n"
        )),
        "pgwarden.toml:13:8: peer \"db1\" has this member's own name\n  \
         hint: [[peers]] lists the other members only; remove this entry or fix the name"
    );
}

#[test]
fn peer_without_api() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!("{MINIMAL}\n[[peers]]\nname = \"db2\"\n")),
        "pgwarden.toml:12:1: missing required key `api` in [[peers]] entry 1\n  \
         hint: add e.g. api = \"http://10.0.0.2:8008\""
    );
}

#[test]
fn both_password_sources() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&MINIMAL.replace(
            "password_env = \"REPLICATION_PW\"",
            "password_file = \"{dir}/superuser.password\"\npassword_env = \"REPLICATION_PW\""
        )),
        "pgwarden.toml:11:1: [credentials.replication] sets both password_file and password_env\n  \
         hint: keep exactly one of them"
    );
}

#[test]
fn no_password_source() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&MINIMAL.replace(
            "password_file = \"{dir}/superuser.password\"",
            "username = \"admin\""
        )),
        "pgwarden.toml:6:1: [credentials.superuser] has no password_file or password_env\n  \
         hint: set one, e.g. password_file = \"/etc/pgwarden/superuser.password\" \
         or password_env = \"PGWARDEN_SUPERUSER_PASSWORD\""
    );
}

#[test]
fn missing_credentials_section() {
    let fx = Fixture::new();
    let without_replication = MINIMAL.replace(
        "\n[credentials.replication]\npassword_env = \"REPLICATION_PW\"\n",
        "",
    );
    assert_eq!(
        fx.error(&without_replication),
        "pgwarden.toml:6:2: missing required section [credentials.replication]\n  \
         hint: add [credentials.replication] with password_file or password_env"
    );
}

#[test]
fn missing_password_file() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&MINIMAL.replace("superuser.password", "nope.password")),
        "pgwarden.toml:7:17: `credentials.superuser.password_file`: cannot read {dir}/nope.password: \
         No such file or directory (os error 2)\n  \
         hint: put the secret alone in that file, readable only by the user running pgwarden (chmod 600)"
    );
}

#[test]
fn empty_password_file() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&MINIMAL.replace("superuser.password", "empty.password")),
        "pgwarden.toml:7:17: `credentials.superuser.password_file`: {dir}/empty.password is empty\n  \
         hint: put the secret alone in that file, readable only by the user running pgwarden (chmod 600)"
    );
}

#[test]
fn unset_env_var() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&MINIMAL.replace("REPLICATION_PW", "UNSET_PW")),
        "pgwarden.toml:10:16: environment variable UNSET_PW (from `credentials.replication.password_env`) is not set\n  \
         hint: set it in pgwarden's environment, e.g. Environment= or EnvironmentFile= in the systemd unit"
    );
}

#[test]
fn empty_env_var() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&MINIMAL.replace("REPLICATION_PW", "EMPTY_PW")),
        "pgwarden.toml:10:16: environment variable EMPTY_PW (from `credentials.replication.password_env`) is empty\n  \
         hint: set it in pgwarden's environment, e.g. Environment= or EnvironmentFile= in the systemd unit"
    );
}

#[test]
fn bad_hba_network() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!("{MINIMAL}\n[postgresql]\nhba_networks = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n")),
        "pgwarden.toml:13:31: invalid network in `postgresql.hba_networks`: prefix \"33\" is not a number from 0 to 32\n  \
         hint: write address/prefix, e.g. \"10.0.0.0/8\" or \"fd00::/8\""
    );
}

#[test]
fn nested_table_in_parameters() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!("{MINIMAL}\n[postgresql.parameters]\nwork_mem = \"4MB\"\nauto_explain.log_min_duration = 100\n")),
        "pgwarden.toml:14:1: `postgresql.parameters.auto_explain` must be a string, integer, float or boolean, found a table\n  \
         hint: quote a dotted setting name, e.g. \"auto_explain.some_setting\" = 100, or TOML reads the dot as a nested table"
    );
}

#[test]
fn parameters_postgresql_cannot_read() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!("{MINIMAL}\n[postgresql.parameters]\nwork-mem = \"4MB\"\n")),
        "pgwarden.toml:13:1: `work-mem` is not a PostgreSQL parameter name: use letters, digits, _ and . (e.g. work_mem, auto_explain.log_min_duration)\n  \
         hint: write the name as PostgreSQL spells it; `SHOW ALL` on the server lists them"
    );
    assert_eq!(
        fx.error(&format!("{MINIMAL}\n[postgresql.parameters]\nlog_line_prefix = \"a\\nb\"\n")),
        "pgwarden.toml:13:19: `postgresql.parameters.log_line_prefix` holds a control character (a newline?); postgresql.conf values are one line\n  \
         hint: write the value on one line, without tabs or other control characters"
    );
}

#[test]
fn managed_parameter() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!("{MINIMAL}\n[postgresql]\nparameters = {{ port = 5433 }}\n")),
        "pgwarden.toml:13:16: `port` in [postgresql.parameters] is managed by pgwarden\n  hint: set member.port instead"
    );
}

/// What the dynamic configuration refuses as running code stays possible
/// on a member's own host (#17 point 2).
#[test]
fn code_running_parameters_are_accepted_locally() {
    let fx = Fixture::new();
    let c = fx
        .parse(&format!(
            "{MINIMAL}\n[postgresql.parameters]\nshared_preload_libraries = \"pg_stat_statements\"\n\
             ssl_passphrase_command = \"/bin/echo secret\"\n"
        ))
        .unwrap();
    assert!(crate::runs_code("shared_preload_libraries").is_some());
    assert_eq!(
        c.postgresql.parameters["shared_preload_libraries"].to_string(),
        "pg_stat_statements"
    );
    assert_eq!(
        c.postgresql.parameters["ssl_passphrase_command"].to_string(),
        "/bin/echo secret"
    );
}

#[test]
fn cert_without_key() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!("{MINIMAL}\n[store]\ncert_file = \"{{dir}}/superuser.password\"\n")),
        "pgwarden.toml:13:1: `store.cert_file` is set without `store.key_file`\n  \
         hint: a client certificate needs its private key: set both cert_file and key_file, or neither"
    );
}

#[test]
fn unknown_store_backend() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!("{MINIMAL}\n[store]\nbackend = \"consul\"\n")),
        "pgwarden.toml:13:11: unknown value \"consul\" for `store.backend`\n  hint: expected one of: etcd"
    );
}

#[test]
fn bad_endpoint() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!("{MINIMAL}\n[store]\nendpoints = [\"10.0.0.5:2379\"]\n")),
        "pgwarden.toml:13:14: invalid endpoint in `store.endpoints`: \"10.0.0.5:2379\" does not start with http:// or https://\n  \
         hint: write scheme://host:port, e.g. \"http://10.0.0.5:2379\""
    );
}

#[test]
fn store_password_without_username() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!(
            "{MINIMAL}\n[store]\npassword_env = \"REPLICATION_PW\"\n"
        )),
        "pgwarden.toml:13:1: `store.password_env` is set but `store.username` is not\n  \
         hint: add username, or remove the password if the store needs no login"
    );
}

#[test]
fn missing_member_section() {
    let fx = Fixture::new();
    let src: String = MINIMAL.lines().skip(5).map(|l| format!("{l}\n")).collect();
    assert_eq!(
        fx.error(&src),
        "pgwarden.toml:1:1: missing required section [member]\n  hint: add a [member] table with at least name and data_dir"
    );
}

#[test]
fn error_display_is_two_lines() {
    let fx = Fixture::new();
    let message = fx.error("[member]\nname = \"x\"\n[member]\n");
    assert_eq!(message.lines().count(), 2, "{message}");
    assert!(
        message.lines().nth(1).unwrap().starts_with("  hint: "),
        "{message}"
    );
}

#[test]
fn hooks_are_checked() {
    let fx = Fixture::new();
    let hooks = fx
        .parse(&format!(
            "{MINIMAL}\n[hooks]\ncommand = \"/bin/notify\"\nwebhook = \"https://h.example/x\"\nretries = 1\n"
        ))
        .unwrap()
        .hooks;
    assert_eq!(hooks.command.as_deref(), Some("/bin/notify"));
    assert_eq!(hooks.retries, 1);
    assert_eq!(
        fx.error(&format!("{MINIMAL}\n[hooks]\nwebhook = \"ftp://x\"\n")),
        format!(
            "pgwarden.toml:{}:11: invalid `hooks.webhook` \"ftp://x\": not an http:// or https:// URL\n  \
             hint: write the full URL, e.g. \"https://hooks.example.com/pgwarden\"",
            MINIMAL.lines().count() + 3
        )
    );
    assert!(fx
        .error(&format!("{MINIMAL}\n[hooks]\nretries = 99\n"))
        .contains("use 0 to 20 retries"));
    assert!(fx
        .error(&format!("{MINIMAL}\n[hooks]\ncommand = \" \"\n"))
        .contains("`hooks.command` is empty"));
}

#[test]
fn api_cert_without_key() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!("{MINIMAL}\n[api]\ncert_file = \"{{dir}}/superuser.password\"\n")),
        "pgwarden.toml:13:1: `api.cert_file` is set without `api.key_file`\n  \
         hint: HTTPS needs a certificate and its private key: set both cert_file and key_file, or neither for plain HTTP"
    );
}

#[test]
fn api_auth_reads_needs_a_token() {
    let fx = Fixture::new();
    assert_eq!(
        fx.error(&format!("{MINIMAL}\n[api]\nauth_reads = true\n")),
        "pgwarden.toml:13:1: `api.auth_reads = true` needs a token, and `api.token_file` is not set\n  \
         hint: set api.token_file to a file holding the token, or remove auth_reads"
    );
}

#[test]
fn api_tls_and_auth_reads() {
    let fx = Fixture::new();
    let c = fx
        .parse(&format!(
            "{MINIMAL}\n[api]\ntoken_file = \"{{dir}}/superuser.password\"\nauth_reads = true\n\
             cert_file = \"{{dir}}/superuser.password\"\nkey_file = \"{{dir}}/superuser.password\"\n"
        ))
        .unwrap();
    assert!(c.api.auth_reads);
    assert_eq!(c.api.token.as_ref().unwrap().expose(), "su-secret");
    assert!(c.api.cert_file.is_some() && c.api.key_file.is_some());
    assert!(c.api.ca_file.is_none());
    let err = fx.error(&format!(
        "{MINIMAL}\n[api]\nca_file = \"{{dir}}/no-such-ca.pem\"\n"
    ));
    assert!(err.starts_with("pgwarden.toml:13:11: "), "{err}");
    assert!(err.contains("no-such-ca.pem"), "{err}");
}

// ---------------------------------------------------------------------------
// packaging/pgwarden.toml.example and docs/configuration.md stay true.

const EXAMPLE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../packaging/pgwarden.toml.example"
));
const CONFIGURATION_MD: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/configuration.md"
));

/// Keys whose values are paths on the host.
fn is_path_key(key: &str) -> bool {
    matches!(key, "data_dir" | "bin_dir" | "socket_dir" | "log_file") || key.ends_with("_file")
}

fn path_values(value: &toml::Value, key: &str, out: &mut Vec<String>) {
    match value {
        toml::Value::String(s) if is_path_key(key) && s.starts_with('/') => out.push(s.clone()),
        toml::Value::Table(table) => table.iter().for_each(|(k, v)| path_values(v, k, out)),
        toml::Value::Array(items) => items.iter().for_each(|v| path_values(v, key, out)),
        _ => {}
    }
}

/// The example is loaded by the real loader, validation and all. Only the
/// facts of this machine are supplied: every path the example names is
/// moved under a temporary root, where the test creates what the loader
/// checks (data_dir's parent, bin_dir's programs, secret files).
#[test]
fn the_packaged_example_is_a_valid_configuration() {
    let root = tempfile::tempdir().unwrap();
    let root_str = root.path().display().to_string();
    let parsed: toml::Value = toml::from_str(EXAMPLE).unwrap();
    let mut paths = Vec::new();
    path_values(&parsed, "", &mut paths);
    let mut source = EXAMPLE.to_owned();
    for path in &paths {
        source = source.replace(&format!("\"{path}\""), &format!("\"{root_str}{path}\""));
    }
    let member = parsed["member"].as_table().unwrap();
    let moved = |key: &str| format!("{root_str}{}", member[key].as_str().unwrap());
    let data_dir = moved("data_dir");
    fs::create_dir_all(std::path::Path::new(&data_dir).parent().unwrap()).unwrap();
    let bin_dir = moved("bin_dir");
    fs::create_dir_all(&bin_dir).unwrap();
    for program in ["pg_ctl", "initdb", "postgres", "pg_basebackup", "pg_rewind"] {
        let p = std::path::Path::new(&bin_dir).join(program);
        fs::write(&p, "").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Only the files keys that are not commented out reach `paths`.
    for path in paths.iter().filter(|p| p.contains("/etc/")) {
        let file = format!("{root_str}{path}");
        fs::create_dir_all(std::path::Path::new(&file).parent().unwrap()).unwrap();
        fs::write(&file, "example-secret\n").unwrap();
    }
    let no_env = |_: &str| None;
    let host = validate::Host {
        env_var: &no_env,
        pg_lib_root: root.path(),
    };
    let c = match parse_on(&source, "pgwarden.toml.example", &host) {
        Ok(c) => c,
        Err(e) => panic!("packaging/pgwarden.toml.example does not load:\n{e}"),
    };
    assert_eq!(c.member.name, "db1");
    assert_eq!(c.member.connect_address, "10.0.0.1");
    assert_eq!(c.store.endpoints.len(), 3);
    assert_eq!(
        c.peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["db2", "db3"]
    );
    assert_eq!(c.api.token.as_ref().unwrap().expose(), "example-secret");
    assert!(c.effective_toml().contains("[credentials.replication]"));
}

/// The keys `RawConfig` accepts under `path`, read from serde's own
/// "unknown field" message (the list `deny_unknown_fields` prints), or
/// `None` when `path` is not a table of fixed keys.
fn raw_keys(path: &[String]) -> Option<Vec<String>> {
    let unknown = "zz_not_a_key = 1\n";
    let mut sources = Vec::new();
    if path.is_empty() {
        sources.push(unknown.to_owned());
    } else {
        sources.push(format!("[{}]\n{unknown}", path.join(".")));
        sources.push(format!("[[{}]]\n{unknown}", path.join(".")));
    }
    for source in sources {
        let Err(err) = toml::from_str::<raw::RawConfig>(&source) else {
            continue;
        };
        let message = err.message().to_owned();
        if message.starts_with("unknown field `zz_not_a_key`") {
            let names = message.split('`').skip(3).step_by(2);
            return Some(names.map(str::to_owned).collect());
        }
    }
    None
}

fn all_raw_keys(path: Vec<String>, out: &mut Vec<Vec<String>>) {
    match raw_keys(&path) {
        Some(keys) => {
            for key in keys {
                let mut child = path.clone();
                child.push(key);
                all_raw_keys(child, out);
            }
        }
        None => out.push(path),
    }
}

/// Every key the loader accepts is documented, in the section of its table:
/// `member.tags.priority` as `tags.priority` under `## [member]`,
/// `credentials.superuser.username` under `[credentials.superuser]`.
#[test]
fn every_key_is_documented_in_configuration_md() {
    let mut leaves = Vec::new();
    all_raw_keys(Vec::new(), &mut leaves);
    assert!(leaves.len() > 40, "found only {leaves:?}");
    let sections: Vec<(&str, String)> = CONFIGURATION_MD
        .split("\n## ")
        .skip(1)
        .map(|s| {
            let (heading, body) = s.split_once('\n').unwrap_or((s, ""));
            (heading, body.to_owned())
        })
        .collect();
    let mut missing = Vec::new();
    for leaf in &leaves {
        let documented = (1..leaf.len()).rev().any(|split| {
            let table = leaf[..split].join(".");
            let rest = leaf[split..].join(".");
            sections.iter().any(|(heading, body)| {
                (heading.contains(&format!("[{table}]"))
                    || heading.contains(&format!("[[{table}]]")))
                    && body.contains(&format!("`{rest}`"))
            })
        });
        if !documented {
            missing.push(leaf.join("."));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document: {missing:?}"
    );
}

/// `MINIMAL` with `lines` added to `[member]`.
fn with_member_lines(lines: &str) -> String {
    MINIMAL.replace("name = \"db1\"\n", &format!("name = \"db1\"\n{lines}"))
}

#[test]
fn reachability_targets_with_their_defaults() {
    let fx = Fixture::new();
    let config = fx
        .parse(&with_member_lines(
            "reachability = [\"10.1.0.1:443\", \"http://gw.example.com/health\", \"https://[fd00::1]:8443/\"]\n",
        ))
        .unwrap();
    let reach = &config.member.reachability;
    assert_eq!(
        reach.targets,
        [
            ReachTarget::Tcp("10.1.0.1:443".into()),
            ReachTarget::Http("http://gw.example.com/health".into()),
            ReachTarget::Http("https://[fd00::1]:8443/".into()),
        ]
    );
    assert_eq!(reach.min, 1, "any one target answering is the default");
    assert_eq!(reach.interval, Duration::from_secs(2));
    assert_eq!(reach.timeout, Duration::from_secs(1));
    let shown = config.effective_toml();
    assert!(shown.contains("reachability_min = 1\n"), "{shown}");
    assert!(
        shown.contains("reachability_interval = \"2s\"\n"),
        "{shown}"
    );
    let none = fx.parse(MINIMAL).unwrap();
    assert!(none.member.reachability.targets.is_empty());
    assert!(!none.effective_toml().contains("reachability"));
}

#[test]
fn bad_reachability_values_are_refused_saying_what_to_write() {
    let fx = Fixture::new();
    let cases = [
        (
            "reachability = []\n",
            "`member.reachability` is an empty list",
        ),
        (
            "reachability = [\"10.1.0.1\"]\n",
            "invalid reachability target \"10.1.0.1\": \"10.1.0.1\" has no :port",
        ),
        (
            "reachability = [\"ftp://10.1.0.1:21\"]\n",
            "has a scheme pgwarden does not check",
        ),
        (
            "reachability = [\"http:///health\"]\n",
            "invalid reachability URL",
        ),
        (
            "reachability = [\"10.1.0.1:80\", \"10.1.0.1:80\"]\n",
            "lists \"10.1.0.1:80\" twice",
        ),
        (
            "reachability = [\"10.1.0.1:80\"]\nreachability_min = 2\n",
            "`member.reachability_min` must be between 1 and 1, found 2",
        ),
        (
            "reachability = [\"10.1.0.1:80\"]\nreachability_min = 0\n",
            "must be between 1 and 1, found 0",
        ),
        (
            "reachability_min = 1\n",
            "`member.reachability_min` is set without `member.reachability`",
        ),
        (
            "reachability = [\"10.1.0.1:80\"]\nreachability_interval = \"2m\"\n",
            "`member.reachability_interval` (2m) is above 1m",
        ),
        (
            "reachability = [\"10.1.0.1:80\"]\nreachability_interval = \"0s\"\n",
            "must be greater than zero",
        ),
        (
            "reachability = [\"10.1.0.1:80\"]\nreachability_timeout = \"3s\"\n",
            "`member.reachability_timeout` (3s) is longer than the default `member.reachability_interval` (2s)",
        ),
    ];
    for (lines, expected) in cases {
        let error = fx.error(&with_member_lines(lines));
        assert!(error.contains(expected), "{lines}: {error}");
        assert!(error.contains("hint: "), "{error}");
    }
}
