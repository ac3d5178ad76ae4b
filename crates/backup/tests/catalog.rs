//! The catalog, verify and retention on real PostgreSQL 15: backups taken
//! while it runs, its archived WAL in the repository as `wal push` stores
//! it. A deleted and a corrupted segment are found by verify with the
//! points they cut off named; a damaged chunk breaks its backup; retention
//! keeps the newest full backups and the WAL they need, removes the rest,
//! and a kept backup still restores from what is left — on a directory
//! repository, and verify on S3 too.

mod common;

use std::sync::Arc;

use backup::backup::wal_needed::segment_name;
use backup::backup::{BaseBackup, Progress};
use backup::catalog;
use backup::manifest::Manifest;
use backup::repo::s3::Keys;
use backup::repo::{PosixRepository, S3Credentials, S3Options, S3Repository};
use backup::restore::{self, Recovery, RecoveryTarget, RestoreOptions};
use backup::retention::{self, Policy};
use backup::verify::{self, VerifyOptions, VerifyReport};
use backup::wal::{WalArchive, WalName};
use backup::Repository;
use common::{DirArchive, Lab};
use pg::Lsn;
use testkit::s3::{S3Server, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};

const MB16: u64 = 16 << 20;

/// The cluster's system identifier.
fn system_identifier(lab: &Lab) -> u64 {
    backup::wal::control::system_identifier(lab.source().instance.data_dir()).unwrap()
}

/// The directory repository the lab's backups go to.
fn repository(lab: &Lab) -> Arc<dyn Repository> {
    Arc::new(PosixRepository::new(lab.cluster.dir.join("repo")))
}

/// Pushes every file the server archived (by `cp`, in the lab) that
/// `repo` does not have yet, as `pgwarden wal push` would have.
async fn push_archive(lab: &Lab, repo: Arc<dyn Repository>) -> WalArchive {
    let archive = WalArchive::new(repo.clone(), system_identifier(lab));
    for entry in std::fs::read_dir(&lab.archive).unwrap() {
        let path = entry.unwrap().path();
        let Ok(name) = WalName::parse(path.file_name().unwrap().to_str().unwrap()) else {
            continue;
        };
        if repo.size(&archive.path_of(&name)).await.unwrap().is_none() {
            archive.push(&path).await.unwrap();
        }
    }
    archive
}

/// Writes a row and completes its segment, `n` times.
async fn write_segments(lab: &Lab, n: usize) {
    for _ in 0..n {
        lab.execute("INSERT INTO t SELECT coalesce(max(id), 0) + 1 FROM t")
            .await;
        lab.archive_current_segment().await;
    }
}

async fn verify_all(repo: &dyn Repository, lab: &Lab) -> VerifyReport {
    verify::verify(repo, system_identifier(lab), &VerifyOptions::default())
        .await
        .unwrap()
}

fn segment_after(lsn: Lsn) -> u64 {
    lsn.0.saturating_sub(1) / MB16 + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_what_a_deleted_and_a_corrupted_segment_cut_off() {
    let lab = Lab::start().await;
    lab.execute("CREATE TABLE t (id int)").await;
    let full = lab.backup(None).await;
    write_segments(&lab, 3).await;
    let incremental = lab.backup(Some(&full)).await;
    write_segments(&lab, 3).await;
    let repo = repository(&lab);
    let archive = push_archive(&lab, repo.clone()).await;

    let report = verify_all(&*repo, &lab).await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.backups, 2);
    assert!(report.wal_files >= 8, "{report}");
    let listed = catalog::list(&*repo, system_identifier(&lab))
        .await
        .unwrap();
    assert_eq!(listed.backups.len(), 2);
    let window = listed.newest().unwrap();
    assert_eq!(window.timeline, 1);
    assert_eq!(window.earliest().unwrap().lsn, full.stop.lsn);
    assert_eq!(
        window.earliest().unwrap().backup.as_deref(),
        Some(full.id.as_str())
    );
    assert!(window.latest().unwrap().lsn > incremental.stop.lsn);

    // A segment between the two backups goes missing: the points from it
    // to the incremental backup's end are lost, the full backup restores
    // only up to it.
    let lost = segment_after(full.stop.lsn);
    assert!(lost * MB16 < incremental.start.lsn.0);
    let lost_name = segment_name(1, lost, MB16);
    let lost_path = archive.path_of(&WalName::parse(&lost_name).unwrap());
    repo.delete(&lost_path).await.unwrap();
    let report = verify_all(&*repo, &lab).await;
    assert!(!report.is_ok());
    assert_eq!(report.unreachable.len(), 1, "{report}");
    let gap = &report.unreachable[0];
    assert_eq!(gap.timeline, 1);
    assert_eq!(gap.gap.from.lsn, Lsn(lost * MB16));
    assert_eq!(gap.gap.to.lsn, incremental.stop.lsn);
    assert_eq!(gap.gap.missing[0].first, lost_name);
    assert_eq!(report.cut_short[0].id, full.id);
    let text = report.to_string();
    assert!(
        text.contains(&format!(
            "UNREACHABLE: from {} to {} ({}, end of backup {}) on timeline 1",
            Lsn(lost * MB16),
            incremental.stop.lsn,
            incremental.stop.time,
            incremental.id
        )),
        "{text}"
    );
    assert!(text.contains("Take a new full backup now"), "{text}");

    // Pushed again from the server's copy, it is whole again.
    push_archive(&lab, repo.clone()).await;
    assert!(verify_all(&*repo, &lab).await.is_ok());

    // A segment after the incremental backup is corrupted: from it to the
    // end of the archive nothing can be reached.
    let damaged = segment_after(incremental.stop.lsn);
    let damaged_name = segment_name(1, damaged, MB16);
    let damaged_path = archive.path_of(&WalName::parse(&damaged_name).unwrap());
    let mut bytes = repo.get(&damaged_path).await.unwrap().to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    repo.put(&damaged_path, bytes.into()).await.unwrap();
    let report = verify_all(&*repo, &lab).await;
    assert_eq!(report.damaged_wal.len(), 1, "{report}");
    assert_eq!(report.damaged_wal[0].name, damaged_name);
    assert_eq!(report.unreachable.len(), 1, "{report}");
    let gap = &report.unreachable[0];
    assert_eq!(gap.gap.from.lsn, Lsn(damaged * MB16));
    assert_eq!(gap.gap.to.lsn, window.latest().unwrap().lsn);
    let cut: Vec<&str> = report.cut_short.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(cut, [full.id.as_str(), incremental.id.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_damaged_chunk() {
    let lab = Lab::start().await;
    lab.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 20000) g")
        .await;
    let full = lab.backup(None).await;
    let repo = repository(&lab);
    push_archive(&lab, repo.clone()).await;
    assert!(verify_all(&*repo, &lab).await.is_ok());

    let largest = full.files.iter().max_by_key(|f| f.size).unwrap();
    let chunk = &largest.chunks[0];
    let object = lab
        .cluster
        .dir
        .join("repo")
        .join(chunk.object_path().unwrap().as_str());
    let mut bytes = std::fs::read(&object).unwrap();
    let at = (chunk.offset + chunk.length / 2) as usize;
    bytes[at] ^= 0x55;
    std::fs::write(&object, bytes).unwrap();

    let options = VerifyOptions {
        backup: Some(full.id.clone()),
        parallelism: 2,
    };
    let report = verify::verify(&*repo, system_identifier(&lab), &options)
        .await
        .unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.broken_backups.len(), 1, "{report}");
    assert_eq!(report.broken_backups[0].id, full.id);
    assert!(
        report
            .damaged_chunks
            .iter()
            .any(|c| c.offset == chunk.offset
                && c.object.as_str() == chunk.object_path().unwrap().as_str()),
        "{report}"
    );
    assert!(report.to_string().contains("BROKEN backup"), "{report}");
}

/// Restores `backup` into a new node and starts it, fetching WAL from the
/// repository's archive (the objects decompressed by `zstd`, as
/// docs/backup.md shows), not from the lab's copy.
async fn restore_from_repository(lab: &mut Lab, name: &str, backup: &Manifest) {
    let wal = lab
        .cluster
        .dir
        .join("repo")
        .join(format!("wal/{}", system_identifier(lab)));
    let restore_command = format!(
        "f=%f; case $f in *.history) d=history;; *) d=$(echo $f | cut -c1-16);; esac; \
         o={}/$d/$f.zst; test -f $o && tail -n +6 $o | zstd -dqc > %p",
        wal.display()
    );
    let node = lab.cluster.new_node(name).unwrap();
    let options = RestoreOptions {
        parallelism: 2,
        delta: false,
        run_as: lab.cluster.run_as.clone(),
        recovery: Recovery {
            restore_command,
            target: RecoveryTarget::Latest,
            keep_archiving: false,
        },
    };
    restore::restore(&lab.repo, &backup.id, node.instance.data_dir(), &options)
        .await
        .unwrap_or_else(|e| panic!("restore of {} failed: {e}", backup.id));
    lab.start_restored(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_full_backups_and_the_wal_they_need() {
    let mut lab = Lab::start().await;
    lab.execute("CREATE TABLE t (id int)").await;
    let oldest = lab.backup(None).await;
    write_segments(&lab, 2).await;
    let middle = lab.backup(None).await;
    write_segments(&lab, 2).await;
    let newest = lab.backup(None).await;
    write_segments(&lab, 2).await;
    let repo = repository(&lab);
    let archive = push_archive(&lab, repo.clone()).await;
    let id = system_identifier(&lab);
    let policy = Policy {
        full: 2,
        window: None,
    };

    let planned = retention::plan_for(&*repo, id, &policy).await.unwrap();
    let report = retention::expire(&*repo, id, &policy).await.unwrap();
    assert_eq!(report.plan, planned);
    assert_eq!(report.plan.expire, [oldest.id.as_str()]);
    let kept: Vec<&str> = report.plan.keep.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(kept, [middle.id.as_str(), newest.id.as_str()]);

    // The oldest backup and the WAL only it needed are gone; the middle
    // one's WAL is there.
    let objects = repo
        .list(&backup::manifest::backup_dir(&oldest.id).unwrap())
        .await
        .unwrap();
    assert_eq!(objects, []);
    let segment_path =
        |s: u64| archive.path_of(&WalName::parse(&segment_name(1, s, MB16)).unwrap());
    let oldest_start = oldest.start.lsn.0 / MB16;
    let middle_start = middle.start.lsn.0 / MB16;
    assert_eq!(repo.size(&segment_path(oldest_start)).await.unwrap(), None);
    assert_eq!(
        repo.size(&segment_path(middle_start - 1)).await.unwrap(),
        None
    );
    assert!(repo
        .size(&segment_path(middle_start))
        .await
        .unwrap()
        .is_some());
    let listed = catalog::list(&*repo, id).await.unwrap();
    let ids: Vec<&str> = listed.backups.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, [middle.id.as_str(), newest.id.as_str()]);
    assert_eq!(
        listed.newest().unwrap().earliest().unwrap().lsn,
        middle.stop.lsn
    );

    let report = verify_all(&*repo, &lab).await;
    assert!(report.is_ok(), "{report}");
    // Nothing more to do.
    assert!(retention::plan_for(&*repo, id, &policy)
        .await
        .unwrap()
        .is_empty());

    // The oldest kept backup restores from what is left, to the end.
    let expected = lab.text(lab.source(), "SELECT count(*)::text FROM t").await;
    restore_from_repository(&mut lab, "restored", &middle).await;
    let restored = lab.cluster.node("restored");
    assert_eq!(
        lab.text(restored, "SELECT count(*)::text FROM t").await,
        expected
    );
}

fn s3_options(endpoint: String) -> S3Options {
    S3Options {
        bucket: "pgwarden-verify".to_string(),
        prefix: "main".to_string(),
        endpoint: Some(endpoint),
        region: REGION.to_string(),
        credentials: S3Credentials::Keys(Keys {
            access_key_id: ACCESS_KEY_ID.to_string(),
            secret_access_key: SECRET_ACCESS_KEY.to_string(),
            session_token: None,
        }),
        ca_file: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_on_s3_finds_a_deleted_segment() {
    let server = S3Server::start().await.unwrap();
    server.create_bucket("pgwarden-verify").unwrap();
    let s3: Arc<dyn Repository> =
        Arc::new(S3Repository::open(&s3_options(server.endpoint())).unwrap());
    let lab = Lab::start().await;
    lab.execute("CREATE TABLE t (id int)").await;
    let client = lab.source().instance.connect().await.unwrap();
    let full = BaseBackup {
        client: &client,
        data_dir: lab.source().instance.data_dir(),
        repo: &*s3,
        archive: &DirArchive(lab.archive.clone()),
        parent: None,
        options: Lab::options(),
        progress: &|_: Progress| {},
    }
    .run()
    .await
    .unwrap();
    write_segments(&lab, 3).await;
    let archive = push_archive(&lab, s3.clone()).await;
    assert!(verify_all(&*s3, &lab).await.is_ok());

    let lost = segment_after(full.stop.lsn);
    let lost_name = segment_name(1, lost, MB16);
    s3.delete(&archive.path_of(&WalName::parse(&lost_name).unwrap()))
        .await
        .unwrap();
    let report = verify_all(&*s3, &lab).await;
    assert_eq!(report.unreachable.len(), 1, "{report}");
    assert_eq!(report.unreachable[0].gap.from.lsn, Lsn(lost * MB16));
    assert_eq!(report.unreachable[0].gap.missing[0].first, lost_name);
    assert_eq!(report.cut_short[0].id, full.id);
}
