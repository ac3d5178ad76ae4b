//! The conformance suite against a single-node etcd, and what only a real
//! server can show: a server restart under a watch, timeouts, credentials.

mod conformance;

use std::time::Duration;

use conformance::etcd::{etcd_subject, options};
use conformance::next_event;
use store::{EtcdOptions, EtcdStore, EventKind, Store, StoreError};
use testkit::etcd::EtcdCluster;
use testkit::{free_port, wait_for};
use tokio::time::Instant;

conformance_tests!(etcd_subject(1));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_and_the_store_survive_a_server_restart() {
    let mut cluster = EtcdCluster::start(1).await.unwrap();
    let store = EtcdStore::connect(options(cluster.endpoints()))
        .await
        .unwrap();
    let start = store.get_prefix("/s/").await.unwrap().revision + 1;
    let mut watch = store.watch_prefix("/s/", start);
    let before = store.put("/s/before", b"1".to_vec(), None).await.unwrap();
    assert_eq!(
        next_event(&mut watch, "put /s/before").await.revision,
        before
    );

    cluster.kill(0).unwrap();
    let asked = Instant::now();
    let err = store.get("/s/before").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable { .. }),
        "with the server down: {err:?}"
    );
    assert!(err.to_string().contains(&cluster.endpoint(0)), "{err}");
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "a call with a 2 s timeout took {:?}",
        asked.elapsed()
    );

    cluster.restart(0).await.unwrap();
    let after = wait_for(
        "a write once etcd is back",
        Duration::from_secs(15),
        || async { store.put("/s/after", b"2".to_vec(), None).await },
    )
    .await
    .unwrap();
    let event = next_event(&mut watch, "put /s/after").await;
    assert_eq!(
        (event.kind, event.kv.key.as_str(), event.revision),
        (EventKind::Put, "/s/after", after)
    );
    let sentinel = store.put("/s/sentinel", b"3".to_vec(), None).await.unwrap();
    assert_eq!(
        next_event(&mut watch, "put /s/sentinel").await.revision,
        sentinel
    );
}

#[tokio::test]
async fn connecting_to_nothing_is_unavailable_within_the_timeout() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let asked = Instant::now();
    let err = EtcdStore::connect(EtcdOptions {
        timeout: Duration::from_millis(500),
        ..EtcdOptions::new(vec![endpoint.clone()])
    })
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&endpoint), "{message}");
    assert!(message.contains("majority"), "{message}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "took {:?}",
        asked.elapsed()
    );
}

#[tokio::test]
async fn bad_options_are_refused_before_connecting() {
    for (options, expected) in [
        (EtcdOptions::new(vec![]), "no etcd endpoints"),
        (
            EtcdOptions {
                username: Some("root".to_string()),
                ..EtcdOptions::new(vec!["http://127.0.0.1:1".to_string()])
            },
            "username and password go together",
        ),
        (
            EtcdOptions {
                tls: Some(store::EtcdTls {
                    ca: Some("/nonexistent/ca.pem".into()),
                    ..Default::default()
                }),
                ..EtcdOptions::new(vec!["https://127.0.0.1:1".to_string()])
            },
            "/nonexistent/ca.pem",
        ),
    ] {
        let err = EtcdStore::connect(options).await.unwrap_err();
        assert!(matches!(err, StoreError::Refused { .. }), "{err:?}");
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_authenticate() {
    let cluster = EtcdCluster::start(1).await.unwrap();
    let mut admin = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    admin.user_add("root", "rootpw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();

    let with = |username: Option<&str>, password: Option<&str>| EtcdOptions {
        username: username.map(str::to_string),
        password: password.map(str::to_string),
        ..options(cluster.endpoints())
    };
    let err = EtcdStore::connect(with(Some("root"), Some("wrong")))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused { .. }), "{err:?}");
    assert!(err.to_string().contains("password"), "{err}");

    let store = EtcdStore::connect(with(Some("root"), Some("rootpw")))
        .await
        .unwrap();
    let revision = store.put("/auth/k", b"v".to_vec(), None).await.unwrap();
    let mut watch = store.watch_prefix("/auth/", revision);
    assert_eq!(
        next_event(&mut watch, "put /auth/k").await.revision,
        revision
    );
    let lease = store.grant_lease(Duration::from_secs(5)).await.unwrap();
    store.refresh_lease(lease.id).await.unwrap();

    // Without credentials, writes are refused (not retried until timeout).
    let anonymous = EtcdStore::connect(with(None, None)).await;
    let err = match anonymous {
        Ok(store) => store.put("/auth/k", b"x".to_vec(), None).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::Refused { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let cluster = testkit::etcd::start_tls(1).await.unwrap();
    let files = cluster.tls_files().unwrap();
    let endpoint = cluster.endpoint(0);
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let tls = store::EtcdTls {
        ca: Some(files.ca.clone()),
        cert: Some(files.client_cert.clone()),
        key: Some(files.client_key.clone()),
        domain: None,
    };
    // A bare host:port takes its scheme from the TLS setting.
    let bare = endpoint.trim_start_matches("https://").to_string();
    let store = EtcdStore::connect(EtcdOptions {
        tls: Some(tls.clone()),
        ..options(vec![bare])
    })
    .await
    .unwrap();
    let revision = store.put("/tls/k", b"v".to_vec(), None).await.unwrap();
    assert_eq!(
        store.get("/tls/k").await.unwrap().unwrap().mod_revision,
        revision
    );
    let mut watch = store.watch_prefix("/tls/", revision);
    assert_eq!(
        next_event(&mut watch, "put /tls/k").await.revision,
        revision
    );
    let lease = store.grant_lease(Duration::from_secs(5)).await.unwrap();
    store.refresh_lease(lease.id).await.unwrap();

    // Without a client certificate the server refuses the handshake.
    let err = EtcdStore::connect(EtcdOptions {
        tls: Some(store::EtcdTls {
            cert: None,
            key: None,
            ..tls
        }),
        timeout: Duration::from_millis(500),
        ..options(vec![endpoint])
    })
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
}
