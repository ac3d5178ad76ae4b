//! `[backup] replica_from` on real PostgreSQL 15, etcd and agents: a
//! standby is built by pg_basebackup while the repository has no backup,
//! and from the newest backup plus the archive once it has one (a new
//! member, a reinit), then streams with every row.

mod common;

use std::sync::Arc;

use backup::repo::PosixRepository;
use backup::Repository;
use common::backups::{archive_everything, repository_dir, take_backup, text};
use common::{api_url, binary, ctl, events, healthy, shown, DEADLINE};
use testkit::{AgentCluster, AgentMember, ClusterOptions};

/// The details of `member`'s `nth` event of `kind` (from 1), once there.
async fn nth_event(cluster: &AgentCluster, member: &str, kind: &str, nth: usize) -> String {
    let what = format!("{member}'s event {kind} number {nth}");
    let waited = testkit::wait_for(&what, DEADLINE, || async {
        let found: Vec<String> = events(cluster)
            .await
            .into_iter()
            .filter(|e| e.member == member && e.kind == kind)
            .map(|e| e.details)
            .collect();
        found.get(nth - 1).cloned().ok_or(found)
    })
    .await;
    waited.unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()))
}

/// Waits until `member` answers `sql` with `expected`.
async fn wait_answer(cluster: &AgentCluster, member: &AgentMember, sql: &str, expected: &str) {
    let what = format!("{} to answer {sql} with {expected}", member.name);
    let waited = testkit::wait_for(&what, DEADLINE, || async {
        match member.query_text(sql).await {
            Ok(Some(answer)) if answer == expected => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    waited.unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standbys_come_from_the_newest_backup_and_the_archive_else_from_pg_basebackup() {
    let (_holder, repo_dir) = repository_dir();
    let repo: Arc<dyn Repository> = Arc::new(PosixRepository::new(&repo_dir));
    // replica_from left out: backup first, then pg_basebackup.
    let mut cluster = AgentCluster::start(
        binary(),
        ClusterOptions {
            members: 2,
            backup: Some(format!("repository = \"{}\"", repo_dir.display())),
            ..ClusterOptions::default()
        },
    )
    .await
    .unwrap();
    let primary = healthy(&cluster, &["db1", "db2"]).await;
    let standby = if primary == "db1" { "db2" } else { "db1" };

    // No backup yet: the standby fell back to pg_basebackup, and said why.
    let cloned = nth_event(&cluster, standby, "cloned", 1).await;
    assert_eq!(
        cloned,
        format!(
            "cloned from {primary} by pg_basebackup (not from a backup: the repository {} \
             has no complete backup of this cluster (system identifier {}))",
            repo_dir.display(),
            text(
                cluster.member(&primary),
                "SELECT system_identifier::text FROM pg_control_system()"
            )
            .await
        )
    );
    let log = std::fs::read_to_string(&cluster.member(standby).agent_log).unwrap();
    assert!(
        log.contains("not building this standby from a backup: the repository")
            && log.contains("trying pg_basebackup next"),
        "{log}"
    );

    // 100 rows in the backup, 100 after it in the archive only.
    let db_primary = cluster.member(&primary);
    db_primary
        .execute("CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .unwrap();
    let backup = take_backup(&repo, db_primary).await;
    db_primary
        .execute("INSERT INTO t SELECT generate_series(101, 200)")
        .await
        .unwrap();
    archive_everything(&repo, db_primary).await;

    // A new member in the standby's place: the same name, an empty host.
    cluster.kill_host(standby);
    let data_dir = cluster.member(standby).instance.data_dir().to_path_buf();
    std::fs::remove_dir_all(&data_dir).unwrap();
    cluster.restart(standby).unwrap();
    healthy(&cluster, &["db1", "db2"]).await;
    let from_backup = format!(
        "by restoring backup {} from {} and replaying the archive",
        backup.id,
        repo_dir.display()
    );
    assert_eq!(
        nth_event(&cluster, standby, "cloned", 2).await,
        format!("cloned from {primary} {from_backup}")
    );
    let db_standby = cluster.member(standby);
    wait_answer(
        &cluster,
        db_standby,
        "SELECT count(*) || ' ' || max(i) FROM t",
        "200 200",
    )
    .await;
    // It streams: a row written now reaches it.
    cluster
        .member(&primary)
        .execute("INSERT INTO t VALUES (201)")
        .await
        .unwrap();
    wait_answer(&cluster, db_standby, "SELECT count(*)::text FROM t", "201").await;

    // A reinit is built the same way.
    let api = api_url(&cluster, standby).await;
    let reinit = ctl(&["--api", &api, "reinit", standby], &[]).await;
    assert_eq!(
        reinit.status.code(),
        Some(0),
        "{}\n{}",
        shown(&reinit),
        cluster.logs()
    );
    assert_eq!(
        nth_event(&cluster, standby, "recloned", 1).await,
        format!("re-cloned from {primary} {from_backup} on request")
    );
    healthy(&cluster, &["db1", "db2"]).await;
    cluster
        .member(&primary)
        .execute("INSERT INTO t VALUES (202)")
        .await
        .unwrap();
    wait_answer(
        &cluster,
        cluster.member(standby),
        "SELECT count(*) || ' ' || max(i) FROM t",
        "202 202",
    )
    .await;
}
