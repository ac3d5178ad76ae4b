//! What the integration tests of the `pgwarden` binary share.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use testkit::AgentCluster;

pub mod backups;

pub const DEADLINE: Duration = Duration::from_secs(60);
pub const ALL: [&str; 3] = ["db1", "db2", "db3"];

/// The binary under test.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgwarden"))
}

/// Waits for one primary with `members` streaming from it (and, with
/// synchronous replication on, a synchronous standby published); on failure
/// the panic carries every agent's log.
pub async fn healthy(cluster: &AgentCluster, members: &[&str]) -> String {
    match cluster.wait_healthy(members, DEADLINE).await {
        Ok(primary) => primary,
        Err(err) => panic!("{err}\n{}", cluster.logs()),
    }
}

/// `all` without `except`.
pub fn others<'a>(all: &[&'a str], except: &str) -> Vec<&'a str> {
    all.iter().copied().filter(|m| *m != except).collect()
}

/// A member's REST API, as its status publishes it (waiting for the status:
/// a member that has just cloned may not have published one yet).
pub async fn api_url(cluster: &AgentCluster, member: &str) -> String {
    let key = cluster.keys.member(member).unwrap();
    let waited = testkit::wait_for(&format!("{member}'s status"), DEADLINE, || async {
        match key.get(cluster.store.as_ref()).await {
            Ok(Some(status)) => Ok(status.value.api_url),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    waited.unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()))
}

/// `pgwarden ctl ARGS` with `env` and none of the caller's `PGWARDEN_API*`
/// and `PGWARDEN_CONFIG` variables, no stdin (no prompt can wait), at most 120 s.
pub async fn ctl(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = tokio::process::Command::new(binary());
    command
        .arg("ctl")
        .args(args)
        .env_remove("PGWARDEN_API")
        .env_remove("PGWARDEN_API_TOKEN")
        .env_remove("PGWARDEN_CONFIG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("ctl finished within 120 s")
        .unwrap()
}

/// `pgwarden ARGS` (a subcommand other than ctl), no stdin, to its end.
pub async fn pgwarden(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(binary())
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

/// A finished command as a failed assertion should show it.
pub fn shown(output: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The event log, oldest first.
pub async fn events(cluster: &AgentCluster) -> Vec<store::cluster::Event> {
    let events = cluster
        .keys
        .events()
        .list(cluster.store.as_ref())
        .await
        .unwrap();
    events.entries.into_values().map(|e| e.value).collect()
}

/// The event log as `member kind: details` lines, oldest first.
pub async fn event_lines(cluster: &AgentCluster) -> Vec<String> {
    events(cluster)
        .await
        .into_iter()
        .map(|e| format!("{} {}: {}", e.member, e.kind, e.details))
        .collect()
}

/// The newest entry of the timeline history.
pub async fn last_promotion(cluster: &AgentCluster) -> store::cluster::HistoryEntry {
    let history = cluster
        .keys
        .history()
        .get(cluster.store.as_ref())
        .await
        .unwrap()
        .expect("a timeline history");
    history
        .value
        .entries
        .iter()
        .rfind(|e| e.removed.is_none())
        .cloned()
        .expect("a promotion")
}

/// The pending switchover request, if any.
pub async fn switchover_request(cluster: &AgentCluster) -> Option<store::cluster::Switchover> {
    let request = cluster
        .keys
        .switchover()
        .get(cluster.store.as_ref())
        .await
        .unwrap();
    request.map(|r| r.value)
}

/// Which member other than `old` says over its REST API that it is the
/// primary (an error lists what each answered).
pub async fn api_primary(cluster: &AgentCluster, old: &str) -> Result<String, String> {
    let client = api::ApiClient::new(None).map_err(|e| e.to_string())?;
    let mut seen = Vec::new();
    for member in cluster.members.iter().filter(|m| m.name != old) {
        let mut call = api::Call::new(hyper::Method::GET, &member.api_url, "/primary");
        call.timeout = Duration::from_secs(1);
        match client.send(call).await {
            Ok(reply) if reply.status.is_success() => return Ok(member.name.clone()),
            Ok(reply) => seen.push(format!("{}: {}", member.name, reply.status)),
            Err(e) => seen.push(format!("{}: {e}", member.name)),
        }
    }
    Err(seen.join("; "))
}
