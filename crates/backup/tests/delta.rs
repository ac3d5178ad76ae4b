//! A delta restore on real PostgreSQL 15: a restored copy that went its own
//! way is brought back to a backup by rewriting only what differs and
//! removing what the backup does not have.

mod common;

use backup::restore::RecoveryTarget;
use common::Lab;
use pg::StopMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_restore_brings_a_diverged_copy_back_to_the_backup() {
    let mut lab = Lab::start().await;
    lab.execute(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 30000) g",
    )
    .await;
    let full = lab.backup(None).await;
    let at_backup = lab.table_sums(lab.source()).await;
    lab.restore_and_start("copy", &full.id, RecoveryTarget::Immediate)
        .await;
    let copy = lab.cluster.node("copy");
    assert_eq!(lab.table_sums(copy).await, at_backup);

    // The copy goes its own way: a changed row, a new table (new files).
    for sql in [
        "UPDATE big SET v = 'diverged' WHERE id = 7",
        "CREATE TABLE extra AS SELECT g AS id FROM generate_series(1, 1000) g",
        "CHECKPOINT",
    ] {
        copy.execute(sql).await.unwrap();
    }
    assert_ne!(lab.table_sums(copy).await, at_backup);
    copy.instance.stop(StopMode::Fast).await.unwrap();

    let report = lab
        .restore_delta("copy", &full.id, RecoveryTarget::Immediate)
        .await;
    let chunks: u64 = full.files.iter().map(|f| f.chunks.len() as u64).sum();
    assert!(
        report.chunks_written < chunks / 2,
        "{report:?} of {chunks} chunks"
    );
    assert!(report.unchanged_files > 0, "{report:?}");
    assert!(report.removed > 0, "the new table's files: {report:?}");
    lab.start_and_wait("copy").await;
    assert_eq!(lab.table_sums(lab.cluster.node("copy")).await, at_backup);
}
