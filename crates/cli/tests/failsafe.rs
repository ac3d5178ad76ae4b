//! Failsafe mode against a real store outage: etcd is killed outright.
//! With failsafe the primary keeps taking writes because every standby
//! confirms, agent to agent, that it follows it; without, it stops once its
//! lease runs out. Either way the cluster is whole again when etcd is back.

mod common;

use std::time::{Duration, Instant};

use common::{binary, healthy, ALL, DEADLINE};
use pg::Probe;
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

/// How long one write may take before it counts as refused.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A write on `member`'s PostgreSQL, directly; one that hangs is an error.
async fn write(cluster: &AgentCluster, member: &str) -> Result<(), String> {
    let insert = cluster.member(member).execute(
        "CREATE TABLE IF NOT EXISTS outage (at timestamptz); INSERT INTO outage VALUES (now())",
    );
    match tokio::time::timeout(WRITE_TIMEOUT, insert).await {
        Ok(done) => done.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {WRITE_TIMEOUT:?}")),
    }
}

async fn in_recovery(cluster: &AgentCluster, member: &str) -> Option<bool> {
    cluster
        .member(member)
        .probe()
        .await
        .state()
        .map(|s| s.in_recovery)
}

/// `member`'s timeline; its PostgreSQL must be up.
async fn timeline(cluster: &AgentCluster, member: &str) -> u32 {
    let probe = cluster.member(member).probe().await;
    match probe.state() {
        Some(state) => state.timeline,
        None => panic!(
            "{member}'s PostgreSQL is not up to read its timeline: {probe:?}\n{}",
            cluster.logs()
        ),
    }
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
    let before = timeline(&cluster, &primary).await;
    cluster.etcd.kill(0).unwrap();

    // Write all through the outage: every write must be taken.
    let outage = Instant::now();
    let mut taken = 0;
    while outage.elapsed() < OUTAGE {
        if let Err(err) = write(&cluster, &primary).await {
            panic!(
                "{primary} stopped taking writes {:?} into the store outage in failsafe mode, \
                 after {taken} taken: {err}\n{}",
                outage.elapsed(),
                cluster.logs()
            );
        }
        taken += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for standby in ALL.iter().filter(|m| **m != primary) {
        assert_eq!(
            in_recovery(&cluster, standby).await,
            Some(true),
            "{standby} must stay a standby\n{}",
            cluster.logs()
        );
    }
    let log_file = &cluster.member(&primary).agent_log;
    let log = std::fs::read_to_string(log_file)
        .unwrap_or_else(|err| panic!("read {}: {err}", log_file.display()));
    assert!(
        log.contains("failsafe: store unreachable and the leader lease running out, but every other member confirms"),
        "{primary}'s agent log never says failsafe kept it writing past its lease; its log:\n{log}"
    );

    cluster.etcd.restart(0).await.unwrap();
    let after = healthy(&cluster, &ALL).await;
    assert_eq!(
        after,
        primary,
        "the same primary, no failover\n{}",
        cluster.logs()
    );
    assert_eq!(
        timeline(&cluster, &primary).await,
        before,
        "no promotion happened\n{}",
        cluster.logs()
    );
}

#[tokio::test]
async fn without_failsafe_the_primary_stops_taking_writes_when_its_lease_runs_out() {
    let (mut cluster, primary) = cluster(false).await;
    cluster.etcd.kill(0).unwrap();

    // Stopped (or no longer a primary) within the lease and a margin: a
    // write is refused and PostgreSQL is down or a standby, not merely
    // slow to answer once.
    wait_for(
        "the primary to stop taking writes",
        Duration::from_secs(8),
        || async {
            if write(&cluster, &primary).await.is_ok() {
                return Err("still writable".to_string());
            }
            match cluster.member(&primary).probe().await {
                Probe::Up(state) if !state.in_recovery => Err(format!(
                    "a write was refused but it is still a primary: {state:?}"
                )),
                _ => Ok(()),
            }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));

    cluster.etcd.restart(0).await.unwrap();
    healthy(&cluster, &ALL).await;
}
