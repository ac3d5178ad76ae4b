//! The API's limits (docs/api.md, "Limits"), with short timeouts and small
//! caps, over raw TCP so that what the server does with each connection
//! shows.

use std::sync::Arc;
use std::time::Duration;

use api::local::LocalState;
use api::testing::{closed_by_server, raw_get, start_api_with_limits, RawAnswer, TestApi};
use api::Limits;
use store::cluster::ClusterKeys;
use store::Store;
use testkit::etcd::EtcdCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A generous bound for what should take a timeout or two on a busy machine.
const SOON: Duration = Duration::from_secs(10);

struct Fixture {
    // Its Drop kills etcd.
    _etcd: EtcdCluster,
    api: TestApi,
    addr: String,
}

async fn fixture(limits: Limits) -> Fixture {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let store: Arc<dyn Store> = etcd.store().await.unwrap();
    let keys = ClusterKeys::new("/pgwarden", "main").unwrap();
    let api = start_api_with_limits(store, keys, "db1", limits).await;
    // /health answers 200 only while PostgreSQL runs.
    api.agent.state.send_modify(|local: &mut LocalState| {
        local.pg_running = true;
    });
    let addr = api.server.local_addr().to_string();
    Fixture {
        _etcd: etcd,
        api,
        addr,
    }
}

async fn get(addr: &str, path: &str) -> RawAnswer {
    tokio::time::timeout(SOON, raw_get(addr, path))
        .await
        .unwrap_or_else(|_| panic!("GET {path} was not answered within {SOON:?}"))
        .unwrap()
}

fn status(answer: &RawAnswer) -> Option<u16> {
    match answer {
        RawAnswer::Answered { status, .. } => Some(*status),
        RawAnswer::Closed => None,
    }
}

/// GETs `path` until it answers `want` (other answers and closed
/// connections are retried); panics after `deadline`.
async fn eventually(addr: &str, path: &str, want: u16, deadline: Duration) -> RawAnswer {
    let started = Instant::now();
    loop {
        let answer = get(addr, path).await;
        if status(&answer) == Some(want) {
            return answer;
        }
        assert!(
            started.elapsed() < deadline,
            "GET {path} did not answer {want} within {deadline:?}; last: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn idle_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // Let the server accept them before the next connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    held
}

/// The value of `pgwarden_api_refused_total{limit="LIMIT"}`.
async fn refused(addr: &str, limit: &str) -> u64 {
    let RawAnswer::Answered { body, .. } = eventually(addr, "/metrics", 200, SOON).await else {
        unreachable!()
    };
    let prefix = format!("pgwarden_api_refused_total{{limit=\"{limit}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{body}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_does_not_arrive_in_time_closes_the_connection_and_so_does_idleness() {
    let header_read = Duration::from_secs(1);
    let fx = fixture(Limits {
        header_read,
        ..Limits::default()
    })
    .await;

    // Half a head.
    let mut partial = TcpStream::connect(&fx.addr).await.unwrap();
    let started = Instant::now();
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut partial, SOON).await,
        "a connection with half a head was still open after {SOON:?}"
    );
    assert!(started.elapsed() >= header_read - Duration::from_millis(100));

    // Nothing at all.
    let mut silent = TcpStream::connect(&fx.addr).await.unwrap();
    assert!(closed_by_server(&mut silent, SOON).await);

    // Kept alive after an answer, then idle.
    let mut kept = TcpStream::connect(&fx.addr).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer is a few hundred bytes: its head and its JSON body.
    while !answer.ends_with(b"}") {
        let n = tokio::time::timeout(SOON, kept.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the answer");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    assert!(closed_by_server(&mut kept, SOON).await);

    // A long poll is an answer in progress, not a head awaited: it runs
    // its course.
    let started = Instant::now();
    let answer = get(&fx.addr, "/events?after=100&wait=2s").await;
    assert_eq!(status(&answer), Some(200), "{answer:?}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    fx.api.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_a_408() {
    let fx = fixture(Limits {
        body_read: Duration::from_secs(1),
        ..Limits::default()
    })
    .await;
    let mut tcp = TcpStream::connect(&fx.addr).await.unwrap();
    tcp.write_all(
        b"POST /switchover HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(SOON, tcp.read_to_end(&mut answer))
        .await
        .expect("no answer to a stalled body");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 1 s"), "{answer}");
    fx.api.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_health_checks_and_503_then_nothing() {
    let fx = fixture(Limits {
        connections: 3,
        overflow: 2,
        header_read: Duration::from_secs(5),
        overflow_header_read: Duration::from_secs(1),
        ..Limits::default()
    })
    .await;
    let addr = fx.addr.as_str();
    let mut served = idle_connections(addr, 3).await;

    // Over the limit: health checks still, anything else a 503 that says
    // why.
    match get(addr, "/cluster").await {
        RawAnswer::Answered { status: 503, body } => {
            assert!(body.contains("too many API connections"), "{body}")
        }
        other => panic!("/cluster over the connection limit: {other:?}"),
    }
    assert_eq!(status(&get(addr, "/health").await), Some(200));

    // Over that too: closed without a word.
    let mut overflow = idle_connections(addr, 2).await;
    assert_eq!(get(addr, "/health").await, RawAnswer::Closed);
    // The overflow's short header timeout makes room again.
    for tcp in &mut overflow {
        assert!(closed_by_server(tcp, SOON).await);
    }
    eventually(addr, "/health", 200, SOON).await;

    // Once the idle connections are closed, everything is served.
    for tcp in &mut served {
        assert!(closed_by_server(tcp, SOON).await);
    }
    eventually(addr, "/cluster", 200, SOON).await;
    assert!(refused(addr, "connections").await >= 4);
    fx.api.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_over_the_limit_are_a_503() {
    let fx = fixture(Limits {
        long_polls: 2,
        ..Limits::default()
    })
    .await;
    let polls: Vec<_> = (0..2)
        .map(|_| {
            let addr = fx.addr.clone();
            tokio::spawn(async move { get(&addr, "/events?after=100&wait=3s").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let started = Instant::now();
    match get(&fx.addr, "/events?after=100&wait=3s").await {
        RawAnswer::Answered { status: 503, body } => {
            assert!(body.contains("too many long polls"), "{body}")
        }
        other => panic!("a third long poll: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // Without a wait it is no long poll.
    assert_eq!(status(&get(&fx.addr, "/events?after=100").await), Some(200));

    for poll in polls {
        assert_eq!(status(&poll.await.unwrap()), Some(200));
    }
    // Their places are free again.
    assert_eq!(
        status(&get(&fx.addr, "/events?after=100&wait=200ms").await),
        Some(200)
    );
    assert_eq!(refused(&fx.addr, "long_polls").await, 1);
    fx.api.server.shutdown().await;
}
