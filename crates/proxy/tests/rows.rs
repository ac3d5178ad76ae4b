//! Query answers through the proxy's kernel forwarding against a real
//! PostgreSQL: a session's first large answer, right after the login,
//! comes while the proxy hands the session to the kernel, and must arrive
//! byte for byte (the quickstart's read-back of ~1000 rows after a failover
//! once got duplicated bytes here and waited for good). PostgreSQL is
//! reached through a hop that sends its bytes on in packets of a 1500-byte
//! MTU, as between hosts: over loopback its 8 KiB writes arrive as 8 KiB
//! packets, which the proxy's reads happened to end on.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::member_status;
use proxy::{Proxy, Settings};
use store::cluster::{ClusterKeys, Leader, Role};
use testkit::etcd::EtcdCluster;
use testkit::postgres::PgCluster;
use testkit::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::NoTls;

const DEADLINE: Duration = Duration::from_secs(30);

fn keys() -> ClusterKeys {
    ClusterKeys::new("/pgwarden", "test").unwrap()
}

/// TCP payload of one packet on a 1500-byte MTU network.
const MSS: usize = 1448;

/// A hop to `to` that passes the server's bytes on one packet at a time.
async fn hop(to: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        // Dropped with the task: every connection ends.
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((client, _)) = listener.accept().await {
            connections.spawn(async move {
                let Ok(server) = TcpStream::connect(to).await else {
                    return;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (mut client_in, mut client_out) = client.into_split();
                let (mut server_in, mut server_out) = server.into_split();
                let up = tokio::io::copy(&mut client_in, &mut server_out);
                let down = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = server_in.read(&mut buf).await {
                        for packet in buf[..n].chunks(MSS) {
                            client_out.write_all(packet).await?;
                        }
                    }
                    Ok::<(), std::io::Error>(())
                };
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    (addr, task)
}

async fn connect(proxy: &Proxy) -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(proxy.read_write.port())
        .user("postgres")
        .password("lab superuser 'password'")
        .dbname("postgres");
    let (client, connection) = tokio::time::timeout(DEADLINE, config.connect(NoTls))
        .await
        .expect("the login through the proxy stalled")
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Waits for the kernel's map to hold `sockets` sockets.
async fn kernel_holds(proxy: &Proxy, sockets: usize) {
    wait_for("the kernel's map", DEADLINE, || async {
        match proxy.kernel_sockets() {
            Some(n) if n == sockets => Ok(()),
            n => Err(format!("{n:?} sockets in the map, want {sockets}")),
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn rows_read_right_after_the_login_arrive_whole_in_the_kernel() {
    let pg = PgCluster::start(0).await.unwrap();
    let etcd = EtcdCluster::start(1).await.unwrap();
    let store = etcd.store().await.unwrap();
    let node = &pg.nodes[0];
    let leader = Leader {
        member: node.name.clone(),
    };
    let term = keys()
        .leader()
        .create(store.as_ref(), &leader, None)
        .await
        .unwrap() as u64;
    let endpoint = node.endpoint();
    let (addr, _hop) = hop(format!("{}:{}", endpoint.host, endpoint.port)
        .parse()
        .unwrap())
    .await;
    let status = member_status(&node.name, Role::Primary, addr, Some(term));
    keys()
        .member(&node.name)
        .unwrap()
        .put(store.as_ref(), &status, None)
        .await
        .unwrap();
    let mut settings = Settings::new("127.0.0.1:0".parse().unwrap());
    settings.refresh = Duration::from_millis(200);
    let proxy = Proxy::start(settings, store.clone(), keys()).await.unwrap();
    assert!(
        proxy.kernel_sockets().is_some(),
        "the tests run as root: the kernel must forward"
    );
    // Small queries first, so the hand-over comes at a different point of
    // the large answer each time.
    for before in 0..=2 {
        for rows in [300i64, 600, 1000, 1500, 3000, 10000] {
            let client = connect(&proxy).await;
            for _ in 0..before {
                client.simple_query("SELECT 1").await.unwrap();
            }
            // As the quickstart reads its writes back: bigints, extended
            // protocol.
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&rows];
            let query = client.query("SELECT g FROM generate_series(1, $1::bigint) g", &params);
            let got = tokio::time::timeout(DEADLINE, query)
                .await
                .unwrap_or_else(|_| panic!("{rows} rows after {before} queries: no answer"))
                .unwrap_or_else(|e| panic!("{rows} rows after {before} queries: {e}"));
            let got: Vec<i64> = got.iter().map(|r| r.get(0)).collect();
            assert!(
                got.iter().copied().eq(1..=rows),
                "{rows} rows after {before} queries: got {} others",
                got.len()
            );
            // The session goes on, in the kernel.
            for _ in 0..8 {
                client.simple_query("SELECT 1").await.unwrap();
            }
            kernel_holds(&proxy, 2).await;
            drop(client);
            kernel_holds(&proxy, 0).await;
        }
    }
}
