//! Logical dumps on a real PostgreSQL 15: taken, skipped while nothing
//! changes, taken again after a write, restored with pg_restore, a failed
//! pg_dump leaving nothing, and retention.

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use backup::dump::{self, DumpError, DumpManifest, DumpStatus, DumpTarget};
use backup::repo::{PosixRepository, RepoPath};
use backup::Repository;
use testkit::{wait_for, PgCluster, PgNode};

fn target(cluster: &PgCluster) -> DumpTarget {
    let spec = cluster.nodes[0].instance.spec();
    DumpTarget {
        bin_dir: spec.bin_dir.clone(),
        host: spec.endpoint.host.clone(),
        port: spec.endpoint.port,
        user: spec.superuser.name.clone(),
        password: spec.superuser.password.clone(),
        run_as: cluster.run_as.clone(),
        // Small, so that a dump spans several chunks.
        chunk_size: 16 << 10,
    }
}

/// Runs a dump of `database` until it is taken (a dump in the same second
/// as the previous one is refused: ids are to the second).
async fn taken(
    repo: &dyn Repository,
    target: &DumpTarget,
    database: &str,
    force: bool,
    keep: Option<NonZeroUsize>,
) -> DumpManifest {
    wait_for("a dump to be taken", Duration::from_secs(30), || async {
        let mut outcomes = dump::run(repo, target, &[database.to_string()], force, keep).await;
        match outcomes.pop().unwrap().status {
            DumpStatus::Taken(manifest) => Ok(manifest),
            DumpStatus::Failed(DumpError::IdTaken { .. }) => Err("same second".to_string()),
            other => panic!("dump of {database}: {other:?}"),
        }
    })
    .await
    .unwrap()
}

async fn query(node: &PgNode, database: &str, sql: &str) -> String {
    let spec = node.instance.spec();
    let (client, connection) = tokio_postgres::Config::new()
        .host(&spec.endpoint.host)
        .port(spec.endpoint.port)
        .user(&spec.superuser.name)
        .password(&spec.superuser.password)
        .dbname(database)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    if !sql.starts_with("SELECT") {
        client.batch_execute(sql).await.unwrap();
        return String::new();
    }
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn pg_restore(node: &PgNode, database: &str, file: &Path) {
    let spec = node.instance.spec();
    let output = tokio::process::Command::new(spec.bin_dir.join("pg_restore"))
        .arg(format!("--host={}", spec.endpoint.host))
        .arg(format!("--port={}", spec.endpoint.port))
        .arg(format!("--username={}", spec.superuser.name))
        .arg(format!("--dbname={database}"))
        .arg(file)
        .env("PGPASSWORD", &spec.superuser.password)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

const ROWS: &str =
    "SELECT count(*)::text || ' ' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t";

#[tokio::test]
async fn dumps_are_taken_skipped_restored_and_expired() {
    let cluster = PgCluster::start(0).await.unwrap();
    let node = &cluster.nodes[0];
    let repo = PosixRepository::new(cluster.dir.join("repo"));
    std::fs::create_dir(cluster.dir.join("repo")).unwrap();
    let target = target(&cluster);
    node.execute("CREATE DATABASE app").await.unwrap();
    let app = |sql: &'static str| query(node, "app", sql);
    app("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    app("INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 5000) i").await;

    let first = taken(&repo, &target, "app", false, None).await;
    assert!(first.chunks.len() > 1, "{first:?}");
    assert_eq!(first.taken_from, "primary");

    // Nothing written: skipped (once background WAL, if any, settled).
    let skipped = wait_for("a dump to be skipped", Duration::from_secs(60), || async {
        let mut outcomes = dump::run(&repo, &target, &["app".to_string()], false, None).await;
        match outcomes.pop().unwrap().status {
            DumpStatus::Skipped { newest, .. } => Ok(newest),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    let before_write = dump::newest(&repo, "app").await.unwrap().unwrap();
    assert_eq!(skipped, before_write.id);

    app("INSERT INTO t VALUES (0, 'after the dump')").await;
    let after = taken(&repo, &target, "app", false, None).await;
    assert_ne!(after.wal_position, before_write.wal_position);

    // Fetched and restored into a new database: the same rows.
    let file = cluster.dir.join("app.dump");
    dump::fetch(&repo, "app", &after.id, &file).await.unwrap();
    node.execute("CREATE DATABASE restored").await.unwrap();
    pg_restore(node, "restored", &file).await;
    assert_eq!(query(node, "restored", ROWS).await, app(ROWS).await);

    // Bad input says what is wrong.
    let err = dump::fetch(&repo, "app", "20000101-000000", &file)
        .await
        .unwrap_err();
    assert!(matches!(err, DumpError::UnknownDump { .. }), "{err}");
    let err = dump::fetch(&repo, "app", &after.id, Path::new("/nonexistent/dir/x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/dir/x"), "{err}");

    // A failing pg_dump leaves nothing.
    let mut outcomes = dump::run(&repo, &target, &["nope".to_string()], true, None).await;
    match outcomes.pop().unwrap().status {
        DumpStatus::Failed(e @ DumpError::PgDump { .. }) => {
            assert!(e.to_string().contains("\"nope\" does not exist"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(dump::list(&repo, Some("nope")).await.unwrap().is_empty());
    assert!(repo
        .list(&RepoPath::new("dumps/nope").unwrap())
        .await
        .unwrap()
        .is_empty());

    // Retention keeps the newest two, manifests and chunks.
    let keep = NonZeroUsize::new(2);
    let newest = taken(&repo, &target, "app", true, keep).await;
    let ids: Vec<String> = dump::list(&repo, Some("app"))
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, vec![after.id.clone(), newest.id.clone()]);
    let objects = repo
        .list(&RepoPath::new("dumps/app").unwrap())
        .await
        .unwrap();
    assert!(objects.iter().all(|o| !o.path.as_str().contains(&first.id)));
}
