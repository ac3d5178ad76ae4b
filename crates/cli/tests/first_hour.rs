//! A new operator's first hour (issue 19): an agent run as `postgres`, as
//! the packaged unit runs it, whose data directory's parent root made.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, ctl};
use nix::unistd::{chown, User};
use testkit::etcd::EtcdCluster;

/// The agent, stopped by PID when the test ends, however it ends.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        testkit::process::terminate(
            self.0.id() as i32,
            nix::sys::signal::Signal::SIGTERM,
            Duration::from_secs(10),
        );
        let _ = self.0.wait();
    }
}

/// The `action_failed` events, oldest first.
async fn failures(api: &str) -> Vec<String> {
    let output = ctl(&["--api", api, "-o", "json", "events"], &[]).await;
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["kind"] == "action_failed")
        .map(|event| event["details"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_cannot_create_its_data_directory_backs_off_and_says_so() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: running the agent as postgres needs root");
        return;
    }
    let pg = User::from_name("postgres")
        .unwrap()
        .expect("a postgres user");
    let run_as = pg::RunAs::user("postgres").unwrap();
    let etcd = EtcdCluster::start(1).await.unwrap();
    let dir = testkit::ScratchDir::new(&run_as).unwrap();
    let d = dir.path().display().to_string();
    // What `mkdir` as root makes, as the issue's operator did.
    let parent = dir.join("15");
    std::fs::create_dir(&parent).unwrap();
    std::fs::set_permissions(&parent, PermissionsExt::from_mode(0o755)).unwrap();
    for file in ["su.pw", "repl.pw"] {
        let path = dir.join(file);
        std::fs::write(&path, "pw\n").unwrap();
        chown(&path, Some(pg.uid), Some(pg.gid)).unwrap();
    }
    let api_port = testkit::free_port();
    let api = format!("http://127.0.0.1:{api_port}");
    let config = dir.join("pgwarden.toml");
    std::fs::write(
        &config,
        format!(
            r#"[member]
name = "db1"
data_dir = "{d}/15/main"
bin_dir = "{bin}"
port = {port}
socket_dir = "{d}"

[store]
endpoints = {endpoints:?}
cluster = "firsthour"

[api]
listen = "127.0.0.1:{api_port}"

[credentials.superuser]
password_file = "{d}/su.pw"

[credentials.replication]
password_file = "{d}/repl.pw"
"#,
            bin = testkit::postgres::bin_dir().unwrap().display(),
            port = testkit::free_port(),
            endpoints = etcd.endpoints(),
        ),
    )
    .unwrap();
    let log_path = dir.join("agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let agent = Agent(
        Command::new(binary())
            .args(["agent", "-c"])
            .arg(&config)
            .uid(pg.uid.as_raw())
            .gid(pg.gid.as_raw())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // ctl list says it is failing, and why.
    let listed = testkit::wait_for("ctl list to show db1 failing", common::DEADLINE, || async {
        let output = ctl(&["--api", &api, "list"], &[]).await;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if text.contains("stopped, failing") && text.contains(" Failing on db1: ") {
            Ok(text)
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&output.stderr)))
        }
    })
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", log()));
    eprintln!("{listed}");
    assert!(
        listed.contains("Permission denied") && listed.contains("failed"),
        "{listed}"
    );

    // Over the next seconds the attempts go on, further and further apart,
    // and the event log hears of them a few times with a count, not once
    // per round (which made 27 events in 13 s).
    let start = Instant::now();
    let before = failures(&api).await;
    let watched = Duration::from_secs(10);
    // Not waiting for a state: the point is what does *not* happen in
    // this window.
    tokio::time::sleep(watched.saturating_sub(start.elapsed())).await;
    let after = failures(&api).await;
    assert!(
        !before.is_empty() && after.len() <= 4,
        "{} failure events in the first {} s: {after:#?}\n{}",
        after.len(),
        watched.as_secs(),
        log()
    );
    assert!(
        after
            .iter()
            .any(|e| e.contains("times in a row") && e.contains("Permission denied")),
        "{after:#?}\n{}",
        log()
    );
    eprintln!("{after:#?}");
    let rounds = log().matches("InitDb failed: ").count();
    assert!(
        (3..=8).contains(&rounds),
        "{rounds} attempts logged in about {} s (0.5 s doubling to 10 s)\n{}",
        watched.as_secs() + 1,
        log()
    );
    drop(agent);
}
