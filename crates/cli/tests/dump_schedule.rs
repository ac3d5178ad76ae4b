//! The logical dumps a cluster takes after its base backups
//! (`dump_databases`), on real PostgreSQL 15 and etcd: the member that took
//! the backup dumps from its standby, a dump fetched restores the rows, a
//! backup with nothing changed skips the dump, retention keeps `dump_keep`;
//! and `ctl backup list` through the API shows what `pgwarden backup list`
//! reads from the repository.

mod common;

use std::process::Output;

use common::backups::{on, pg_restore_into, repository_dir, text};
use common::{api_url, binary, ctl, healthy, shown, ALL, DEADLINE};
use serde_json::Value;
use store::cluster::DynamicConfig;
use testkit::{wait_for, AgentCluster, ClusterOptions};

/// Waits until every member replayed what `primary` has written, so that a
/// dump on whichever standby takes the backup sees it.
async fn replayed(cluster: &AgentCluster, primary: &str) {
    let lsn = text(cluster.member(primary), "SELECT pg_current_wal_lsn()::text").await;
    for member in cluster.members.iter().filter(|m| m.name != primary) {
        let sql = format!("SELECT (pg_last_wal_replay_lsn() >= '{lsn}')::text");
        let waited = wait_for(
            &format!("{} to replay {lsn}", member.name),
            DEADLINE,
            || {
                let sql = sql.clone();
                async move {
                    match member.query_text(&sql).await {
                        Ok(Some(t)) if t == "true" => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                }
            },
        )
        .await;
        waited.unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    }
}

async fn backup_run(cluster: &AgentCluster, api: &str, args: &[&str]) {
    let out = ctl(&[&["--api", api, "backup", "run"], args].concat(), &[]).await;
    assert!(out.status.success(), "{}\n{}", shown(&out), cluster.logs());
}

async fn pgwarden(args: &[&str]) -> Output {
    let out = common::pgwarden(args).await;
    assert!(out.status.success(), "{}", shown(&out));
    out
}

/// `pgwarden dump list --json` of app, oldest first.
async fn dumps(config: &str) -> Vec<Value> {
    let out = pgwarden(&["dump", "list", "-c", config, "--database", "app", "--json"]).await;
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The dump events so far, as (kind, details).
async fn dump_events(cluster: &AgentCluster) -> Vec<(String, String)> {
    common::events(cluster)
        .await
        .into_iter()
        .filter(|e| e.kind.starts_with("dump_"))
        .map(|e| (e.kind, e.details))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_bring_dumps_skipped_when_nothing_changed_and_kept_to_dump_keep() {
    let (holder, repo_dir) = repository_dir();
    let mut config = DynamicConfig {
        backup_full_interval_ms: 86_400_000,
        dump_databases: vec!["app".into()],
        dump_keep: 2,
        ..DynamicConfig::default()
    };
    // No autovacuum (its ANALYZE ends transactions) while a test looks at
    // whether any ended.
    config.parameters.insert("autovacuum".into(), "off".into());
    let options = ClusterOptions {
        config,
        backup: Some(format!("repository = \"{}\"", repo_dir.display())),
        ..ClusterOptions::default()
    };
    let cluster = AgentCluster::start(binary(), options).await.unwrap();
    let primary = healthy(&cluster, &ALL).await;
    let writer = cluster.member(&primary);
    writer.execute("CREATE DATABASE app").await.unwrap();
    let app = on(writer, "app").await;
    app.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 2000) i",
    )
    .await
    .unwrap();
    replayed(&cluster, &primary).await;
    let api = api_url(&cluster, &primary).await;
    let config = writer.config_file.display().to_string();

    // The backup, then the dump from the standby that took it.
    backup_run(&cluster, &api, &[]).await;
    let first = dumps(&config).await;
    assert_eq!(first.len(), 1, "{first:?}\n{}", cluster.logs());
    assert_eq!(first[0]["taken_from"], "standby", "{first:?}");
    let first_id = first[0]["id"].as_str().unwrap().to_string();
    let events = dump_events(&cluster).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "dump_done");
    assert!(
        events[0]
            .1
            .starts_with(&format!("dump {first_id} of app done on ")),
        "{events:?}"
    );

    // Fetched and restored into a new database: the same rows.
    let file = holder.join("app.dump");
    let file_arg = file.display().to_string();
    pgwarden(&[
        "dump",
        "fetch",
        "-c",
        &config,
        &first_id,
        "--database",
        "app",
        "--out",
        &file_arg,
    ])
    .await;
    pg_restore_into(writer, &file, "restored").await;
    let rows = "SELECT count(*)::text || ' ' || md5(string_agg(v, ',' ORDER BY id)) FROM t";
    let restored: String = on(writer, "restored")
        .await
        .query_one(rows, &[])
        .await
        .unwrap()
        .get(0);
    let source: String = app.query_one(rows, &[]).await.unwrap().get(0);
    assert_eq!(restored, source);
    assert!(restored.starts_with("2000 "), "{restored}");
    writer.execute("DROP DATABASE restored").await.unwrap();
    replayed(&cluster, &primary).await;

    // The restore ended transactions: the next backup brings a dump. The
    // one after, forced with no transaction in between (the backup moves
    // the WAL: its segment switch), skips it.
    backup_run(&cluster, &api, &["--force"]).await;
    backup_run(&cluster, &api, &["--force"]).await;
    let events = dump_events(&cluster).await;
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["dump_done", "dump_done", "dump_skipped"],
        "{events:?}"
    );
    assert!(
        events[2].1.contains("no transaction ended since dump"),
        "{events:?}"
    );
    let kept = dumps(&config).await;
    assert_eq!(kept.len(), 2, "{kept:?}");

    // A write, a backup: a new dump, and only dump_keep = 2 kept.
    app.batch_execute("INSERT INTO t VALUES (0, 'after')")
        .await
        .unwrap();
    replayed(&cluster, &primary).await;
    backup_run(&cluster, &api, &[]).await;
    let events = dump_events(&cluster).await;
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[3].0, "dump_done", "{events:?}");
    assert!(
        events[3]
            .1
            .contains(&format!("retention removed {first_id}")),
        "{events:?}"
    );
    let kept = dumps(&config).await;
    let ids: Vec<&str> = kept.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(!ids.contains(&first_id.as_str()), "{ids:?}");

    // The age of the last dump, on any member.
    let metrics = ctl_metrics(&api).await;
    assert!(
        metrics.contains("pgwarden_dump_last_success_age_seconds{database=\"app\"} "),
        "{metrics}"
    );
    assert!(
        metrics.contains("pgwarden_dump_failures_total{database=\"app\"} 0"),
        "{metrics}"
    );

    // ctl backup list shows what backup list reads from the repository.
    let local = pgwarden(&["backup", "list", "-c", &config]).await;
    let remote = ctl(&["--api", &api, "backup", "list"], &[]).await;
    assert!(remote.status.success(), "{}", shown(&remote));
    assert_eq!(
        String::from_utf8_lossy(&remote.stdout),
        String::from_utf8_lossy(&local.stdout)
    );
    let table = String::from_utf8_lossy(&remote.stdout).into_owned();
    assert!(table.contains("Recovery window"), "{table}");
    let local = pgwarden(&["backup", "list", "-c", &config, "--json"]).await;
    let remote = ctl(&["--api", &api, "-o", "json", "backup", "list"], &[]).await;
    assert!(remote.status.success(), "{}", shown(&remote));
    let local: Value = serde_json::from_slice(&local.stdout).unwrap();
    let remote: Value = serde_json::from_slice(&remote.stdout).unwrap();
    assert_eq!(remote, local);
    let backups = remote["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 4, "{remote}");
    let newest = remote["timelines"][0]["reachable"][0].clone();
    assert_eq!(newest["from"]["backup"], backups[0]["id"], "{remote}");
}

async fn ctl_metrics(api: &str) -> String {
    let client = api::ApiClient::new(None).unwrap();
    let reply = client
        .send(api::Call::new(hyper::Method::GET, api, "/metrics"))
        .await
        .unwrap();
    String::from_utf8_lossy(&reply.body).into_owned()
}
