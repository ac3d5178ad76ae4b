//! Failsafe mode against a real store outage: etcd is killed outright.
//! With failsafe the primary keeps taking writes because every standby
//! confirms, agent to agent, that it follows it; without, it stops once its
//! lease runs out. Either way the cluster is whole again when etcd is back.

mod common;

use std::time::Duration;

use common::{binary, healthy, ALL, DEADLINE};
use store::cluster::DynamicConfig;
use testkit::{wait_for, AgentCluster, ClusterOptions};

async fn cluster(failsafe: bool) -> (AgentCluster, String) {
    let cluster = AgentCluster::start(
        binary(),
        ClusterOptions {
            config: DynamicConfig {
                failsafe,
                ..DynamicConfig::default()
            },
            ..ClusterOptions::default()
        },
    )
    .await
    .unwrap();
    let primary = healthy(&cluster, &ALL).await;
    (cluster, primary)
}

/// A write on `member`'s PostgreSQL, directly.
async fn write(cluster: &AgentCluster, member: &str) -> Result<(), String> {
    let client = cluster
        .member(member)
        .instance
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS outage (at timestamptz); INSERT INTO outage VALUES (now())",
        )
        .await
        .map_err(|e| e.to_string())
}

async fn in_recovery(cluster: &AgentCluster, member: &str) -> Option<bool> {
    cluster
        .member(member)
        .probe()
        .await
        .state()
        .map(|s| s.in_recovery)
}

/// Three TTLs (3 s each): far past the lease of a primary on its own.
const OUTAGE: Duration = Duration::from_secs(9);

#[tokio::test]
async fn with_failsafe_the_primary_keeps_writing_through_a_store_outage() {
    let (mut cluster, primary) = cluster(true).await;
    let key = cluster.keys.failsafe();
    wait_for(
        "the leader to list every member for failsafe",
        DEADLINE,
        || async {
            match key.get(cluster.store.as_ref()).await {
                Ok(Some(list)) if list.value.members.len() == ALL.len() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));
    let timeline = cluster
        .member(&primary)
        .probe()
        .await
        .state()
        .unwrap()
        .timeline;
    cluster.etcd.kill(0).unwrap();

    tokio::time::sleep(OUTAGE).await;
    if let Err(err) = write(&cluster, &primary).await {
        panic!(
            "the primary stopped taking writes in failsafe mode: {err}\n{}",
            cluster.logs()
        );
    }
    for standby in ALL.iter().filter(|m| **m != primary) {
        assert_eq!(
            in_recovery(&cluster, standby).await,
            Some(true),
            "{standby} must stay a standby\n{}",
            cluster.logs()
        );
    }
    let log = std::fs::read_to_string(&cluster.member(&primary).agent_log).unwrap();
    assert!(
        log.contains("failsafe: store unreachable and the leader lease running out, but every other member confirms"),
        "{log}"
    );

    cluster.etcd.restart(0).await.unwrap();
    let after = healthy(&cluster, &ALL).await;
    assert_eq!(after, primary, "the same primary, no failover");
    let now = cluster
        .member(&primary)
        .probe()
        .await
        .state()
        .unwrap()
        .timeline;
    assert_eq!(now, timeline, "no promotion happened");
}

#[tokio::test]
async fn without_failsafe_the_primary_stops_taking_writes_when_its_lease_runs_out() {
    let (mut cluster, primary) = cluster(false).await;
    cluster.etcd.kill(0).unwrap();

    // Stopped (or no longer a primary) within the lease and a margin.
    wait_for(
        "the primary to stop taking writes",
        Duration::from_secs(8),
        || async {
            match write(&cluster, &primary).await {
                Ok(()) => Err("still writable"),
                Err(_) => Ok(()),
            }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));

    cluster.etcd.restart(0).await.unwrap();
    healthy(&cluster, &ALL).await;
}
