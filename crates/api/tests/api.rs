//! The REST API against a real etcd holding records the test writes, with
//! the agent's end of the link driven by the test.

use std::sync::Arc;
use std::time::Duration;

use api::client::{ApiClient, Call, Reply};
use api::local::{LocalState, Request};
use api::testing::{
    member, open_api, start_api, start_api_with_repository, switchover_requested, write_cluster,
    write_three_members, TestApi,
};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use store::cluster::{
    ClusterKeys, History, HistoryEntry, Initialize, MemberStatus, Role, Switchover, SyncSet,
};
use store::Store;
use testkit::etcd::EtcdCluster;
use tokio::task::JoinHandle;

struct Fixture {
    // Its Drop kills etcd.
    etcd: EtcdCluster,
    store: Arc<dyn Store>,
    keys: ClusterKeys,
    client: ApiClient,
}

async fn fixture() -> Fixture {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let store = etcd.store().await.unwrap();
    let keys = ClusterKeys::new("/pgwarden", "main").unwrap();
    Fixture {
        etcd,
        store,
        keys,
        client: ApiClient::new(None).unwrap(),
    }
}

impl Fixture {
    /// db1 leads, db2 streams, db3 runs but does not stream.
    async fn three_members(&self) {
        write_three_members(self.store.as_ref(), &self.keys).await;
    }

    async fn api(&self, name: &str) -> TestApi {
        start_api(self.store.clone(), self.keys.clone(), name, open_api()).await
    }

    async fn call(&self, api: &TestApi, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call_with(api, method, path, body, None).await
    }

    async fn call_with(
        &self,
        api: &TestApi,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Reply {
        self.client
            .send(Call {
                body: body.as_ref(),
                token,
                timeout: Duration::from_secs(40),
                ..Call::new(method, &api.url, path)
            })
            .await
            .unwrap()
    }

    /// A GET that must answer `status`; its JSON body.
    async fn get(&self, api: &TestApi, path: &str, status: StatusCode) -> Value {
        self.expect(api, Method::GET, path, None, status).await
    }

    /// A call that must answer `status`; its JSON body.
    async fn expect(
        &self,
        api: &TestApi,
        method: Method,
        path: &str,
        body: Option<Value>,
        status: StatusCode,
    ) -> Value {
        expect(&self.call(api, method, path, body).await, status)
    }

    /// Stands in for the agents: waits for a switchover (or failover)
    /// record, writes `result` (the new leader and statuses) when given,
    /// then deletes the record as agents do when they are done with it.
    /// Yields the record they were asked to carry out.
    fn agents(&self, result: Option<(&'static str, Vec<MemberStatus>)>) -> JoinHandle<Switchover> {
        let store = self.store.clone();
        let keys = self.keys.clone();
        tokio::spawn(async move {
            let asked = switchover_requested(store.as_ref(), &keys, Duration::from_secs(20)).await;
            if let Some((leader, statuses)) = result {
                write_cluster(store.as_ref(), &keys, Some(leader), &statuses).await;
            }
            keys.switchover().delete(store.as_ref()).await.unwrap();
            asked
        })
    }

    async fn switchover_key(&self) -> Option<Switchover> {
        self.keys
            .switchover()
            .get(self.store.as_ref())
            .await
            .unwrap()
            .map(|s| s.value)
    }
}

fn body(reply: &Reply) -> Value {
    reply.json().unwrap()
}

fn expect(reply: &Reply, status: StatusCode) -> Value {
    assert_eq!(
        reply.status,
        status,
        "{}: {}",
        reply.url,
        String::from_utf8_lossy(&reply.body)
    );
    body(reply)
}

fn set_local(api: &TestApi, f: impl FnOnce(&mut LocalState)) {
    api.agent.state.send_modify(f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_show_the_cluster_and_checks_follow_the_local_state() {
    let fx = fixture().await;
    fx.three_members().await;
    fx.keys
        .sync()
        .put(
            fx.store.as_ref(),
            &SyncSet {
                leader: "db1".to_string(),
                members: vec!["db2".to_string()],
                term: 1,
                quorum: None,
            },
            None,
        )
        .await
        .unwrap();
    let api = fx.api("db1").await;

    let cluster = fx.get(&api, "/cluster", StatusCode::OK).await;
    assert_eq!(cluster["leader"], "db1");
    assert_eq!(cluster["sync"], json!(["db2"]));
    assert_eq!(cluster["paused"], false);
    assert!(cluster["term"].as_u64().is_some());
    let members = cluster["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert_eq!(members[0]["name"], "db1");
    assert_eq!(members[0]["leader"], true);
    assert_eq!(members[0]["host"], "127.0.0.1:5432");
    assert_eq!(members[1]["sync"], true);
    assert_eq!(members[1]["lag_bytes"], 0);

    // Nothing runs yet.
    let health = fx
        .get(&api, "/health", StatusCode::SERVICE_UNAVAILABLE)
        .await;
    assert_eq!(health["pg_running"], false);
    set_local(&api, |s| {
        s.pg_running = true;
        s.primary = true;
        s.leader = true;
    });
    fx.get(&api, "/health", StatusCode::OK).await;
    fx.get(&api, "/primary", StatusCode::OK).await;
    fx.get(&api, "/read-only", StatusCode::OK).await;
    fx.get(&api, "/replica", StatusCode::SERVICE_UNAVAILABLE)
        .await;
    // A streaming standby 2 MB and 300 ms behind.
    set_local(&api, |s| {
        s.primary = false;
        s.leader = false;
        s.streaming = true;
        s.lag_bytes = Some(2 << 20);
        s.lag_ms = Some(300);
    });
    fx.get(&api, "/primary", StatusCode::SERVICE_UNAVAILABLE)
        .await;
    fx.get(&api, "/replica", StatusCode::OK).await;
    for (query, status) in [
        ("lag=1MB", StatusCode::SERVICE_UNAVAILABLE),
        ("lag=16MB", StatusCode::OK),
        ("lag=2097152", StatusCode::OK),
        ("lag=200ms", StatusCode::SERVICE_UNAVAILABLE),
        ("lag=5s", StatusCode::OK),
        ("lag=soon", StatusCode::BAD_REQUEST),
    ] {
        let reply = fx
            .call(&api, Method::GET, &format!("/replica?{query}"), None)
            .await;
        assert_eq!(reply.status, status, "{query}");
    }
    fx.get(&api, "/read-only?lag=16MB", StatusCode::OK).await;

    let history = fx.get(&api, "/history", StatusCode::OK).await;
    assert_eq!(history["entries"], json!([]));
    let entry = HistoryEntry {
        timeline: 2,
        switch_lsn: 0x300_0000,
        reason: "switchover".to_string(),
        time_ms: 1_795_292_289_000,
        from: Some("db0".to_string()),
        to: Some("db1".to_string()),
        duration_ms: Some(1200),
        removed: None,
    };
    fx.keys
        .history()
        .put(
            fx.store.as_ref(),
            &History {
                entries: vec![entry],
            },
            None,
        )
        .await
        .unwrap();
    let history = fx.get(&api, "/history", StatusCode::OK).await;
    assert_eq!(history["entries"][0]["to"], "db1");

    let config = fx.get(&api, "/config", StatusCode::OK).await;
    assert_eq!(config["revision"], 0);
    assert_eq!(config["config"]["ttl_ms"], 3000);

    let metrics = fx.call(&api, Method::GET, "/metrics", None).await;
    let text = String::from_utf8_lossy(&metrics.body);
    for line in [
        "pgwarden_role{member=\"db1\",role=\"replica\"} 1",
        "pgwarden_lag_bytes{member=\"db1\"} 2097152",
        "pgwarden_failovers_total 1",
        "pgwarden_last_failover_duration_seconds 1.2",
        "pgwarden_api_requests_total{route=\"/replica\",status=\"400\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
    }

    let missing = fx.get(&api, "/nope", StatusCode::NOT_FOUND).await;
    assert!(missing["error"].as_str().unwrap().contains("docs/api.md"));
    api.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchovers_are_checked_recorded_waited_for_and_cancelled() {
    let fx = fixture().await;
    fx.three_members().await;
    let api = fx.api("db1").await;

    // Impossible requests change nothing.
    for (request, status, words) in [
        (
            json!({"to": "db3"}),
            StatusCode::CONFLICT,
            "does not stream from the leader db1",
        ),
        (json!({"to": "db9"}), StatusCode::NOT_FOUND, "no member db9"),
        (
            json!({"from": "db2"}),
            StatusCode::CONFLICT,
            "not the leader",
        ),
        (
            json!({"to": "db2", "bogus": 1}),
            StatusCode::BAD_REQUEST,
            "unknown field `bogus`",
        ),
        (
            json!({"to": "db2", "at": "yesterday"}),
            StatusCode::BAD_REQUEST,
            "RFC 3339",
        ),
        (
            json!({"to": "db2", "at": "2026-02-31T00:00:00Z"}),
            StatusCode::BAD_REQUEST,
            "\"2026-02-31T00:00:00Z\" is not a valid time",
        ),
        (
            json!({"to": "db2", "at": 1000}),
            StatusCode::BAD_REQUEST,
            "in the past",
        ),
        (
            json!({"to": "../x"}),
            StatusCode::BAD_REQUEST,
            "member name",
        ),
    ] {
        let reply = fx
            .call(&api, Method::POST, "/switchover", Some(request.clone()))
            .await;
        let answer = expect(&reply, status);
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(words), "{request}: {error}");
        assert_eq!(fx.switchover_key().await, None, "{request}");
    }
    let raw = fx
        .client
        .send(Call {
            body: None,
            ..Call::new(Method::POST, &api.url, "/failover")
        })
        .await
        .unwrap();
    assert_eq!(raw.status, StatusCode::BAD_REQUEST);

    // Scheduled: recorded at once, then cancelled.
    let at = api::time::format_rfc3339(api::time::now_ms() + 3_600_000);
    let scheduled = fx
        .expect(
            &api,
            Method::POST,
            "/switchover",
            Some(json!({"to": "db2", "at": at})),
            StatusCode::ACCEPTED,
        )
        .await;
    assert_eq!(scheduled["scheduled"]["from"], "db1");
    let pending = fx.switchover_key().await.unwrap();
    assert_eq!(pending.to.as_deref(), Some("db2"));
    assert!(pending.at_ms.is_some());
    let again = fx
        .expect(
            &api,
            Method::POST,
            "/switchover",
            Some(json!({"to": "db2"})),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(again["error"].as_str().unwrap().contains("already pending"));
    fx.expect(&api, Method::DELETE, "/switchover", None, StatusCode::OK)
        .await;
    assert_eq!(fx.switchover_key().await, None);
    fx.expect(
        &api,
        Method::DELETE,
        "/switchover",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;

    // Immediate: the "agents" (this task) carry it out.
    let agents = fx.agents(Some((
        "db2",
        vec![
            member("db1", Role::Replica, true),
            member("db2", Role::Primary, false),
        ],
    )));
    let done = fx
        .expect(
            &api,
            Method::POST,
            "/switchover",
            Some(json!({"from": "db1", "to": "db2"})),
            StatusCode::OK,
        )
        .await;
    agents.await.unwrap();
    assert_eq!(done["from"], "db1");
    assert_eq!(done["to"], "db2");

    // With a healthy leader a failover is refused.
    let refused = fx
        .expect(
            &api,
            Method::POST,
            "/failover",
            Some(json!({"to": "db1"})),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(refused["error"].as_str().unwrap().contains("switchover"));
    // Without one it is recorded and waited for: see
    // a_failover_is_waited_for_and_a_switchover_ended_otherwise_is_503.
    api.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_is_patched_validated_and_guarded_by_if_match() {
    let fx = fixture().await;
    fx.three_members().await;
    let api = fx.api("db1").await;

    let patched = fx
        .expect(
            &api,
            Method::PATCH,
            "/config",
            Some(json!({"ttl_ms": 10000, "parameters": {"work_mem": "8MB"}})),
            StatusCode::OK,
        )
        .await;
    let revision = patched["revision"].as_i64().unwrap();
    assert_eq!(patched["config"]["ttl_ms"], 10000);
    let shown = fx.get(&api, "/config", StatusCode::OK).await;
    assert_eq!(shown["revision"], revision);
    assert_eq!(shown["config"]["parameters"]["work_mem"], "8MB");

    for (patch, status) in [
        (json!({"ttl": 1}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"ttl_ms": 100}), StatusCode::UNPROCESSABLE_ENTITY),
        // A lease of a day is failover turned off.
        (
            json!({"ttl_ms": 86_400_000}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!([1, 2]), StatusCode::UNPROCESSABLE_ENTITY),
        // Parameters that run code come from each member's pgwarden.toml
        // only (#17 point 2).
        (
            json!({"parameters": {"archive_library": "x"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"parameters": {"Shared_Preload_Libraries": "x"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"parameters": {"dynamic_library_path": "/tmp"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let answer = expect(
            &fx.call(&api, Method::PATCH, "/config", Some(patch.clone()))
                .await,
            status,
        );
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("nothing was changed"),
            "{patch}"
        );
    }
    let bad_json = fx
        .client
        .send(Call::new(Method::PATCH, &api.url, "/config"))
        .await
        .unwrap();
    // An empty body is `{}`: a no-op patch.
    assert_eq!(bad_json.status, StatusCode::OK);
    let unchanged = fx.get(&api, "/config", StatusCode::OK).await;
    assert_eq!(unchanged["config"]["ttl_ms"], 10000);
    let revision = unchanged["revision"].as_i64().unwrap();

    // Two editors read the same revision; one wins, the other gets 412.
    let edit = |value: u64| {
        let client = fx.client.clone();
        let url = api.url.clone();
        async move {
            let patch = json!({"heartbeat_ms": value});
            client
                .send(Call {
                    body: Some(&patch),
                    if_match: Some(revision),
                    ..Call::new(Method::PATCH, &url, "/config")
                })
                .await
                .unwrap()
                .status
        }
    };
    let (a, b) = tokio::join!(edit(700), edit(800));
    let mut statuses = [a, b];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::PRECONDITION_FAILED]);

    fx.expect(&api, Method::POST, "/pause", None, StatusCode::OK)
        .await;
    let cluster = fx.get(&api, "/cluster", StatusCode::OK).await;
    assert_eq!(cluster["paused"], true);
    fx.expect(&api, Method::POST, "/resume", None, StatusCode::OK)
        .await;
    let config = fx.get(&api, "/config", StatusCode::OK).await;
    assert_eq!(config["config"]["paused"], false);
    assert_eq!(config["config"]["ttl_ms"], 10000);
    api.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_reinit_reach_the_agent_here_or_are_forwarded() {
    let fx = fixture().await;
    fx.three_members().await;
    let db1 = fx.api("db1").await;
    let mut db2 = fx.api("db2").await;
    let mut status = member("db2", Role::Replica, true);
    status.api_url = db2.url.clone();
    write_cluster(fx.store.as_ref(), &fx.keys, Some("db1"), &[status]).await;

    let TestApi {
        server: db1_server,
        agent: mut db1_agent,
        url: db1_url,
    } = db1;
    let db1 = TestApi {
        server: db1_server,
        agent: api::local::link(LocalState::default()).1,
        url: db1_url,
    };
    // db1's agent restarts but refuses reinit (it leads).
    tokio::spawn(async move {
        while let Some(asked) = db1_agent.requests.recv().await {
            let answer = match asked.request {
                Request::Restart => Ok("restarting PostgreSQL".to_string()),
                Request::Reinit => Err("db1 leads; a leader is never reinitialized".to_string()),
                Request::Retire => Err("db1 leads; it is never removed".to_string()),
            };
            let _ = asked.reply.send(answer);
        }
    });
    tokio::spawn(async move {
        while let Some(asked) = db2.agent.requests.recv().await {
            let _ = asked.reply.send(Ok(format!("{:?} started", asked.request)));
        }
    });

    let restarted = fx
        .expect(&db1, Method::POST, "/restart", None, StatusCode::OK)
        .await;
    assert_eq!(restarted["member"], "db1");
    let refused = fx
        .expect(
            &db1,
            Method::POST,
            "/reinit",
            Some(json!({"member": "db1"})),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(refused["error"]
        .as_str()
        .unwrap()
        .contains("never reinitialized"));
    let forwarded = fx
        .expect(
            &db1,
            Method::POST,
            "/reinit",
            Some(json!({"member": "db2"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(forwarded["member"], "db2");
    assert_eq!(forwarded["result"], "Reinit started");
    fx.expect(
        &db1,
        Method::POST,
        "/restart",
        Some(json!({"member": "db9"})),
        StatusCode::NOT_FOUND,
    )
    .await;
    fx.expect(
        &db1,
        Method::POST,
        "/restart",
        Some(json!({"who": "db2"})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    db1.server.shutdown().await;
    db2.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_that_comes_back_is_refused_instead_of_looping() {
    let fx = fixture().await;
    fx.three_members().await;
    let db1 = fx.api("db1").await;
    let db2 = fx.api("db2").await;
    // db9's api_url leads back to db1 itself; db3's to db2 (a loop of two
    // members that each take it for someone else).
    let mut db9 = member("db9", Role::Replica, true);
    db9.api_url = db1.url.clone();
    let mut db3 = member("db3", Role::Replica, true);
    db3.api_url = db2.url.clone();
    write_cluster(fx.store.as_ref(), &fx.keys, Some("db1"), &[db9, db3]).await;

    for (path, member, reached) in [("/restart", "db9", "db1"), ("/reinit", "db3", "db2")] {
        let answer = tokio::time::timeout(
            Duration::from_secs(20),
            fx.call(&db1, Method::POST, path, Some(json!({ "member": member }))),
        )
        .await
        .unwrap_or_else(|_| panic!("{path} for {member} still loops after 20 s"));
        let error = expect(&answer, StatusCode::LOOP_DETECTED);
        let error = error["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("forwarded to {reached}, which is not {member}"))
                && error.contains(&format!("{member}'s api_url")),
            "{error}"
        );
    }
    db1.server.shutdown().await;
    db2.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_long_poll_until_one_is_appended() {
    let fx = fixture().await;
    let api = fx.api("db1").await;
    for i in 0..3 {
        fx.keys
            .append_event(
                fx.store.as_ref(),
                1000 + i,
                "db1",
                "test",
                &format!("event {i}"),
                100,
            )
            .await
            .unwrap();
    }
    let all = fx.get(&api, "/events", StatusCode::OK).await;
    assert_eq!(all["events"].as_array().unwrap().len(), 3);
    assert_eq!(all["last_seq"], 3);
    let since = fx.get(&api, "/events?after=2", StatusCode::OK).await;
    assert_eq!(since["events"][0]["details"], "event 2");

    // Nothing new within the wait: an empty answer after it.
    let started = tokio::time::Instant::now();
    let none = fx
        .get(&api, "/events?after=3&wait=300ms", StatusCode::OK)
        .await;
    assert_eq!(none["events"], json!([]));
    assert_eq!(none["last_seq"], 3);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // One appended while the request waits is returned at once.
    let appender = {
        let store = fx.store.clone();
        let keys = fx.keys.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            keys.append_event(store.as_ref(), 2000, "db2", "promoted", "db2 leads", 100)
                .await
                .unwrap();
        })
    };
    let started = tokio::time::Instant::now();
    let new = fx
        .get(&api, "/events?after=3&wait=20s", StatusCode::OK)
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(new["events"][0]["kind"], "promoted");
    assert_eq!(new["last_seq"], 4);
    appender.await.unwrap();
    fx.get(&api, "/events?after=x", StatusCode::BAD_REQUEST)
        .await;
    api.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_changes_and_optionally_reads() {
    let fx = fixture().await;
    fx.three_members().await;
    let mut section = open_api();
    section.token = Some(config::Secret::new("s3cret"));
    let api = start_api(fx.store.clone(), fx.keys.clone(), "db1", section.clone()).await;
    fx.get(&api, "/cluster", StatusCode::OK).await;
    let missing = fx
        .expect(&api, Method::POST, "/pause", None, StatusCode::UNAUTHORIZED)
        .await;
    assert!(missing["error"].as_str().unwrap().contains("Bearer"));
    expect(
        &fx.call_with(&api, Method::POST, "/pause", None, Some("wrong"))
            .await,
        StatusCode::UNAUTHORIZED,
    );
    expect(
        &fx.call_with(&api, Method::POST, "/pause", None, Some("s3cret"))
            .await,
        StatusCode::OK,
    );
    api.server.shutdown().await;

    section.auth_reads = true;
    let api = start_api(fx.store.clone(), fx.keys.clone(), "db1", section).await;
    fx.get(&api, "/cluster", StatusCode::UNAUTHORIZED).await;
    expect(
        &fx.call_with(&api, Method::GET, "/cluster", None, Some("s3cret"))
            .await,
        StatusCode::OK,
    );
    api.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_certificate_the_client_trusts() {
    // Throwaway certificates: a CA and a server certificate for 127.0.0.1.
    let certificates = testkit::tls::Certificates::make().unwrap();
    let files = certificates.files.clone();
    let store: Arc<dyn Store> =
        Arc::new(store::MemoryStore::new(Arc::new(store::SystemClock::new())));
    let mut section = open_api();
    section.cert_file = Some(files.server_cert.clone());
    section.key_file = Some(files.server_key.clone());
    let api = start_api(
        store,
        ClusterKeys::new("/pgwarden", "main").unwrap(),
        "db1",
        section,
    )
    .await;
    assert!(api.url.starts_with("https://"));
    let trusting = ApiClient::new(Some(&files.ca)).unwrap();
    let reply = trusting
        .send(Call::new(Method::GET, &api.url, "/cluster"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.error_message());
    // Without the CA the certificate is not trusted.
    let err = ApiClient::new(None)
        .unwrap()
        .send(Call::new(Method::GET, &api.url, "/cluster"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    // Plain HTTP to the HTTPS port gets no answer it can read.
    let plain = api.url.replace("https://", "http://");
    assert!(ApiClient::new(None)
        .unwrap()
        .send(Call::new(Method::GET, &plain, "/cluster"))
        .await
        .is_err());
    api.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_waited_for_and_a_switchover_ended_otherwise_is_503() {
    let fx = fixture().await;
    // db1 holds the key but its PostgreSQL crashed: no healthy leader.
    let mut crashed = member("db1", Role::Primary, false);
    crashed.state = store::cluster::PgState::Crashed;
    write_cluster(
        fx.store.as_ref(),
        &fx.keys,
        Some("db1"),
        &[
            crashed,
            member("db2", Role::Replica, false),
            member("db3", Role::Replica, true),
        ],
    )
    .await;
    let api = fx.api("db3").await;

    let refused = fx
        .expect(
            &api,
            Method::POST,
            "/switchover",
            Some(json!({"to": "db3"})),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(refused["error"].as_str().unwrap().contains("failover"));

    // After the failover db3 follows the new primary.
    let mut db3 = member("db3", Role::Replica, true);
    db3.upstream = Some("db2".to_string());
    let agents = fx.agents(Some((
        "db2",
        vec![member("db2", Role::Primary, false), db3],
    )));
    let done = fx
        .expect(
            &api,
            Method::POST,
            "/failover",
            Some(json!({"to": "db2"})),
            StatusCode::OK,
        )
        .await;
    let asked = agents.await.unwrap();
    assert_eq!(asked.from, None);
    assert_eq!(asked.to.as_deref(), Some("db2"));
    assert_eq!(done["to"], "db2");
    assert_eq!(done["from"], Value::Null);

    // The agents drop a switchover without changing the leader: 503 with
    // the cluster as it is, after a short settling time.
    let agents = fx.agents(None);
    let started = tokio::time::Instant::now();
    let ended = fx
        .expect(
            &api,
            Method::POST,
            "/switchover",
            Some(json!({"to": "db3"})),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    agents.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        ended["error"].as_str().unwrap().contains("ctl events"),
        "{ended}"
    );
    assert_eq!(ended["cluster"]["leader"], "db2");
    api.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failsafe_is_promised_only_while_the_store_is_out_of_reach_here_too() {
    let mut fx = fixture().await;
    fx.three_members().await;
    let api = fx.api("db2").await;
    set_local(&api, |s| {
        s.pg_running = true;
        s.streaming = true;
        s.updated_ms = 1;
        s.leader_name = Some("db1".to_string());
        s.leader_term = Some(7);
        s.ttl_ms = Some(3_000);
    });
    let ask = |ttl_ms: u64| Some(json!({"leader": "db1", "term": 7, "ttl_ms": ttl_ms}));

    let odd = fx
        .expect(
            &api,
            Method::POST,
            "/failsafe",
            ask(10),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(odd["error"].as_str().unwrap().contains("outside"), "{odd}");
    let reaches = fx
        .expect(
            &api,
            Method::POST,
            "/failsafe",
            ask(3_000),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(
        reaches["error"]
            .as_str()
            .unwrap()
            .contains("db1 must step down"),
        "{reaches}"
    );
    assert_eq!(*api.agent.promise.lock().unwrap(), None);

    fx.etcd.kill(0).unwrap();
    let asked = std::time::Instant::now();
    let promised = fx
        .expect(&api, Method::POST, "/failsafe", ask(3_000), StatusCode::OK)
        .await;
    assert_eq!(
        promised,
        json!({"member": "db2", "follows": "db1", "promised_ms": 6_000})
    );
    let promise = api.agent.promise.lock().unwrap().clone().unwrap();
    assert_eq!(promise.leader, "db1");
    assert!(
        promise.until > asked + Duration::from_secs(5)
            && promise.until <= std::time::Instant::now() + Duration::from_secs(6),
        "{promise:?}"
    );

    // The caller's ttl_ms does not set the length: two of db2's TTLs.
    let short = fx
        .expect(&api, Method::POST, "/failsafe", ask(1_000), StatusCode::OK)
        .await;
    assert_eq!(short["promised_ms"], 6_000, "{short}");
    // Nor does a later call shorten the word given, even when db2's own
    // TTL got shorter meanwhile.
    let given = api.agent.promise.lock().unwrap().clone().unwrap();
    set_local(&api, |s| s.ttl_ms = Some(1_000));
    let shorter = fx
        .expect(&api, Method::POST, "/failsafe", ask(1_000), StatusCode::OK)
        .await;
    assert_eq!(shorter["promised_ms"], 2_000, "{shorter}");
    let kept = api.agent.promise.lock().unwrap().clone().unwrap();
    assert!(kept.until >= given.until, "{kept:?} shortened {given:?}");
    // A caller relying on the answer longer than db2's TTL is refused.
    let longer = fx
        .expect(
            &api,
            Method::POST,
            "/failsafe",
            ask(3_000),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(
        longer["error"]
            .as_str()
            .unwrap()
            .contains("disagree on the TTL"),
        "{longer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_list_is_served_by_a_member_with_a_repository_and_pointed_to_by_the_others() {
    let f = fixture().await;
    let mut db2 = member("db2", Role::Replica, true);
    db2.can_backup = true;
    db2.api_url = "http://10.0.0.2:8008".into();
    write_cluster(
        f.store.as_ref(),
        &f.keys,
        Some("db1"),
        &[member("db1", Role::Primary, false), db2],
    )
    .await;

    // No repository here: 409 naming the member that has one.
    let db1 = f.api("db1").await;
    let refused = f.get(&db1, "/backup/list", StatusCode::CONFLICT).await;
    let message = refused["error"].as_str().unwrap();
    assert!(
        message.contains("db1 has no backup repository")
            && message.contains("db2 (http://10.0.0.2:8008)"),
        "{refused}"
    );
    assert_eq!(
        refused["members_with_repository"],
        json!({"db2": "http://10.0.0.2:8008"})
    );

    // With one: the catalog of the cluster the store names.
    let dir = tempfile::tempdir().unwrap();
    let repo: Arc<dyn backup::Repository> =
        Arc::new(backup::repo::PosixRepository::new(dir.path()));
    let with = start_api_with_repository(
        f.store.clone(),
        f.keys.clone(),
        "db2",
        open_api(),
        Some(repo),
    )
    .await;
    let early = f.get(&with, "/backup/list", StatusCode::CONFLICT).await;
    assert!(
        early["error"].as_str().unwrap().contains("not initialized"),
        "{early}"
    );
    let initialize = Initialize {
        member: "db1".into(),
        system_identifier: Some(7_300_000_000_000_000_001),
    };
    f.keys
        .initialize()
        .put(f.store.as_ref(), &initialize, None)
        .await
        .unwrap();
    let catalog = f.get(&with, "/backup/list", StatusCode::OK).await;
    assert_eq!(catalog["system_identifier"], "7300000000000000001");
    assert_eq!(catalog["backups"], json!([]));
    assert!(catalog["timelines"].is_array(), "{catalog}");
}

#[tokio::test]
async fn a_removal_is_checked_recorded_and_undone_by_readmit() {
    let fx = fixture().await;
    fx.three_members().await;
    let db1 = fx.api("db1").await;

    // Refusals change nothing and say what to do.
    for (request, status, words) in [
        (
            json!({"member": "db1"}),
            StatusCode::CONFLICT,
            "db1 is the leader: switch over",
        ),
        (
            json!({"member": "db3"}),
            StatusCode::CONFLICT,
            "`pgwarden ctl remove db3 --force`",
        ),
        (
            json!({"member": "db9"}),
            StatusCode::NOT_FOUND,
            "there is no member db9",
        ),
        (
            json!({"member": "../x"}),
            StatusCode::BAD_REQUEST,
            "invalid member name",
        ),
        (json!({}), StatusCode::BAD_REQUEST, "missing field `member`"),
    ] {
        let answer = fx
            .expect(&db1, Method::POST, "/remove", Some(request.clone()), status)
            .await;
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(words), "{request}: {answer}");
    }
    let removed = fx
        .keys
        .removed_members()
        .list(fx.store.as_ref())
        .await
        .unwrap();
    assert!(removed.entries.is_empty());

    // db3's agent is down (no status), known by its slot on the primary; a
    // switchover scheduled to it is cancelled with the removal.
    fx.keys
        .member("db3")
        .unwrap()
        .delete(fx.store.as_ref())
        .await
        .unwrap();
    let mut leader = member("db1", Role::Primary, false);
    leader.slots = vec![store::cluster::SlotStatus {
        member: "db3".into(),
        active: false,
        retained_bytes: Some(1 << 24),
    }];
    write_cluster(fx.store.as_ref(), &fx.keys, Some("db1"), &[leader]).await;
    let later = api::time::now_ms() + 3_600_000;
    let scheduled = Switchover {
        from: Some("db1".into()),
        to: Some("db3".into()),
        at_ms: Some(later),
        requested_ms: api::time::now_ms(),
        handoff: None,
        reason: None,
    };
    fx.keys
        .switchover()
        .put(fx.store.as_ref(), &scheduled, None)
        .await
        .unwrap();
    let done = fx
        .expect(
            &db1,
            Method::POST,
            "/remove",
            Some(json!({"member": "db3"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(done["member"], "db3", "{done}");
    let record = fx
        .keys
        .removed("db3")
        .unwrap()
        .get(fx.store.as_ref())
        .await
        .unwrap()
        .expect("the removed record");
    assert_eq!(record.value.by, "db1");
    assert!(
        fx.switchover_key().await.is_none(),
        "the switchover to db3 is cancelled"
    );
    let view = fx.get(&db1, "/cluster", StatusCode::OK).await;
    assert_eq!(view["removed"][0]["name"], "db3", "{view}");
    let history = fx.get(&db1, "/history", StatusCode::OK).await;
    assert_eq!(history["entries"][0]["removed"], "db3", "{history}");
    let events = fx.get(&db1, "/events", StatusCode::OK).await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"member_removed"), "{events}");
    let twice = fx
        .expect(
            &db1,
            Method::POST,
            "/remove",
            Some(json!({"member": "db3"})),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(
        twice["error"].as_str().unwrap().contains("already removed"),
        "{twice}"
    );

    // Re-admitted: the record goes, once.
    fx.expect(
        &db1,
        Method::POST,
        "/readmit",
        Some(json!({"member": "db3"})),
        StatusCode::OK,
    )
    .await;
    assert!(fx
        .keys
        .removed("db3")
        .unwrap()
        .get(fx.store.as_ref())
        .await
        .unwrap()
        .is_none());
    let again = fx
        .expect(
            &db1,
            Method::POST,
            "/readmit",
            Some(json!({"member": "db3"})),
            StatusCode::NOT_FOUND,
        )
        .await;
    assert!(
        again["error"]
            .as_str()
            .unwrap()
            .contains("not a removed member"),
        "{again}"
    );

    // --force on a running member: its own agent is asked to retire.
    let db2 = fx.api("db2").await;
    let TestApi {
        server: db2_server,
        agent: mut db2_agent,
        url: db2_url,
    } = db2;
    let db2 = TestApi {
        server: db2_server,
        agent: api::local::link(LocalState::default()).1,
        url: db2_url,
    };
    let asked = tokio::spawn(async move {
        let request = db2_agent.requests.recv().await.unwrap();
        let kind = request.request;
        let _ = request.reply.send(Ok("retired".to_string()));
        kind
    });
    let forced = fx
        .expect(
            &db2,
            Method::POST,
            "/remove",
            Some(json!({"member": "db2", "force": true})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(forced["result"], "retired", "{forced}");
    assert_eq!(asked.await.unwrap(), Request::Retire);
}
