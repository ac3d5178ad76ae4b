//! `pgwarden proxy` in front of real agents, PostgreSQL and etcd: routing
//! follows a failover, clients of the old primary are cut off, and a
//! client that connects during the gap just waits.
//!
//! Still to add once the REST API's switchover lands: a planned switchover
//! moves the read-write route with no refused connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use proxy::{Proxy, Settings};
use testkit::agents::SUPERUSER_PASSWORD;
use testkit::{wait_for, AgentCluster, ClusterOptions};

const DEADLINE: Duration = Duration::from_secs(60);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgwarden"))
}

async fn two_members() -> AgentCluster {
    let options = ClusterOptions {
        members: 2,
        ..ClusterOptions::default()
    };
    AgentCluster::start(binary(), options).await.unwrap()
}

async fn healthy(cluster: &AgentCluster, members: &[&str]) -> String {
    match cluster.wait_healthy(members, DEADLINE).await {
        Ok(primary) => primary,
        Err(err) => panic!("{err}\n{}", cluster.logs()),
    }
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
