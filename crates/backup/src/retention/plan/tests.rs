use super::*;
use crate::catalog::fixture::{Fixture, SYSID};
use crate::catalog::Snapshot;
use crate::repo::Repository;

fn day(n: u32) -> String {
    format!("2026-12-{n:02}T00:00:00Z")
}

fn now() -> jiff::Timestamp {
    day(20).parse().unwrap()
}

fn full(n: u32) -> Policy {
    Policy {
        full: n,
        window: None,
    }
}

fn ids(v: &[(String, String)]) -> Vec<&str> {
    v.iter().map(|(id, _)| id.as_str()).collect()
}

fn names(plan: &Plan) -> Vec<String> {
    plan.wal
        .iter()
        .map(|p| {
            p.as_str()
                .rsplit('/')
                .next()
                .unwrap()
                .trim_end_matches(".zst")
                .to_string()
        })
        .collect()
}

/// F1 I1 F2 I2 F3 on timeline 1, a segment apart, WAL 1..20.
async fn five_backups(f: &Fixture) {
    let f1 = f
        .backup(
            "20261201-000000F",
            None,
            ("0/2000028", "0/2000100"),
            1,
            &day(1),
        )
        .await;
    f.backup(
        "20261202-000000I",
        Some(&f1),
        ("0/4000028", "0/4000100"),
        1,
        &day(2),
    )
    .await;
    let f2 = f
        .backup(
            "20261203-000000F",
            None,
            ("0/6000028", "0/6000100"),
            1,
            &day(3),
        )
        .await;
    f.backup(
        "20261204-000000I",
        Some(&f2),
        ("0/8000028", "0/8000100"),
        1,
        &day(4),
    )
    .await;
    f.backup(
        "20261205-000000F",
        None,
        ("0/A000028", "0/A000100"),
        1,
        &day(5),
    )
    .await;
    f.segments(1, 1..20).await;
    f.file("000000010000000000000006.00000028.backup", b"label")
        .await;
    f.file("000000010000000000000002.00000028.backup", b"label")
        .await;
}

#[tokio::test]
async fn keeps_the_newest_full_backups_with_their_incrementals_and_the_wal_from_the_oldest() {
    let f = Fixture::new();
    five_backups(&f).await;
    let snapshot = Snapshot::read(&*f.repo, SYSID).await.unwrap();
    let plan = plan(&snapshot, &full(2), now());
    assert_eq!(
        ids(&plan.keep),
        ["20261203-000000F", "20261204-000000I", "20261205-000000F"]
    );
    assert_eq!(plan.expire, ["20261201-000000F", "20261202-000000I"]);
    let mut expected: Vec<String> = (1..6)
        .map(|s| format!("0000000100000000000000{s:02X}"))
        .collect();
    expected.insert(1, "000000010000000000000002.00000028.backup".into());
    assert_eq!(names(&plan), expected);
    assert!(plan.bytes > 0);
    // One full backup: the newest, and the WAL from its start.
    let one = super::plan(&snapshot, &full(1), now());
    assert_eq!(ids(&one.keep), ["20261205-000000F"]);
    assert_eq!(names(&one).len(), 9 + 2);
    // More than there are: every backup stays; only the WAL from before
    // the oldest one's start goes.
    let all = super::plan(&snapshot, &full(9), now());
    assert_eq!(all.expire, Vec::<String>::new());
    assert_eq!(names(&all), ["000000010000000000000001"]);
}

#[tokio::test]
async fn never_removes_a_backup_a_kept_one_reads_from() {
    let f = Fixture::new();
    let f1 = f
        .backup(
            "20261201-000000F",
            None,
            ("0/2000028", "0/2000100"),
            1,
            &day(1),
        )
        .await;
    let i1 = f
        .backup(
            "20261202-000000I",
            Some(&f1),
            ("0/4000028", "0/4000100"),
            1,
            &day(2),
        )
        .await;
    f.backup(
        "20261203-000000F",
        None,
        ("0/6000028", "0/6000100"),
        1,
        &day(3),
    )
    .await;
    // The newest is an incremental of I1 (whose chunks live in F1 too).
    f.backup(
        "20261204-000000I",
        Some(&i1),
        ("0/8000028", "0/8000100"),
        1,
        &day(4),
    )
    .await;
    f.segments(1, 1..10).await;
    let snapshot = Snapshot::read(&*f.repo, SYSID).await.unwrap();
    let plan = plan(&snapshot, &full(1), now());
    assert_eq!(plan.expire, Vec::<String>::new(), "{:?}", plan.keep);
    assert!(
        plan.keep[0].1.contains("reads its chunks or is its parent"),
        "{:?}",
        plan.keep
    );
    // WAL from the oldest kept backup's start.
    assert_eq!(names(&plan), ["000000010000000000000001"]);
}

#[tokio::test]
async fn a_window_keeps_what_restores_to_its_start() {
    let f = Fixture::new();
    five_backups(&f).await;
    let snapshot = Snapshot::read(&*f.repo, SYSID).await.unwrap();
    let policy = Policy {
        full: 1,
        // From day 3, 12:00: the backups of days 4 and 5, and day 3's
        // full one to reach the window's start.
        window: Some(Duration::from_secs(16 * 86_400 + 12 * 3600)),
    };
    let plan = plan(&snapshot, &policy, now());
    assert_eq!(
        ids(&plan.keep),
        ["20261203-000000F", "20261204-000000I", "20261205-000000F"]
    );
    assert!(plan.keep[0].1.contains("the window of"), "{:?}", plan.keep);
}

#[tokio::test]
async fn wal_of_a_timeline_is_kept_as_far_as_a_kept_backup_follows_it() {
    let f = Fixture::new();
    // Timeline 2 branched in segment 8; the old primary completed 8 and 9
    // on timeline 1 before it was stopped.
    let f1 = f
        .backup(
            "20261201-000000F",
            None,
            ("0/2000028", "0/2000100"),
            1,
            &day(1),
        )
        .await;
    f.backup(
        "20261202-000000F",
        None,
        ("0/A000028", "0/A000100"),
        2,
        &day(2),
    )
    .await;
    f.segments(1, 1..10).await;
    f.file("000000010000000000000008.partial", b"p").await;
    f.history(2, "1\t0/8000100\tpromoted\n").await;
    f.segments(2, 8..12).await;
    let snapshot = Snapshot::read(&*f.repo, SYSID).await.unwrap();

    // Both kept: timeline 1 from the first one's start (its segments 8
    // and 9 too: kept while a backup on timeline 1 is), all of timeline 2.
    let both = plan(&snapshot, &full(2), now());
    assert_eq!(names(&both), ["000000010000000000000001"]);

    let one = plan(&snapshot, &full(1), now());
    assert_eq!(one.expire, [f1.id.as_str()]);
    let mut removed = names(&one);
    removed.sort();
    let mut expected: Vec<String> = (1..10)
        .map(|s| format!("0000000100000000000000{s:02X}"))
        .collect();
    expected.push("000000010000000000000008.partial".into());
    expected.extend([
        "000000020000000000000008".into(),
        "000000020000000000000009".into(),
    ]);
    expected.sort();
    assert_eq!(removed, expected);
}

#[tokio::test]
async fn only_old_interrupted_backups_are_removed() {
    let f = Fixture::new();
    five_backups(&f).await;
    for id in ["20261101-000000F", "20261204-120000F", "20261206-000000F"] {
        f.repo
            .put(
                &RepoPath::new(format!("backups/{id}/data/000001.zst")).unwrap(),
                "x".into(),
            )
            .await
            .unwrap();
    }
    let snapshot = Snapshot::read(&*f.repo, SYSID).await.unwrap();
    // On day 5 at 06:00, the one of day 4 at 12:00 is older than the
    // newest complete backup but less than a day old: it may be another
    // cluster's, still running.
    let noon_5: jiff::Timestamp = "2026-12-05T06:00:00Z".parse().unwrap();
    assert_eq!(
        plan(&snapshot, &full(9), noon_5).incomplete,
        ["20261101-000000F"]
    );
    // Later, both old ones go; the one after the newest backup never does
    // by this rule (it may be running).
    assert_eq!(
        plan(&snapshot, &full(9), now()).incomplete,
        ["20261101-000000F", "20261204-120000F"]
    );
}

#[tokio::test]
async fn without_a_backup_nothing_is_removed() {
    let f = Fixture::new();
    f.segments(1, 1..5).await;
    let snapshot = Snapshot::read(&*f.repo, SYSID).await.unwrap();
    assert!(plan(&snapshot, &full(1), now()).is_empty());
}
