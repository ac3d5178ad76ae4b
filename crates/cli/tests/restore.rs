//! `pgwarden restore` on real PostgreSQL 15, etcd and agents archiving
//! through `pgwarden wal push`: a table dropped after rows committed at
//! recorded times comes back with exactly the rows committed before the
//! target; a restore to the end of the archive follows a switchover and a
//! failover; a standby that fell behind what its primary keeps catches up
//! from the archive and streams again without a re-clone.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use backup::repo::PosixRepository;
use backup::wal::WalArchive;
use backup::Repository;
use common::backups::{archive_everything, archive_of, repository_dir, take_backup, text};
use common::{binary, events, healthy, others, shown, ALL, DEADLINE};
use pg::{Endpoint, Instance, InstanceSpec, Role, RunAs, Timeouts};
use testkit::{AgentCluster, AgentMember, ClusterOptions};

async fn cluster(
    members: usize,
    repo_dir: &Path,
    ttl_ms: u64,
    parameters: &[(&str, &str)],
) -> AgentCluster {
    let mut options = ClusterOptions {
        members,
        backup: Some(format!("repository = \"{}\"", repo_dir.display())),
        ..ClusterOptions::default()
    };
    options.config.ttl_ms = ttl_ms;
    options.config.heartbeat_ms = 1_000;
    for (name, value) in parameters {
        options
            .config
            .parameters
            .insert(name.to_string(), value.to_string());
    }
    let cluster = AgentCluster::start(binary(), options).await.unwrap();
    let names: Vec<String> = (1..=members).map(|i| format!("db{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    healthy(&cluster, &names).await;
    cluster
}

async fn restore(config: &Path, args: &[&str]) -> Output {
    let run = tokio::process::Command::new(binary())
        .arg("restore")
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("restore finished within 300 s")
        .unwrap()
}

/// A server `pgwarden restore --start` left running: stopped when dropped.
struct Restored {
    instance: Instance,
}

impl Restored {
    fn new(dir: &Path, port: u16) -> Restored {
        Restored {
            instance: Instance::new(InstanceSpec {
                data_dir: dir.to_path_buf(),
                bin_dir: testkit::postgres::bin_dir().unwrap(),
                log_file: dir.join("log/postmaster.log"),
                endpoint: Endpoint::new("127.0.0.1", port),
                superuser: Role {
                    name: "postgres".into(),
                    password: testkit::agents::SUPERUSER_PASSWORD.into(),
                },
                replication: Role {
                    name: "replicator".into(),
                    password: testkit::agents::REPLICATION_PASSWORD.into(),
                },
                hba_networks: Vec::new(),
                run_as: RunAs::detect().unwrap(),
                timeouts: Timeouts::default(),
            }),
        }
    }

    async fn text(&self, sql: &str) -> String {
        let client = self.instance.connect().await.unwrap();
        let row = client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.get::<_, Option<String>>(0).unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.instance.data_dir().join("log/postmaster.log"))
            .unwrap_or_default()
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        if let Some(pid) = self.instance.postmaster_pid() {
            testkit::process::terminate(
                pid,
                nix::sys::signal::Signal::SIGQUIT,
                Duration::from_secs(10),
            );
        }
    }
}

/// Restores with `--start` into `dir` on a free port; the running server.
async fn restore_and_start(config: &Path, dir: &Path, extra: &[&str]) -> Restored {
    let port = testkit::free_port();
    let port_text = port.to_string();
    let mut args = vec![
        "--target-dir",
        dir.to_str().unwrap(),
        "--port",
        &port_text,
        "--start",
    ];
    args.extend_from_slice(extra);
    // Built before the run: a failed start is stopped too.
    let restored = Restored::new(dir, port);
    let out = restore(config, &args).await;
    assert!(out.status.success(), "{}\n{}", shown(&out), restored.log());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("port={port}")), "{said}");
    assert!(said.contains("accepts writes"), "{said}");
    restored
}

/// The ids in table `t`, in order.
async fn ids(server: &Restored) -> String {
    server
        .text("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM t")
        .await
}

/// A row's commit time as PostgreSQL recorded it (track_commit_timestamp).
async fn commit_time(member: &AgentMember, id: u32) -> jiff::Timestamp {
    let sql = format!(
        "SELECT to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', \
         'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM t WHERE id = {id}"
    );
    text(member, &sql).await.parse().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_comes_back_with_exactly_the_rows_committed_before_the_target() {
    let (holder, repo_dir) = repository_dir();
    let cluster = cluster(1, &repo_dir, 10_000, &[("track_commit_timestamp", "on")]).await;
    let member = &cluster.members[0];
    let config = &member.config_file;
    let repo: Arc<dyn Repository> = Arc::new(PosixRepository::new(&repo_dir));
    member
        .execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let full = take_backup(&repo, member).await;

    let mut after_5 = String::new();
    for id in 1..=6 {
        member
            .execute(&format!("INSERT INTO t VALUES ({id})"))
            .await
            .unwrap();
        if id == 4 {
            member
                .execute("SELECT pg_create_restore_point('after 4')")
                .await
                .unwrap();
        }
        if id == 5 {
            after_5 = text(member, "SELECT pg_current_wal_insert_lsn()::text").await;
        }
    }
    let (two, three) = (commit_time(member, 2).await, commit_time(member, 3).await);
    member.execute("DROP TABLE t").await.unwrap();
    archive_everything(&repo, member).await;
    let gap = three.as_microsecond() - two.as_microsecond();
    assert!(gap >= 2, "commits 2 and 3 are {gap} µs apart");
    let between = jiff::Timestamp::from_microsecond(two.as_microsecond() + gap / 2).unwrap();

    // The time as an operator types it, with an offset.
    let typed = format!(
        "{}+02:00",
        jiff::tz::Offset::constant(2)
            .to_datetime(between)
            .strftime("%Y-%m-%d %H:%M:%S%.6f")
    );
    let by_time = holder.join("by-time");
    let server = restore_and_start(config, &by_time, &["--to", &typed]).await;
    assert_eq!(ids(&server).await, "1,2", "restored to {typed}");
    // Promoted: it takes writes, and archives none of them.
    server
        .instance
        .connect()
        .await
        .unwrap()
        .batch_execute("INSERT INTO t VALUES (100); SELECT pg_switch_wal()")
        .await
        .unwrap();
    assert_eq!(server.text("SHOW archive_mode").await, "off");
    assert_eq!(server.text("SHOW primary_conninfo").await, "");
    let by_point = holder.join("by-restore-point");
    let by_name = restore_and_start(config, &by_point, &["--to", "after 4"]).await;
    assert_eq!(ids(&by_name).await, "1,2,3,4");
    drop(by_name);

    // Over the first copy, stopped: only what differs is written.
    drop(server);
    let by_lsn = restore_and_start(config, &by_time, &["--to", &after_5, "--delta"]).await;
    assert_eq!(ids(&by_lsn).await, "1,2,3,4,5");
    drop(by_lsn);

    // Bad input, each with what to do.
    let fresh = holder.join("fresh");
    let (fresh, used) = (fresh.to_str().unwrap(), by_time.to_str().unwrap());
    let member_port = member.endpoint().port.to_string();
    let cases: [(&[&str], &str); 6] = [
        (
            &["--to", "latest", "--backup", "20000101-000000F"],
            "no complete backup 20000101-000000F",
        ),
        (&["--to", "latest", "--target-dir", used], "--delta"),
        (&["--to", "2026-02-31 14:02:00"], "is not a time"),
        (&["--to", "2000-01-01 00:00:00+00"], "earliest point"),
        (&["--to", "latest", "--port", &member_port], "--port"),
        (&["--to", "latest", "--timeline", "x"], "timeline"),
    ];
    for (args, expected) in cases {
        let mut all = args.to_vec();
        if !args.contains(&"--target-dir") {
            all.extend(["--target-dir", fresh]);
        }
        let out = restore(config, &all).await;
        assert!(!out.status.success(), "{args:?}: {}", shown(&out));
        assert!(stderr(&out).contains(expected), "{args:?}: {}", shown(&out));
    }
    let early = restore(
        config,
        &["--target-dir", fresh, "--to", "2000-01-01 00:00:00+00"],
    )
    .await;
    assert!(
        stderr(&early).contains(&full.stop.time),
        "{}",
        shown(&early)
    );
    assert!(
        !Path::new(fresh).exists(),
        "a refused restore wrote {fresh}"
    );

    // A restore point the WAL does not hold: PostgreSQL stops at the end
    // of the archive, and the command says what that means.
    let port = testkit::free_port().to_string();
    let nowhere = holder.join("nowhere");
    let unreachable = Restored::new(&nowhere, 0);
    let args = [
        "--target-dir",
        nowhere.to_str().unwrap(),
        "--to",
        "never made",
        "--port",
        &port,
        "--start",
    ];
    let out = restore(config, &args).await;
    assert!(!out.status.success(), "{}", shown(&out));
    let said = stderr(&out);
    assert!(said.contains("--backup"), "{said}");
    assert!(
        said.contains("recovery ended before configured recovery target was reached"),
        "{said}"
    );
    assert_eq!(unreachable.instance.postmaster_pid(), None);
}

async fn post(url: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let client = api::ApiClient::new(None).unwrap();
    let mut call = api::Call::new(hyper::Method::POST, url, path);
    call.body = Some(&body);
    call.timeout = Duration::from_secs(40);
    let reply = client.send(call).await.unwrap();
    let json = serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null);
    (reply.status.as_u16(), json)
}

/// Writes batch `batch` (100 rows) on `primary` and waits until each of
/// `standbys` has replayed it.
async fn write_batch(cluster: &AgentCluster, primary: &str, standbys: &[&str], batch: u32) {
    let member = cluster.member(primary);
    member
        .execute(&format!(
            "CREATE TABLE IF NOT EXISTS w (batch int, id int); \
             INSERT INTO w SELECT {batch}, g FROM generate_series(1, 100) g"
        ))
        .await
        .unwrap();
    let lsn = text(member, "SELECT pg_current_wal_insert_lsn()::text").await;
    for name in standbys {
        let standby = cluster.member(name);
        let sql = format!("SELECT (pg_last_wal_replay_lsn() >= '{lsn}')::text");
        let replayed = testkit::wait_for(&format!("{name} to replay {lsn}"), DEADLINE, || async {
            match standby.query_text(&sql).await {
                Ok(Some(yes)) if yes == "true" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        replayed.unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    }
}

/// The names of the archived files of `archive` (without `.zst`).
async fn archived(repo: &dyn Repository, archive: &WalArchive) -> Vec<String> {
    repo.list(archive.dir())
        .await
        .unwrap()
        .iter()
        .filter_map(|e| {
            let file = e.path.as_str().rsplit('/').next()?;
            Some(file.strip_suffix(".zst")?.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_to_the_end_of_the_archive_follows_a_switchover_and_a_failover() {
    let (holder, repo_dir) = repository_dir();
    let mut cluster = cluster(3, &repo_dir, 10_000, &[]).await;
    let repo: Arc<dyn Repository> = Arc::new(PosixRepository::new(&repo_dir));
    let first = healthy(&cluster, &ALL).await;
    let archive = archive_of(repo.clone(), cluster.member(&first));
    take_backup(&repo, cluster.member(&first)).await;
    write_batch(&cluster, &first, &others(&ALL, &first), 1).await;

    let second = others(&ALL, &first)[0].to_string();
    let url = common::api_url(&cluster, &first).await;
    let (status, body) = post(&url, "/switchover", serde_json::json!({ "to": second })).await;
    assert_eq!(status, 200, "{body}\n{}", cluster.logs());
    assert_eq!(healthy(&cluster, &ALL).await, second);
    write_batch(&cluster, &second, &others(&ALL, &second), 2).await;

    cluster.kill_host(&second);
    let survivors = others(&ALL, &second);
    let third = healthy(&cluster, &survivors).await;
    let last = common::last_promotion(&cluster).await;
    assert_eq!(last.timeline, 3, "{last:?}");
    write_batch(&cluster, &third, &others(&survivors, &third), 3).await;
    archive_everything(&repo, cluster.member(&third)).await;

    // Each promotion archived its new timeline's history and the old
    // timeline's last segment, cut short.
    let names = archived(repo.as_ref(), &archive).await;
    for wanted in ["00000002.history", "00000003.history"] {
        assert!(names.iter().any(|n| n == wanted), "{wanted}: {names:?}");
    }
    for timeline in ["00000001", "00000002"] {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(timeline) && n.ends_with(".partial")),
            "no .partial segment of timeline {timeline}: {names:?}"
        );
    }

    let config = &cluster.member(&third).config_file;
    let dir = holder.join("latest");
    let restored = restore_and_start(config, &dir, &["--to", "latest"]).await;
    let rows = restored
        .text("SELECT string_agg(format('%s:%s', batch, n), ',' ORDER BY batch) FROM (SELECT batch, count(*) AS n FROM w GROUP BY batch) b")
        .await;
    assert_eq!(rows, "1:100,2:100,3:100", "{}", restored.log());
    let timeline = restored
        .text("SELECT timeline_id::text FROM pg_control_checkpoint()")
        .await;
    assert!(timeline.parse::<u32>().unwrap() >= 3, "{timeline}");
}

/// PostgreSQL's own log of a member (the agent's `log_file` default).
fn postgres_log(member: &AgentMember) -> String {
    let file = member.instance.data_dir().join("log/postmaster.log");
    std::fs::read_to_string(file).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_behind_what_its_primary_keeps_catches_up_from_the_archive_without_a_reclone() {
    let (_holder, repo_dir) = repository_dir();
    // The primary keeps little: no wal_keep_size, and the standby's slot
    // gives up past 32 MB.
    let parameters = [("wal_keep_size", "0"), ("max_slot_wal_keep_size", "32MB")];
    // Fetching the missed segments (about 20, a second each in a debug
    // build) outlasts two TTLs: the core once took that for a fork.
    let mut cluster = cluster(2, &repo_dir, 5_000, &parameters).await;
    let both = ["db1", "db2"];
    let primary = healthy(&cluster, &both).await;
    let standby = others(&both, &primary)[0].to_string();
    write_batch(&cluster, &primary, &[&standby], 1).await;
    let stopped_at = text(
        cluster.member(&standby),
        "SELECT pg_last_wal_replay_lsn()::text",
    )
    .await;
    assert!(
        cluster.stop_agent(&standby, Duration::from_secs(30)),
        "{standby}'s agent did not stop"
    );
    let needed = text(
        cluster.member(&primary),
        &format!("SELECT pg_walfile_name('{stopped_at}')"),
    )
    .await;

    // Enough WAL that the primary recycles the segment the standby needs.
    let member = cluster.member(&primary);
    let pg_wal = member.instance.data_dir().join("pg_wal");
    member
        .execute("CREATE TABLE filler (id int, pad text)")
        .await
        .unwrap();
    let recycled = testkit::wait_for(
        &format!("{primary} to recycle {needed}"),
        DEADLINE,
        || async {
            member
                .execute(
                    "INSERT INTO filler SELECT g, repeat('x', 500) FROM generate_series(1, 5000) g; \
                     SELECT pg_switch_wal(); CHECKPOINT",
                )
                .await
                .map_err(|e| e.to_string())?;
            if pg_wal.join(&needed).exists() {
                Err(format!("{needed} still in {}", pg_wal.display()))
            } else {
                Ok(())
            }
        },
    )
    .await;
    recycled.unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    write_batch(&cluster, &primary, &[], 2).await;
    archive_everything(&repo_of(&repo_dir), member).await;

    cluster.restart(&standby).unwrap();
    healthy(&cluster, &both).await;
    let rows = text(cluster.member(&standby), "SELECT count(*)::text FROM w").await;
    assert_eq!(rows, "200");
    // Not re-cloned: no repair, the data directory never moved aside.
    let repairs: Vec<String> = events(&cluster)
        .await
        .into_iter()
        .filter(|e| e.member == standby && (e.kind == "recloned" || e.kind == "rewound"))
        .map(|e| format!("{}: {}", e.kind, e.details))
        .collect();
    let home = cluster
        .member(&standby)
        .instance
        .data_dir()
        .parent()
        .unwrap();
    let aside: Vec<PathBuf> = std::fs::read_dir(home)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".moved-"))
        .map(|e| e.path())
        .collect();
    assert!(
        repairs.is_empty() && aside.is_empty(),
        "{standby} was repaired: {repairs:?}, moved aside: {aside:?}\n{}",
        cluster.logs()
    );
    // What it missed came from the archive, through restore_command.
    let log = postgres_log(cluster.member(&standby));
    assert!(
        log.contains(&format!("restored log file \"{needed}\" from archive")),
        "{standby} did not fetch {needed} from the archive:\n{log}"
    );
}

fn repo_of(dir: &Path) -> Arc<dyn Repository> {
    Arc::new(PosixRepository::new(dir))
}
