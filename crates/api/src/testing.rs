//! Fixtures for tests of the API and of `pgwarden ctl`: records as agents
//! would publish them, and an API started on a loopback port with the
//! agent's end of the link left to the test.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use store::cluster::{ClusterKeys, Leader, MemberStatus, PgState, Role, Switchover, Tags};
use store::typed::decode_kv;
use store::{EventKind, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::local::{link, AgentSide, LocalState};
use crate::{start_with_limits, ApiContext, ApiServer, Limits};

/// A member status: running, timeline 1, no lag.
pub fn member(name: &str, role: Role, streaming: bool) -> MemberStatus {
    MemberStatus {
        name: name.to_string(),
        role,
        state: PgState::Running,
        timeline: Some(1),
        flush_lsn: (role == Role::Primary).then_some(0x300_0000),
        receive_lsn: (role == Role::Replica).then_some(0x300_0000),
        replay_lsn: (role == Role::Replica).then_some(0x300_0000),
        lag_bytes: (role == Role::Replica).then_some(0),
        lag_ms: (role == Role::Replica).then_some(0),
        api_url: String::new(),
        pg_url: format!("postgres://127.0.0.1:5432/postgres?member={name}"),
        tags: Tags::default(),
        updated_ms: crate::time::now_ms(),
        // The fixtures' leader is db1.
        upstream: (role == Role::Replica).then(|| "db1".to_string()),
        streaming,
        term: None,
        note: String::new(),
        can_backup: false,
        pending_restart: Vec::new(),
        config_errors: Vec::new(),
        archive: None,
        slots: Vec::new(),
        reachability: None,
    }
}

/// Writes `members` and makes `leader` (if any) hold the leader key.
pub async fn write_cluster(
    store: &dyn Store,
    keys: &ClusterKeys,
    leader: Option<&str>,
    members: &[MemberStatus],
) {
    for m in members {
        keys.member(&m.name)
            .unwrap()
            .put(store, m, None)
            .await
            .unwrap();
    }
    match leader {
        Some(name) => {
            keys.leader()
                .put(
                    store,
                    &Leader {
                        member: name.to_string(),
                    },
                    None,
                )
                .await
                .unwrap();
        }
        None => {
            keys.leader().delete(store).await.unwrap();
        }
    }
}

/// The cluster most tests start from: db1 leads, db2 streams, db3 runs but
/// does not stream.
pub async fn write_three_members(store: &dyn Store, keys: &ClusterKeys) {
    write_cluster(
        store,
        keys,
        Some("db1"),
        &[
            member("db1", Role::Primary, false),
            member("db2", Role::Replica, true),
            member("db3", Role::Replica, false),
        ],
    )
    .await;
}

/// Waits, as the agents would, for a switchover (or failover) record to be
/// written, and returns it; panics after `deadline`.
pub async fn switchover_requested(
    store: &dyn Store,
    keys: &ClusterKeys,
    deadline: Duration,
) -> Switchover {
    let key = keys.switchover();
    let snapshot = store.get_prefix(key.key()).await.unwrap();
    if let Some(kv) = snapshot.kvs.iter().find(|kv| kv.key == key.key()) {
        return decode_kv::<Switchover>(kv).unwrap().value;
    }
    let mut watch = store.watch_prefix(key.key(), snapshot.revision + 1);
    let written = async {
        while let Some(change) = watch.next().await {
            // Errors are reconnections the stream handles itself.
            let Ok(change) = change else { continue };
            if change.kind == EventKind::Put && change.kv.key == key.key() {
                return decode_kv::<Switchover>(&change.kv).unwrap().value;
            }
        }
        panic!("the watch on {} ended", key.key());
    };
    tokio::time::timeout(deadline, written)
        .await
        .unwrap_or_else(|_| panic!("no switchover record appeared within {deadline:?}"))
}

/// A running API and the agent side of its link.
pub struct TestApi {
    pub server: ApiServer,
    pub agent: AgentSide,
    /// `http://127.0.0.1:PORT` (or https).
    pub url: String,
}

/// Starts an API for `member` on a free loopback port; `api` is the `[api]`
/// section with `listen` replaced.
pub async fn start_api(
    store: Arc<dyn Store>,
    keys: ClusterKeys,
    member: &str,
    api: config::Api,
) -> TestApi {
    start_api_with_repository(store, keys, member, api, None).await
}

/// [`start_api`] for a member with a `[backup]` repository.
pub async fn start_api_with_repository(
    store: Arc<dyn Store>,
    keys: ClusterKeys,
    member: &str,
    api: config::Api,
    repository: Option<Arc<dyn backup::Repository>>,
) -> TestApi {
    start_api_with(store, keys, member, api, repository, Limits::default()).await
}

/// [`start_api`] with other limits.
pub async fn start_api_with_limits(
    store: Arc<dyn Store>,
    keys: ClusterKeys,
    member: &str,
    limits: Limits,
) -> TestApi {
    start_api_with(store, keys, member, open_api(), None, limits).await
}

async fn start_api_with(
    store: Arc<dyn Store>,
    keys: ClusterKeys,
    member: &str,
    mut api: config::Api,
    repository: Option<Arc<dyn backup::Repository>>,
    limits: Limits,
) -> TestApi {
    api.listen = "127.0.0.1:0".to_string();
    let scheme = if api.cert_file.is_some() {
        "https"
    } else {
        "http"
    };
    let (link, agent) = link(LocalState {
        member: member.to_string(),
        ..LocalState::default()
    });
    let server = start_with_limits(
        ApiContext {
            store,
            keys,
            member: member.to_string(),
            link,
            api,
            repository,
        },
        limits,
    )
    .await
    .unwrap();
    let url = format!("{scheme}://{}", server.local_addr());
    TestApi { server, agent, url }
}

/// An `[api]` section: no token, no TLS.
pub fn open_api() -> config::Api {
    config::Api {
        listen: "127.0.0.1:0".to_string(),
        token_file: None,
        token: None,
        auth_reads: false,
        insecure: false,
        cert_file: None,
        key_file: None,
        ca_file: None,
    }
}

/// What the server did with a request sent on a connection of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawAnswer {
    Answered {
        status: u16,
        body: String,
    },
    /// Closed (or reset) without a byte of answer.
    Closed,
}

/// `GET path` with `Connection: close` on a new connection to `addr`
/// (`host:port`), read to the end; no client library in between, so that
/// what the server did with the connection shows.
pub async fn raw_get(addr: &str, path: &str) -> std::io::Result<RawAnswer> {
    let mut tcp = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if let Err(e) = tcp.write_all(request.as_bytes()).await {
        return closed_or(e);
    }
    let mut answer = Vec::new();
    if let Err(e) = tcp.read_to_end(&mut answer).await {
        if answer.is_empty() {
            return closed_or(e);
        }
    }
    if answer.is_empty() {
        return Ok(RawAnswer::Closed);
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    Ok(RawAnswer::Answered { status, body })
}

fn closed_or(e: std::io::Error) -> std::io::Result<RawAnswer> {
    match e.kind() {
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
            Ok(RawAnswer::Closed)
        }
        _ => Err(e),
    }
}

/// Whether the server closes `tcp` (the test sends nothing more) within
/// `deadline`; panics if it sends anything.
pub async fn closed_by_server(tcp: &mut TcpStream, deadline: Duration) -> bool {
    let mut buf = [0u8; 512];
    match tokio::time::timeout(deadline, tcp.read(&mut buf)).await {
        Err(_) => false,
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!(
            "the server sent on an idle connection: {}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}
