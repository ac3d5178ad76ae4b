//! The conformance suite against a three-node etcd, and the loss of the
//! etcd leader in the middle of a lease and a watch.

mod conformance;

use std::time::Duration;

use conformance::etcd::{etcd_subject, options};
use conformance::next_event;
use store::{EtcdStore, EventKind, Expect, Store};
use testkit::etcd::EtcdCluster;
use tokio::time::Instant;

conformance_tests!(etcd_subject(3));

/// The store talks to the etcd leader; the leader is killed. The client
/// moves to another endpoint, lease refreshes go on without the lease ever
/// expiring, the watch misses nothing, reads and CAS work; the node comes
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_etcd_leader_costs_no_lease_and_no_event() {
    let mut cluster = EtcdCluster::start(3).await.unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    let mut endpoints = vec![cluster.endpoint(leader)];
    endpoints.extend((0..3).filter(|&n| n != leader).map(|n| cluster.endpoint(n)));
    let store = EtcdStore::connect(options(endpoints)).await.unwrap();
    assert_eq!(store.current_endpoint(), cluster.endpoint(leader));

    let start = store.get_prefix("/ha/").await.unwrap().revision + 1;
    let mut watch = store.watch_prefix("/ha/", start);
    let lease = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    let held = store
        .compare_and_set(
            "/ha/leader",
            Expect::Absent,
            b"db1".to_vec(),
            Some(lease.id),
        )
        .await
        .unwrap();
    let event = next_event(&mut watch, "the leader key").await;
    assert_eq!((event.kind, event.revision), (EventKind::Put, held));

    cluster.kill(leader).unwrap();
    let killed = Instant::now();
    // The agent's heartbeat: refresh four times per TTL, for more than two
    // TTLs, writing a key each time.
    let mut heartbeat = tokio::time::interval(lease.ttl / 4);
    let mut beats = Vec::new();
    let mut slowest = Duration::ZERO;
    while killed.elapsed() < lease.ttl * 2 + Duration::from_secs(1) {
        heartbeat.tick().await;
        let asked = Instant::now();
        let ttl = store.refresh_lease(lease.id).await.unwrap_or_else(|e| {
            panic!(
                "refresh {:?} after killing the etcd leader: {e}",
                killed.elapsed()
            )
        });
        assert_eq!(ttl, lease.ttl);
        slowest = slowest.max(asked.elapsed());
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "refresh took {:?}",
            asked.elapsed()
        );
        let key = format!("/ha/beat/{:02}", beats.len());
        let revision = store.put(&key, b"beat".to_vec(), None).await.unwrap();
        beats.push((key, revision));
    }
    assert_ne!(store.current_endpoint(), cluster.endpoint(leader));
    eprintln!(
        "{} refreshes after the kill, the slowest took {slowest:?}",
        beats.len()
    );

    let kv = store
        .get("/ha/leader")
        .await
        .unwrap()
        .expect("the leader key survives the etcd leader's death while its lease is refreshed");
    assert_eq!((kv.mod_revision, kv.lease), (held, Some(lease.id)));
    let moved = store
        .compare_and_set(
            "/ha/leader",
            Expect::ModRevision(held),
            b"db1 t2".to_vec(),
            Some(lease.id),
        )
        .await
        .unwrap();

    for (key, revision) in &beats {
        let mut event = next_event(&mut watch, key).await;
        // A put whose answer died with the etcd leader is retried on
        // another node and may apply twice: the first copy comes first.
        while event.kv.key == *key && event.revision < *revision {
            event = next_event(&mut watch, key).await;
        }
        assert_eq!(
            (event.kind, event.kv.key.as_str(), event.revision),
            (EventKind::Put, key.as_str(), *revision)
        );
    }
    assert_eq!(next_event(&mut watch, "the CAS").await.revision, moved);

    cluster.restart(leader).await.unwrap();
    cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    store.refresh_lease(lease.id).await.unwrap();
    store.revoke_lease(lease.id).await.unwrap();
    assert_eq!(store.get("/ha/leader").await.unwrap(), None);
    let event = next_event(&mut watch, "the revoke").await;
    assert_eq!(
        (event.kind, event.kv.key.as_str()),
        (EventKind::Delete, "/ha/leader")
    );
}
