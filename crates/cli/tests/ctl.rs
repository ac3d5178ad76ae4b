//! `pgwarden ctl` as an operator runs it: against an API started here on a
//! real etcd, with exit codes checked.

mod common;

use std::process::Output;
use std::sync::Arc;

use std::time::Duration;

use api::testing::{open_api, start_api, switchover_requested, write_three_members, TestApi};
use common::{ctl, shown as text};
use serde_json::Value;
use store::cluster::{ClusterKeys, DynamicConfig};
use store::Store;
use testkit::etcd::EtcdCluster;

struct Fixture {
    _etcd: EtcdCluster,
    store: Arc<dyn Store>,
    keys: ClusterKeys,
    api: TestApi,
}

async fn fixture(section: config::Api) -> Fixture {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let store = etcd.store().await.unwrap();
    let keys = ClusterKeys::new("/pgwarden", "main").unwrap();
    write_three_members(store.as_ref(), &keys).await;
    let api = start_api(store.clone(), keys.clone(), "db1", section).await;
    Fixture {
        _etcd: etcd,
        store,
        keys,
        api,
    }
}

impl Fixture {
    /// The dynamic configuration as the store holds it.
    async fn stored_config(&self) -> DynamicConfig {
        self.keys
            .config()
            .get(self.store.as_ref())
            .await
            .unwrap()
            .expect("a configuration was written")
            .value
    }
}

/// Runs `pgwarden ctl ARGS` with `env` set (and nothing inherited that
/// would change the target).
fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_and_unreachable_members_have_their_exit_codes() {
    for (args, expected) in [
        (vec![], 2),
        (vec!["frobnicate"], 2),
        (vec!["failover"], 2),
        (vec!["switchover", "--cancel", "--to", "db2"], 2),
        (
            vec!["--api", "http://127.0.0.1:1", "config", "set", "ttl_ms"],
            2,
        ),
        // No terminal to ask "are you sure" on, and no --force.
        (
            vec!["--api", "http://127.0.0.1:1", "switchover", "--to", "db2"],
            2,
        ),
        (
            vec![
                "--api",
                "http://127.0.0.1:1",
                "switchover",
                "--at",
                "tomorrow",
                "--force",
            ],
            2,
        ),
        (vec!["--api", "ftp://127.0.0.1:1", "list"], 2),
        (vec!["--token-file", "/nonexistent/token", "list"], 2),
        (
            vec![
                "--api",
                "http://127.0.0.1:1",
                "--api",
                "http://127.0.0.1:2",
                "list",
            ],
            3,
        ),
    ] {
        let output = ctl(&args, &[]).await;
        assert_eq!(code(&output), expected, "{args:?}\n{}", text(&output));
    }
    let output = ctl(&["--api", "http://127.0.0.1:1", "list"], &[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no member's API answered"), "{stderr}");

    let output = ctl(&["completions", "bash"], &[]).await;
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("pgwarden"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_config_and_refusals_against_an_api() {
    let fx = fixture(open_api()).await;
    // The first URL is dead: ctl moves on to the next.
    let apis = ["--api", "http://127.0.0.1:1", "--api", &fx.api.url];

    let output = ctl(&[&apis[..], &["list"]].concat(), &[]).await;
    assert_eq!(code(&output), 0, "{}", text(&output));
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("| Member |"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("| db1 ") && l.contains("Leader")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("| db2 ") && l.contains("streaming")),
        "{table}"
    );

    let output = ctl(&[&apis[..], &["-o", "json", "list"]].concat(), &[]).await;
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["leader"], "db1");

    let output = ctl(
        &[
            &apis[..],
            &["config", "set", "ttl_ms=10000", "parameters.work_mem=8MB"],
        ]
        .concat(),
        &[],
    )
    .await;
    assert_eq!(code(&output), 0, "{}", text(&output));
    let config = fx.stored_config().await;
    assert_eq!(config.ttl_ms, 10_000);
    assert_eq!(config.parameters["work_mem"], "8MB");

    // Invalid: refused by the API, exit 1, nothing changed.
    let output = ctl(&[&apis[..], &["config", "set", "ttl_ms=100"]].concat(), &[]).await;
    assert_eq!(code(&output), 1, "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("ttl_ms = 100"),
        "{}",
        text(&output)
    );
    let config = fx.stored_config().await;
    assert_eq!(config.ttl_ms, 10_000);

    // An editor that pauses the cluster.
    let output = ctl(
        &[&apis[..], &["config", "edit"]].concat(),
        &[
            ("EDITOR", "sed -i 's/^paused = false/paused = true/'"),
            ("VISUAL", ""),
        ],
    )
    .await;
    assert_eq!(code(&output), 0, "{}", text(&output));
    let config = fx.stored_config().await;
    assert!(config.paused);
    assert_eq!(config.parameters["work_mem"], "8MB");

    let output = ctl(&[&apis[..], &["resume"]].concat(), &[]).await;
    assert_eq!(code(&output), 0, "{}", text(&output));

    // Someone else changes the configuration while the editor is open:
    // the edit is refused (412 underneath), nothing of it is saved.
    let racing = format!(
        "{} ctl --api {} config set heartbeat_ms=700 >/dev/null; sed -i 's/^paused = false/paused = true/'",
        env!("CARGO_BIN_EXE_pgwarden"),
        fx.api.url
    );
    let output = ctl(
        &[&apis[..], &["config", "edit"]].concat(),
        &[("EDITOR", &racing), ("VISUAL", "")],
    )
    .await;
    assert_eq!(code(&output), 1, "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("someone else changed"),
        "{}",
        text(&output)
    );
    let config = fx.stored_config().await;
    assert_eq!(config.heartbeat_ms, 700);
    assert!(!config.paused);

    // A switchover to a standby that does not stream: refused, exit 1.
    let output = ctl(
        &[&apis[..], &["switchover", "--to", "db3", "--force"]].concat(),
        &[],
    )
    .await;
    assert_eq!(code(&output), 1, "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not stream from the leader db1"));
    assert!(fx
        .keys
        .switchover()
        .get(fx.store.as_ref())
        .await
        .unwrap()
        .is_none());

    let output = ctl(&[&apis[..], &["history"]].concat(), &[]).await;
    assert_eq!(code(&output), 0, "{}", text(&output));
    let output = ctl(&[&apis[..], &["events"]].concat(), &[]).await;
    assert_eq!(code(&output), 0, "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_comes_from_a_file_or_the_environment() {
    let mut section = open_api();
    section.token = Some(config::Secret::new("s3cret"));
    let fx = fixture(section).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();

    let output = ctl(&["--api", &fx.api.url, "pause"], &[]).await;
    assert_eq!(code(&output), 1, "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("401"),
        "{}",
        text(&output)
    );
    let output = ctl(
        &["--api", &fx.api.url, "pause"],
        &[("PGWARDEN_API_TOKEN", "s3cret")],
    )
    .await;
    assert_eq!(code(&output), 0, "{}", text(&output));
    let output = ctl(
        &[
            "--api",
            &fx.api.url,
            "--token-file",
            token_file.to_str().unwrap(),
            "resume",
        ],
        &[],
    )
    .await;
    assert_eq!(code(&output), 0, "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_configuration_gives_the_address_token_and_peers() {
    let mut section = open_api();
    section.token = Some(config::Secret::new("s3cret"));
    let fx = fixture(section).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // Validation wants a PostgreSQL bin dir; ctl never runs it.
    for program in [
        "postgres",
        "pg_ctl",
        "initdb",
        "pg_basebackup",
        "pg_rewind",
        "pg_controldata",
    ] {
        let path = bin.join(program);
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    std::fs::write(dir.path().join("pw"), "pw\n").unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    // This member's own API is down; its peer's answers.
    let file = dir.path().join("pgwarden.toml");
    std::fs::write(
        &file,
        format!(
            "[member]\nname = \"db9\"\ndata_dir = \"{d}/data\"\nbin_dir = \"{d}/bin\"\n\n\
             [api]\nlisten = \"0.0.0.0:1\"\ntoken_file = \"{d}/token\"\n\n\
             [credentials.superuser]\npassword_file = \"{d}/pw\"\n\n\
             [credentials.replication]\npassword_file = \"{d}/pw\"\n\n\
             [[peers]]\nname = \"db1\"\napi = \"{}\"\n",
            fx.api.url
        ),
    )
    .unwrap();
    let output = ctl(&["-c", file.to_str().unwrap(), "pause"], &[]).await;
    assert_eq!(code(&output), 0, "{}", text(&output));
    let config = fx.stored_config().await;
    assert!(config.paused);
    // Without -c: $PGWARDEN_CONFIG names it (the token comes from it too:
    // resume needs one).
    let output = ctl(&["resume"], &[("PGWARDEN_CONFIG", file.to_str().unwrap())]).await;
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert!(!fx.stored_config().await.paused);
    // A broken configuration is a usage error.
    std::fs::write(&file, "[member]\nnmae = 1\n").unwrap();
    let output = ctl(&["-c", file.to_str().unwrap(), "list"], &[]).await;
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("pgwarden.toml:2:1"),
        "{}",
        text(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_members_are_trusted_through_the_ca_file() {
    // Throwaway certificates: a CA and a server certificate for 127.0.0.1.
    let certificates = testkit::tls::Certificates::make().unwrap();
    let files = certificates.files.clone();
    let mut section = open_api();
    section.cert_file = Some(files.server_cert.clone());
    section.key_file = Some(files.server_key.clone());
    let fx = fixture(section).await;
    assert!(fx.api.url.starts_with("https://"));
    let ca = files.ca.to_str().unwrap();
    let output = ctl(&["--api", &fx.api.url, "--ca-file", ca, "list"], &[]).await;
    assert_eq!(code(&output), 0, "{}", text(&output));
    // Not trusted without it: the member is unreachable, said why.
    let output = ctl(&["--api", &fx.api.url, "list"], &[]).await;
    assert_eq!(code(&output), 3, "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("certificate"),
        "{}",
        text(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_that_does_not_happen_exits_4_showing_the_cluster() {
    let fx = fixture(open_api()).await;
    // "Agents" that drop the request without changing the leader.
    let agents = {
        let store = fx.store.clone();
        let keys = fx.keys.clone();
        tokio::spawn(async move {
            switchover_requested(store.as_ref(), &keys, Duration::from_secs(20)).await;
            keys.switchover().delete(store.as_ref()).await.unwrap();
        })
    };
    let output = ctl(
        &["--api", &fx.api.url, "switchover", "--to", "db2", "--force"],
        &[],
    )
    .await;
    agents.await.unwrap();
    assert_eq!(code(&output), 4, "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Cluster: main (leader db1"), "{stderr}");
}

/// `list --watch` into a pipe: snapshots one after the other, each under
/// its time, and no screen-clearing codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_watch_into_a_pipe_writes_plain_snapshots() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let fx = fixture(open_api()).await;
    let mut child = tokio::process::Command::new(common::binary())
        .args(["ctl", "--api", &fx.api.url, "list", "--watch", "1"])
        .env_remove("PGWARDEN_API")
        .env_remove("PGWARDEN_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line);
            if seen.iter().filter(|l| l.starts_with("Cluster: ")).count() == 2 {
                break;
            }
        }
    })
    .await;
    child.kill().await.unwrap();
    assert!(read.is_ok(), "two snapshots within 30 s; seen: {seen:#?}");
    let text = seen.join("\n");
    assert!(!text.contains('\x1b'), "escape codes in a pipe: {text:?}");
    let stamps: Vec<&String> = seen.iter().filter(|l| l.starts_with("--- ")).collect();
    assert_eq!(stamps.len(), 2, "{text}");
    assert!(
        seen[0].starts_with("--- ") && seen[1].starts_with("Cluster: "),
        "{text}"
    );
}
