use super::fixture::{Fixture, SYSID};
use super::*;

const T0: &str = "2026-12-01T00:00:00Z";
const T1: &str = "2026-12-02T00:00:00Z";

#[tokio::test]
async fn lists_complete_backups_flags_the_rest_and_follows_timelines() {
    let f = Fixture::new();
    let full = f
        .backup("20261201-000000F", None, ("0/2000028", "0/2000100"), 1, T0)
        .await;
    f.backup(
        "20261202-000000I",
        Some(&full),
        ("0/4000028", "0/4000100"),
        1,
        T1,
    )
    .await;
    // An interrupted backup: objects, no manifest.
    f.repo
        .put(
            &RepoPath::new("backups/20261203-000000F/data/000001.zst").unwrap(),
            "xy".into(),
        )
        .await
        .unwrap();
    f.segments(1, 2..6).await;
    f.file("000000010000000000000006.partial", b"p").await;
    f.history(2, "1\t0/6000100\tno recovery target specified\n")
        .await;
    f.segments(2, 6..9).await;

    let catalog = list(&*f.repo, SYSID).await.unwrap();
    assert_eq!(catalog.system_identifier, SYSID.to_string());
    assert_eq!(catalog.wal_segment_size, 16 << 20);
    let ids: Vec<&str> = catalog.backups.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["20261201-000000F", "20261202-000000I"]);
    let incremental = &catalog.backups[1];
    assert_eq!(incremental.kind, BackupKind::Incremental);
    assert_eq!(incremental.parent.as_deref(), Some("20261201-000000F"));
    assert_eq!(incremental.references, ["20261201-000000F"]);
    assert!(incremental.stored_bytes > 0);
    assert_eq!(catalog.incomplete.len(), 1);
    assert_eq!(catalog.incomplete[0].id, "20261203-000000F");
    assert_eq!(catalog.incomplete[0].stored_bytes, 2);
    assert_eq!(catalog.problems, Vec::<String>::new());

    let timelines: Vec<u32> = catalog.timelines.iter().map(|t| t.timeline).collect();
    assert_eq!(timelines, [2, 1]);
    let newest = catalog.newest().unwrap();
    assert_eq!(
        newest.history,
        [Switch {
            parent: 1,
            at: "0/6000100".parse().unwrap()
        }]
    );
    assert_eq!(newest.earliest().unwrap().lsn.to_string(), "0/2000100");
    assert_eq!(newest.earliest().unwrap().time.as_deref(), Some(T0));
    assert_eq!(newest.latest().unwrap().lsn.to_string(), "0/9000000");
    assert_eq!(newest.unreachable, []);
    assert_eq!(
        catalog.timelines[1].latest().unwrap().lsn.to_string(),
        "0/6000000"
    );

    let json = serde_json::to_value(&catalog).unwrap();
    assert_eq!(
        serde_json::from_value::<Catalog>(json.clone()).unwrap(),
        catalog
    );
    assert_eq!(json["timelines"][0]["archive_end"], "0/9000000");
    assert_eq!(json["backups"][0]["stop"]["lsn"], "0/2000100");
}

#[tokio::test]
async fn other_clusters_stay_out_and_a_lone_cluster_is_found() {
    let f = Fixture::new();
    f.segments(1, 1..3).await;
    assert_eq!(only_system_identifier(&*f.repo).await.unwrap(), SYSID);
    let other = RepoPath::new("wal/42/0000000100000000/000000010000000000000001.zst").unwrap();
    let (encoded, _) = object::encode("000000010000000000000001", b"x").unwrap();
    f.repo.put(&other, encoded).await.unwrap();
    let err = only_system_identifier(&*f.repo)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--system-identifier"), "{err}");
    let catalog = list(&*f.repo, 42).await.unwrap();
    assert!(catalog.backups.is_empty());
    assert_eq!(catalog.timelines.len(), 1);
    assert_eq!(catalog.timelines[0].reachable, []);
    let empty = Fixture::new();
    assert!(matches!(
        only_system_identifier(&*empty.repo).await,
        Err(CatalogError::Empty { .. })
    ));
}

#[tokio::test]
async fn a_timeline_without_its_history_file_is_a_problem() {
    let f = Fixture::new();
    f.backup("20261201-000000F", None, ("0/2000028", "0/2000100"), 1, T0)
        .await;
    f.segments(1, 2..4).await;
    f.segments(3, 4..5).await;
    let catalog = list(&*f.repo, SYSID).await.unwrap();
    assert_eq!(catalog.problems.len(), 1, "{:?}", catalog.problems);
    assert!(
        catalog.problems[0].contains("00000003.history"),
        "{:?}",
        catalog.problems
    );
}
