//! `ctl restart` of the primary, with real agents, PostgreSQL and etcd: the
//! lease guard must not crash-stop the restart it is waiting out.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pg::Probe;
use testkit::{wait_for, AgentCluster, ClusterOptions};

mod common;

use common::{api_url, binary, healthy, shown, ALL, DEADLINE};

/// How long the shutdown checkpoint is held up: longer than the lease
/// guard's margin (TTL − 0.5 s), which used to crash-stop the restart.
const SLOW_CHECKPOINT: Duration = Duration::from_millis(2_500);

#[tokio::test]
async fn restarting_the_primary_under_load_is_a_clean_restart_that_loses_nothing() {
    let mut options = ClusterOptions::default();
    options.config.synchronous_mode = store::cluster::SynchronousMode::First;
    options.config.ttl_ms = 2_000;
    options.config.heartbeat_ms = 500;
    let cluster = AgentCluster::start(binary(), options).await.unwrap();
    let primary = healthy(&cluster, &ALL).await;
    cluster.wait_synchronous(DEADLINE).await.unwrap();
    let mut load = cluster.workload();
    assert!(
        load.wait_acks(200, DEADLINE).await,
        "the load made no progress\n{}",
        cluster.logs()
    );
    let member = cluster.member(&primary);
    let checkpointer: i32 = member
        .query_text("SELECT pid::text FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
        .await
        .unwrap()
        .expect("a checkpointer")
        .parse()
        .unwrap();
    let pg_log_file = member.instance.data_dir().join("log/postmaster.log");
    let pg_log = || std::fs::read_to_string(&pg_log_file).unwrap_or_default();

    let api = api_url(&cluster, &primary).await;
    // A slow shutdown checkpoint, as on a busy server: the checkpointer is
    // held before the restart is asked for (a fast checkpoint could end
    // before the test caught it) and let go once the fast shutdown has
    // waited longer than the margin.
    kill(Pid::from_raw(checkpointer), Signal::SIGSTOP).unwrap();
    let restart = {
        let (api, primary) = (api.clone(), primary.clone());
        tokio::spawn(async move { common::ctl(&["--api", &api, "restart", &primary], &[]).await })
    };
    wait_for("the fast shutdown to begin", DEADLINE, || async {
        if pg_log().contains("received fast shutdown request") {
            Ok(())
        } else {
            Err(())
        }
    })
    .await
    .unwrap_or_else(|err| {
        let _ = kill(Pid::from_raw(checkpointer), Signal::SIGCONT);
        panic!("{err}\n{}", cluster.logs())
    });
    tokio::time::sleep(SLOW_CHECKPOINT).await;
    kill(Pid::from_raw(checkpointer), Signal::SIGCONT).unwrap();

    let restart = restart.await.unwrap();
    assert_eq!(restart.status.code(), Some(0), "{}", shown(&restart));
    assert!(
        shown(&restart).contains(&format!("restarted PostgreSQL on {primary}")),
        "{}",
        shown(&restart)
    );
    // The API told the truth: it runs, as the primary, still the leader.
    match member.probe().await {
        Probe::Up(state) => assert!(!state.in_recovery, "{primary} is no longer primary"),
        down => panic!(
            "{primary} is down after the restart: {down:?}\n{}",
            cluster.logs()
        ),
    }
    let after = healthy(&cluster, &ALL).await;
    assert_eq!(
        after,
        primary,
        "a restart is not a failover\n{}",
        cluster.logs()
    );

    let before = load.acked();
    assert!(
        load.wait_acks(before + 200, DEADLINE).await,
        "no writes acknowledged after the restart\n{}",
        cluster.logs()
    );
    let report = load.stop().await;
    let missing = cluster
        .missing_ids(&primary, &report.acked_ids())
        .await
        .unwrap();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost: {:?}…",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        !pg_log().contains("received immediate shutdown request"),
        "the restart was cut short by an immediate stop:\n{}\n{}",
        pg_log(),
        cluster.logs()
    );
}
