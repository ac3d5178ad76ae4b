//! Fetching ahead against a directory repository, on a fake data
//! directory; the prefetcher runs in the test's process.

use std::sync::Arc;

use super::*;
use crate::repo::PosixRepository;
use crate::Repository;

const ID: u64 = 7301234567890123456;
/// Small segments keep the tests fast; the code takes any size.
const SIZE: usize = 64 * 1024;

struct Fixture {
    dir: tempfile::TempDir,
    archive: WalArchive,
}

fn name(number: u64) -> WalName {
    WalName::parse(&format!("0000000100000000{number:08X}")).unwrap()
}

fn content(number: u64) -> Vec<u8> {
    let mut data = vec![0u8; SIZE];
    for (i, b) in data.iter_mut().enumerate().step_by(31) {
        *b = (i as u64 ^ number) as u8;
    }
    data
}

impl Fixture {
    /// Segments `archived` are in the archive.
    async fn new(archived: std::ops::RangeInclusive<u64>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Fixture::with_repo(dir, "repo");
        for number in archived {
            let path = fixture.pg_wal().join(name(number).as_str());
            std::fs::write(&path, content(number)).unwrap();
            fixture.archive.push(&path).await.unwrap();
            std::fs::remove_file(&path).unwrap();
        }
        fixture
    }

    fn with_repo(dir: tempfile::TempDir, repo: &str) -> Fixture {
        let repo_dir = dir.path().join(repo);
        std::fs::create_dir_all(&repo_dir).unwrap();
        let repo: Arc<dyn Repository> = Arc::new(PosixRepository::new(repo_dir));
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("pg_wal")).unwrap();
        std::fs::create_dir_all(data.join("global")).unwrap();
        let mut control = ID.to_ne_bytes().to_vec();
        control.resize(8192, 0);
        std::fs::write(data.join("global/pg_control"), control).unwrap();
        let archive = WalArchive::new(repo, ID);
        Fixture { dir, archive }
    }

    fn pg_wal(&self) -> PathBuf {
        self.dir.path().join("data/pg_wal")
    }

    /// Where PostgreSQL has restore_command write.
    fn dest(&self) -> PathBuf {
        self.pg_wal().join("RECOVERYXLOG")
    }

    fn spool(&self) -> Spool {
        Spool::for_wal_path(&self.dest())
    }

    fn spooled(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.spool().dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| WalName::parse(n).is_ok())
            .collect();
        names.sort();
        names
    }

    async fn fetch(&self, number: u64) -> Answer {
        let _ = std::fs::remove_file(self.dest());
        fetch(&self.archive, &name(number), &self.dest())
            .await
            .unwrap()
    }

    async fn prefetch(&self) {
        prefetch(&self.archive, &self.spool()).await.unwrap();
    }
}

fn names(numbers: std::ops::RangeInclusive<u64>) -> Vec<String> {
    numbers.map(|n| name(n).to_string()).collect()
}

#[tokio::test]
async fn prefetched_segments_are_the_archived_content() {
    let fx = Fixture::new(1..=20).await;
    let answer = fx.fetch(1).await;
    assert!(answer.prefetch, "{answer:?}");
    assert_eq!(std::fs::read(fx.dest()).unwrap(), content(1));
    fx.prefetch().await;
    assert_eq!(fx.spooled(), names(2..=1 + AHEAD));

    // Each next segment comes from the spool, byte for byte, and leaves it.
    for number in 2..=5 {
        let answer = fx.fetch(number).await;
        assert_eq!(
            answer.fetched,
            Fetched::Restored(Fingerprint::of(&content(number)))
        );
        assert!(std::fs::read(fx.dest()).unwrap() == content(number));
        assert!(!fx.spooled().contains(&name(number).to_string()));
    }
    // The window follows the requests; what is behind them is removed.
    fx.prefetch().await;
    assert_eq!(fx.spooled(), names(6..=5 + AHEAD));
}

#[tokio::test]
async fn a_spooled_segment_cut_short_is_not_used() {
    let fx = Fixture::new(1..=4).await;
    fx.fetch(1).await;
    fx.prefetch().await;
    assert_eq!(fx.spooled(), names(2..=4));
    let spooled = fx.spool().dir().join(name(2).as_str());
    // Cut short (a full disk, a stray writer): not the archived size.
    std::fs::write(&spooled, &content(2)[..1000]).unwrap();
    fx.fetch(2).await;
    assert!(std::fs::read(fx.dest()).unwrap() == content(2));
    assert!(!spooled.exists());
}

#[tokio::test]
async fn a_segment_not_in_the_archive_is_reported_so() {
    let fx = Fixture::new(1..=3).await;
    fx.fetch(1).await;
    // Stops at the end of the archive.
    fx.prefetch().await;
    assert_eq!(fx.spooled(), names(2..=3));
    fx.fetch(2).await;
    fx.fetch(3).await;
    let answer = fx.fetch(4).await;
    assert_eq!(
        answer,
        Answer {
            fetched: Fetched::NotInArchive,
            prefetch: false
        }
    );
    assert!(!fx.dest().exists());
    // A name spooled under another timeline is never given for this one.
    let other = WalName::parse("000000020000000000000002").unwrap();
    let answer = fetch(&fx.archive, &other, &fx.dest()).await.unwrap();
    assert_eq!(answer.fetched, Fetched::NotInArchive);
    assert!(!fx.dest().exists());
}

#[tokio::test]
async fn the_spool_is_emptied_for_another_archive_and_removed_after_recovery() {
    let fx = Fixture::new(1..=5).await;
    fx.fetch(1).await;
    fx.prefetch().await;
    assert_eq!(fx.spooled(), names(2..=5));

    // The same data directory restoring from another repository: nothing
    // spooled from the first is used.
    let Fixture {
        dir,
        archive: first,
    } = fx;
    let other = Fixture::with_repo(dir, "other-repo");
    let path = other.pg_wal().join(name(2).as_str());
    std::fs::write(&path, content(102)).unwrap();
    other.archive.push(&path).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    other.fetch(2).await;
    assert!(std::fs::read(other.dest()).unwrap() == content(102));
    assert!(other.spooled().is_empty(), "{:?}", other.spooled());
    drop(first);

    // Once the server archives, recovery is over: the spool goes.
    other.spool().remove();
    assert!(!other.spool().dir().exists());
}

#[test]
fn the_next_segments_cross_into_the_next_log_file() {
    let last = WalName::parse("0000000100000000000000FF").unwrap();
    let next: Vec<String> = following(&last, 16 << 20, 2)
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        next,
        ["000000010000000100000000", "000000010000000100000001"]
    );
    // 1 GiB segments: four to a log file.
    let last = WalName::parse("000000030000000A00000003").unwrap();
    assert_eq!(
        following(&last, 1 << 30, 1)[0].to_string(),
        "000000030000000B00000000"
    );
}
