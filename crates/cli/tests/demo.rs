//! The README's first command, end to end: the default run on a narrow
//! terminal, and `--keep` with what an operator does next.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::binary;

fn demo(args: &[&str], columns: &str) -> String {
    let out: Output = Command::new(binary())
        .arg("demo")
        .args(args)
        .env("COLUMNS", columns)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout
}

/// What the summary says.
#[derive(Debug)]
struct Summary {
    failover_s: f64,
    lost: u64,
    acknowledged: u64,
    switchover_gap_s: f64,
    restored: u64,
    dropped: u64,
}

/// Reads `demo ok: failover 1.4 s, lost 0 of 5321 acknowledged writes,
/// switchover gap 0.3 s, restored 1000 of 1000 dropped rows`, the last line.
fn summary(stdout: &str) -> Summary {
    let last = stdout.lines().last().unwrap_or_default();
    let words: Vec<&str> = last.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let shape = [
        "demo",
        "ok:",
        "failover",
        "#",
        "s",
        "lost",
        "#",
        "of",
        "#",
        "acknowledged",
        "writes",
        "switchover",
        "gap",
        "#",
        "s",
        "restored",
        "#",
        "of",
        "#",
        "dropped",
        "rows",
    ];
    assert_eq!(
        words.len(),
        shape.len(),
        "not the summary: {last}\n{stdout}"
    );
    for (word, expected) in words.iter().zip(shape) {
        assert!(expected == "#" || *word == expected, "{last}");
    }
    let number = |i: usize| -> f64 { words[i].parse().unwrap_or_else(|_| panic!("{last}")) };
    Summary {
        failover_s: number(3),
        lost: number(6) as u64,
        acknowledged: number(8) as u64,
        switchover_gap_s: number(13),
        restored: number(16) as u64,
        dropped: number(18) as u64,
    }
}

/// Where the demo says it works.
fn directory(stdout: &str) -> PathBuf {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("directory "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no directory line: {stdout}"))
}

fn check_story(stdout: &str) {
    let s = summary(stdout);
    assert_eq!(s.lost, 0, "{stdout}");
    assert!(s.acknowledged >= 100, "{s:?}");
    assert!(s.failover_s > 0.0 && s.failover_s < 30.0, "{s:?}");
    assert!(s.switchover_gap_s < 30.0, "{s:?}");
    // The last act: the dropped table, restored as it was before the drop.
    assert!(s.dropped > 0 && s.restored == s.dropped, "{s:?}");
    for step in [
        "--full",
        "mistake:",
        "--target-dir",
        "ready in ",
        "killing ",
        "promoted:",
        "first write acknowledged by ",
        "a term names one leadership",
        "acknowledged writes missing on ",
        "streams from ",
        "planned switchover back to ",
        "writes paused for ",
    ] {
        assert!(stdout.contains(step), "no `{step}` in\n{stdout}");
    }
    // The proxy's routing changes are shown with the agents' events.
    assert!(stdout.contains("proxy writes"), "{stdout}");
}

#[test]
fn the_demo_fails_over_switches_back_and_cleans_up_on_a_narrow_terminal() {
    let stdout = demo(&["--writes", "100"], "50");
    check_story(&stdout);
    // All but the summary, which stays one line for scripts to read.
    let lines: Vec<&str> = stdout.lines().collect();
    for line in &lines[..lines.len() - 1] {
        assert!(line.chars().count() <= 50, "wider than 50 columns: {line}");
    }
    let dir = directory(&stdout);
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(stdout.contains("stopped every process"), "{stdout}");
}

/// Runs the stop script on drop, so a failing test leaves nothing running.
struct Stop(PathBuf);

impl Drop for Stop {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = Command::new(&self.0).output();
        }
    }
}

#[test]
fn with_keep_the_cluster_stays_up_for_ctl_and_psql_until_its_stop_script() {
    let stdout = demo(&["--writes", "100", "--keep"], "80");
    let dir = directory(&stdout);
    let stop = Stop(dir.join("stop"));
    check_story(&stdout);
    assert!(
        stdout.contains(&format!("  {}\n", stop.0.display())),
        "the stop command is printed: {stdout}"
    );
    let api = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("export PGWARDEN_API="))
        .unwrap_or_else(|| panic!("no PGWARDEN_API: {stdout}"));

    // What the instructions say works.
    let list = Command::new(binary())
        .args(["ctl", "list"])
        .env("PGWARDEN_API", api)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{table}");
    assert!(table.starts_with("Cluster: demo (leader "), "{table}");
    assert_eq!(table.matches("| streaming |").count(), 2, "{table}");
    let psql = stdout
        .lines()
        .find(|l| l.contains(" psql -h 127.0.0.1 "))
        .unwrap_or_else(|| panic!("no psql line: {stdout}"));
    let count = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "PATH=/usr/lib/postgresql/15/bin:$PATH; {} -Atc 'SELECT count(*) FROM acked'",
            psql.trim()
        ))
        .output()
        .unwrap();
    let rows = String::from_utf8_lossy(&count.stdout);
    // Writes whose outcome the load could not know may be there too.
    let present: u64 = rows
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{psql}: {rows} {}", String::from_utf8_lossy(&count.stderr)));
    assert!(
        present >= summary(&stdout).acknowledged,
        "{present} rows\n{stdout}"
    );

    // The script ends exactly what the demo left running.
    let script = std::fs::read_to_string(&stop.0).unwrap();
    let pids: Vec<i32> = script
        .lines()
        .filter_map(|l| l.strip_prefix("signal ")?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(pids.len(), 5, "proxy, three agents, etcd: {script}");
    let out = Command::new(&stop.0).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!dir.exists(), "{} is still there", dir.display());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "{pid} still runs"
        );
    }
}

#[test]
fn the_demo_rejects_a_bad_argument() {
    let out = Command::new(binary())
        .args(["demo", "--writes", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--writes"), "{stderr}");
}
