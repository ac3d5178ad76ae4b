//! `pgwarden proxy` in front of real agents, PostgreSQL and etcd: routing
//! follows a failover and a switchover, clients of the old primary are cut
//! off, and a client that connects during a failover's gap just waits.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::{api_url, binary, healthy, DEADLINE};
use proxy::{Proxy, Settings};
use testkit::agents::SUPERUSER_PASSWORD;
use testkit::{wait_for, AgentCluster, ClusterOptions};

async fn two_members() -> AgentCluster {
    let options = ClusterOptions {
        members: 2,
        ..ClusterOptions::default()
    };
    AgentCluster::start(binary(), options).await.unwrap()
}

async fn start_proxy(cluster: &AgentCluster) -> Proxy {
    let mut settings = Settings::new("127.0.0.1:0".parse().unwrap());
    settings.read_only = Some("127.0.0.1:0".parse().unwrap());
    settings.hold_timeout = DEADLINE;
    Proxy::start(settings, cluster.store.clone(), cluster.keys.clone())
        .await
        .unwrap()
}

/// Waits until the proxy routes writes to `member`.
async fn routes_writes_to(proxy: &Proxy, member: &str) {
    wait_for(
        &format!("the proxy to route writes to {member}"),
        DEADLINE,
        || async {
            let table = proxy.table();
            match &table.routes.primary {
                Some(p) if p.backend.member == member => Ok(()),
                _ => Err(table.describe()),
            }
        },
    )
    .await
    .unwrap();
}

/// Waits until the proxy balances reads over `member` (its status says
/// streaming, which can lag behind what PostgreSQL itself reports).
async fn routes_reads_to(proxy: &Proxy, member: &str) {
    wait_for(
        &format!("the proxy to route reads to {member}"),
        DEADLINE,
        || async {
            let table = proxy.table();
            if table
                .routes
                .standbys
                .iter()
                .any(|s| s.backend.member == member)
            {
                Ok(())
            } else {
                Err(table.describe())
            }
        },
    )
    .await
    .unwrap();
}

async fn connect(addr: SocketAddr) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(addr.port())
        .user("postgres")
        .password(SUPERUSER_PASSWORD)
        .dbname("postgres");
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// (port the server listens on, whether it is a standby)
async fn server_of(client: &tokio_postgres::Client) -> Result<(u16, bool), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_setting('port')::int, pg_is_in_recovery()",
            &[],
        )
        .await?;
    Ok((row.get::<_, i32>(0) as u16, row.get(1)))
}

#[tokio::test]
async fn the_proxy_follows_a_host_death_and_a_client_connecting_in_the_gap_sees_no_error() {
    let mut cluster = two_members().await;
    let old = healthy(&cluster, &["db1", "db2"]).await;
    let new = if old == "db1" { "db2" } else { "db1" };
    let proxy = start_proxy(&cluster).await;
    routes_writes_to(&proxy, &old).await;
    routes_reads_to(&proxy, new).await;

    let writer = connect(proxy.read_write).await.unwrap();
    assert_eq!(
        server_of(&writer).await.unwrap(),
        (cluster.member(&old).endpoint().port, false)
    );
    let reader = connect(proxy.read_only.unwrap()).await.unwrap();
    assert_eq!(
        server_of(&reader).await.unwrap(),
        (cluster.member(new).endpoint().port, true)
    );

    cluster.kill_host(&old);
    // Until the old leader's lease expires the route still names it; the
    // connection attempt fails and the client is held, then routed.
    let rw = proxy.read_write;
    let gap = tokio::spawn(async move {
        let client = connect(rw).await?;
        server_of(&client).await
    });
    healthy(&cluster, &[new]).await;
    let seen = tokio::time::timeout(DEADLINE, gap)
        .await
        .expect("the held client was never routed")
        .unwrap();
    assert_eq!(
        seen.unwrap_or_else(|err| panic!("the client saw an error: {err}\n{}", cluster.logs())),
        (cluster.member(new).endpoint().port, false)
    );
    assert!(proxy.metrics.held_total.load(Relaxed) >= 1);
    assert!(
        server_of(&writer).await.is_err(),
        "the old writer must be gone"
    );
}

#[tokio::test]
async fn a_client_inside_a_transaction_on_a_frozen_primary_is_cut_off_at_failover() {
    let cluster = two_members().await;
    let old = healthy(&cluster, &["db1", "db2"]).await;
    let new = if old == "db1" { "db2" } else { "db1" };
    let proxy = start_proxy(&cluster).await;
    routes_writes_to(&proxy, &old).await;

    let client = Arc::new(connect(proxy.read_write).await.unwrap());
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS fenced (id int); BEGIN; INSERT INTO fenced VALUES (1)",
        )
        .await
        .unwrap();

    // A frozen host keeps its TCP connections open: only the proxy can end
    // this client's session on it.
    cluster.freeze(&old, true);
    routes_writes_to(&proxy, new).await;
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        client.batch_execute("INSERT INTO fenced VALUES (2); COMMIT"),
    )
    .await;
    cluster.freeze(&old, false);
    match outcome {
        Ok(Err(err)) => assert!(
            err.is_closed() || err.to_string().contains("closed"),
            "{err}"
        ),
        Ok(Ok(())) => panic!("the old primary committed after the failover"),
        Err(_) => panic!("the client still hangs on the old primary"),
    }
    assert!(proxy.metrics.fenced_total.load(Relaxed) >= 1);
    let fresh = connect(proxy.read_write).await.unwrap();
    assert_eq!(
        server_of(&fresh).await.unwrap(),
        (cluster.member(new).endpoint().port, false)
    );
}

#[tokio::test]
async fn a_switchover_moves_the_write_route_and_cuts_off_the_old_primary_s_clients() {
    let cluster = two_members().await;
    let old = healthy(&cluster, &["db1", "db2"]).await;
    let new = if old == "db1" { "db2" } else { "db1" };
    let proxy = start_proxy(&cluster).await;
    routes_writes_to(&proxy, &old).await;
    // Its published status streams: a switchover to it may go ahead.
    routes_reads_to(&proxy, new).await;
    let writer = connect(proxy.read_write).await.unwrap();
    assert_eq!(
        server_of(&writer).await.unwrap(),
        (cluster.member(&old).endpoint().port, false)
    );

    let client = api::ApiClient::new(None).unwrap();
    let base = api_url(&cluster, &old).await;
    let body = serde_json::json!({ "to": new });
    let mut call = api::Call::new(hyper::Method::POST, &base, "/switchover");
    call.body = Some(&body);
    call.timeout = DEADLINE;
    let reply = client.send(call).await.unwrap();
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.error_message());

    routes_writes_to(&proxy, new).await;
    let fresh = connect(proxy.read_write).await.unwrap();
    assert_eq!(
        server_of(&fresh).await.unwrap(),
        (cluster.member(new).endpoint().port, false)
    );
    assert!(
        server_of(&writer).await.is_err(),
        "the old primary's client must be gone"
    );
}

#[tokio::test]
async fn a_client_whose_startup_postgresql_rejects_is_closed_not_held() {
    let cluster = two_members().await;
    let primary = healthy(&cluster, &["db1", "db2"]).await;
    let proxy = start_proxy(&cluster).await;
    routes_writes_to(&proxy, &primary).await;
    // A startup packet with a length PostgreSQL refuses: it closes without
    // a word, twice, which is the client's doing, not a dying backend's.
    let mut stream = tokio::net::TcpStream::connect(proxy.read_write)
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0]).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("closed within 10 s, not held for the hold timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let fresh = connect(proxy.read_write).await.unwrap();
    assert_eq!(
        server_of(&fresh).await.unwrap(),
        (cluster.member(&primary).endpoint().port, false)
    );
}
