//! Push and fetch against a directory repository, on fake data
//! directories (the real PostgreSQL ones are in crates/cli/tests).

use std::path::PathBuf;

use bytes::Bytes;

use super::*;
use crate::repo::PosixRepository;

const ID: u64 = 7301234567890123456;
const SEGMENT: &str = "000000010000000000000003";

struct Fixture {
    dir: tempfile::TempDir,
    repo: Arc<dyn Repository>,
    archive: WalArchive,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let repo_dir = dir.path().join("repo");
        std::fs::create_dir(&repo_dir).unwrap();
        let repo: Arc<dyn Repository> = Arc::new(PosixRepository::new(repo_dir));
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("pg_wal")).unwrap();
        std::fs::create_dir_all(data.join("global")).unwrap();
        let mut control = ID.to_ne_bytes().to_vec();
        control.resize(8192, 0);
        std::fs::write(data.join("global/pg_control"), control).unwrap();
        let archive = WalArchive::for_wal_path(repo.clone(), &data.join("pg_wal/x")).unwrap();
        Fixture { dir, repo, archive }
    }

    /// Writes `data/pg_wal/NAME` with `content`.
    fn wal_file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.path().join("data/pg_wal").join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

fn content(seed: u8) -> Vec<u8> {
    let mut data = vec![0u8; 256 * 1024];
    for (i, b) in data.iter_mut().enumerate().step_by(61) {
        *b = (i as u8).wrapping_mul(seed);
    }
    data
}

#[tokio::test]
async fn a_pushed_segment_is_fetched_byte_for_byte() {
    let fx = Fixture::new();
    let data = content(3);
    let pushed = fx.archive.push(&fx.wal_file(SEGMENT, &data)).await.unwrap();
    let Pushed::Archived(fingerprint) = pushed else {
        panic!("{pushed:?}");
    };
    assert_eq!(fingerprint, Fingerprint::of(&data));
    let listed = fx.repo.list(fx.archive.dir()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].path.as_str(),
        format!("wal/{ID}/0000000100000000/{SEGMENT}.zst")
    );
    assert!(
        listed[0].size < data.len() as u64 / 4,
        "compressed: {listed:?}"
    );

    let dest = fx.dir.path().join("data/pg_wal/RECOVERYXLOG");
    let name = WalName::parse(SEGMENT).unwrap();
    assert_eq!(
        fx.archive.fetch(&name, &dest).await.unwrap(),
        Fetched::Restored(fingerprint)
    );
    assert!(std::fs::read(&dest).unwrap() == data);
    // Nothing but the file itself is left in pg_wal.
    let mut left: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["000000010000000000000003", "RECOVERYXLOG"]);
}

#[tokio::test]
async fn every_kind_of_wal_file_is_archived() {
    let fx = Fixture::new();
    for name in [
        "00000002.history",
        "000000010000000000000004.partial",
        "000000010000000000000002.00000028.backup",
    ] {
        let data = name.as_bytes().repeat(10);
        fx.archive.push(&fx.wal_file(name, &data)).await.unwrap();
        let dest = fx.dir.path().join("restored");
        let fetched = fx
            .archive
            .fetch(&WalName::parse(name).unwrap(), &dest)
            .await
            .unwrap();
        assert_eq!(fetched, Fetched::Restored(Fingerprint::of(&data)));
        assert_eq!(std::fs::read(&dest).unwrap(), data);
    }
}

#[tokio::test]
async fn the_same_content_twice_succeeds() {
    let fx = Fixture::new();
    let path = fx.wal_file(SEGMENT, &content(5));
    assert!(matches!(
        fx.archive.push(&path).await,
        Ok(Pushed::Archived(_))
    ));
    assert!(matches!(
        fx.archive.push(&path).await,
        Ok(Pushed::AlreadyArchived(_))
    ));
}

#[tokio::test]
async fn different_content_is_refused_and_the_archived_kept() {
    let fx = Fixture::new();
    let first = content(5);
    fx.archive
        .push(&fx.wal_file(SEGMENT, &first))
        .await
        .unwrap();
    let err = fx
        .archive
        .push(&fx.wal_file(SEGMENT, &content(7)))
        .await
        .unwrap_err();
    assert!(matches!(err, WalError::Conflict(_)), "{err:?}");
    let message = err.to_string();
    for said in [
        SEGMENT,
        "archived already with different content",
        &Fingerprint::of(&first).sha256,
        &Fingerprint::of(&content(7)).sha256,
        "Keep the archived file",
        "its own repository",
    ] {
        assert!(message.contains(said), "{said:?} not in: {message}");
    }
    let dest = fx.dir.path().join("restored");
    fx.archive
        .fetch(&WalName::parse(SEGMENT).unwrap(), &dest)
        .await
        .unwrap();
    assert!(std::fs::read(&dest).unwrap() == first);
}

#[tokio::test]
async fn a_missing_file_is_the_end_of_the_archive() {
    let fx = Fixture::new();
    let dest = fx.dir.path().join("restored");
    let name = WalName::parse("00000005.history").unwrap();
    assert_eq!(
        fx.archive.fetch(&name, &dest).await.unwrap(),
        Fetched::NotInArchive
    );
    assert!(!dest.exists());
}

#[tokio::test]
async fn a_damaged_object_is_never_restored() {
    let fx = Fixture::new();
    fx.archive
        .push(&fx.wal_file(SEGMENT, &content(9)))
        .await
        .unwrap();
    let name = WalName::parse(SEGMENT).unwrap();
    let object = fx.archive.path_of(&name);
    let mut bytes = fx.repo.get(&object).await.unwrap().to_vec();
    let near_end = bytes.len() - 20;
    bytes[near_end] ^= 0xff;
    fx.repo.put(&object, Bytes::from(bytes)).await.unwrap();
    let dest = fx.dir.path().join("restored");
    let err = fx.archive.fetch(&name, &dest).await.unwrap_err();
    assert!(matches!(err, WalError::Damaged { .. }), "{err:?}");
    assert!(err.to_string().contains("is damaged"), "{err}");
    assert!(!dest.exists());

    // An object under the wrong name is damage too.
    let other = WalName::parse("000000010000000000000009").unwrap();
    let good = fx.repo.get(&object).await;
    drop(good);
    fx.archive
        .push(&fx.wal_file("000000010000000000000008", &content(2)))
        .await
        .unwrap();
    let eight = fx
        .repo
        .get(
            &fx.archive
                .path_of(&WalName::parse("000000010000000000000008").unwrap()),
        )
        .await
        .unwrap();
    fx.repo
        .put(&fx.archive.path_of(&other), eight)
        .await
        .unwrap();
    let err = fx.archive.fetch(&other, &dest).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("holds 000000010000000000000008 instead"),
        "{err}"
    );
}

#[tokio::test]
async fn only_wal_files_are_pushed() {
    let fx = Fixture::new();
    let err = fx
        .archive
        .push(&fx.wal_file("postgresql.conf", b"x"))
        .await
        .unwrap_err();
    assert!(matches!(err, WalError::BadName(_)), "{err:?}");
    let err = fx
        .archive
        .push(&fx.dir.path().join("data/pg_wal").join(SEGMENT))
        .await
        .unwrap_err();
    assert!(matches!(err, WalError::Read { .. }), "{err:?}");
}

#[tokio::test]
async fn a_path_outside_a_data_directory_is_explained() {
    let fx = Fixture::new();
    let err = match WalArchive::for_wal_path(fx.repo.clone(), &fx.dir.path().join(SEGMENT)) {
        Err(e) => e,
        Ok(_) => panic!("no pg_control there"),
    };
    assert!(err.to_string().contains("global/pg_control"), "{err}");
    assert!(err.to_string().contains("data directory"), "{err}");
}
