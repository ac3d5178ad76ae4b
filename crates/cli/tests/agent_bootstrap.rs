//! Three agents on loopback bootstrap a cluster from nothing.

mod common;

use common::{binary, events, healthy, ALL};
use testkit::{AgentCluster, ClusterOptions};

#[tokio::test]
async fn three_agents_bootstrap_one_primary_and_two_streaming_standbys() {
    let cluster = AgentCluster::start(binary(), ClusterOptions::default())
        .await
        .unwrap();
    let primary = healthy(&cluster, &ALL).await;
    // Exactly one member ran initdb; the others cloned it.
    let ids: Vec<_> = futures_ids(&cluster).await;
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "system identifiers differ: {ids:?}"
    );
    let init = cluster
        .keys
        .initialize()
        .get(cluster.store.as_ref())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        init.value.member, primary,
        "the member that initialised the cluster leads it"
    );
    assert_eq!(init.value.system_identifier, Some(ids[0]));
    // Each decision is logged once, in the DESIGN line format.
    let log = cluster.member(&primary).log_tail(100);
    assert!(
        log.contains(&format!("{primary}:primary leading (term ")),
        "{log}"
    );
    // A fresh clone is cloned, started and streaming: nothing to repair
    // (its copied pg_control once passed it off as a former primary to
    // rewind while it was starting).
    // A store that answers late on a loaded machine fails a round's write
    // (retried the next round): that is no repair.
    let repairs: Vec<String> = events(&cluster)
        .await
        .into_iter()
        .filter(|e| match e.kind.as_str() {
            "rewound" | "recloned" => true,
            "action_failed" => !e.details.contains("store unavailable"),
            _ => false,
        })
        .map(|e| format!("{} {}: {}", e.member, e.kind, e.details))
        .collect();
    assert!(repairs.is_empty(), "{repairs:?}\n{}", cluster.logs());
}

async fn futures_ids(cluster: &AgentCluster) -> Vec<u64> {
    let mut ids = Vec::new();
    for member in &cluster.members {
        match member.probe().await {
            pg::Probe::Up(state) => ids.push(state.system_identifier),
            down => panic!("{} is down: {down:?}", member.name),
        }
    }
    ids
}
