//! The repository conformance suite: each property written once, run
//! against every backend by `conformance_tests!` (one `#[tokio::test]` per
//! backend and property, so nextest runs them in parallel).

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use backup::{RepoError, RepoPath, Repository};
use bytes::Bytes;
use tokio::task::JoinSet;

/// A backend under test; the guard (a server, a directory) outlives it.
pub struct Subject {
    pub repo: Arc<dyn Repository>,
}

/// One test per property for a backend: `$make` is an async expression
/// giving `(guard, Subject)`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            put_get_size_delete,
            put_new_never_replaces,
            objects_keep_every_byte,
            a_prefix_is_not_an_object,
            list_by_directory_prefix_sorted,
            list_is_complete_beyond_one_page,
            bad_paths_are_refused,
            concurrent_put_new_has_one_winner,
            concurrent_put_is_seen_whole,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (_guard, subject) = $make.await;
                conformance::$name(&subject).await;
                drop(subject);
            }
        )*
    };
}

pub fn path(p: &str) -> RepoPath {
    RepoPath::new(p).unwrap_or_else(|e| panic!("{p:?} should be a repository path: {e}"))
}

fn paths(entries: &[backup::Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.path.as_str()).collect()
}

pub async fn put_get_size_delete(subject: &Subject) {
    let repo = &subject.repo;
    let a = path("t/a");
    match repo.get(&a).await {
        Err(RepoError::NotFound(p)) => assert_eq!(p, a),
        other => panic!("get of an absent object: {other:?}"),
    }
    assert_eq!(repo.size(&a).await.unwrap(), None);

    repo.put(&a, Bytes::from_static(b"first")).await.unwrap();
    assert_eq!(repo.get(&a).await.unwrap(), &b"first"[..]);
    assert_eq!(repo.size(&a).await.unwrap(), Some(5));

    // put replaces.
    repo.put(&a, Bytes::from_static(b"second, longer"))
        .await
        .unwrap();
    assert_eq!(repo.get(&a).await.unwrap(), &b"second, longer"[..]);
    assert_eq!(repo.size(&a).await.unwrap(), Some(14));
    repo.put(&a, Bytes::from_static(b"3")).await.unwrap();
    assert_eq!(repo.get(&a).await.unwrap(), &b"3"[..]);

    repo.delete(&a).await.unwrap();
    assert!(matches!(repo.get(&a).await, Err(RepoError::NotFound(_))));
    assert_eq!(repo.size(&a).await.unwrap(), None);
    // Deleting what is absent is not an error.
    repo.delete(&a).await.unwrap();
    repo.delete(&path("never/there")).await.unwrap();

    let message = RepoError::NotFound(a.clone()).to_string();
    assert!(message.contains("t/a"), "{message}");
    assert!(!repo.describe().is_empty());
}

pub async fn put_new_never_replaces(subject: &Subject) {
    let repo = &subject.repo;
    let k = path("new/k");
    repo.put_new(&k, Bytes::from_static(b"one")).await.unwrap();
    match repo.put_new(&k, Bytes::from_static(b"two")).await {
        Err(RepoError::AlreadyExists(p)) => assert_eq!(p, k),
        other => panic!("put_new over an existing object: {other:?}"),
    }
    assert_eq!(repo.get(&k).await.unwrap(), &b"one"[..]);
    // An empty object exists too.
    let empty = path("new/empty");
    repo.put_new(&empty, Bytes::new()).await.unwrap();
    assert!(matches!(
        repo.put_new(&empty, Bytes::from_static(b"x")).await,
        Err(RepoError::AlreadyExists(_))
    ));
    assert_eq!(repo.size(&empty).await.unwrap(), Some(0));
    // Once deleted, the path is free again.
    repo.delete(&k).await.unwrap();
    repo.put_new(&k, Bytes::from_static(b"three"))
        .await
        .unwrap();
    assert_eq!(repo.get(&k).await.unwrap(), &b"three"[..]);
    // No temporary file or leftover shows in a listing.
    assert_eq!(
        paths(&repo.list(&path("new")).await.unwrap()),
        ["new/empty", "new/k"]
    );
}

pub async fn objects_keep_every_byte(subject: &Subject) {
    let repo = &subject.repo;
    let every_byte: Vec<u8> = (0..=255u8).cycle().take(256 * 3 + 7).collect();
    // Larger than the usual buffers, not a multiple of any.
    let large: Vec<u8> = (0..3 * 1024 * 1024 + 13)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for (name, data) in [
        ("bytes/empty", Vec::new()),
        ("bytes/every", every_byte),
        ("bytes/large", large),
    ] {
        let p = path(name);
        repo.put(&p, Bytes::from(data.clone())).await.unwrap();
        let back = repo.get(&p).await.unwrap();
        assert!(
            back == data,
            "{name}: {} bytes came back for {}",
            back.len(),
            data.len()
        );
        assert_eq!(repo.size(&p).await.unwrap(), Some(data.len() as u64));
    }
    let listed = repo.list(&path("bytes")).await.unwrap();
    let sizes: Vec<(&str, u64)> = listed.iter().map(|e| (e.path.as_str(), e.size)).collect();
    assert_eq!(
        sizes,
        [
            ("bytes/empty", 0),
            ("bytes/every", 256 * 3 + 7),
            ("bytes/large", 3 * 1024 * 1024 + 13)
        ]
    );
}

pub async fn a_prefix_is_not_an_object(subject: &Subject) {
    let repo = &subject.repo;
    repo.put(&path("dir/child"), Bytes::from_static(b"c"))
        .await
        .unwrap();
    let dir = path("dir");
    assert!(matches!(repo.get(&dir).await, Err(RepoError::NotFound(_))));
    assert_eq!(repo.size(&dir).await.unwrap(), None);
    repo.delete(&dir).await.unwrap();
    assert_eq!(repo.get(&path("dir/child")).await.unwrap(), &b"c"[..]);
    // Listing an object as if it were a directory finds nothing under it.
    assert!(repo.list(&path("dir/child")).await.unwrap().is_empty());
}

pub async fn list_by_directory_prefix_sorted(subject: &Subject) {
    let repo = &subject.repo;
    // Written out of order; '-' < '.' < '/' < '0' in byte order, so a
    // backend that sorts per directory level gets this wrong.
    let inside = [
        "wal/a0",
        "wal/a/x",
        "wal/b",
        "wal/a.1",
        "wal/a-1",
        "wal/a/y/z",
        "wal/A",
    ];
    let outside = ["walrus/x", "wal.old", "wal-2/x", "other/wal/y", "wa/l"];
    for (i, name) in inside.iter().chain(outside.iter()).enumerate() {
        repo.put(&path(name), Bytes::from(vec![b'x'; i]))
            .await
            .unwrap();
    }
    let listed = repo.list(&path("wal")).await.unwrap();
    assert_eq!(
        paths(&listed),
        [
            "wal/A",
            "wal/a-1",
            "wal/a.1",
            "wal/a/x",
            "wal/a/y/z",
            "wal/a0",
            "wal/b"
        ]
    );
    for entry in &listed {
        let written = inside
            .iter()
            .position(|n| *n == entry.path.as_str())
            .unwrap();
        assert_eq!(entry.size, written as u64, "size of {}", entry.path);
    }
    assert_eq!(
        paths(&repo.list(&path("wal/a")).await.unwrap()),
        ["wal/a/x", "wal/a/y/z"]
    );
    assert_eq!(
        paths(&repo.list(&path("other")).await.unwrap()),
        ["other/wal/y"]
    );
    assert!(repo.list(&path("nothing")).await.unwrap().is_empty());
    assert_eq!(paths(&repo.list(&path("wa")).await.unwrap()), ["wa/l"]);
}

/// More objects than one page of an S3 listing (1000).
pub async fn list_is_complete_beyond_one_page(subject: &Subject) {
    const COUNT: usize = 1_050;
    let mut writers = JoinSet::new();
    let names: Vec<String> = (0..COUNT).map(|i| format!("many/{i:05}")).collect();
    for chunk in names.chunks(COUNT.div_ceil(8)) {
        let repo = subject.repo.clone();
        let chunk = chunk.to_vec();
        writers.spawn(async move {
            for name in chunk {
                repo.put(&path(&name), Bytes::from(name.clone()))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let listed = subject.repo.list(&path("many")).await.unwrap();
    assert_eq!(paths(&listed), names);
}

pub async fn bad_paths_are_refused(subject: &Subject) {
    for bad in [
        "",
        "/",
        "/abs",
        "trailing/",
        "a//b",
        ".",
        "..",
        "../up",
        "a/../b",
        "a/./b",
        "sp ace",
        "tab\t",
        "back\\slash",
        "ü",
        "colon:",
        "star*",
        "new\nline",
        // Names starting with '.' are the backends' own (temporary files).
        ".hidden",
        "a/.tmp-x",
    ] {
        match RepoPath::new(bad) {
            Err(RepoError::BadPath(p)) => assert_eq!(p, bad),
            other => panic!("{bad:?} should be refused: {other:?}"),
        }
    }
    let base = path("base");
    assert!(matches!(base.join("../x"), Err(RepoError::BadPath(_))));
    assert!(matches!(base.join(""), Err(RepoError::BadPath(_))));
    assert_eq!(base.join("a/b").unwrap().as_str(), "base/a/b");
    let message = RepoPath::new("a b").unwrap_err().to_string();
    assert!(message.contains("\"a b\""), "{message}");
    // Every allowed character, and a long name, are usable.
    let good = path("Az09._-/0000000100000000000000A1.partial");
    subject
        .repo
        .put(&good, Bytes::from_static(b"ok"))
        .await
        .unwrap();
    assert_eq!(subject.repo.get(&good).await.unwrap(), &b"ok"[..]);
    let long = path(&"x".repeat(200));
    subject.repo.put(&long, Bytes::new()).await.unwrap();
    assert_eq!(subject.repo.size(&long).await.unwrap(), Some(0));
}

const WRITERS: u8 = 12;
const SIZE: usize = 512 * 1024;

/// The value writer `i` writes: `SIZE` bytes of `i + 1`.
fn value(i: u8) -> Bytes {
    Bytes::from(vec![i + 1; SIZE])
}

/// Which writer's whole value `data` is, or why it is not one.
fn whole_value(data: &[u8]) -> Result<u8, String> {
    let first = *data.first().ok_or("an empty object")?;
    if data.len() != SIZE {
        return Err(format!("{} bytes instead of {SIZE}", data.len()));
    }
    if data.iter().any(|b| *b != first) {
        return Err("a mix of two values".to_string());
    }
    match first {
        1..=WRITERS => Ok(first - 1),
        other => Err(format!("bytes {other} nobody wrote")),
    }
}

/// Readers that get and list `target` until `stop`: every object they see
/// must be one writer's whole value. Returns the writers whose values they
/// saw.
fn spawn_readers(
    repo: &Arc<dyn Repository>,
    target: &RepoPath,
    stop: &Arc<AtomicBool>,
) -> JoinSet<Vec<u8>> {
    let mut readers = JoinSet::new();
    for _ in 0..3 {
        let (repo, target, stop) = (repo.clone(), target.clone(), stop.clone());
        readers.spawn(async move {
            let mut seen = Vec::new();
            let parent = path(target.as_str().rsplit_once('/').unwrap().0);
            while !stop.load(Ordering::Relaxed) {
                match repo.get(&target).await {
                    Ok(data) => seen.push(
                        whole_value(&data)
                            .unwrap_or_else(|e| panic!("a reader saw a partial object: {e}")),
                    ),
                    Err(RepoError::NotFound(_)) => {}
                    Err(e) => panic!("a reader failed: {e}"),
                }
                for entry in repo.list(&parent).await.unwrap() {
                    assert_eq!(entry.path, target, "a listing showed a stray object");
                    assert_eq!(entry.size, SIZE as u64, "a listing showed a partial object");
                }
                tokio::task::yield_now().await;
            }
            seen
        });
    }
    readers
}

pub async fn concurrent_put_new_has_one_winner(subject: &Subject) {
    let target = path("race/new/object");
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = spawn_readers(&subject.repo, &target, &stop);
    let mut writers = JoinSet::new();
    for i in 0..WRITERS {
        let (repo, target) = (subject.repo.clone(), target.clone());
        writers.spawn(async move { (i, repo.put_new(&target, value(i)).await) });
    }
    let mut winners = Vec::new();
    while let Some(done) = writers.join_next().await {
        match done.unwrap() {
            (i, Ok(())) => winners.push(i),
            (_, Err(RepoError::AlreadyExists(p))) => assert_eq!(p, target),
            (i, Err(e)) => panic!("writer {i} failed: {e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let winner = winners[0];
    while let Some(seen) = readers.join_next().await {
        for i in seen.unwrap() {
            assert_eq!(i, winner, "a reader saw a loser's value");
        }
    }
    let stored = subject.repo.get(&target).await.unwrap();
    assert_eq!(whole_value(&stored), Ok(winner));
}

pub async fn concurrent_put_is_seen_whole(subject: &Subject) {
    let target = path("race/put/object");
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = spawn_readers(&subject.repo, &target, &stop);
    let mut writers = JoinSet::new();
    for i in 0..WRITERS {
        let (repo, target) = (subject.repo.clone(), target.clone());
        writers.spawn(async move {
            for _ in 0..3 {
                repo.put(&target, value(i)).await.unwrap();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(seen) = readers.join_next().await {
        seen.unwrap();
    }
    let stored = subject.repo.get(&target).await.unwrap();
    whole_value(&stored).unwrap();
    assert_eq!(
        paths(&subject.repo.list(&path("race")).await.unwrap()),
        ["race/put/object"]
    );
}
