//! The conformance suite against a repository in a directory, and what
//! only a directory can show: leftovers of a crashed write stay hidden, an
//! unusable root gives an error that says what to do.

mod conformance;

use std::sync::Arc;

use backup::repo::PosixRepository;
use backup::{RepoError, Repository};
use bytes::Bytes;
use conformance::{path, Subject};

async fn posix() -> (tempfile::TempDir, Subject) {
    let dir = tempfile::Builder::new()
        .prefix("pgwarden-test-repo-")
        .tempdir()
        .expect("a temporary directory");
    let repo = Arc::new(PosixRepository::new(dir.path()));
    (dir, Subject { repo })
}

conformance_tests!(posix());

#[tokio::test]
async fn a_crashed_writes_temporary_file_is_never_listed() {
    let (dir, subject) = posix().await;
    subject
        .repo
        .put(&path("wal/a"), Bytes::from_static(b"a"))
        .await
        .unwrap();
    std::fs::write(dir.path().join("wal/.tmp-b-1-0"), b"half of b").unwrap();
    let listed = subject.repo.list(&path("wal")).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].path.as_str(), "wal/a");
}

#[tokio::test]
async fn an_unusable_root_says_what_to_check() {
    let dir = tempfile::Builder::new()
        .prefix("pgwarden-test-repo-")
        .tempdir()
        .unwrap();
    // A root below a regular file cannot be created, even by root.
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"").unwrap();
    let repo = PosixRepository::new(file.join("repo"));
    let err = repo
        .put(&path("wal/a"), Bytes::from_static(b"a"))
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::Io { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&repo.describe()), "{message}");
    assert!(message.contains("mounted"), "{message}");
    assert!(message.contains("writable"), "{message}");
}
