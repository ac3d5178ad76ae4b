//! What the integration tests of the `pgwarden` binary share.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use testkit::AgentCluster;

pub const DEADLINE: Duration = Duration::from_secs(60);
pub const ALL: [&str; 3] = ["db1", "db2", "db3"];

/// The binary under test.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgwarden"))
}

/// Waits for one primary with `members` streaming from it; on failure the
/// panic carries every agent's log.
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

/// A member's REST API, as its status publishes it.
pub async fn api_url(cluster: &AgentCluster, member: &str) -> String {
    let status = cluster
        .keys
        .member(member)
        .unwrap()
        .get(cluster.store.as_ref())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{member} has no status\n{}", cluster.logs()));
    status.value.api_url
}
