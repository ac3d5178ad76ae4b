//! Failsafe mode against a real store outage: etcd is killed outright.
//! With failsafe the primary keeps taking writes because every standby
//! confirms, agent to agent, that it follows it; without, it stops once its
//! lease runs out. Either way the cluster is whole again when etcd is back.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api::local::LocalState;
use api::{ApiClient, Call};
use common::{api_url, binary, events, healthy, ALL, DEADLINE};
use hyper::Method;
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

/// One TTL into the outage the lease the primary last renewed before it
/// is spent: from then on only failsafe keeps it serving. Its members'
/// states are checked from two TTLs on, when each agent has surely run a
/// round past it.
fn ttl() -> Duration {
    Duration::from_millis(DynamicConfig::default().ttl_ms)
}

/// What `url`'s agent says of its member after its last round (answered
/// without the store).
async fn local_state(client: &ApiClient, url: &str) -> Result<LocalState, String> {
    let reply = client
        .send(Call::new(Method::GET, url, "/health"))
        .await
        .map_err(|e| e.to_string())?;
    reply.json().map_err(|e| e.to_string())
}

fn unix_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.expect("the clock is past 1970").as_millis() as u64
}

/// Past its lease, the primary's agent still runs rounds, cannot reach the
/// store, holds no lease and keeps PostgreSQL a primary; every standby's
/// agent cannot reach the store either and follows this primary in its
/// term: the members' states under which failsafe keeps it serving.
fn check_failsafe_states(
    primary: &str,
    states: &[(String, Result<LocalState, String>)],
    lease_spent_ms: u64,
) -> Result<(), String> {
    let term = states
        .iter()
        .find(|(name, _)| name == primary)
        .and_then(|(_, state)| state.as_ref().ok())
        .and_then(|state| state.leader_term);
    for (name, state) in states {
        let state = state
            .as_ref()
            .map_err(|err| format!("{name}'s API did not answer: {err}"))?;
        let wrong = if state.updated_ms < lease_spent_ms {
            "its agent ran no round since the lease was spent"
        } else if state.store_reachable {
            "its agent says it reaches the store"
        } else if name == primary && !(state.pg_running && state.primary) {
            "PostgreSQL is not a running primary"
        } else if name == primary && state.lease_remaining_ms.unwrap_or(0) > 0 {
            "its agent still counts on its lease"
        } else if name != primary && state.primary {
            "PostgreSQL is a primary"
        } else if state.leader_name.as_deref() != Some(primary) || state.leader_term != term {
            "it does not follow the primary in the primary's term"
        } else {
            continue;
        };
        return Err(format!("{name}: {wrong}: {state:?}"));
    }
    Ok(())
}

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
    let mut urls = Vec::new();
    for member in ALL {
        urls.push((member.to_string(), api_url(&cluster, member).await));
    }
    let client = ApiClient::new(None).unwrap();
    let killed_ms = unix_ms();
    cluster.etcd.kill(0).unwrap();

    // Write all through the outage: every write must be taken. Once the
    // lease is spent, the members' own states must say why.
    let outage = Instant::now();
    let (mut taken, mut checked) = (0, 0);
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
        if outage.elapsed() > 2 * ttl() {
            let mut states = Vec::new();
            for (member, url) in &urls {
                states.push((member.clone(), local_state(&client, url).await));
            }
            let lease_spent_ms = killed_ms + ttl().as_millis() as u64;
            if let Err(err) = check_failsafe_states(&primary, &states, lease_spent_ms) {
                panic!(
                    "{:?} into the store outage, with {primary} still taking writes: {err}\n{}",
                    outage.elapsed(),
                    cluster.logs()
                );
            }
            checked += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(checked > 0, "no state was checked past the lease");
    for standby in ALL.iter().filter(|m| **m != primary) {
        assert_eq!(
            in_recovery(&cluster, standby).await,
            Some(true),
            "{standby} must stay a standby\n{}",
            cluster.logs()
        );
    }

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
    let since: Vec<String> = events(&cluster)
        .await
        .into_iter()
        .filter(|e| e.time_ms >= killed_ms && matches!(e.kind.as_str(), "promoted" | "stopped"))
        .map(|e| format!("{} {}: {}", e.member, e.kind, e.details))
        .collect();
    assert!(
        since.is_empty(),
        "nothing was promoted or stopped since the outage began: {since:?}\n{}",
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
