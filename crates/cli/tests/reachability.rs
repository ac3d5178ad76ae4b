//! No takeover without reaching the clients (#18 part 1), on a real cluster
//! in network namespaces (testkit's `NetLab::with_clients`): each member
//! has a cluster link and a client link; its reachability target is a TCP
//! listener on the client side. The primary's client link goes down while
//! its cluster link stays up: it hands over to a standby that passes, by a
//! switchover, and no acknowledged write is lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::{free_port, wait_for, AgentCluster, ClusterOptions, NetLab};

mod common;

use common::{api_primary, binary, event_lines, healthy, last_promotion, ALL, DEADLINE};

/// How long the primary's check must fail before it hands over.
const GRACE_MS: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_from_its_clients_hands_over_to_a_standby_they_reach_losing_nothing() {
    let lab = Arc::new(NetLab::with_clients(ALL.len()).expect("the lab network"));
    // The clients' side: a TCP service every member's check connects to.
    let port = free_port();
    let service: std::net::SocketAddr = format!("{}:{port}", lab.client_gateway()).parse().unwrap();
    let listening = lab.run_on_clients(async move {
        let listener = tokio::net::TcpListener::bind(service).await?;
        tokio::spawn(async move {
            loop {
                let _ = listener.accept().await;
            }
        });
        Ok::<_, std::io::Error>(())
    });
    listening
        .await
        .unwrap()
        .expect("the client-side service listens");
    let target = format!(
        "reachability = [\"{service}\"]\nreachability_interval = \"500ms\"\nreachability_timeout = \"400ms\"\n"
    );
    let mut options = ClusterOptions {
        network: Some(lab.clone()),
        member_lines: vec![target; ALL.len()],
        ..ClusterOptions::default()
    };
    options.config.reachability_grace_ms = GRACE_MS;
    let cluster = AgentCluster::start(binary(), options).await.unwrap();
    let old = healthy(&cluster, &ALL).await;
    cluster
        .wait_synchronous(DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    // Every member's check passes before the cut.
    wait_for(
        "every member to publish a passing check",
        DEADLINE,
        || async {
            let records = store::ClusterRecords::read(cluster.store.as_ref(), &cluster.keys)
                .await
                .map_err(|e| e.to_string())?;
            let states: Vec<String> = records
                .members
                .values()
                .map(|m| format!("{}: {:?}", m.value.name, m.value.reachability))
                .collect();
            let all_pass = records.members.len() == ALL.len()
                && records.members.values().all(|m| {
                    m.value
                        .reachability
                        .as_ref()
                        .is_some_and(|r| r.state == store::cluster::ReachState::Passes)
                });
            all_pass.then_some(()).ok_or(states.join("; "))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));

    let mut writer = cluster.workload_on(cluster.leader_target(), 1);
    assert!(
        writer.wait_acks(100, DEADLINE).await,
        "the writer got no writes through\n{}",
        cluster.logs()
    );

    let cut_at = Instant::now();
    lab.cut_clients(cluster.host(&old)).unwrap();
    let new = wait_for(
        "another member's API to say it is the primary",
        DEADLINE,
        || api_primary(&cluster, &old),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let took = cut_at.elapsed();
    assert!(
        took >= Duration::from_millis(GRACE_MS),
        "{new} took over {took:?} after the cut, within the grace of {GRACE_MS} ms"
    );
    wait_for(
        "a write acknowledged by the new primary",
        DEADLINE,
        || async {
            writer
                .first_ack_reconnected_after(cut_at, Some(&old))
                .ok_or(writer.acked())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    // The old primary follows the new one while still cut from its clients.
    let primary = healthy(&cluster, &ALL).await;
    assert_eq!(primary, new, "{}", cluster.logs());

    let events = event_lines(&cluster).await;
    let asked = events.iter().find(|e| {
        e.starts_with(&format!(
            "{old} reachability: my reachability check has failed"
        )) && e.ends_with(&format!("asking for a switchover to {new}"))
    });
    assert!(
        asked.is_some(),
        "no reachability event from {old}:\n{}",
        events.join("\n")
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains(&format!("switchover from {old} to {new} done"))),
        "{}",
        events.join("\n")
    );
    assert_eq!(
        last_promotion(&cluster).await.reason,
        format!("switchover from {old}")
    );

    let report = writer.stop().await;
    let ids = report.acked_ids();
    let missing = cluster.missing_ids(&new, &ids).await.unwrap();
    println!(
        "reachability: cut {old}'s client link; {new} primary after {} ms; {} writes acknowledged, {} missing",
        took.as_millis(),
        ids.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged writes missing on {new}: {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(20)],
        cluster.logs()
    );

    lab.heal_clients(cluster.host(&old)).unwrap();
    // Nothing moves back by itself: not within twice the grace that a
    // move back would have to wait out.
    tokio::time::sleep(Duration::from_millis(2 * GRACE_MS)).await;
    assert_eq!(healthy(&cluster, &ALL).await, new, "{}", cluster.logs());
    drop(cluster);
    drop(lab);
}
