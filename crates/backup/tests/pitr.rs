//! Point-in-time recovery on real PostgreSQL 15: a full backup, rows
//! committed one by one after it, and restores to a time between two
//! commits, to an LSN, to a restore point and to the end of the archive,
//! each with exactly the rows committed before its target.

mod common;

use backup::manifest::BackupKind;
use backup::restore::RecoveryTarget;
use common::Lab;

async fn ids(lab: &Lab, name: &str) -> String {
    lab.text(
        lab.cluster.node(name),
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM t",
    )
    .await
}

/// A row's commit time as PostgreSQL recorded it in the commit record.
async fn commit_time(lab: &Lab, id: u32) -> jiff::Timestamp {
    let sql = format!(
        "SELECT to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', \
         'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM t WHERE id = {id}"
    );
    lab.text(lab.source(), &sql).await.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_exactly_the_rows_committed_before_a_time_an_lsn_or_a_restore_point() {
    let mut lab = Lab::start().await;
    lab.execute("CREATE TABLE t (id int PRIMARY KEY, note text)")
        .await;
    let full = lab.backup(None).await;
    assert_eq!(full.kind, BackupKind::Full);
    assert!(full.start.lsn < full.stop.lsn, "{full:?}");
    assert_eq!(full.start.timeline, 1);
    assert!(
        full.backup_label.contains("START TIMELINE: 1"),
        "{}",
        full.backup_label
    );

    let mut after_4 = String::new();
    for id in 1..=6 {
        lab.execute(&format!("INSERT INTO t VALUES ({id}, 'row {id}')"))
            .await;
        if id == 4 {
            after_4 = lab
                .text(lab.source(), "SELECT pg_current_wal_insert_lsn()::text")
                .await;
        }
        if id == 5 {
            lab.execute("SELECT pg_create_restore_point('after 5')")
                .await;
        }
    }
    lab.archive_current_segment().await;
    let (two, three) = (commit_time(&lab, 2).await, commit_time(&lab, 3).await);
    let gap = three.as_microsecond() - two.as_microsecond();
    assert!(gap >= 2, "commits 2 and 3 are {gap} µs apart");
    let between = jiff::Timestamp::from_microsecond(two.as_microsecond() + gap / 2).unwrap();

    let cases = [
        ("by_time", RecoveryTarget::Time(between), "1,2"),
        (
            "by_lsn",
            RecoveryTarget::Lsn(after_4.parse().unwrap()),
            "1,2,3,4",
        ),
        (
            "by_name",
            RecoveryTarget::Name("after 5".into()),
            "1,2,3,4,5",
        ),
        ("latest", RecoveryTarget::Latest, "1,2,3,4,5,6"),
    ];
    for (name, target, expected) in cases {
        lab.restore_and_start(name, &full.id, target.clone()).await;
        assert_eq!(ids(&lab, name).await, expected, "restored to {target:?}");
    }
}
