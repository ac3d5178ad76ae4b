//! The pg crate against real PostgreSQL: bootstrap, clone, probe, promote,
//! rewind, slots, stop modes, the configuration report.

use std::time::{Duration, Instant};

use pg::{Lsn, Probe, RewindOutcome, ServerState, StopMode};
use testkit::{wait_for, PgCluster, PgNode};

const DEADLINE: Duration = Duration::from_secs(30);

async fn up(node: &PgNode) -> ServerState {
    match node.instance.probe().await {
        Probe::Up(state) => state,
        down => panic!("{} should be up: {down:?}", node.name),
    }
}

/// Waits until `standby` has replayed `target`.
async fn wait_replayed(standby: &PgNode, target: Lsn) {
    wait_for(
        &format!("{} to replay {target}", standby.name),
        DEADLINE,
        || async {
            match standby.instance.probe().await {
                Probe::Up(state) if state.replayed_lsn >= Some(target) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_primary_and_two_streaming_standbys_probe_as_such() {
    let cluster = PgCluster::start(2).await.unwrap();
    let primary = up(&cluster.nodes[0]).await;
    assert!(!primary.in_recovery);
    assert_eq!(primary.timeline, 1);
    assert!(primary.current_lsn.is_some());
    assert_eq!(primary.received_lsn, None);
    let names: Vec<_> = primary
        .replication
        .iter()
        .map(|r| r.application_name.as_str())
        .collect();
    assert_eq!(names, ["node1", "node2"]);
    assert!(
        primary.replication.iter().all(|r| r.state == "streaming"),
        "{primary:?}"
    );
    assert!(
        primary.replication.iter().all(|r| r.sync_state == "async"),
        "{primary:?}"
    );

    for standby in &cluster.nodes[1..] {
        let state = up(standby).await;
        assert!(state.in_recovery);
        assert_eq!(state.timeline, 1);
        assert_eq!(state.system_identifier, primary.system_identifier);
        assert_eq!(state.current_lsn, None);
        let receiver = state.wal_receiver.expect("a standby streams");
        assert_eq!(receiver.status, "streaming");
        assert_eq!(receiver.slot_name.as_deref(), Some(standby.name.as_str()));
        assert_eq!(receiver.sender_port, Some(cluster.nodes[0].endpoint().port));
    }

    // Positions move with writes, and the standbys follow.
    let before = primary.current_lsn.unwrap();
    cluster.nodes[0]
        .execute("CREATE TABLE t AS SELECT generate_series(1, 10000) AS id")
        .await
        .unwrap();
    let after = up(&cluster.nodes[0]).await.current_lsn.unwrap();
    assert!(after.bytes_after(before) > 100_000, "{before} → {after}");
    for standby in &cluster.nodes[1..] {
        wait_replayed(standby, after).await;
        let count = standby
            .query_text("SELECT count(*)::text FROM t")
            .await
            .unwrap();
        assert_eq!(count.as_deref(), Some("10000"));
        let state = up(standby).await;
        assert!(state.received_lsn >= Some(after), "{state:?}");
    }
    // The primary sees them catch up.
    wait_for(
        "both standbys to report replay of the write",
        DEADLINE,
        || async {
            let state = up(&cluster.nodes[0]).await;
            if state
                .replication
                .iter()
                .all(|r| r.replay_lsn >= Some(after))
            {
                Ok(())
            } else {
                Err(state.replication)
            }
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn initdb_uses_checksums_and_scram_for_network_connections() {
    let cluster = PgCluster::start(0).await.unwrap();
    let node = &cluster.nodes[0];
    assert_eq!(
        node.query_text("SHOW data_checksums")
            .await
            .unwrap()
            .as_deref(),
        Some("on")
    );
    let scram = "SELECT (rolpassword LIKE 'SCRAM-SHA-256$%')::text FROM pg_authid WHERE rolname = 'replicator'";
    assert_eq!(
        node.query_text(scram).await.unwrap().as_deref(),
        Some("true")
    );
    let hba = std::fs::read_to_string(node.instance.data_dir().join("pg_hba.conf")).unwrap();
    assert!(
        hba.lines()
            .filter(|l| l.starts_with("host"))
            .all(|l| l.ends_with("scram-sha-256")),
        "{hba}"
    );

    // A wrong password is refused over the network.
    let mut wrong = node.instance.spec().clone();
    wrong.superuser.password = "not the password".into();
    let err = pg::Instance::new(wrong).connect().await.unwrap_err();
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );

    // Data directory refused when not empty.
    let err = node.instance.initdb().await.unwrap_err();
    assert!(err.to_string().contains("is not empty"), "{err}");
}

#[tokio::test]
async fn clone_reports_progress() {
    let cluster = PgCluster::start(0).await.unwrap();
    cluster.nodes[0]
        .execute("CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 50000) g")
        .await
        .unwrap();
    let node = cluster.new_node("clone").unwrap();
    let source = cluster.nodes[0].endpoint();
    let mut reports = Vec::new();
    node.instance
        .clone_from(&source, |p| reports.push(p))
        .await
        .unwrap();
    assert!(!reports.is_empty(), "pg_basebackup reported no progress");
    assert!(
        reports.windows(2).all(|w| w[0].done_kb <= w[1].done_kb),
        "{reports:?}"
    );
    let last = reports.last().unwrap();
    assert!(last.total_kb > 10_000, "{reports:?}");
    assert!(
        last.done_kb >= last.total_kb,
        "the clone ended before 100%: {reports:?}"
    );
    assert!(node.instance.is_initialized());

    // A clone into a non-empty directory is refused and leaves it alone.
    let err = node.instance.clone_from(&source, |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("is not empty"), "{err}");
    assert!(node.instance.is_initialized());
}

#[tokio::test]
async fn promote_a_standby_then_rewind_the_old_primary_to_follow_it() {
    let mut cluster = PgCluster::start(2).await.unwrap();
    cluster.nodes[0]
        .execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    let lsn = up(&cluster.nodes[0]).await.current_lsn.unwrap();
    wait_replayed(&cluster.nodes[1], lsn).await;
    let new_primary = cluster.nodes[1].endpoint();
    for name in ["node0", "node2"] {
        cluster.nodes[1].instance.create_slot(name).await.unwrap();
    }

    // node2 re-points to node1 by a reload alone, before node0 and node1
    // diverge (a standby that streamed node0's divergent WAL would need a
    // rewind too).
    cluster.nodes[2].follow(&new_primary).unwrap();
    cluster.nodes[2].instance.reload().await.unwrap();
    wait_for("node2 to stream from node1", DEADLINE, || async {
        match up(&cluster.nodes[2]).await.wal_receiver {
            Some(r) if r.status == "streaming" && r.sender_port == Some(new_primary.port) => Ok(()),
            other => Err(other),
        }
    })
    .await
    .unwrap();

    // Removing standby.signal under a running standby would crash its
    // promotion (the startup process removes it itself).
    let err = cluster.nodes[1].instance.set_standby(false).unwrap_err();
    assert!(err.to_string().contains("promote"), "{err}");
    // node1 becomes primary while node0 still writes: they diverge.
    cluster.nodes[1].instance.promote().await.unwrap();
    assert!(!cluster.nodes[1].instance.is_standby_configured());
    let promoted = up(&cluster.nodes[1]).await;
    assert!(!promoted.in_recovery);
    assert_eq!(promoted.timeline, 2);
    cluster.nodes[0]
        .execute("INSERT INTO t VALUES (0)")
        .await
        .unwrap();
    cluster.nodes[1]
        .execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    // The old primary stops, rewinds onto node1 and follows it.
    cluster.nodes[0]
        .instance
        .stop(StopMode::Fast)
        .await
        .unwrap();
    assert!(matches!(
        cluster.nodes[0].instance.probe().await,
        Probe::Down {
            postmaster_alive: false,
            ..
        }
    ));
    let outcome = cluster.nodes[0]
        .instance
        .rewind(&new_primary)
        .await
        .unwrap();
    assert_eq!(outcome, RewindOutcome::Rewound);
    // pgwarden's own settings survived the rewind (it copies the source's files).
    let managed =
        std::fs::read_to_string(cluster.nodes[0].instance.data_dir().join("pgwarden.conf"))
            .unwrap();
    assert!(
        managed.contains(&format!("port = '{}'", cluster.nodes[0].endpoint().port)),
        "{managed}"
    );
    cluster.nodes[0].follow(&new_primary).unwrap();
    cluster.nodes[0].instance.start().await.unwrap();
    cluster.nodes[0].wait_streaming(DEADLINE).await.unwrap();

    let lsn = up(&cluster.nodes[1]).await.current_lsn.unwrap();
    for name in ["node0", "node2"] {
        let standby = cluster.node(name);
        wait_replayed(standby, lsn).await;
        let state = up(standby).await;
        assert_eq!(state.timeline, 2, "{name}: {state:?}");
        let rows = standby
            .query_text("SELECT string_agg(id::text, ',') FROM t")
            .await
            .unwrap();
        assert_eq!(
            rows.as_deref(),
            Some("1"),
            "{name} must hold node1's history, not node0's lost write"
        );
    }

    // A rewind that is not needed says so.
    cluster.nodes[2]
        .instance
        .stop(StopMode::Fast)
        .await
        .unwrap();
    let outcome = cluster.nodes[2]
        .instance
        .rewind(&new_primary)
        .await
        .unwrap();
    assert_eq!(outcome, RewindOutcome::NotNeeded);
}

#[tokio::test]
async fn slots_are_created_and_dropped_idempotently() {
    let cluster = PgCluster::start(0).await.unwrap();
    let instance = &cluster.nodes[0].instance;
    instance.create_slot("db_b").await.unwrap();
    instance.create_slot("db_a").await.unwrap();
    instance.create_slot("db_a").await.unwrap();
    assert_eq!(instance.slots().await.unwrap(), ["db_a", "db_b"]);
    instance.drop_slot("db_a").await.unwrap();
    instance.drop_slot("db_a").await.unwrap();
    assert_eq!(instance.slots().await.unwrap(), ["db_b"]);
}

#[tokio::test]
async fn stop_modes_restart_and_reload() {
    let mut cluster = PgCluster::start(0).await.unwrap();
    let node = &mut cluster.nodes[0];

    node.settings
        .parameters
        .insert("work_mem".into(), "7MB".into());
    node.instance.write_settings(&node.settings).unwrap();
    node.instance.reload().await.unwrap();
    wait_for("work_mem to be reloaded", DEADLINE, || async {
        match node.query_text("SHOW work_mem").await {
            Ok(Some(v)) if v == "7MB" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    assert_eq!(
        node.instance.config_report().await.unwrap(),
        pg::ConfigReport::default()
    );

    // A restart-only parameter waits for the restart; a value the server
    // cannot take is ignored by the reload and reported.
    node.settings
        .parameters
        .insert("wal_buffers".into(), "1MB".into());
    node.settings
        .parameters
        .insert("maintenance_work_mem".into(), "banana".into());
    node.instance.write_settings(&node.settings).unwrap();
    node.instance.reload().await.unwrap();
    wait_for("the reload to be reported", DEADLINE, || async {
        match node.instance.config_report().await {
            Ok(report)
                if report.pending_restart == ["wal_buffers"]
                    && report.errors.len() == 1
                    && report.errors[0].starts_with("maintenance_work_mem: ") =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    // It would not start with the bad value.
    node.settings.parameters.remove("maintenance_work_mem");
    node.instance.write_settings(&node.settings).unwrap();

    let pid = node.instance.postmaster_pid().unwrap();
    node.instance.restart().await.unwrap();
    assert_eq!(
        node.instance.config_report().await.unwrap(),
        pg::ConfigReport::default(),
        "the restart applied wal_buffers"
    );
    assert_ne!(
        node.instance.postmaster_pid(),
        Some(pid),
        "restart must start a new postmaster"
    );

    for mode in [StopMode::Smart, StopMode::Fast, StopMode::Immediate] {
        node.instance.start().await.unwrap();
        assert!(node.instance.probe().await.is_up());
        node.instance.stop(mode).await.unwrap();
        assert_eq!(node.instance.postmaster_pid(), None, "{mode:?}");
        // Stopping a stopped server is not an error.
        node.instance.stop(mode).await.unwrap();
    }
    let control = node.instance.controldata().await.unwrap();
    assert!(
        !control.state.is_clean_shutdown(),
        "an immediate stop leaves crash recovery to do"
    );
    node.instance.start().await.unwrap();
    node.instance.stop(StopMode::Fast).await.unwrap();
    let control = node.instance.controldata().await.unwrap();
    assert!(control.state.is_clean_shutdown(), "{control:?}");
    assert_eq!(control.timeline, 1);

    // A start in the background returns with the postmaster known, so the
    // next observation cannot take a starting server for a stopped one.
    node.instance.start_in_background().await.unwrap();
    assert!(node.instance.postmaster_pid().is_some());
    node.instance.stop(StopMode::Fast).await.unwrap();
}

/// Fencing signals the postmaster itself (no pg_ctl in between), and only a
/// postmaster: a stale postmaster.pid naming another program is left alone.
#[tokio::test]
async fn fencing_signals_the_postmaster_and_never_another_program() {
    let mut cluster = PgCluster::start(0).await.unwrap();
    let node = &mut cluster.nodes[0];
    let pid = node.instance.postmaster_pid().unwrap();
    assert_eq!(node.instance.fence(), Some(pid));
    wait_for("the postmaster to exit", DEADLINE, || async {
        match node.instance.postmaster_pid() {
            None => Ok(()),
            Some(pid) => Err(format!("{pid} still runs")),
        }
    })
    .await
    .unwrap();
    let control = node.instance.controldata().await.unwrap();
    assert!(
        !control.state.is_clean_shutdown(),
        "SIGQUIT is an immediate shutdown: {control:?}"
    );

    // A postmaster.pid left behind, whose PID now belongs to another program.
    let mut stranger = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid_file = node.instance.data_dir().join("postmaster.pid");
    std::fs::write(&pid_file, format!("{}\n", stranger.id())).unwrap();
    assert_eq!(node.instance.fence(), None);
    node.instance.stop(StopMode::Immediate).await.ok();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "the program named by a stale postmaster.pid was signalled"
    );
    stranger.kill().unwrap();
    stranger.wait().unwrap();
    std::fs::remove_file(&pid_file).unwrap();
}

#[tokio::test]
async fn move_aside_keeps_the_data_directory_beside_its_old_place() {
    let cluster = PgCluster::start(0).await.unwrap();
    let instance = &cluster.nodes[0].instance;
    let err = instance.move_aside().unwrap_err();
    assert!(err.to_string().contains("stop it first"), "{err}");
    instance.stop(StopMode::Fast).await.unwrap();
    let aside = instance.move_aside().unwrap();
    assert!(!instance.data_dir().exists());
    assert_eq!(aside.parent(), instance.data_dir().parent());
    let name = aside.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("node0.moved-"), "{name}");
    assert!(aside.join("PG_VERSION").is_file());
    assert_eq!(
        instance.passfile(),
        instance.data_dir().with_file_name("node0.pgpass")
    );
}

#[tokio::test]
async fn a_failed_start_shows_the_server_log() {
    let mut cluster = PgCluster::start(0).await.unwrap();
    let node = &mut cluster.nodes[0];
    node.instance.stop(StopMode::Fast).await.unwrap();
    node.settings
        .parameters
        .insert("shared_buffers".into(), "not a size".into());
    node.instance.write_settings(&node.settings).unwrap();
    let err = node.instance.start().await.unwrap_err().to_string();
    assert!(err.contains("start PostgreSQL: pg_ctl failed"), "{err}");
    assert!(
        err.contains("shared_buffers"),
        "the server log should say which setting is wrong: {err}"
    );
}

#[tokio::test]
async fn a_server_that_accepts_but_never_answers_does_not_hang_the_probe() {
    // A listening socket nobody serves: the kernel completes the TCP
    // handshake, then nothing — like a SIGSTOPped postmaster.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let role = pg::Role {
        name: "postgres".into(),
        password: "x".into(),
    };
    let started = std::time::Instant::now();
    let err = pg::connect(&pg::Endpoint::new("127.0.0.1", port), &role)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("no answer within"), "{err}");
    drop(listener);
}

/// A standby that received WAL the new primary never had fetches the new
/// timeline's history file but cannot switch to it: it must still probe as
/// being on the old timeline, so the agent rewinds it instead of taking it
/// for a same-numbered fork and re-cloning it.
#[tokio::test]
async fn a_standby_past_the_fork_point_stays_on_its_old_timeline() {
    let mut cluster = PgCluster::start(2).await.unwrap();
    cluster.nodes[0]
        .execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    let lsn = up(&cluster.nodes[0]).await.current_lsn.unwrap();
    wait_replayed(&cluster.nodes[1], lsn).await;
    // node1 stops before the next write, which only node2 receives.
    cluster.nodes[1]
        .instance
        .stop(StopMode::Fast)
        .await
        .unwrap();
    cluster.nodes[0]
        .execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let lsn = up(&cluster.nodes[0]).await.current_lsn.unwrap();
    wait_replayed(&cluster.nodes[2], lsn).await;
    cluster.nodes[0].kill();

    // node1 becomes primary on timeline 2, forking before node2's position.
    cluster.nodes[1].instance.start().await.unwrap();
    cluster.nodes[1].instance.promote().await.unwrap();
    let new_primary = cluster.nodes[1].endpoint();
    cluster.nodes[1]
        .instance
        .create_slot("node2")
        .await
        .unwrap();
    cluster.nodes[2].follow(&new_primary).unwrap();
    cluster.nodes[2].instance.reload().await.unwrap();
    let history = cluster.nodes[2]
        .instance
        .data_dir()
        .join("pg_wal/00000002.history");
    wait_for("node2 to fetch timeline 2's history", DEADLINE, || async {
        if history.exists() {
            Ok(())
        } else {
            Err(format!("{:?}", up(&cluster.nodes[2]).await.wal_receiver))
        }
    })
    .await
    .unwrap();
    // While its receiver is connected to node1 (it reconnects and fails to
    // switch again and again), the probe must say timeline 1: wait for
    // such samples, and check every one.
    let deadline = Instant::now() + DEADLINE;
    let mut checked = 0;
    while checked < 3 {
        let state = up(&cluster.nodes[2]).await;
        if state.wal_receiver.is_some() {
            assert_eq!(state.timeline, 1, "{state:?}");
            checked += 1;
        } else {
            assert!(
                Instant::now() < deadline,
                "node2 had no WAL receiver in {DEADLINE:?} (checked {checked} samples with one): {state:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // pg_rewind repairs it.
    cluster.nodes[2]
        .instance
        .stop(StopMode::Fast)
        .await
        .unwrap();
    let outcome = cluster.nodes[2]
        .instance
        .rewind(&new_primary)
        .await
        .unwrap();
    assert_eq!(outcome, RewindOutcome::Rewound);
    cluster.nodes[2].follow(&new_primary).unwrap();
    cluster.nodes[2].instance.start().await.unwrap();
    cluster.nodes[2].wait_streaming(DEADLINE).await.unwrap();
    assert_eq!(up(&cluster.nodes[2]).await.timeline, 2);
}

#[tokio::test]
async fn a_killed_postmaster_starts_again_at_once_though_a_backend_still_runs_a_query() {
    let cluster = PgCluster::start(0).await.unwrap();
    let node = &cluster.nodes[0];
    // A backend busy computing does not notice that its postmaster died, and
    // keeps the old shared memory attached: PostgreSQL refuses to start
    // ("pre-existing shared memory block … is still in use") until it is gone.
    let client = node.instance.connect().await.unwrap();
    let busy = tokio::spawn(async move {
        client
            .simple_query("SELECT count(*) FROM generate_series(1, 100000000000)")
            .await
    });
    wait_for("the query to run", DEADLINE, || async {
        let running = node
            .query_text(
                "SELECT count(*)::text FROM pg_stat_activity WHERE state = 'active' \
                 AND query LIKE '%generate_series(1, 100000000000)%' AND pid <> pg_backend_pid()",
            )
            .await;
        match running {
            Ok(Some(n)) if n == "1" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    assert!(!busy.is_finished(), "the query should still run");
    node.kill();

    let started = Instant::now();
    node.instance.start().await.unwrap();
    // Not before the busy backend had its second to notice, then was ended.
    assert!(
        started.elapsed() >= Duration::from_secs(1) && started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        node.query_text("SELECT 'up'").await.unwrap().as_deref(),
        Some("up")
    );
    assert!(
        busy.await.unwrap().is_err(),
        "the orphaned backend was ended"
    );
}
