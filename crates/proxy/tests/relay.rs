//! Forwarding once a session runs, in the kernel (BPF sockmap; the tests
//! run as root) and in user space: large transfers both ways byte for
//! byte, half-closes, resets, fencing, and no map entry left behind.
//! Backends are plain TCP servers that speak first, as PostgreSQL answers
//! a startup packet, against a real etcd.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::member_status;
use proxy::{Proxy, Settings};
use store::cluster::{ClusterKeys, Leader, Role};
use store::Store;
use testkit::etcd::EtcdCluster;
use testkit::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const DEADLINE: Duration = Duration::from_secs(30);
/// Far more reads than the proxy copies in user space before the hand-over.
const BIG: usize = 24 << 20;

/// What a fake backend does with each connection after its greeting.
#[derive(Clone, Copy)]
enum Script {
    /// Echoes until the client ends, then ends.
    Echo,
    /// Echoes the first 16 bytes, reads to the client's end, answers how
    /// many bytes it got and then this many of its own, and ends.
    CountThenSend(usize),
    /// Echoes the first 16 bytes, reads nothing until told to, then reads
    /// to the client's end and answers whether it got exactly
    /// `pattern(SLOW_SEED, SLOW_LEN)`.
    SlowReader(&'static Notify),
    /// Echoes the first 16 bytes, then sends `pattern(SLOW_SEED,
    /// SLOW_LEN)`, counting what its writes took, and ends.
    Flood(&'static AtomicU64),
    /// Answers each byte the client sends: echoes one under 128, and
    /// answers a higher one `c` with `pattern(BURST_SEED, burst_len(c))`
    /// in one write (rows in answer to a query).
    Burst,
}

const BURST_SEED: u64 = 13;

fn burst_len(command: u8) -> usize {
    (command as usize - 127) * 4099
}

const SLOW_SEED: u64 = 11;
const SLOW_LEN: usize = 128 << 20;

/// A backend at `addr` that greets with "hello\n" and follows `script`.
async fn backend(script: Script) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if s.write_all(b"hello\n").await.is_err() {
                    return;
                }
                if let Script::SlowReader(_) | Script::Flood(_) = script {
                    let mut opening = [0u8; 16];
                    for byte in opening.chunks_mut(1) {
                        if s.read_exact(byte).await.is_err() || s.write_all(byte).await.is_err() {
                            return;
                        }
                    }
                }
                if let Script::Flood(written) = script {
                    for chunk in pattern(SLOW_SEED, SLOW_LEN).chunks(64 << 10) {
                        if s.write_all(chunk).await.is_err() {
                            return;
                        }
                        written.fetch_add(chunk.len() as u64, Relaxed);
                    }
                    return;
                }
                if let Script::Burst = script {
                    let mut command = [0u8; 1];
                    while s.read_exact(&mut command).await.is_ok() {
                        let answer = match command[0] {
                            c @ 0..=127 => vec![c],
                            c => pattern(BURST_SEED, burst_len(c)),
                        };
                        if s.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                if let Script::SlowReader(go) = script {
                    go.notified().await;
                    let mut got = Vec::with_capacity(SLOW_LEN);
                    let _ = s.read_to_end(&mut got).await;
                    let same = got == pattern(SLOW_SEED, SLOW_LEN);
                    let _ = s
                        .write_all(if same { b"same\n" } else { b"differs\n" })
                        .await;
                    return;
                }
                let mut buf = vec![0u8; 64 * 1024];
                let mut total = 0u64;
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    total += n as u64;
                    if (matches!(script, Script::Echo) || total <= 16)
                        && s.write_all(&buf[..n]).await.is_err()
                    {
                        return;
                    }
                }
                if let Script::CountThenSend(flood) = script {
                    let _ = s.write_all(format!("{total}\n").as_bytes()).await;
                    let _ = s.write_all(&pattern(7, flood)).await;
                }
            });
        }
    });
    (addr, task)
}

/// Bytes no shift or loss goes unnoticed in.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Setup {
    _etcd: EtcdCluster,
    store: Arc<dyn Store>,
    proxy: Proxy,
    term: u64,
    _backend: tokio::task::JoinHandle<()>,
}

fn keys() -> ClusterKeys {
    ClusterKeys::new("/pgwarden", "test").unwrap()
}

/// etcd, one backend published as primary db1, and a proxy routing to it.
async fn setup(script: Script, kernel_forwarding: bool) -> Setup {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let store = etcd.store().await.unwrap();
    let (addr, task) = backend(script).await;
    let leader = Leader {
        member: "db1".into(),
    };
    let term = keys()
        .leader()
        .create(store.as_ref(), &leader, None)
        .await
        .unwrap() as u64;
    let status = member_status("db1", Role::Primary, addr, Some(term));
    keys()
        .member("db1")
        .unwrap()
        .put(store.as_ref(), &status, None)
        .await
        .unwrap();
    let mut settings = Settings::new("127.0.0.1:0".parse().unwrap());
    settings.refresh = Duration::from_millis(200);
    settings.kernel_forwarding = kernel_forwarding;
    let proxy = Proxy::start(settings, store.clone(), keys()).await.unwrap();
    // Root runs the tests: the kernel must take the pairs.
    assert_eq!(proxy.kernel_sockets().is_some(), kernel_forwarding);
    Setup {
        _etcd: etcd,
        store,
        proxy,
        term,
        _backend: task,
    }
}

/// Connects through the proxy and reads the greeting.
async fn connect(proxy: &Proxy) -> TcpStream {
    let mut s = wait_for("a routed connection", DEADLINE, || async {
        let mut s = TcpStream::connect(proxy.read_write)
            .await
            .map_err(|e| e.to_string())?;
        // The proxy routes a client once it has sent its first bytes: the
        // opening's first byte (not 0, which may begin a cancel request).
        s.write_all(&[1]).await.map_err(|e| e.to_string())?;
        let mut hello = [0u8; 6];
        s.read_exact(&mut hello).await.map_err(|e| e.to_string())?;
        (&hello == b"hello\n")
            .then_some(s)
            .ok_or_else(|| format!("greeted with {hello:?}"))
    })
    .await
    .unwrap();
    s.set_nodelay(true).unwrap();
    // Past the proxy's user-space opening: a burst of small exchanges.
    for i in 1..=16u8 {
        if i > 1 {
            s.write_all(&[i]).await.unwrap();
        }
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(b[0], i);
    }
    s
}

/// Sends BIG bytes while reading the echo; both must match exactly.
async fn echo_big(s: TcpStream) -> TcpStream {
    let data = pattern(1, BIG);
    let (mut r, mut w) = s.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w
    });
    let mut back = vec![0u8; BIG];
    tokio::time::timeout(DEADLINE, r.read_exact(&mut back))
        .await
        .expect("the echo stalled")
        .unwrap();
    assert!(back == data, "the echo differs from what was sent");
    let w = writer.await.unwrap();
    r.reunite(w).unwrap()
}

async fn kernel_holds(proxy: &Proxy, sockets: usize) {
    if proxy.kernel_sockets().is_none() {
        return;
    }
    wait_for(
        "the kernel's map to hold the connections",
        DEADLINE,
        || async {
            match (proxy.kernel_sockets(), proxy.kernel_slots()) {
                (Some(n), Some(m)) if n == sockets && m == sockets => Ok(()),
                (n, m) => Err(format!("{n:?} sockets in the map, {m:?} slots taken")),
            }
        },
    )
    .await
    .unwrap();
}

async fn large_transfers_arrive_byte_for_byte(kernel: bool) {
    let t = setup(Script::Echo, kernel).await;
    let s = connect(&t.proxy).await;
    kernel_holds(&t.proxy, 2).await;
    let s = echo_big(s).await;
    // Two at once, to mix pairs.
    let (a, b) = (connect(&t.proxy).await, connect(&t.proxy).await);
    kernel_holds(&t.proxy, 6).await;
    let (a, b) = tokio::join!(echo_big(a), echo_big(b));
    drop((s, a, b));
    kernel_holds(&t.proxy, 0).await;
}

#[tokio::test]
async fn large_transfers_arrive_byte_for_byte_in_the_kernel() {
    large_transfers_arrive_byte_for_byte(true).await;
}

#[tokio::test]
async fn large_transfers_arrive_byte_for_byte_in_user_space() {
    large_transfers_arrive_byte_for_byte(false).await;
}

async fn a_half_close_is_passed_on_after_every_byte(kernel: bool) {
    let flood = BIG;
    let t = setup(Script::CountThenSend(flood), kernel).await;
    let mut s = connect(&t.proxy).await;
    kernel_holds(&t.proxy, 2).await;
    let data = pattern(3, flood);
    s.write_all(&data).await.unwrap();
    // The backend answers only once it has seen the end of what was sent,
    // so the count proves no byte was lost before the FIN.
    s.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut answer))
        .await
        .expect("the backend's end never arrived")
        .unwrap();
    let count = format!("{}\n", 16 + flood);
    assert!(
        answer.starts_with(count.as_bytes()),
        "the backend counted {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(20)])
    );
    assert!(
        answer[count.len()..] == pattern(7, flood)[..],
        "the answer differs"
    );
    drop(s);
    kernel_holds(&t.proxy, 0).await;
}

#[tokio::test]
async fn a_half_close_is_passed_on_after_every_byte_in_the_kernel() {
    a_half_close_is_passed_on_after_every_byte(true).await;
}

#[tokio::test]
async fn a_half_close_is_passed_on_after_every_byte_in_user_space() {
    a_half_close_is_passed_on_after_every_byte(false).await;
}

async fn a_reset_closes_the_other_side(kernel: bool) {
    let t = setup(Script::Echo, kernel).await;
    // The backend's side: accept it through a second listener, so the
    // test sees what the proxy does to it.
    let far = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let status = member_status(
        "db1",
        Role::Primary,
        far.local_addr().unwrap(),
        Some(t.term),
    );
    keys()
        .member("db1")
        .unwrap()
        .put(t.store.as_ref(), &status, None)
        .await
        .unwrap();
    wait_for(
        "the proxy to route to the new address",
        DEADLINE,
        || async {
            let table = t.proxy.table();
            let routed = table
                .routes
                .primary
                .as_ref()
                .map(|p| p.backend.addr.clone());
            (routed == Some(far.local_addr().unwrap().to_string()))
                .then_some(())
                .ok_or(format!("{routed:?}"))
        },
    )
    .await
    .unwrap();
    let mut client = TcpStream::connect(t.proxy.read_write).await.unwrap();
    // The proxy routes a client once it has sent its first bytes.
    client.write_all(&[1]).await.unwrap();
    let (mut server, _) = far.accept().await.unwrap();
    server.write_all(b"hello\n").await.unwrap();
    let mut hello = [0u8; 6];
    client.read_exact(&mut hello).await.unwrap();
    for i in 1..=16u8 {
        if i > 1 {
            client.write_all(&[i]).await.unwrap();
        }
        let mut b = [0u8; 1];
        server.read_exact(&mut b).await.unwrap();
        server.write_all(&b).await.unwrap();
        client.read_exact(&mut b).await.unwrap();
    }
    kernel_holds(&t.proxy, 2).await;
    // Linger 0: close sends a reset.
    client.set_zero_linger().unwrap();
    drop(client);
    let mut buf = [0u8; 16];
    let end = tokio::time::timeout(DEADLINE, server.read(&mut buf))
        .await
        .expect("the backend's side stayed open after the client's reset");
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    kernel_holds(&t.proxy, 0).await;
}

#[tokio::test]
async fn a_reset_closes_the_other_side_in_the_kernel() {
    a_reset_closes_the_other_side(true).await;
}

#[tokio::test]
async fn a_reset_closes_the_other_side_in_user_space() {
    a_reset_closes_the_other_side(false).await;
}

#[tokio::test]
async fn a_leader_change_closes_kernel_forwarded_connections_and_frees_the_map() {
    let t = setup(Script::Echo, true).await;
    let mut open = Vec::new();
    for _ in 0..20 {
        let s = connect(&t.proxy).await;
        drop(s);
        open.push(connect(&t.proxy).await);
    }
    kernel_holds(&t.proxy, 40).await;
    // A new term for db1: every read-write connection of the old one goes.
    keys().leader().delete(t.store.as_ref()).await.unwrap();
    for mut s in open {
        let mut buf = [0u8; 16];
        let end = tokio::time::timeout(DEADLINE, s.read(&mut buf))
            .await
            .expect("a fenced connection stayed open");
        assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    }
    kernel_holds(&t.proxy, 0).await;
}

/// Waits until `written` stops growing (a writer blocked by backpressure)
/// and returns where it stopped.
async fn stalled(what: &str, written: &AtomicU64) -> u64 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let (mut last, mut still) = (u64::MAX, 0);
    // Unchanged across a whole second: blocked, not slow.
    while still < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never blocked: {} MiB written",
            written.load(Relaxed) >> 20
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = written.load(Relaxed);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    last
}

/// Bytes a client can push at a backend that reads nothing before it
/// blocks: the sockets' buffers and the kernel forwarding's window, well
/// short of the whole upload (the kernel's redirect queue alone has no end).
const BACKPRESSURE_BOUND: u64 = 32 << 20;

async fn a_backend_that_does_not_read_stops_the_client(kernel: bool, go: &'static Notify) {
    let t = setup(Script::SlowReader(go), kernel).await;
    let s = connect(&t.proxy).await;
    kernel_holds(&t.proxy, 2).await;
    let (mut r, mut w) = s.into_split();
    let written = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn({
        let written = written.clone();
        async move {
            for chunk in pattern(SLOW_SEED, SLOW_LEN).chunks(64 << 10) {
                w.write_all(chunk).await.unwrap();
                written.fetch_add(chunk.len() as u64, Relaxed);
            }
            w.shutdown().await.unwrap();
        }
    });
    let stalled_at = stalled("the client's upload", &written).await;
    assert!(
        stalled_at < BACKPRESSURE_BOUND,
        "the client wrote {} MiB into a backend that reads nothing",
        stalled_at >> 20
    );
    // Once the backend reads, every byte arrives, in order.
    go.notify_one();
    tokio::time::timeout(DEADLINE, writer)
        .await
        .expect("the upload stalled")
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, r.read_to_string(&mut answer))
        .await
        .expect("the backend never answered")
        .unwrap();
    assert_eq!(answer, "same\n");
    drop(r);
    kernel_holds(&t.proxy, 0).await;
}

#[tokio::test]
async fn a_backend_that_does_not_read_stops_the_client_in_the_kernel() {
    static GO: Notify = Notify::const_new();
    a_backend_that_does_not_read_stops_the_client(true, &GO).await;
}

#[tokio::test]
async fn a_backend_that_does_not_read_stops_the_client_in_user_space() {
    static GO: Notify = Notify::const_new();
    a_backend_that_does_not_read_stops_the_client(false, &GO).await;
}

async fn a_client_that_does_not_read_stops_the_backend(kernel: bool, written: &'static AtomicU64) {
    let t = setup(Script::Flood(written), kernel).await;
    let mut s = connect(&t.proxy).await;
    let stalled_at = stalled("the backend's download", written).await;
    assert!(
        stalled_at < BACKPRESSURE_BOUND,
        "the backend wrote {} MiB to a client that reads nothing",
        stalled_at >> 20
    );
    let mut got = Vec::with_capacity(SLOW_LEN);
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut got))
        .await
        .expect("the download stalled")
        .unwrap();
    assert!(got == pattern(SLOW_SEED, SLOW_LEN), "the download differs");
    drop(s);
    kernel_holds(&t.proxy, 0).await;
}

#[tokio::test]
async fn a_client_that_does_not_read_stops_the_backend_in_the_kernel() {
    static WRITTEN: AtomicU64 = AtomicU64::new(0);
    a_client_that_does_not_read_stops_the_backend(true, &WRITTEN).await;
}

#[tokio::test]
async fn a_client_that_does_not_read_stops_the_backend_in_user_space() {
    static WRITTEN: AtomicU64 = AtomicU64::new(0);
    a_client_that_does_not_read_stops_the_backend(false, &WRITTEN).await;
}

/// An answer larger than one read of the proxy's opening copy (a query's
/// rows right after the login): the hand-over to the kernel comes while
/// the rest of it is queued, perhaps part of a packet user space has read
/// some of, and every byte must still arrive once, in order.
async fn an_answer_that_straddles_the_hand_over_arrives_whole(kernel: bool) {
    let t = setup(Script::Burst, kernel).await;
    // Echoes before the answer: the hand-over comes at a different read
    // into it each time.
    for echoes in 0..=3u8 {
        for units in [1, 2, 3, 5, 8, 13, 15, 16, 21, 34, 55, 100] {
            let command = 127 + units;
            let mut s = TcpStream::connect(t.proxy.read_write).await.unwrap();
            s.set_nodelay(true).unwrap();
            let echo = async |s: &mut TcpStream, byte: u8| {
                s.write_all(&[byte]).await.unwrap();
                let mut b = [0u8; 1];
                tokio::time::timeout(DEADLINE, s.read_exact(&mut b))
                    .await
                    .unwrap_or_else(|_| panic!("the echo of {byte} stalled"))
                    .unwrap();
                assert_eq!(b[0], byte);
            };
            s.write_all(&[1]).await.unwrap();
            let mut hello = [0u8; 7];
            s.read_exact(&mut hello).await.unwrap();
            assert_eq!(&hello, b"hello\n\x01");
            for i in 0..echoes {
                echo(&mut s, 2 + i).await;
            }
            s.write_all(&[command]).await.unwrap();
            let len = burst_len(command);
            let mut got = vec![0u8; len];
            tokio::time::timeout(DEADLINE, s.read_exact(&mut got))
                .await
                .unwrap_or_else(|_| panic!("an answer of {len} bytes stalled"))
                .unwrap();
            let want = pattern(BURST_SEED, len);
            if let Some(at) = got.iter().zip(&want).position(|(a, b)| a != b) {
                let from =
                    (0..at).find(|&o| want[o..(o + 16).min(len)] == got[at..(at + 16).min(len)]);
                panic!(
                    "an answer of {len} bytes after {echoes} echoes differs from byte {at} on \
                     (those are the bytes from {from:?} again?)"
                );
            }
            // The session goes on, in the kernel.
            for i in 0..8 {
                echo(&mut s, 10 + i).await;
            }
            kernel_holds(&t.proxy, 2).await;
            drop(s);
            kernel_holds(&t.proxy, 0).await;
        }
    }
}

#[tokio::test]
async fn an_answer_that_straddles_the_hand_over_arrives_whole_in_the_kernel() {
    an_answer_that_straddles_the_hand_over_arrives_whole(true).await;
}

#[tokio::test]
async fn an_answer_that_straddles_the_hand_over_arrives_whole_in_user_space() {
    an_answer_that_straddles_the_hand_over_arrives_whole(false).await;
}
