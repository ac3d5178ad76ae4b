//! A member's REST API under a flood of idle connections and long polls
//! (#17 point 4): the limits (docs/api.md, "Limits") shed the flood, the
//! member keeps its lease and answers its health checks all along.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use api::testing::{closed_by_server, raw_get, RawAnswer};
use api::Limits;
use testkit::{AgentCluster, ClusterOptions};
use tokio::net::TcpStream;
use tokio::time::Instant;

mod common;

use common::{api_url, binary, healthy};

/// A generous bound for what should take a timeout or two on a busy machine.
const SOON: Duration = Duration::from_secs(15);
/// How long the test's long polls wait: beyond the header timeout, so that
/// the flood's idle connections are shed while they are held.
const POLL: &str = "/events?after=1000000&wait=25s";

async fn get(addr: &str, path: &str, within: Duration) -> RawAnswer {
    tokio::time::timeout(within, raw_get(addr, path))
        .await
        .unwrap_or_else(|_| panic!("GET {path} was not answered within {within:?}"))
        .unwrap()
}

fn status(answer: &RawAnswer) -> Option<u16> {
    match answer {
        RawAnswer::Answered { status, .. } => Some(*status),
        RawAnswer::Closed => None,
    }
}

/// GETs `path` until `done` accepts the answer (connections closed
/// without one are retried); panics after `deadline`.
async fn until(
    addr: &str,
    path: &str,
    deadline: Duration,
    done: impl Fn(&RawAnswer) -> bool,
) -> RawAnswer {
    let started = Instant::now();
    loop {
        let answer = get(addr, path, SOON).await;
        if done(&answer) {
            return answer;
        }
        assert!(
            started.elapsed() < deadline,
            "GET {path}: no fitting answer within {deadline:?}; last: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leader key's holder and term (its create revision): a lease that
/// lapsed would show as a new term.
async fn leadership(cluster: &AgentCluster) -> Option<(String, i64)> {
    match cluster.keys.leader().get(cluster.store.as_ref()).await {
        Ok(key) => key.map(|l| (l.value.member, l.create_revision)),
        Err(err) => panic!("reading the leader key: {err}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_and_long_polls_costs_the_primary_nothing() {
    let options = ClusterOptions {
        members: 1,
        ..ClusterOptions::default()
    };
    let cluster = Arc::new(AgentCluster::start(binary(), options).await.unwrap());
    healthy(&cluster, &["db1"]).await;
    let url = api_url(&cluster, "db1").await;
    let addr = url.trim_start_matches("http://").to_string();
    let limits = Limits::default();
    let term = leadership(&cluster).await.expect("db1 leads");

    // The leader key, sampled all along.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (cluster, stop, term) = (cluster.clone(), stop.clone(), term.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let now = leadership(&cluster).await;
                assert_eq!(now.as_ref(), Some(&term), "the leadership changed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Long polls up to their limit; the next one is told to come back.
    let polls: Vec<_> = (0..limits.long_polls)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move { get(&addr, POLL, Duration::from_secs(60)).await })
        })
        .collect();
    // Let them all arrive first: an early check would take a place.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = until(&addr, "/events?after=1000000&wait=1s", SOON, |a| {
        status(a) == Some(503)
    })
    .await;
    assert!(
        matches!(&refused, RawAnswer::Answered { body, .. } if body.contains("too many long polls")),
        "{refused:?}"
    );

    // Idle connections: more than the limit and its overflow together.
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..limits.connections + limits.overflow + 50 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }

    // Health checks get through: over the limit they are still served,
    // and the overflow's short header timeout makes room for them.
    let health = until(&addr, "/health", SOON, |a| status(a) == Some(200)).await;
    assert!(matches!(health, RawAnswer::Answered { .. }));
    // Anything else is a 503 that says why, until the idle connections go.
    let busy = until(&addr, "/cluster", SOON, |a| status(a).is_some()).await;
    match &busy {
        RawAnswer::Answered { status: 503, body } => {
            assert!(body.contains("too many API connections"), "{body}")
        }
        // Only a machine slow enough for the header timeout to have freed
        // the places excuses an answer.
        RawAnswer::Answered { status: 200, .. } if opened.elapsed() >= limits.header_read => {}
        other => panic!("/cluster {:?} after the flood: {other:?}", opened.elapsed()),
    }

    // The header timeout closes every idle connection.
    for tcp in &mut idle {
        let left = (limits.header_read + SOON).saturating_sub(opened.elapsed());
        assert!(
            closed_by_server(tcp, left).await,
            "an idle connection was still open {:?} after it was opened",
            opened.elapsed()
        );
    }
    until(&addr, "/cluster", SOON, |a| status(a) == Some(200)).await;

    // The long polls ran their course, past the header timeout.
    for poll in polls {
        let answer = poll.await.unwrap();
        assert_eq!(status(&answer), Some(200), "{answer:?}");
    }
    stop.store(true, Ordering::Relaxed);
    sampler
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    assert_eq!(leadership(&cluster).await, Some(term));
    assert_eq!(
        status(&get(&addr, "/primary", SOON).await),
        Some(200),
        "{}",
        cluster.logs()
    );
    let RawAnswer::Answered { body: metrics, .. } =
        until(&addr, "/metrics", SOON, |a| status(a) == Some(200)).await
    else {
        unreachable!()
    };
    for limit in ["connections", "long_polls"] {
        let line = format!("pgwarden_api_refused_total{{limit=\"{limit}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in\n{metrics}"))
            .parse()
            .unwrap();
        assert!(count >= 1, "{line}{count}");
    }
}
