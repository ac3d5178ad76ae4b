//! The proxy against a real etcd and fake backends (plain TCP listeners
//! published as members' pg_url): routing, holding, fencing, lag, bad bytes
//! and a lost store, without PostgreSQL.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use api::{ApiClient, Call};
use common::member_status;
use hyper::{Method, StatusCode};
use proxy::{Proxy, Settings};
use store::cluster::{ClusterKeys, Leader, MemberStatus, Role};
use store::Store;
use testkit::etcd::EtcdCluster;
use testkit::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(20);

/// An echo server that says who it is first; `GARBAGE` makes it answer with
/// junk and hang up, like a broken backend.
struct Fake {
    name: String,
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

async fn fake(name: &str) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let me = name.to_string();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Relaxed);
            let me = me.clone();
            tokio::spawn(async move {
                if s.write_all(format!("{me}\n").as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if buf[..n].starts_with(b"GARBAGE") {
                        let _ = s.write_all(&[0xff, 0x00, 0x13, 0x37, b'\n']).await;
                        return;
                    }
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Fake {
        name: name.to_string(),
        addr,
        accepted,
        _task: task,
    }
}

/// A backend that reads what the client sends first, answers `answer`
/// (nothing: it just hangs up) and closes: a PostgreSQL shutting down, or
/// one rejecting the client's startup packet.
async fn fake_turning_away(name: &str, answer: Vec<u8>) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Relaxed);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(&answer).await;
            });
        }
    });
    Fake {
        name: name.to_string(),
        addr,
        accepted,
        _task: task,
    }
}

/// FATAL 57P03 "the database system is shutting down", as PostgreSQL sends it.
fn shutting_down() -> Vec<u8> {
    proxy::startup::fatal(
        proxy::startup::CANNOT_CONNECT_NOW,
        "the database system is shutting down",
    )
}

fn status(fake: &Fake, role: Role, term: Option<u64>) -> MemberStatus {
    member_status(&fake.name, role, fake.addr, term)
}

/// A one-node etcd (kept alive by the caller) and a client of it.
async fn etcd() -> (EtcdCluster, Arc<dyn Store>) {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let store = etcd.store().await.unwrap();
    (etcd, store)
}

fn keys() -> ClusterKeys {
    ClusterKeys::new("/pgwarden", "test").unwrap()
}

/// Makes `fake` the leader in a new term and publishes it as primary.
async fn lead(store: &dyn Store, fake: &Fake) -> u64 {
    let keys = keys();
    keys.leader().delete(store).await.unwrap();
    let leader = Leader {
        member: fake.name.clone(),
    };
    let term = keys.leader().create(store, &leader, None).await.unwrap() as u64;
    publish(store, status(fake, Role::Primary, Some(term))).await;
    term
}

async fn publish(store: &dyn Store, status: MemberStatus) {
    keys()
        .member(&status.name)
        .unwrap()
        .put(store, &status, None)
        .await
        .unwrap();
}

fn settings() -> Settings {
    let mut settings = Settings::new("127.0.0.1:0".parse().unwrap());
    settings.read_only = Some("127.0.0.1:0".parse().unwrap());
    settings.http = Some("127.0.0.1:0".parse().unwrap());
    settings.refresh = Duration::from_millis(200);
    settings
}

/// Connects, says hello (the proxy routes a client once it has sent its
/// first bytes, as every PostgreSQL client does at once) and reads the
/// backend's greeting: its name, or what went wrong. The hello's echo is
/// read too.
async fn who(addr: SocketAddr) -> (TcpStream, String) {
    const HELLO: &str = "who?";
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{HELLO}\n").as_bytes()).await.unwrap();
    let name = match line(&mut s).await {
        Ok(name) => name,
        Err(e) => return (s, e),
    };
    if let Ok(echo) = line(&mut s).await {
        assert!(echo == HELLO || echo.is_empty(), "{name}\n{echo}");
    }
    (s, name)
}

/// Reads up to a newline or the end.
async fn line(s: &mut TcpStream) -> Result<String, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match tokio::time::timeout(DEADLINE, s.read(&mut byte)).await {
            Ok(Ok(1)) if byte[0] == b'\n' => break,
            Ok(Ok(1)) => line.push(byte[0]),
            Ok(Ok(_)) => break,
            Ok(Err(e)) => return Err(format!("error: {e}")),
            Err(_) => return Err("timed out".to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Whether the proxy closed `s` (EOF or reset) within a short time.
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(DEADLINE, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn echoes(s: &mut TcpStream, text: &str) -> bool {
    if s.write_all(text.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; text.len()];
    matches!(
        tokio::time::timeout(DEADLINE, s.read_exact(&mut buf)).await,
        Ok(Ok(_))
    ) && buf == text.as_bytes()
}

#[tokio::test]
async fn writes_follow_the_leader_and_old_connections_are_cut_at_a_leader_change() {
    let (_etcd, store) = etcd().await;
    let (db1, db2) = (fake("db1").await, fake("db2").await);
    lead(store.as_ref(), &db1).await;
    publish(store.as_ref(), status(&db2, Role::Replica, None)).await;
    let proxy = Proxy::start(settings(), store.clone(), keys())
        .await
        .unwrap();

    let (mut old, name) = who(proxy.read_write).await;
    assert_eq!(name, "db1");
    let (mut reader, name) = who(proxy.read_only.unwrap()).await;
    assert_eq!(name, "db2");

    // db1 loses the key; db2 promotes in a new term.
    lead(store.as_ref(), &db2).await;
    publish(store.as_ref(), status(&db1, Role::Replica, None)).await;
    assert!(
        closed(&mut old).await,
        "the old primary's client stayed connected"
    );
    assert_eq!(who(proxy.read_write).await.1, "db2");
    // The reader was on db2, which no longer serves reads as a standby.
    assert!(closed(&mut reader).await);
    // db1's standby status is published after db2 took the key: the read
    // set has it once the proxy has seen that write too.
    let read_only = proxy.read_only.unwrap();
    wait_for("db1 in the read set", DEADLINE, || async {
        match who(read_only).await.1 {
            name if name == "db1" => Ok(()),
            name => Err(name),
        }
    })
    .await
    .unwrap();
    assert!(proxy.metrics.fenced_total.load(Relaxed) >= 2);
    let (status, metrics) = http(proxy.http.unwrap(), Method::GET, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{metrics}");
    assert!(
        metrics.contains("pgwarden_proxy_routing_changes_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pgwarden_proxy_backend_connections{member=\"db2\""),
        "{metrics}"
    );
    let (status, health) = http(proxy.http.unwrap(), Method::GET, "/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    let (status, _) = http(proxy.http.unwrap(), Method::GET, "/other").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = http(proxy.http.unwrap(), Method::POST, "/health").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_client_that_connects_with_no_primary_is_held_until_there_is_one() {
    let (_etcd, store) = etcd().await;
    let db1 = fake("db1").await;
    publish(store.as_ref(), status(&db1, Role::Replica, None)).await;
    let proxy = Proxy::start(settings(), store.clone(), keys())
        .await
        .unwrap();
    let rw = proxy.read_write;
    let client = tokio::spawn(async move { who(rw).await.1 });
    let metrics = proxy.metrics.clone();
    wait_for("the client to be held", DEADLINE, || async {
        match metrics.held.load(Relaxed) {
            1 => Ok(()),
            n => Err(n),
        }
    })
    .await
    .unwrap();
    let (status, health) = http(proxy.http.unwrap(), Method::GET, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    lead(store.as_ref(), &db1).await;
    assert_eq!(client.await.unwrap(), "db1");
    assert_eq!(proxy.metrics.held.load(Relaxed), 0);
    assert_eq!(proxy.metrics.held_total.load(Relaxed), 1);
}

#[tokio::test]
async fn a_held_client_is_refused_with_a_reason_after_the_hold_timeout() {
    let (_etcd, store) = etcd().await;
    let mut settings = settings();
    settings.hold_timeout = Duration::from_millis(300);
    let proxy = Proxy::start(settings, store, keys()).await.unwrap();
    let mut s = TcpStream::connect(proxy.read_write).await.unwrap();
    s.write_all(b"\0\0\0\x08\x04\xd2\x16\x2f").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(answer.first(), Some(&b'E'), "{text}");
    assert!(
        text.contains("57P03") && text.contains("no primary") && text.contains("pgwarden ctl list"),
        "{text}"
    );
}

#[tokio::test]
async fn garbage_from_a_client_or_a_backend_closes_only_that_connection() {
    let (_etcd, store) = etcd().await;
    let db1 = fake("db1").await;
    lead(store.as_ref(), &db1).await;
    let proxy = Proxy::start(settings(), store.clone(), keys())
        .await
        .unwrap();
    let (mut good, _) = who(proxy.read_write).await;
    let (mut bad_backend, _) = who(proxy.read_write).await;
    let (mut bad_client, _) = who(proxy.read_write).await;

    bad_backend.write_all(b"GARBAGE please").await.unwrap();
    assert!(closed(&mut bad_backend).await);
    // Bytes no PostgreSQL would accept pass through untouched: the proxy
    // does not parse, so nothing a client sends can hurt another client.
    let junk: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    bad_client.write_all(&junk).await.unwrap();
    let mut back = vec![0u8; junk.len()];
    bad_client.read_exact(&mut back).await.unwrap();
    assert_eq!(back, junk);
    drop(bad_client);

    assert!(echoes(&mut good, "still here").await);
    assert_eq!(who(proxy.read_write).await.1, "db1");
}

#[tokio::test]
async fn an_unreachable_store_keeps_the_routes_for_the_grace_then_refuses_writes() {
    let (mut etcd, store) = etcd().await;
    let (db1, db2) = (fake("db1").await, fake("db2").await);
    lead(store.as_ref(), &db1).await;
    publish(store.as_ref(), status(&db2, Role::Replica, None)).await;
    let mut settings = settings();
    settings.store_grace = Duration::from_millis(1500);
    // A re-read interval that divides the grace: the store is declared lost
    // at the first re-read more than the grace after the last good one,
    // which was less than one interval before the kill, so not before the
    // grace has passed since the kill.
    settings.refresh = Duration::from_millis(250);
    let proxy = Proxy::start(settings, store.clone(), keys()).await.unwrap();
    let (mut writer, name) = who(proxy.read_write).await;
    assert_eq!(name, "db1");

    etcd.kill(0).unwrap();
    let lost_at = std::time::Instant::now();
    // Within the grace the last routes hold.
    let (_, name) = who(proxy.read_write).await;
    assert!(
        name == "db1" || lost_at.elapsed() >= Duration::from_millis(1500),
        "{name}"
    );
    assert!(echoes(&mut writer, "x").await || lost_at.elapsed() >= Duration::from_millis(1500));
    // Then writes are refused, open ones cut; reads keep the last routes.
    let rw = proxy.read_write;
    wait_for("read-write connections to be refused", DEADLINE, || async {
        let (_, answer) = who(rw).await;
        if answer.starts_with('E') {
            Ok(())
        } else {
            Err(answer)
        }
    })
    .await
    .unwrap();
    assert!(lost_at.elapsed() >= Duration::from_millis(1500));
    assert!(closed(&mut writer).await);
    assert_eq!(who(proxy.read_only.unwrap()).await.1, "db2");

    etcd.restart(0).await.unwrap();
    wait_for("writes routed again", DEADLINE, || async {
        match who(rw).await.1 {
            name if name == "db1" => Ok(()),
            other => Err(other),
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_standby_beyond_the_lag_limit_gets_no_reads_and_loses_its_connections() {
    let (_etcd, store) = etcd().await;
    let (db1, db2, db3) = (fake("db1").await, fake("db2").await, fake("db3").await);
    lead(store.as_ref(), &db1).await;
    publish(store.as_ref(), status(&db2, Role::Replica, None)).await;
    let mut far = status(&db3, Role::Replica, None);
    far.lag_bytes = Some(50 << 20);
    publish(store.as_ref(), far).await;
    let mut settings = settings();
    settings.policy.max_lag_bytes = Some(1 << 20);
    settings.policy.max_lag = Some(Duration::from_secs(10));
    let proxy = Proxy::start(settings, store.clone(), keys()).await.unwrap();
    let ro = proxy.read_only.unwrap();
    wait_for("db2 in the read set", DEADLINE, || async {
        match who(ro).await.1 {
            name if name == "db2" => Ok(()),
            other => Err(other),
        }
    })
    .await
    .unwrap();
    let mut readers = Vec::new();
    for _ in 0..10 {
        let (s, name) = who(ro).await;
        assert_eq!(name, "db2");
        readers.push(s);
    }
    assert_eq!(
        db3.accepted.load(Relaxed),
        0,
        "the lagging standby got reads"
    );

    // db2 falls behind in time (lag_ms unknown counts as behind too): its
    // readers are closed and reads fall back to the primary.
    let mut behind = status(&db2, Role::Replica, None);
    behind.lag_ms = None;
    publish(store.as_ref(), behind).await;
    for reader in &mut readers {
        assert!(
            closed(reader).await,
            "a reader stayed on the lagging standby"
        );
    }
    assert_eq!(who(ro).await.1, "db1");
    assert_eq!(db3.accepted.load(Relaxed), 0);
}

#[tokio::test]
async fn a_member_whose_status_cannot_be_read_is_named_in_the_routing_line() {
    let (_etcd, store) = etcd().await;
    let (db1, db2) = (fake("db1").await, fake("db2").await);
    lead(store.as_ref(), &db1).await;
    publish(store.as_ref(), status(&db2, Role::Replica, None)).await;
    let db3 = keys().member("db3").unwrap();
    store
        .put(db3.key(), b"{\"not\": \"a status\"}".to_vec(), None)
        .await
        .unwrap();
    let proxy = Proxy::start(settings(), store.clone(), keys())
        .await
        .unwrap();
    let health = wait_for("the routes to be loaded", DEADLINE, || async {
        match http(proxy.http.unwrap(), Method::GET, "/health").await {
            (StatusCode::OK, health) => Ok(health),
            other => Err(other),
        }
    })
    .await
    .unwrap();
    assert!(
        health.contains("db3 has a status the proxy cannot read: bad data under"),
        "{health}"
    );
    assert_eq!(who(proxy.read_write).await.1, "db1");
    assert_eq!(who(proxy.read_only.unwrap()).await.1, "db2");
}

/// One request to the proxy's HTTP endpoint: the status and the body.
async fn http(addr: SocketAddr, method: Method, path: &str) -> (StatusCode, String) {
    let base = format!("http://{addr}");
    let reply = ApiClient::new(None)
        .unwrap()
        .send(Call::new(method, &base, path))
        .await
        .unwrap();
    (
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
    )
}

#[tokio::test]
async fn a_client_connecting_to_a_primary_that_is_shutting_down_is_given_the_next_one() {
    let (_etcd, store) = etcd().await;
    let old = fake_turning_away("db1", shutting_down()).await;
    let new = fake("db2").await;
    lead(store.as_ref(), &old).await;
    let proxy = Proxy::start(settings(), store.clone(), keys())
        .await
        .unwrap();
    let mut client = TcpStream::connect(proxy.read_write).await.unwrap();
    client.write_all(b"startup").await.unwrap();
    wait_for(
        "the old primary to turn the client away",
        DEADLINE,
        || async {
            match old.accepted.load(Relaxed) {
                0 => Err(0),
                n => Ok(n),
            }
        },
    )
    .await
    .unwrap();
    lead(store.as_ref(), &new).await;
    // The client never hears of db1: it gets db2's greeting, and db2 got
    // the bytes the client sent before it was there.
    let mut greeting = [0u8; 4];
    tokio::time::timeout(DEADLINE, client.read_exact(&mut greeting))
        .await
        .expect("the client was routed")
        .unwrap();
    assert_eq!(&greeting, b"db2\n");
    let mut replayed = [0u8; 7];
    tokio::time::timeout(DEADLINE, client.read_exact(&mut replayed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&replayed, b"startup");
    assert!(echoes(&mut client, "and on").await);
}

#[tokio::test]
async fn a_backend_that_hangs_up_on_the_same_bytes_twice_closes_the_client_at_once() {
    let (_etcd, store) = etcd().await;
    let rejecting = fake_turning_away("db1", Vec::new()).await;
    lead(store.as_ref(), &rejecting).await;
    let mut settings = settings();
    settings.hold_timeout = Duration::from_secs(30);
    let proxy = Proxy::start(settings, store.clone(), keys()).await.unwrap();
    let started = std::time::Instant::now();
    let mut client = TcpStream::connect(proxy.read_write).await.unwrap();
    client
        .write_all(b"a startup PostgreSQL rejects")
        .await
        .unwrap();
    assert!(closed(&mut client).await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "held {:?}: a rejected client must not wait out the hold",
        started.elapsed()
    );
    assert_eq!(
        rejecting.accepted.load(Relaxed),
        2,
        "tried once more, then gave up"
    );
}

/// A CancelRequest for the session with this process id and secret key.
fn cancel_request(pid: u32, secret: u32) -> Vec<u8> {
    let mut packet = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    packet.extend_from_slice(&pid.to_be_bytes());
    packet.extend_from_slice(&secret.to_be_bytes());
    packet
}

/// Waits until the proxy routes writes to `primary` and reads to `standbys`.
async fn routed(proxy: &Proxy, primary: &str, standbys: &[&str]) {
    wait_for("the routes", DEADLINE, || async {
        let table = proxy.table();
        let reads: Vec<&str> = table
            .routes
            .standbys
            .iter()
            .map(|s| s.backend.member.as_str())
            .collect();
        let writes = table
            .routes
            .primary
            .as_ref()
            .map(|p| p.backend.member.as_str());
        (writes == Some(primary) && reads == standbys)
            .then_some(())
            .ok_or_else(|| table.describe())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_cancel_for_no_known_session_goes_once_to_the_primary_and_nowhere_from_the_read_only_port(
) {
    let (_etcd, store) = etcd().await;
    // PostgreSQL reads a cancel request and closes without a word.
    let db1 = fake_turning_away("db1", Vec::new()).await;
    let db2 = fake("db2").await;
    lead(store.as_ref(), &db1).await;
    publish(store.as_ref(), status(&db2, Role::Replica, None)).await;
    let proxy = Proxy::start(settings(), store.clone(), keys())
        .await
        .unwrap();
    routed(&proxy, "db1", &["db2"]).await;

    let mut read_only = TcpStream::connect(proxy.read_only.unwrap()).await.unwrap();
    read_only.write_all(&cancel_request(4242, 7)).await.unwrap();
    assert!(closed(&mut read_only).await, "the cancel was not dropped");
    assert_eq!(db2.accepted.load(Relaxed), 0, "no standby holds the key");

    // An encrypted session's key is invisible to the proxy: on the
    // read-write port the primary decides, once.
    let mut read_write = TcpStream::connect(proxy.read_write).await.unwrap();
    read_write
        .write_all(&cancel_request(4242, 7))
        .await
        .unwrap();
    assert!(closed(&mut read_write).await);
    assert_eq!(
        db1.accepted.load(Relaxed),
        1,
        "a cancel request is sent once, never again"
    );
    assert_eq!(proxy.metrics.cancels_dropped_total.load(Relaxed), 1);
    assert_eq!(proxy.metrics.cancels_forwarded_total.load(Relaxed), 1);
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_closed_after_the_startup_timeout_and_never_reaches_a_backend(
) {
    let (_etcd, store) = etcd().await;
    let db1 = fake("db1").await;
    lead(store.as_ref(), &db1).await;
    let mut settings = settings();
    settings.startup_timeout = Duration::from_millis(300);
    let proxy = Proxy::start(settings, store.clone(), keys()).await.unwrap();
    routed(&proxy, "db1", &[]).await;

    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(proxy.read_write).await.unwrap();
    assert!(closed(&mut silent).await, "a silent client stayed open");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(db1.accepted.load(Relaxed), 0);
    assert_eq!(proxy.metrics.startup_timeouts_total.load(Relaxed), 1);
    // A client that speaks is routed as ever.
    assert_eq!(who(proxy.read_write).await.1, "db1");
}

#[tokio::test]
async fn beyond_max_client_connections_a_client_gets_53300_after_its_startup_packet() {
    let (_etcd, store) = etcd().await;
    let db1 = fake("db1").await;
    lead(store.as_ref(), &db1).await;
    let mut settings = settings();
    settings.max_client_connections = 2;
    let proxy = Proxy::start(settings, store.clone(), keys()).await.unwrap();
    routed(&proxy, "db1", &[]).await;

    // The cap counts both ports (reads fall back to the primary).
    let (_writer, name) = who(proxy.read_write).await;
    assert_eq!(name, "db1");
    let (reader, name) = who(proxy.read_only.unwrap()).await;
    assert_eq!(name, "db1");

    let mut third = TcpStream::connect(proxy.read_write).await.unwrap();
    third
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut no_tls = [0u8; 1];
    tokio::time::timeout(DEADLINE, third.read_exact(&mut no_tls))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        &no_tls, b"N",
        "an SSLRequest is answered as PostgreSQL answers it"
    );
    let mut startup = vec![0, 0, 0, 0, 0, 3, 0, 0];
    startup.extend_from_slice(b"user\0postgres\0\0");
    let length = (startup.len() as u32).to_be_bytes();
    startup[..4].copy_from_slice(&length);
    third.write_all(&startup).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, third.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(answer.first(), Some(&b'E'), "{text}");
    assert!(
        text.contains("C53300") && text.contains("max_client_connections"),
        "{text}"
    );
    assert_eq!(proxy.metrics.too_many_total.load(Relaxed), 1);
    assert_eq!(
        db1.accepted.load(Relaxed),
        2,
        "the refused client reached no backend"
    );

    // A freed place is taken again.
    drop(reader);
    wait_for("the reader's place to be freed", DEADLINE, || async {
        match proxy.metrics.client_connections.load(Relaxed) {
            1 => Ok(()),
            n => Err(n),
        }
    })
    .await
    .unwrap();
    assert_eq!(who(proxy.read_write).await.1, "db1");
}
