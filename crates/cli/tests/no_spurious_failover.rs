//! The other side of fast failover: a healthy primary keeps its job when the
//! machine is busy or the store elects a new leader.

use std::time::{Duration, Instant};

use testkit::load::CpuHog;
use testkit::{AgentCluster, ClusterOptions};

mod common;

use common::{binary, ALL};

/// The leader key's holder and term (its create revision).
async fn leadership(cluster: &AgentCluster) -> Option<(String, i64)> {
    let leader = cluster
        .keys
        .leader()
        .get(cluster.store.as_ref())
        .await
        .ok()??;
    Some((leader.value.member, leader.create_revision))
}

/// Watches the leadership for `period`; panics at the first change.
async fn assert_leadership_kept(
    cluster: &AgentCluster,
    expected: &(String, i64),
    period: Duration,
    what: &str,
) {
    let start = Instant::now();
    while start.elapsed() < period {
        let seen = leadership(cluster).await;
        // An unreachable store (etcd mid-election) is not a change.
        if let Some(seen) = seen {
            assert_eq!(
                &seen,
                expected,
                "{what}: leadership changed after {:?}\n{}",
                start.elapsed(),
                cluster.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_cpu_saturated_cluster_keeps_its_primary_for_two_minutes() {
    // Synchronous mode, so the fast failover path is armed too.
    let mut options = ClusterOptions::default();
    options.config.synchronous_mode = true;
    let cluster = AgentCluster::start(binary(), options).await.unwrap();
    cluster
        .wait_healthy(&ALL, Duration::from_secs(60))
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));
    cluster
        .wait_synchronous(Duration::from_secs(60))
        .await
        .unwrap();
    let expected = leadership(&cluster).await.unwrap();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hog = CpuHog::start(cores * 2).unwrap();
    let mut load = cluster.workload();
    assert_leadership_kept(
        &cluster,
        &expected,
        Duration::from_secs(120),
        "under CPU load",
    )
    .await;
    drop(hog);
    assert!(load.wait_acks(1, Duration::from_secs(10)).await);
    let report = load.stop().await;
    assert!(
        report.acks.iter().all(|a| a.member == expected.0),
        "writes went to another member"
    );
}

#[tokio::test]
async fn losing_the_etcd_leader_does_not_cost_the_primary() {
    let options = ClusterOptions {
        etcd_nodes: 3,
        ..ClusterOptions::default()
    };
    let mut cluster = AgentCluster::start(binary(), options).await.unwrap();
    cluster
        .wait_healthy(&ALL, Duration::from_secs(60))
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));
    let expected = leadership(&cluster).await.unwrap();
    for round in 0..2 {
        let etcd_leader = cluster
            .etcd
            .wait_for_leader(Duration::from_secs(10))
            .await
            .unwrap();
        cluster.etcd.kill(etcd_leader).unwrap();
        assert_leadership_kept(
            &cluster,
            &expected,
            Duration::from_secs(10),
            &format!("etcd leader {etcd_leader} killed (round {round})"),
        )
        .await;
        cluster.etcd.restart(etcd_leader).await.unwrap();
        assert_leadership_kept(
            &cluster,
            &expected,
            Duration::from_secs(3),
            "etcd node restarted",
        )
        .await;
    }
    cluster
        .wait_healthy(&ALL, Duration::from_secs(30))
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));
}
