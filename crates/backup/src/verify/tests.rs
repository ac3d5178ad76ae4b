use super::*;
use crate::catalog::fixture::{Fixture, SYSID};
use crate::repo::RepoPath;

const T: &str = "2026-12-01T00:00:00Z";

/// F (segments 2..3) then I on F, WAL 2..12 on timeline 1.
async fn repository() -> Fixture {
    let f = Fixture::new();
    let full = f
        .backup("20261201-000000F", None, ("0/2000028", "0/3000100"), 1, T)
        .await;
    f.backup(
        "20261202-000000I",
        Some(&full),
        ("0/8000028", "0/8000100"),
        1,
        T,
    )
    .await;
    f.segments(1, 2..12).await;
    f
}

async fn run(f: &Fixture) -> VerifyReport {
    verify(&*f.repo, SYSID, &VerifyOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_whole_repository_verifies() {
    let f = repository().await;
    let report = run(&f).await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        (report.backups, report.chunks, report.wal_files),
        (2, 2, 10)
    );
    assert!(report.to_string().contains("OK: every chunk"), "{report}");
}

#[tokio::test]
async fn a_deleted_segment_names_the_points_it_cuts_off() {
    let f = repository().await;
    f.repo
        .delete(&f.wal_path("000000010000000000000005"))
        .await
        .unwrap();
    let report = run(&f).await;
    assert!(!report.is_ok());
    assert_eq!(report.unreachable.len(), 1, "{report}");
    let gap = &report.unreachable[0];
    assert_eq!(gap.timeline, 1);
    assert_eq!(gap.gap.from.lsn.to_string(), "0/5000000");
    assert_eq!(gap.gap.to.lsn.to_string(), "0/8000100");
    assert_eq!(gap.gap.to.backup.as_deref(), Some("20261202-000000I"));
    assert_eq!(gap.gap.missing[0].first, "000000010000000000000005");
    assert_eq!(report.cut_short.len(), 1);
    assert_eq!(report.cut_short[0].id, "20261201-000000F");
    let text = report.to_string();
    assert!(
        text.contains("UNREACHABLE: from 0/5000000 to 0/8000100 (2026-12-01T00:00:00Z, end of backup 20261202-000000I) on timeline 1"),
        "{text}"
    );
    assert!(text.contains("Take a new full backup now"), "{text}");
}

#[tokio::test]
async fn a_corrupted_segment_is_damaged_and_cuts_off_the_same() {
    let f = repository().await;
    let path = f.wal_path("000000010000000000000009");
    let mut bytes = f.repo.get(&path).await.unwrap().to_vec();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    f.repo.put(&path, bytes.into()).await.unwrap();
    let report = run(&f).await;
    assert_eq!(report.damaged_wal.len(), 1, "{report}");
    assert_eq!(report.damaged_wal[0].name, "000000010000000000000009");
    let gap = &report.unreachable[0];
    assert_eq!(
        (gap.gap.from.lsn.to_string(), gap.gap.to.lsn.to_string()),
        ("0/9000000".into(), "0/C000000".into())
    );
    let cut: Vec<&str> = report.cut_short.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(cut, ["20261201-000000F", "20261202-000000I"]);
}

#[tokio::test]
async fn a_backup_without_its_own_wal_is_broken() {
    let f = repository().await;
    f.repo
        .delete(&f.wal_path("000000010000000000000002"))
        .await
        .unwrap();
    let report = run(&f).await;
    assert_eq!(report.broken_backups.len(), 1, "{report}");
    assert_eq!(report.broken_backups[0].id, "20261201-000000F");
    assert!(
        report.broken_backups[0]
            .reason
            .contains("000000010000000000000002 is missing"),
        "{report}"
    );
}

#[tokio::test]
async fn a_damaged_chunk_breaks_its_backup_and_every_incremental_reading_it() {
    let f = repository().await;
    let object = RepoPath::new("backups/20261201-000000F/data/000001.zst").unwrap();
    f.repo.put(&object, "not zstd".into()).await.unwrap();
    let report = run(&f).await;
    let broken: Vec<&str> = report
        .broken_backups
        .iter()
        .map(|b| b.id.as_str())
        .collect();
    assert_eq!(broken, ["20261201-000000F", "20261202-000000I"], "{report}");
    assert_eq!(report.damaged_chunks.len(), 2);
    assert!(
        report
            .to_string()
            .contains("DAMAGED chunk of base/1 in backup 20261201-000000F"),
        "{report}"
    );
    // Only the incremental, asked by id: its chunks in the full one are read too.
    let one = verify(
        &*f.repo,
        SYSID,
        &VerifyOptions {
            backup: Some("20261202-000000I".into()),
            parallelism: 2,
        },
    )
    .await
    .unwrap();
    assert_eq!(one.backups, 1);
    assert_eq!(one.broken_backups.len(), 1);
    assert_eq!(one.wal_files, 4);
    // A missing object is damage too.
    f.repo.delete(&object).await.unwrap();
    assert!(run(&f).await.damaged_chunks[0].problem.contains("missing"));
}

#[tokio::test]
async fn timelines_switch_where_their_history_says() {
    let f = repository().await;
    f.history(2, "1\t0/C000100\tpromoted\n").await;
    f.segments(2, 12..15).await;
    assert!(run(&f).await.is_ok());
    // A segment of timeline 2 from before it began: not this history.
    f.segments(2, 4..5).await;
    let report = run(&f).await;
    assert_eq!(report.problems.len(), 1, "{report}");
    assert!(
        report.problems[0].contains("before its switch point 0/C000100"),
        "{report}"
    );
}
