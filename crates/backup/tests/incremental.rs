//! Full, then incremental, then restore, on real PostgreSQL 15: every
//! table equals the source's at the restore point; the incremental backup
//! stored only what changed and restoring it follows its references into
//! the full one. And a backup during which files vanish and appear still
//! restores consistently.

mod common;

use backup::backup::Progress;
use backup::manifest::BackupKind;
use backup::restore::RecoveryTarget;
use common::{has_file, Lab};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_backup_restores_every_table_as_it_was() {
    let mut lab = Lab::start().await;
    lab.execute(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 30000) g; \
         CREATE TABLE small (id int PRIMARY KEY, v text); \
         INSERT INTO small VALUES (1, 'one'), (2, 'two'); \
         CREATE TABLE doomed AS SELECT g AS id FROM generate_series(1, 100) g; \
         CHECKPOINT",
    )
    .await;
    let full = lab.backup(None).await;

    lab.execute(
        "UPDATE big SET v = 'changed' WHERE id <= 50; \
         INSERT INTO small VALUES (3, 'three'); \
         DROP TABLE doomed; \
         CREATE TABLE fresh AS SELECT g AS id, g * 2 AS twice FROM generate_series(1, 500) g; \
         CHECKPOINT",
    )
    .await;
    let incremental = lab.backup(Some(&full)).await;
    assert_eq!(incremental.kind, BackupKind::Incremental);
    assert_eq!(incremental.parent.as_deref(), Some(full.id.as_str()));
    assert!(incremental.start.lsn > full.stop.lsn);
    assert!(
        incremental.totals.reused_bytes > incremental.totals.bytes / 2,
        "most of the data did not change: {:?}",
        incremental.totals
    );
    assert!(
        incremental.totals.stored_bytes < full.totals.stored_bytes / 2,
        "full {:?}, incremental {:?}",
        full.totals,
        incremental.totals
    );
    assert_eq!(
        incremental.referenced_backups(),
        [full.id.clone(), incremental.id.clone()]
    );

    lab.execute("INSERT INTO small VALUES (4, 'four')").await;
    lab.execute("SELECT pg_create_restore_point('checked')")
        .await;
    let expected = lab.table_sums(lab.source()).await;
    assert_eq!(
        expected.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["big", "fresh", "small"]
    );
    lab.execute("UPDATE big SET v = 'after the point'; DELETE FROM small")
        .await;
    lab.archive_current_segment().await;

    let (restored, report) = lab
        .restore_and_start(
            "restored",
            &incremental.id,
            RecoveryTarget::Name("checked".into()),
        )
        .await;
    assert_eq!(report.files, incremental.totals.files);
    let restored = restored.name.clone();
    assert_eq!(lab.table_sums(lab.cluster.node(&restored)).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_vanish_or_appear_during_a_backup_are_set_right_by_replay() {
    let mut lab = Lab::start().await;
    lab.execute(
        "CREATE TABLE doomed AS SELECT g AS id FROM generate_series(1, 5000) g; \
         CREATE TABLE kept AS SELECT g AS id FROM generate_series(1, 5000) g",
    )
    .await;
    let doomed = lab
        .text(lab.source(), "SELECT pg_relation_filepath('doomed')")
        .await;
    let mut born = String::new();
    let changed = std::sync::Mutex::new(&mut born);
    let source = lab.source();
    // Between listing and copying: a listed file goes, an unlisted one
    // comes. (A dropped relation's file is unlinked by the checkpoint after
    // the one that absorbed the request: hence two.)
    let change_files = |progress: Progress| {
        if let Progress::Listed { .. } = progress {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    // One statement per call: a batch is one transaction,
                    // and the checkpoints must come after the commits.
                    for sql in [
                        "DROP TABLE doomed",
                        "CREATE TABLE born AS SELECT g AS id FROM generate_series(1, 3000) g",
                        "UPDATE kept SET id = -id WHERE id <= 10",
                        "CHECKPOINT",
                        "CHECKPOINT",
                    ] {
                        source.execute(sql).await.unwrap();
                    }
                    **changed.lock().unwrap() = source
                        .query_text("SELECT pg_relation_filepath('born')")
                        .await
                        .unwrap()
                        .unwrap();
                })
            });
        }
    };
    let manifest = lab.backup_with(None, &change_files).await;
    assert!(
        !has_file(&manifest, &doomed),
        "{doomed} vanished before it was read"
    );
    assert!(!has_file(&manifest, &born), "{born} was not listed");
    assert!(
        !common::data_path(lab.source(), &doomed).exists(),
        "the checkpoint removed {doomed}"
    );
    let expected = lab.table_sums(lab.source()).await;
    assert_eq!(
        expected.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["born", "kept"]
    );

    let (restored, _) = lab
        .restore_and_start("restored", &manifest.id, RecoveryTarget::Immediate)
        .await;
    let restored = restored.name.clone();
    assert_eq!(lab.table_sums(lab.cluster.node(&restored)).await, expected);
}
