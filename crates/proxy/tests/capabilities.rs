//! Kernel forwarding gives up its capabilities once its program is loaded,
//! in every thread, and goes on forwarding in the kernel. Its own test
//! binary: the capabilities of the whole test process go.

mod common;

use std::time::Duration;

use common::member_status;
use proxy::privileges::{threads_holding, FORWARDING_CAPABILITIES};
use proxy::{Proxy, Settings};
use store::cluster::{ClusterKeys, Leader, Role};
use testkit::etcd::EtcdCluster;
use testkit::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kernel_forwarding_drops_its_capabilities_in_every_thread_and_goes_on() {
    assert!(
        !threads_holding(FORWARDING_CAPABILITIES).unwrap().is_empty(),
        "run as root: the test needs the capabilities to drop"
    );
    let etcd = EtcdCluster::start(1).await.unwrap();
    let store = etcd.store().await.unwrap();
    // An echo backend.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = backend.local_addr().unwrap();
    let _echo = tokio::spawn(async move {
        while let Ok((mut s, _)) = backend.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let keys = ClusterKeys::new("/pgwarden", "test").unwrap();
    let leader = Leader {
        member: "db1".into(),
    };
    let term = keys
        .leader()
        .create(store.as_ref(), &leader, None)
        .await
        .unwrap() as u64;
    let status = member_status("db1", Role::Primary, addr, Some(term));
    keys.member("db1")
        .unwrap()
        .put(store.as_ref(), &status, None)
        .await
        .unwrap();

    let mut settings = Settings::new("127.0.0.1:0".parse().unwrap());
    settings.drop_capabilities = true;
    let proxy = Proxy::start(settings, store.clone(), keys).await.unwrap();
    assert!(proxy.kernel_sockets().is_some(), "the program was loaded");
    assert_eq!(
        threads_holding(FORWARDING_CAPABILITIES).unwrap(),
        Vec::<libc::pid_t>::new(),
        "threads that kept CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN or CAP_PERFMON"
    );

    // A session is still handed to the kernel, without them.
    let mut client = wait_for("a routed connection", DEADLINE, || async {
        let mut s = TcpStream::connect(proxy.read_write)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"hello").await.map_err(|e| e.to_string())?;
        let mut back = [0u8; 5];
        s.read_exact(&mut back).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(s)
    })
    .await
    .unwrap();
    for i in 0..16u8 {
        client.write_all(&[i]).await.unwrap();
        let mut b = [0u8; 1];
        client.read_exact(&mut b).await.unwrap();
        assert_eq!(b[0], i);
    }
    wait_for("the kernel to forward the session", DEADLINE, || async {
        match proxy.kernel_sockets() {
            Some(2) => Ok(()),
            other => Err(other),
        }
    })
    .await
    .unwrap();
    client.write_all(b"still there").await.unwrap();
    let mut back = [0u8; 11];
    client.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still there");
}
