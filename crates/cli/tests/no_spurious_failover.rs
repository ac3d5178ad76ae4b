//! The other side of fast failover: a healthy primary keeps its job when the
//! machine is busy or the store elects a new leader.

use std::time::{Duration, Instant};

use store::cluster::SynchronousMode;
use store::StoreError;
use testkit::load::CpuHog;
use testkit::{AgentCluster, ClusterOptions};

mod common;

use common::{binary, ALL};

/// The leader key's holder and term (its create revision).
type Leadership = (String, i64);

/// One reading of the leader key.
enum Sample {
    /// The store did not answer (etcd electing a leader of its own): no
    /// evidence either way.
    Unreachable(String),
    /// The store answered: the key, or `None` for no key at all.
    Answered(Option<Leadership>),
}

async fn sample(cluster: &AgentCluster) -> Sample {
    match cluster.keys.leader().get(cluster.store.as_ref()).await {
        Ok(key) => Sample::Answered(key.map(|l| (l.value.member, l.create_revision))),
        Err(StoreError::Unavailable { detail }) => Sample::Unreachable(detail),
        Err(err) => panic!("reading the leader key: {err}\n{}", cluster.logs()),
    }
}

/// The leadership now; the store must answer and a member must lead.
async fn leadership(cluster: &AgentCluster) -> Leadership {
    match sample(cluster).await {
        Sample::Answered(Some(leadership)) => leadership,
        Sample::Answered(None) => panic!("nobody holds the leader key\n{}", cluster.logs()),
        Sample::Unreachable(detail) => panic!("the store is unreachable: {detail}"),
    }
}

/// Watches the leadership for `period`; panics at the first sample in
/// which the store answers with anything but `expected` (no key, another
/// holder, a new term), or if the store answered none of them.
async fn assert_leadership_kept(
    cluster: &AgentCluster,
    expected: &Leadership,
    period: Duration,
    what: &str,
) {
    let start = Instant::now();
    let (mut answered, mut unreachable) = (0, None);
    while start.elapsed() < period {
        match sample(cluster).await {
            // Only an unreachable store excuses a sample.
            Sample::Unreachable(detail) => unreachable = Some(detail),
            Sample::Answered(seen) => {
                answered += 1;
                if seen.as_ref() != Some(expected) {
                    let seen = match seen {
                        Some((member, term)) => format!("{member} in term {term}"),
                        None => "nobody".to_string(),
                    };
                    panic!(
                        "{what}: after {:?} the leader key is held by {seen}, not {} in term {}\n{}",
                        start.elapsed(),
                        expected.0,
                        expected.1,
                        cluster.logs()
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answered > 0,
        "{what}: the store answered no reading of the leader key in {period:?} (last: {unreachable:?})"
    );
}

#[tokio::test]
async fn a_cpu_saturated_cluster_keeps_its_primary_for_two_minutes() {
    // Synchronous mode, so the fast failover path is armed too.
    a_cpu_saturated_cluster_keeps_its_primary(SynchronousMode::First).await;
}

#[tokio::test]
async fn quorum_commit_a_cpu_saturated_cluster_keeps_its_primary_for_two_minutes() {
    a_cpu_saturated_cluster_keeps_its_primary(SynchronousMode::Quorum).await;
}

async fn a_cpu_saturated_cluster_keeps_its_primary(mode: SynchronousMode) {
    let mut options = ClusterOptions::default();
    options.config.synchronous_mode = mode;
    let cluster = AgentCluster::start(binary(), options).await.unwrap();
    cluster
        .wait_healthy(&ALL, Duration::from_secs(60))
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));
    cluster
        .wait_synchronous(Duration::from_secs(60))
        .await
        .unwrap();
    let expected = leadership(&cluster).await;
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
    let expected = leadership(&cluster).await;
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

/// A store that answers every request 400 ms late for a minute (a loaded
/// etcd, a long round trip) costs the primary nothing: its lease is renewed
/// in time and its standbys, still receiving, never take it for silent.
/// Writes may pause; none is lost.
#[tokio::test]
async fn a_store_that_answers_slowly_for_a_minute_costs_the_primary_nothing() {
    let options = ClusterOptions {
        slow_store: true,
        ..ClusterOptions::default()
    };
    let cluster = AgentCluster::start(binary(), options).await.unwrap();
    cluster
        .wait_healthy(&ALL, Duration::from_secs(60))
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));
    cluster
        .wait_synchronous(Duration::from_secs(60))
        .await
        .unwrap();
    let expected = leadership(&cluster).await;
    let mut load = cluster.workload();
    assert!(load.wait_acks(10, Duration::from_secs(10)).await);
    cluster.set_store_delay(Duration::from_millis(400));
    assert_leadership_kept(
        &cluster,
        &expected,
        Duration::from_secs(60),
        "with every store request 400 ms late",
    )
    .await;
    cluster.set_store_delay(Duration::ZERO);
    let before = load.acked();
    assert_leadership_kept(
        &cluster,
        &expected,
        Duration::from_secs(5),
        "store fast again",
    )
    .await;
    assert!(
        load.wait_acks(before + 10, Duration::from_secs(10)).await,
        "writes did not resume once the store was fast again\n{}",
        cluster.logs()
    );
    let report = load.stop().await;
    let ids: Vec<i64> = report.acks.iter().map(|a| a.id).collect();
    assert!(
        report.acks.iter().all(|a| a.member == expected.0),
        "writes went to another member"
    );
    let missing = cluster.missing_ids(&expected.0, &ids).await.unwrap();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes missing: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    println!(
        "slow store: {} writes acknowledged, {} failed, the leader kept its term",
        report.acks.len(),
        report.failed
    );
}
