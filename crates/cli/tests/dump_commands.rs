//! `pgwarden dump run|list|fetch` against a member's own PostgreSQL: a
//! dump taken, skipped while nothing changes, fetched and restored with
//! pg_restore; unknown databases and ids are clear errors.

mod common;

use std::process::Output;

use common::backups::{on, pg_restore_into, repository_dir};
use common::{binary, healthy, shown, DEADLINE};
use testkit::{AgentCluster, ClusterOptions};

async fn dump_cmd(args: &[&str]) -> Output {
    common::pgwarden(&[&["dump"], args].concat()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_run_list_and_fetch_for_pg_restore() {
    let (holder, repo_dir) = repository_dir();
    let options = ClusterOptions {
        members: 1,
        backup: Some(format!("repository = \"{}\"", repo_dir.display())),
        ..ClusterOptions::default()
    };
    let cluster = AgentCluster::start(binary(), options).await.unwrap();
    healthy(&cluster, &["db1"]).await;
    let member = &cluster.members[0];
    member.execute("CREATE DATABASE app").await.unwrap();
    let app = on(member, "app").await;
    app.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 1000) i",
    )
    .await
    .unwrap();
    let config = member.config_file.display().to_string();

    let run = dump_cmd(&["run", "-c", &config, "--database", "app"]).await;
    assert!(run.status.success(), "{}", shown(&run));
    assert!(shown(&run).contains("app: taken "), "{}", shown(&run));

    // Nothing written since: skipped (once background WAL, if any, settled).
    testkit::wait_for("a dump to be skipped", DEADLINE, || async {
        let run = dump_cmd(&["run", "-c", &config, "--database", "app", "--keep", "1"]).await;
        let text = shown(&run);
        match run.status.success() && text.contains("app: skipped, nothing changed") {
            true => Ok(()),
            false => Err(text),
        }
    })
    .await
    .unwrap();

    let list = dump_cmd(&["list", "-c", &config, "--json"]).await;
    assert!(list.status.success(), "{}", shown(&list));
    let dumps: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let dumps = dumps.as_array().unwrap();
    assert_eq!(dumps.len(), 1, "--keep 1: {dumps:?}");
    assert_eq!(dumps[0]["database"], "app");
    let id = dumps[0]["id"].as_str().unwrap().to_string();
    let table = dump_cmd(&["list", "-c", &config]).await;
    assert!(
        shown(&table).contains(&format!("app       {id}")),
        "{}",
        shown(&table)
    );

    let file = holder.join("app.dump");
    let file_arg = file.display().to_string();
    let fetch = dump_cmd(&[
        "fetch",
        "-c",
        &config,
        &id,
        "--database",
        "app",
        "--out",
        &file_arg,
    ])
    .await;
    assert!(fetch.status.success(), "{}", shown(&fetch));
    pg_restore_into(member, &file, "restored").await;
    let rows = "SELECT count(*)::text || md5(string_agg(v, ',' ORDER BY id)) FROM t";
    let restored = on(member, "restored").await;
    let got: String = restored.query_one(rows, &[]).await.unwrap().get(0);
    let want: String = app.query_one(rows, &[]).await.unwrap().get(0);
    assert_eq!(got, want);

    // Bad input.
    let unknown_db = dump_cmd(&["run", "-c", &config, "--database", "nope"]).await;
    assert!(!unknown_db.status.success());
    assert!(
        shown(&unknown_db).contains("database \"nope\" does not exist"),
        "{}",
        shown(&unknown_db)
    );
    let nope = dump_cmd(&["list", "-c", &config, "--database", "nope"]).await;
    assert!(
        shown(&nope).contains("(no complete dump)"),
        "{}",
        shown(&nope)
    );
    let unknown_id = dump_cmd(&[
        "fetch",
        "-c",
        &config,
        "20000101-000000",
        "--database",
        "app",
        "--out",
        &file_arg,
    ])
    .await;
    assert!(!unknown_id.status.success());
    assert!(
        shown(&unknown_id).contains("no dump 20000101-000000 of database \"app\""),
        "{}",
        shown(&unknown_id)
    );
    let unwritable = dump_cmd(&[
        "fetch",
        "-c",
        &config,
        &id,
        "--database",
        "app",
        "--out",
        "/nonexistent/dir/app.dump",
    ])
    .await;
    assert!(!unwritable.status.success());
    assert!(
        shown(&unwritable).contains("could not write /nonexistent/dir/app.dump"),
        "{}",
        shown(&unwritable)
    );
}
