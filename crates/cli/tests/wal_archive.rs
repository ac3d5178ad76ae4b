//! The continuous WAL archive on real PostgreSQL 15: the agent turns
//! archiving on for a member with a `[backup]` table, PostgreSQL pushes
//! every segment through `pgwarden wal push`, a re-push of the same content
//! succeeds and of other content is refused, `wal fetch` gives back every
//! byte, and a repository PostgreSQL cannot write to loses nothing: the
//! segments wait in pg_wal and are archived, in order, once it can.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use backup::repo::{PosixRepository, S3Credentials, S3Options, S3Repository};
use backup::wal::{WalArchive, WalName};
use backup::Repository;
use common::backups::{archive_of, repository_dir};
use common::{api_url, binary, ctl, events, healthy, shown};
use testkit::s3::{S3Server, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use testkit::{AgentCluster, AgentMember, ClusterOptions};

const DEADLINE: Duration = Duration::from_secs(90);

/// A one-member cluster archiving into `repository` (a `[backup]` body).
async fn cluster(backup: String) -> AgentCluster {
    let options = ClusterOptions {
        members: 1,
        backup: Some(backup),
        ..ClusterOptions::default()
    };
    let cluster = AgentCluster::start(binary(), options).await.unwrap();
    healthy(&cluster, &["db1"]).await;
    cluster
}

/// Writes a little and ends the segment: its name.
async fn switch(member: &AgentMember) -> String {
    member
        .execute("CREATE TABLE IF NOT EXISTS t (i int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    member
        .query_text("SELECT pg_walfile_name(pg_switch_wal())")
        .await
        .unwrap()
        .unwrap()
}

async fn wait_archived(
    archive: &WalArchive,
    repo: &dyn Repository,
    names: &[String],
    member: &AgentMember,
) {
    for name in names {
        let path = archive.path_of(&WalName::parse(name).unwrap());
        let waited = testkit::wait_for(&format!("{name} in the archive"), DEADLINE, || async {
            match repo.size(&path).await {
                Ok(Some(_)) => Ok(()),
                other => Err(format!(
                    "{other:?}; pg_stat_archiver: {:?}",
                    member
                        .query_text(
                            "SELECT format('%s archived, %s failed, last failed %s', \
                             archived_count, failed_count, last_failed_wal) FROM pg_stat_archiver"
                        )
                        .await
                )),
            }
        })
        .await;
        if let Err(e) = waited {
            panic!("{e}\n{}", member.log_tail(30));
        }
    }
}

/// PostgreSQL's server log, where the archiver's failures and what
/// `wal push` said about them go.
fn postgres_log(member: &AgentMember) -> String {
    let file = member.instance.spec().data_dir.join("log/postmaster.log");
    std::fs::read_to_string(file).unwrap_or_default()
}

async fn wal(args: &[&str]) -> Output {
    tokio::process::Command::new(binary())
        .arg("wal")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

/// A scratch data directory (its pg_control copied from `member`'s) with
/// `pg_wal/`, for pushing and fetching by hand.
fn scratch_data_dir(cluster: &AgentCluster, member: &AgentMember, name: &str) -> PathBuf {
    let dir = cluster.dir.join(name);
    std::fs::create_dir_all(dir.join("global")).unwrap();
    std::fs::create_dir_all(dir.join("pg_wal")).unwrap();
    std::fs::copy(
        member.instance.spec().data_dir.join("global/pg_control"),
        dir.join("global/pg_control"),
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_archives_through_wal_push_and_fetch_gives_back_every_byte() {
    let (_holder, repo_dir) = repository_dir();
    let cluster = cluster(format!("repository = \"{}\"", repo_dir.display())).await;
    let member = &cluster.members[0];
    let settings = member
        .query_text(
            "SELECT current_setting('archive_mode') || ' ' || current_setting('archive_command')",
        )
        .await
        .unwrap()
        .unwrap();
    assert!(settings.starts_with("always "), "{settings}");
    assert!(settings.contains(" wal push -c "), "{settings}");
    let restore = member
        .query_text("SELECT current_setting('restore_command')")
        .await
        .unwrap()
        .unwrap();
    assert!(restore.contains(" wal fetch -c "), "{restore}");

    let repo: Arc<dyn Repository> = Arc::new(PosixRepository::new(&repo_dir));
    let archive = archive_of(repo.clone(), member);
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(switch(member).await);
    }
    // Copies while PostgreSQL still keeps them (wal_keep_size).
    let pg_wal = member.instance.spec().data_dir.join("pg_wal");
    let originals: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(pg_wal.join(n)).unwrap())
        .collect();
    wait_archived(&archive, repo.as_ref(), &names, member).await;

    // Every byte back, through the command PostgreSQL's restore_command runs.
    let config = member.config_file.display().to_string();
    let scratch = scratch_data_dir(&cluster, member, "fetched");
    for (name, original) in names.iter().zip(&originals) {
        let dest = scratch.join("pg_wal").join(name);
        let out = wal(&["fetch", "-c", &config, name, dest.to_str().unwrap()]).await;
        assert!(out.status.success(), "{out:?}");
        assert!(std::fs::read(&dest).unwrap() == *original, "{name} differs");
    }
    // A name the archive does not have: exit status 1, nothing written.
    let dest = scratch.join("pg_wal/RECOVERYXLOG");
    let out = wal(&[
        "fetch",
        "-c",
        &config,
        "0000000900000000000000FF",
        dest.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!dest.exists());

    // The same segment again (as after a crash between the push and
    // PostgreSQL recording it): success.
    let again = wal(&[
        "push",
        "-c",
        &config,
        pg_wal.join(&names[0]).to_str().unwrap(),
    ])
    .await;
    assert!(again.status.success(), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("archived already with the same content"),
        "{again:?}"
    );

    // Other content under an archived name: refused, loudly, and the
    // archived segment kept.
    let forged = scratch_data_dir(&cluster, member, "forged");
    let mut other = originals[1].clone();
    other[100_000] ^= 0xff;
    let forged_segment = forged.join("pg_wal").join(&names[1]);
    std::fs::write(&forged_segment, &other).unwrap();
    let refused = wal(&["push", "-c", &config, forged_segment.to_str().unwrap()]).await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("archived already with different content"),
        "{said}"
    );
    assert!(said.contains("Keep the archived file"), "{said}");
    let dest = scratch.join("pg_wal").join(&names[1]);
    std::fs::remove_file(&dest).unwrap();
    let out = wal(&["fetch", "-c", &config, &names[1], dest.to_str().unwrap()]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::read(&dest).unwrap() == originals[1]);
}

/// Sets `mode` on `dir` and every directory below it.
fn chmod_tree(dir: &Path, mode: u32) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            chmod_tree(&entry.path(), mode);
        }
    }
}

/// The archived segments of timeline 1, in order.
async fn archived_segments(archive: &WalArchive, repo: &dyn Repository) -> Vec<u64> {
    repo.list(archive.dir())
        .await
        .unwrap()
        .iter()
        .filter_map(|e| {
            let file = e.path.as_str().rsplit('/').next()?.strip_suffix(".zst")?;
            let name = WalName::parse(file).ok()?;
            (name.kind() == backup::wal::WalKind::Segment)
                .then(|| u64::from_str_radix(&file[8..], 16).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_postgresql_cannot_write_loses_no_segment() {
    let (_holder, repo_dir) = repository_dir();
    let cluster = cluster(format!("repository = \"{}\"", repo_dir.display())).await;
    let member = &cluster.members[0];
    let repo: Arc<dyn Repository> = Arc::new(PosixRepository::new(&repo_dir));
    let archive = archive_of(repo.clone(), member);
    let first = switch(member).await;
    wait_archived(
        &archive,
        repo.as_ref(),
        std::slice::from_ref(&first),
        member,
    )
    .await;

    // Not writable for PostgreSQL's user (the test runs as root, which
    // permissions do not stop; PostgreSQL runs as postgres).
    chmod_tree(&repo_dir, 0o555);
    let mut stuck = Vec::new();
    for _ in 0..3 {
        stuck.push(switch(member).await);
    }
    let failing = testkit::wait_for("PostgreSQL to report failed pushes", DEADLINE, || async {
        let seen = member
            .query_text(
                "SELECT failed_count || ' ' || coalesce(last_failed_wal, '') FROM pg_stat_archiver",
            )
            .await;
        match &seen {
            Ok(Some(text)) if text != "0 " && text.ends_with(&stuck[0]) => Ok(()),
            _ => Err(seen),
        }
    })
    .await;
    failing.unwrap_or_else(|e| panic!("{e}\n{}", member.log_tail(30)));
    for name in &stuck {
        let path = archive.path_of(&WalName::parse(name).unwrap());
        assert_eq!(repo.size(&path).await.unwrap(), None, "{name} archived");
        // Kept by PostgreSQL, waiting.
        let ready = member
            .instance
            .spec()
            .data_dir
            .join("pg_wal/archive_status")
            .join(format!("{name}.ready"));
        assert!(ready.exists(), "{} missing", ready.display());
    }
    let log = postgres_log(member);
    assert!(
        log.contains("Permission denied"),
        "PostgreSQL's log says why:\n{log}"
    );
    // The agent says so: an event, `ctl list`, the metrics.
    let api = api_url(&cluster, "db1").await;
    wait_event(&cluster, "archive_failing").await;
    let listed = ctl(&["--api", &api, "list"], &[]).await;
    let text = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        text.contains("Archive on db1: FAILING") && text.contains("check the repository"),
        "{}",
        shown(&listed)
    );
    let metrics = metrics_of(&api).await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "pgwarden_archive_failing{member=\"db1\"} 1"),
        "{metrics}"
    );

    // Writable again: the archiver's next round (a new segment wakes it)
    // pushes everything, in order.
    chmod_tree(&repo_dir, 0o755);
    let last = switch(member).await;
    stuck.push(last);
    wait_archived(&archive, repo.as_ref(), &stuck, member).await;
    let segments = archived_segments(&archive, repo.as_ref()).await;
    let from = segments
        .iter()
        .position(|s| *s == u64::from_str_radix(&first[8..], 16).unwrap());
    let from = from.expect("the first segment is archived");
    for pair in segments[from..].windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a gap in the archive: {segments:?}");
    }
    wait_event(&cluster, "archive_recovered").await;
    let listed = ctl(&["--api", &api, "list"], &[]).await;
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("Archive on db1: ok"),
        "{}",
        shown(&listed)
    );
}

async fn wait_event(cluster: &AgentCluster, kind: &str) {
    let seen = testkit::wait_for(&format!("a {kind} event"), DEADLINE, || async {
        let all = events(cluster).await;
        if all.iter().any(|e| e.kind == kind) {
            Ok(())
        } else {
            Err(all.iter().map(|e| e.kind.clone()).collect::<Vec<_>>())
        }
    })
    .await;
    seen.unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
}

/// `GET /metrics` of the API at `api`.
async fn metrics_of(api: &str) -> String {
    let client = api::client::ApiClient::new(None).unwrap();
    let call = api::client::Call::new(hyper::Method::GET, api, "/metrics");
    let reply = client.send(call).await.unwrap();
    String::from_utf8_lossy(&reply.body).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_repository_archives_and_a_missing_bucket_loses_nothing() {
    let server = S3Server::start().await.unwrap();
    let run_as = pg::RunAs::detect().unwrap();
    let holder = testkit::ScratchDir::new(&run_as).unwrap();
    // Readable by PostgreSQL's user, which runs wal push.
    let credentials = holder.join("s3.credentials");
    std::fs::write(
        &credentials,
        format!("[default]\naws_access_key_id = {ACCESS_KEY_ID}\naws_secret_access_key = {SECRET_ACCESS_KEY}\n"),
    )
    .unwrap();
    let cluster = cluster(format!(
        "repository = \"s3://pg-archive/main\"\ns3_endpoint = \"{}\"\ns3_credentials_file = \"{}\"",
        server.endpoint(),
        credentials.display()
    ))
    .await;
    let member = &cluster.members[0];
    // No bucket yet: every push fails, and PostgreSQL keeps the segments.
    let early = switch(member).await;
    let failing = testkit::wait_for("a failed push", DEADLINE, || async {
        match member
            .query_text("SELECT failed_count::text FROM pg_stat_archiver")
            .await
        {
            Ok(Some(n)) if n != "0" => Ok(()),
            other => Err(other),
        }
    })
    .await;
    failing.unwrap_or_else(|e| panic!("{e}\n{}", member.log_tail(30)));
    let log = postgres_log(member);
    assert!(
        log.contains("NoSuchBucket"),
        "PostgreSQL's log says why:\n{log}"
    );

    server.create_bucket("pg-archive").unwrap();
    let repo: Arc<dyn Repository> = Arc::new(
        S3Repository::open(&S3Options {
            bucket: "pg-archive".into(),
            prefix: "main".into(),
            endpoint: Some(server.endpoint()),
            region: REGION.into(),
            credentials: S3Credentials::File {
                path: credentials.clone(),
                profile: "default".into(),
            },
            ca_file: None,
        })
        .unwrap(),
    );
    let archive = archive_of(repo.clone(), member);
    let late = switch(member).await;
    wait_archived(&archive, repo.as_ref(), &[early, late], member).await;
}
