//! Query cancellation through the proxy against real PostgreSQL servers (a
//! primary and two standbys): a client's cancel request reaches the server
//! holding its session, through either port, once.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::member_status;
use proxy::{Proxy, Settings};
use store::cluster::{ClusterKeys, Leader, Role};
use store::Store;
use testkit::etcd::EtcdCluster;
use testkit::postgres::PgCluster;
use testkit::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

const DEADLINE: Duration = Duration::from_secs(30);
/// Far longer than the test waits for a cancel.
const LONG_QUERY: &str = "SELECT pg_sleep(30)";
const CANCEL_HEADER: [u8; 8] = [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];

fn keys() -> ClusterKeys {
    ClusterKeys::new("/pgwarden", "test").unwrap()
}

/// A TCP relay to one address that counts the cancel requests whose
/// connection the far side has closed. With `hold_client_end`, a client's
/// end is not passed on (the far side's is): libpq's cancel waits for the
/// server to close without closing its own side, while tokio-postgres shuts
/// its side at once, which would hide a proxy that sends a request twice
/// (it would see the client leave first).
struct Relay {
    addr: SocketAddr,
    cancels_closed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(to: SocketAddr, hold_client_end: bool) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancels_closed = Arc::new(AtomicUsize::new(0));
    let counter = cancels_closed.clone();
    let task = tokio::spawn(async move {
        // Dropped with the task: every connection ends.
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((client, _)) = listener.accept().await {
            let counter = counter.clone();
            connections.spawn(async move {
                let Ok(server) = TcpStream::connect(to).await else {
                    return;
                };
                let is_cancel = AtomicBool::new(false);
                let (mut client_in, mut client_out) = client.into_split();
                let (mut server_in, mut server_out) = server.into_split();
                let up = async {
                    let mut buf = [0u8; 8192];
                    let mut first = true;
                    while let Ok(n @ 1..) = client_in.read(&mut buf).await {
                        if first {
                            is_cancel.store(buf[..n].starts_with(&CANCEL_HEADER), Relaxed);
                            first = false;
                        }
                        if server_out.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    if !hold_client_end {
                        let _ = server_out.shutdown().await;
                    }
                    std::future::pending::<()>().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut server_in, &mut client_out).await;
                };
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
                if is_cancel.load(Relaxed) {
                    counter.fetch_add(1, Relaxed);
                }
            });
        }
    });
    Relay {
        addr,
        cancels_closed,
        task,
    }
}

/// Publishes `node0` as the primary and the others as streaming standbys,
/// each behind a relay (returned).
async fn publish(pg: &PgCluster, store: &dyn Store) -> Vec<Relay> {
    let leader = Leader {
        member: "node0".into(),
    };
    let term = keys().leader().create(store, &leader, None).await.unwrap() as u64;
    let mut relays = Vec::new();
    for (i, node) in pg.nodes.iter().enumerate() {
        let endpoint = node.endpoint();
        let to = format!("{}:{}", endpoint.host, endpoint.port);
        let relay = relay(to.parse().unwrap(), false).await;
        let status = if i == 0 {
            member_status(&node.name, Role::Primary, relay.addr, Some(term))
        } else {
            member_status(&node.name, Role::Replica, relay.addr, None)
        };
        keys()
            .member(&node.name)
            .unwrap()
            .put(store, &status, None)
            .await
            .unwrap();
        relays.push(relay);
    }
    relays
}

async fn start_proxy(store: Arc<dyn Store>, kernel: bool) -> Proxy {
    let mut settings = Settings::new("127.0.0.1:0".parse().unwrap());
    settings.read_only = Some("127.0.0.1:0".parse().unwrap());
    settings.refresh = Duration::from_millis(200);
    settings.kernel_forwarding = kernel;
    let proxy = Proxy::start(settings, store, keys()).await.unwrap();
    wait_for("the proxy to route to every node", DEADLINE, || async {
        let table = proxy.table();
        (table.routes.primary.is_some() && table.routes.standbys.len() == 2)
            .then_some(())
            .ok_or_else(|| table.describe())
    })
    .await
    .unwrap();
    proxy
}

async fn connect(addr: SocketAddr) -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(addr.port())
        .user("postgres")
        .password("lab superuser 'password'")
        .dbname("postgres");
    let (client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Waits until some node runs the long query.
async fn running(pg: &PgCluster) {
    let sql = format!(
        "SELECT count(*)::text FROM pg_stat_activity WHERE state = 'active' AND query = '{LONG_QUERY}'"
    );
    wait_for("the long query to run", DEADLINE, || async {
        for node in &pg.nodes {
            if node.query_text(&sql).await.map_err(|e| e.to_string())? == Some("1".into()) {
                return Ok(());
            }
        }
        Err("not yet".to_string())
    })
    .await
    .unwrap();
}

fn cancels_closed(relays: &[Relay]) -> usize {
    relays.iter().map(|r| r.cancels_closed.load(Relaxed)).sum()
}

/// Cancels a long query through the proxy's `port` with the client's own
/// cancel request; the session's next query runs undisturbed.
async fn cancel_through(pg: &PgCluster, servers: &[Relay], port: SocketAddr, what: &str) {
    let client_side = relay(port, true).await;
    let client = connect(client_side.addr).await;
    let cancel = client.cancel_token();
    let long = tokio::spawn(async move {
        let result = client.simple_query(LONG_QUERY).await.map(drop);
        (client, result)
    });
    running(pg).await;
    let before = cancels_closed(servers);
    let asked = std::time::Instant::now();
    cancel.cancel_query(NoTls).await.unwrap();
    let (client, result) = tokio::time::timeout(Duration::from_secs(10), long)
        .await
        .unwrap_or_else(|_| panic!("{what}: the query was not cancelled"))
        .unwrap();
    let err = result.expect_err("the long query ended without a cancel");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{what}: {err}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{what}: {:?}",
        asked.elapsed()
    );
    // Once the server has closed the cancel connection it is done with the
    // request (its signal is sent): the next query runs undisturbed unless
    // the same request comes again.
    wait_for(
        "the server to close the cancel connection",
        DEADLINE,
        || async {
            (cancels_closed(servers) > before)
                .then_some(())
                .ok_or("not yet")
        },
    )
    .await
    .unwrap();
    client
        .simple_query("SELECT pg_sleep(1)")
        .await
        .unwrap_or_else(|e| panic!("{what}: the next query failed too ({e:?}): a second cancel?"));
    assert_eq!(
        cancels_closed(servers),
        before + 1,
        "{what}: one cancel request reached a server"
    );
}

#[tokio::test]
async fn a_cancel_reaches_the_server_holding_the_session_once_through_either_port() {
    let pg = PgCluster::start(2).await.unwrap();
    let etcd = EtcdCluster::start(1).await.unwrap();
    let store = etcd.store().await.unwrap();
    let servers = publish(&pg, store.as_ref()).await;
    for kernel in [false, true] {
        let proxy = start_proxy(store.clone(), kernel).await;
        let mode = if kernel {
            "in the kernel"
        } else {
            "in user space"
        };
        let what = format!("read-write, {mode}");
        cancel_through(&pg, &servers, proxy.read_write, &what).await;
        // Reads are balanced over two standbys: the cancel must find the
        // one with the session, not the one with fewer connections.
        let what = format!("read-only, {mode}");
        cancel_through(&pg, &servers, proxy.read_only.unwrap(), &what).await;
    }
}
