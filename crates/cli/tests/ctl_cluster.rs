//! `pgwarden ctl` against real agents, PostgreSQL and etcd: list, a
//! switchover, the history, and a reinit followed until the member streams.

mod common;

use std::process::Output;

use common::{binary, shown as show, ALL, DEADLINE};
use testkit::{wait_for, AgentCluster, ClusterOptions};

async fn ctl(api: &str, args: &[&str]) -> Output {
    common::ctl(&[&["--api", api], args].concat(), &[]).await
}

/// A `ctl` run as the wait error shows it: as printed, not escaped.
struct Seen(String);

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\n{}", self.0)
    }
}

/// Polls `ctl -o json list` until the leader is `leader` and every other
/// member streams.
async fn wait_listed(api: &str, leader: &str) {
    let what = format!("leader {leader} and every standby streaming in `ctl list`");
    wait_for(&what, DEADLINE, || async {
        let output = ctl(api, &["-o", "json", "list"]).await;
        let view: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
        let members = view["members"].as_array().cloned().unwrap_or_default();
        let streams = members.len() == ALL.len()
            && members
                .iter()
                .all(|m| m["leader"] == true || m["streaming"] == true);
        if streams && view["leader"] == leader {
            Ok(())
        } else {
            Err(Seen(show(&output)))
        }
    })
    .await
    .unwrap_or_else(|err| panic!("{err}"))
}

#[tokio::test]
async fn an_operator_lists_switches_over_and_reinitializes() {
    let cluster = AgentCluster::start(binary(), ClusterOptions::default())
        .await
        .unwrap();
    let old = match cluster.wait_healthy(&ALL, DEADLINE).await {
        Ok(primary) => primary,
        Err(err) => panic!("{err}\n{}", cluster.logs()),
    };
    let status = cluster
        .keys
        .member(&old)
        .unwrap()
        .get(cluster.store.as_ref())
        .await
        .unwrap()
        .unwrap();
    let api = status.value.api_url;

    wait_listed(&api, &old).await;
    let list = ctl(&api, &["list"]).await;
    assert_eq!(list.status.code(), Some(0), "{}", show(&list));
    let table = String::from_utf8_lossy(&list.stdout);
    for name in ALL {
        assert!(table.contains(&format!("| {name} ")), "{table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&format!("| {old} ")) && l.contains("Leader")),
        "{table}"
    );

    let target = ALL.iter().find(|m| **m != old).unwrap().to_string();
    let switched = ctl(&api, &["switchover", "--to", &target, "--force"]).await;
    assert_eq!(
        switched.status.code(),
        Some(0),
        "{}\n{}",
        show(&switched),
        cluster.logs()
    );
    assert!(
        String::from_utf8_lossy(&switched.stdout).contains(&format!("{target} is the new leader"))
    );
    let history = ctl(&api, &["history"]).await;
    assert!(
        String::from_utf8_lossy(&history.stdout).contains(&target),
        "{}",
        show(&history)
    );

    // The old primary, now a standby, is cloned afresh; ctl follows it.
    wait_listed(&api, &target).await;
    let reinit = ctl(&api, &["reinit", &old]).await;
    assert_eq!(
        reinit.status.code(),
        Some(0),
        "{}\n{}",
        show(&reinit),
        cluster.logs()
    );
    assert!(
        String::from_utf8_lossy(&reinit.stderr).contains("streams from the leader again"),
        "{}",
        show(&reinit)
    );
    // Reinit of the leader is refused by its agent.
    let refused = ctl(&api, &["reinit", &target]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
}
