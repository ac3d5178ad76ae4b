//! Retiring a member (`pgwarden ctl remove`) and keeping a stopped member's
//! slot for `slot_retention_ms`, with real agents, PostgreSQL and etcd.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{api_url, binary, event_lines, healthy, shown, ALL, DEADLINE};
use testkit::{wait_for, AgentCluster, ClusterOptions};

async fn ctl(api: &str, args: &[&str]) -> Output {
    common::ctl(&[&["--api", api], args].concat(), &[]).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Whether `primary` has a replication slot for `member`; a failed query
/// is an error, never "no slot".
async fn slot_on(cluster: &AgentCluster, primary: &str, member: &str) -> Result<bool, String> {
    let sql =
        format!("SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = '{member}'");
    match cluster.member(primary).query_text(&sql).await {
        Ok(Some(count)) => Ok(count == "1"),
        other => Err(format!("counting {primary}'s slots: {other:?}")),
    }
}

async fn has_slot(cluster: &AgentCluster, primary: &str, member: &str) -> bool {
    slot_on(cluster, primary, member).await.unwrap()
}

async fn wait_slot(cluster: &AgentCluster, primary: &str, member: &str, present: bool) {
    let what = format!(
        "{member}'s slot on {primary} to be {}",
        if present { "there" } else { "gone" }
    );
    wait_for(&what, DEADLINE, || async {
        match slot_on(cluster, primary, member).await {
            Ok(seen) if seen == present => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));
}

/// Whether `member` has a status key; a failed read fails the test.
async fn has_status(cluster: &AgentCluster, member: &str) -> bool {
    let key = cluster.keys.member(member).unwrap();
    key.get(cluster.store.as_ref()).await.unwrap().is_some()
}

fn log_len(cluster: &AgentCluster, member: &str) -> usize {
    std::fs::read_to_string(&cluster.member(member).agent_log).map_or(0, |l| l.len())
}

/// Waits until the agent log of `member`, from byte `from`, says `text`.
async fn wait_log(cluster: &AgentCluster, member: &str, from: usize, text: &str) -> String {
    let what = format!("{member}'s agent to log {text:?}");
    let log = || {
        let all = std::fs::read_to_string(&cluster.member(member).agent_log).unwrap_or_default();
        all.get(from..).unwrap_or_default().to_string()
    };
    wait_for(&what, DEADLINE, || async {
        let log = log();
        if log.contains(text) {
            Ok(log)
        } else {
            Err(cluster.member(member).log_tail(5))
        }
    })
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()))
}

#[tokio::test]
async fn a_standby_is_retired_under_load_and_its_agent_refuses_to_rejoin_until_recloned() {
    let mut cluster = AgentCluster::start(binary(), ClusterOptions::default())
        .await
        .unwrap();
    let primary = healthy(&cluster, &ALL).await;
    cluster.wait_synchronous(DEADLINE).await.unwrap();
    let standbys: Vec<&str> = ALL.iter().copied().filter(|m| *m != primary).collect();
    let (keep, retire) = (standbys[0], standbys[1]);
    let api = api_url(&cluster, &primary).await;
    wait_slot(&cluster, &primary, retire, true).await;
    let mut load = cluster.workload();
    assert!(
        load.wait_acks(200, DEADLINE).await,
        "no progress\n{}",
        cluster.logs()
    );

    // Refusals change nothing, and say what to do.
    let leader = ctl(&api, &["remove", &primary]).await;
    assert_eq!(leader.status.code(), Some(1), "{}", shown(&leader));
    assert!(
        stderr(&leader).contains("is the leader: switch over to another member first"),
        "{}",
        shown(&leader)
    );
    let running = ctl(&api, &["remove", retire]).await;
    assert_eq!(running.status.code(), Some(1), "{}", shown(&running));
    assert!(
        stderr(&running).contains(&format!("the agent of {retire} is running"))
            && stderr(&running).contains("--force"),
        "{}",
        shown(&running)
    );
    let unknown = ctl(&api, &["remove", "db9"]).await;
    assert_eq!(unknown.status.code(), Some(1), "{}", shown(&unknown));
    assert!(
        stderr(&unknown).contains("there is no member db9"),
        "{}",
        shown(&unknown)
    );
    assert!(has_status(&cluster, retire).await);
    assert!(has_slot(&cluster, &primary, retire).await);

    // --force: its agent stops PostgreSQL, then it is removed; the primary
    // drops its slot at once (ctl waits for that and says so).
    let removed = ctl(&api, &["remove", retire, "--force"]).await;
    assert_eq!(
        removed.status.code(),
        Some(0),
        "{}\n{}",
        shown(&removed),
        cluster.logs()
    );
    assert!(
        stdout(&removed).contains(&format!("{retire}: no slot left on the primary {primary}")),
        "{}",
        shown(&removed)
    );
    assert!(!has_slot(&cluster, &primary, retire).await);
    wait_for(
        "the retired member's PostgreSQL to be stopped",
        DEADLINE,
        || async {
            let pids = cluster.member(retire).postgres_pids();
            if pids.is_empty() {
                Ok(())
            } else {
                Err(pids)
            }
        },
    )
    .await
    .unwrap();

    // Writes go on with the other two, and none acknowledged is lost.
    let before = load.acked();
    assert!(
        load.wait_acks(before + 200, DEADLINE).await,
        "no writes after the removal\n{}",
        cluster.logs()
    );
    let report = load.stop().await;
    let missing = cluster
        .missing_ids(&primary, &report.acked_ids())
        .await
        .unwrap();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost",
        missing.len()
    );
    healthy(&cluster, &[primary.as_str(), keep]).await;

    // Its agent still runs and publishes nothing; the cluster says why.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!has_status(&cluster, retire).await, "{}", cluster.logs());
    assert!(!has_slot(&cluster, &primary, retire).await);
    let list = ctl(&api, &["list"]).await;
    assert!(
        stdout(&list).contains(&format!(" Removed: {retire} at ")),
        "{}",
        shown(&list)
    );
    assert!(
        !stdout(&list).contains(&format!("| {retire} ")),
        "{}",
        shown(&list)
    );
    let kinds = event_lines(&cluster).await;
    assert!(
        kinds
            .iter()
            .any(|k| k.starts_with(&format!("{retire} member_removed: {retire} removed"))),
        "{kinds:?}"
    );
    let history = ctl(&api, &["-o", "json", "history"]).await;
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    assert!(
        history["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["removed"] == retire),
        "{history}"
    );
    let twice = ctl(&api, &["remove", retire]).await;
    assert_eq!(twice.status.code(), Some(1), "{}", shown(&twice));
    assert!(
        stderr(&twice).contains("already removed"),
        "{}",
        shown(&twice)
    );

    // Started again with the same data directory: it refuses, naming the
    // data directory and how to re-clone it.
    assert!(cluster.stop_agent(retire, Duration::from_secs(30)));
    let from = log_len(&cluster, retire);
    cluster.restart(retire).unwrap();
    let data_dir = cluster
        .member(retire)
        .instance
        .data_dir()
        .display()
        .to_string();
    let log = wait_log(&cluster, retire, from, "refusing to rejoin").await;
    let line = log
        .lines()
        .rfind(|l| l.contains("refusing to rejoin"))
        .unwrap();
    assert!(line.contains("re-clone it"), "{line}");
    assert!(
        line.contains(&format!("(data directory {data_dir})")),
        "{line}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!has_status(&cluster, retire).await, "{}", cluster.logs());
    assert!(cluster.member(retire).postgres_pids().is_empty());

    // Re-cloned (its data directory emptied): it is re-admitted and
    // streams again, with a slot.
    assert!(cluster.stop_agent(retire, Duration::from_secs(30)));
    std::fs::remove_dir_all(&data_dir).unwrap();
    cluster.restart(retire).unwrap();
    healthy(&cluster, &ALL).await;
    wait_slot(&cluster, &primary, retire, true).await;
    let list = ctl(&api, &["list"]).await;
    assert!(!stdout(&list).contains(" Removed: "), "{}", shown(&list));
}

#[tokio::test]
async fn a_stopped_members_slot_is_kept_for_the_retention_and_a_removed_ones_dropped_at_once() {
    let mut cluster = AgentCluster::start(binary(), ClusterOptions::default())
        .await
        .unwrap();
    let primary = healthy(&cluster, &ALL).await;
    let standbys: Vec<&str> = ALL.iter().copied().filter(|m| *m != primary).collect();
    // `standby` is away for maintenance, `gone` for good.
    let (standby, gone) = (standbys[0], standbys[1]);
    let api = api_url(&cluster, &primary).await;
    wait_slot(&cluster, &primary, standby, true).await;
    wait_slot(&cluster, &primary, gone, true).await;

    let bad = ctl(&api, &["config", "set", "slot_retention_ms=5"]).await;
    assert_eq!(bad.status.code(), Some(1), "{}", shown(&bad));
    assert!(
        stderr(&bad).contains("slot_retention_ms = 5 is out of bounds"),
        "{}",
        shown(&bad)
    );

    // Down for maintenance: its agent stops (and its PostgreSQL with it);
    // the primary keeps its slot (the default retention is 10 minutes)
    // while WAL is written.
    assert!(cluster.stop_agent(standby, Duration::from_secs(30)));
    assert!(cluster.stop_agent(gone, Duration::from_secs(30)));
    wait_for(
        "the stopped members' statuses to expire",
        DEADLINE,
        || async {
            if has_status(&cluster, standby).await || has_status(&cluster, gone).await {
                Err("still there")
            } else {
                Ok(())
            }
        },
    )
    .await
    .unwrap();
    // Its agent is down: no --force needed; it is known by its slot, which
    // goes at once while the other stopped member's stays.
    let removed = ctl(&api, &["remove", gone]).await;
    assert_eq!(
        removed.status.code(),
        Some(0),
        "{}\n{}",
        shown(&removed),
        cluster.logs()
    );
    assert!(
        stdout(&removed).contains(&format!("{gone}: no slot left on the primary {primary}")),
        "{}",
        shown(&removed)
    );
    assert!(!has_slot(&cluster, &primary, gone).await);
    assert!(has_slot(&cluster, &primary, standby).await);
    let writer = cluster.member(&primary);
    writer
        .execute("CREATE TABLE ballast AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 40000) g")
        .await
        .unwrap();
    writer.execute("SELECT pg_switch_wal()").await.unwrap();
    let held = wait_for(
        "ctl list to show the WAL the slot holds",
        DEADLINE,
        || async {
            let output = ctl(&api, &["-o", "json", "list"]).await;
            let view: serde_json::Value =
                serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
            let slots = view["members"]
                .as_array()
                .and_then(|ms| ms.iter().find(|m| m["leader"] == true))
                .map(|m| m["slots"].clone())
                .unwrap_or_default();
            let bytes = slots
                .as_array()
                .and_then(|s| s.iter().find(|s| s["member"] == standby))
                .and_then(|s| s["retained_bytes"].as_u64())
                .unwrap_or(0);
            if bytes >= 16 << 20 {
                Ok(bytes)
            } else {
                Err(shown(&output))
            }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", cluster.logs()));
    let list = ctl(&api, &["list"]).await;
    let table = stdout(&list);
    assert!(table.contains("| WAL held in MB |"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("| {standby} ")))
        .unwrap_or_else(|| panic!("no row for {standby}:\n{table}"));
    assert!(row.contains("down (slot kept)"), "{table}");
    assert!(!table.contains(&format!("| {gone} ")), "{table}");
    assert!(table.contains(&format!(" Removed: {gone} at ")), "{table}");
    // The list is read a moment after the status: the writes go on and the
    // held WAL only grows meanwhile (by more than a MB on a loaded machine).
    let shown_mb: u64 = row
        .split('|')
        .map(str::trim)
        .rfind(|cell| !cell.is_empty())
        .and_then(|cell| cell.parse().ok())
        .unwrap_or_else(|| panic!("no WAL held in the row:\n{table}"));
    let held_mb = (held + (1 << 19)) >> 20;
    assert!(
        (held_mb..=held_mb + 16).contains(&shown_mb),
        "{held} bytes held; {table}"
    );
    // Longer than the short retention below, the default one still keeps it.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(has_slot(&cluster, &primary, standby).await);

    // A short retention: the slot goes, and the WAL with it.
    let set = ctl(&api, &["config", "set", "slot_retention_ms=10000"]).await;
    assert_eq!(set.status.code(), Some(0), "{}", shown(&set));
    wait_slot(&cluster, &primary, standby, false).await;
    let list = ctl(&api, &["list"]).await;
    assert!(
        !stdout(&list).contains("down (slot kept)"),
        "{}",
        shown(&list)
    );
}
