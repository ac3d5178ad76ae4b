//! `[bootstrap] from_backup` on real PostgreSQL 15, etcd and agents: a
//! lost cluster comes back as a new one from its base backup and archive,
//! recovered to a point in time, and its other members clone from it.

mod common;

use std::sync::Arc;

use backup::repo::PosixRepository;
use backup::Repository;
use common::backups::{archive_everything, repository_dir, take_backup, text};
use common::{binary, events, healthy, DEADLINE};
use testkit::{AgentCluster, ClusterOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_cluster_comes_back_from_its_backup_at_a_point_in_time() {
    let (_holder, repo_dir) = repository_dir();
    let repo: Arc<dyn Repository> = Arc::new(PosixRepository::new(&repo_dir));
    let backup_table = format!("repository = \"{}\"", repo_dir.display());

    // The cluster that will be lost: 100 rows in its backup, 100 more
    // before the target, 100 after.
    let (target, backup_id) = {
        let source = AgentCluster::start(
            binary(),
            ClusterOptions {
                members: 1,
                backup: Some(backup_table.clone()),
                ..ClusterOptions::default()
            },
        )
        .await
        .unwrap();
        healthy(&source, &["db1"]).await;
        let db1 = &source.members[0];
        db1.execute("CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 100)")
            .await
            .unwrap();
        let backup = take_backup(&repo, db1).await;
        db1.execute("INSERT INTO t SELECT generate_series(101, 200)")
            .await
            .unwrap();
        // After the commit of row 200 and before the next one: the clock
        // only moves on.
        let target = text(
            db1,
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
        )
        .await;
        db1.execute("INSERT INTO t SELECT generate_series(201, 300)")
            .await
            .unwrap();
        archive_everything(&repo, db1).await;
        (target, backup.id)
        // Dropped here: etcd, the agent and PostgreSQL are gone.
    };

    let restored = AgentCluster::start(
        binary(),
        ClusterOptions {
            members: 2,
            backup: Some(format!(
                "{backup_table}\n\n[bootstrap]\nfrom_backup = \"latest\"\nrecovery_target = \"{target}\""
            )),
            ..ClusterOptions::default()
        },
    )
    .await
    .unwrap();
    let primary = healthy(&restored, &["db1", "db2"]).await;
    let primary = restored.member(&primary);
    assert_eq!(
        text(primary, "SELECT count(*) || ' ' || max(i) FROM t").await,
        "200 200",
        "exactly the rows committed before {target}"
    );
    let initialized: Vec<String> = events(&restored)
        .await
        .into_iter()
        .filter(|e| e.kind == "initialized")
        .map(|e| e.details)
        .collect();
    assert_eq!(initialized.len(), 1, "{initialized:?}");
    assert!(
        initialized[0].starts_with(&format!("restored backup {backup_id} from ")),
        "{initialized:?}"
    );
    // Recovery is over for good: no target left for a later start.
    let auto_conf =
        std::fs::read_to_string(primary.instance.data_dir().join("postgresql.auto.conf")).unwrap();
    assert!(!auto_conf.contains("recovery_target"), "{auto_conf}");

    // A cluster again: it takes writes, its standby has them, and its new
    // timeline goes on in the same archive.
    primary
        .execute("INSERT INTO t VALUES (1000)")
        .await
        .unwrap();
    let standby = restored
        .members
        .iter()
        .find(|m| m.name != primary.name)
        .unwrap();
    let replicated = testkit::wait_for("the standby has the new row", DEADLINE, || async {
        match standby.query_text("SELECT count(*)::text FROM t").await {
            Ok(Some(n)) if n == "201" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    replicated.unwrap_or_else(|e| panic!("{e}\n{}", restored.logs()));
    let segment = archive_everything(&repo, primary).await;
    assert!(
        !segment.starts_with("00000001"),
        "the restored cluster writes a new timeline: {segment}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_with_no_backup_to_restore_says_so_and_leaves_nothing() {
    let (_holder, repo_dir) = repository_dir();
    let cluster = AgentCluster::start(
        binary(),
        ClusterOptions {
            members: 1,
            backup: Some(format!(
                "repository = \"{}\"\n\n[bootstrap]\nfrom_backup = \"latest\"",
                repo_dir.display()
            )),
            ..ClusterOptions::default()
        },
    )
    .await
    .unwrap();
    let member = &cluster.members[0];
    let said = testkit::wait_for(
        "the agent to say why it cannot bootstrap",
        DEADLINE,
        || async {
            let log = member.log_tail(200);
            if log.contains("has no complete backup to restore from") {
                Ok(())
            } else {
                Err(log)
            }
        },
    )
    .await;
    said.unwrap_or_else(|e| panic!("{e}"));
    let data_dir = member.instance.data_dir();
    let left: Vec<_> = std::fs::read_dir(data_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{} holds {left:?}", data_dir.display());
}
