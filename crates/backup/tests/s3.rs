//! The conformance suite against a real S3-compatible server (moto, from
//! PyPI, started by the test kit), through a key prefix so the prefix
//! mapping is exercised too; and what only a remote store can show: an
//! unreachable endpoint, a missing bucket, bad credentials files.

mod conformance;

use std::sync::Arc;

use backup::repo::s3::{CredentialsError, Keys, S3Error};
use backup::repo::{S3Credentials, S3Options, S3Repository};
use backup::{RepoError, Repository};
use bytes::Bytes;
use conformance::{path, Subject};
use testkit::s3::{S3Server, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};

const BUCKET: &str = "pgwarden-conformance";

fn options(endpoint: String, bucket: &str, prefix: &str) -> S3Options {
    S3Options {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
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

async fn s3() -> (S3Server, Subject) {
    let server = S3Server::start().await.unwrap();
    server.create_bucket(BUCKET).unwrap();
    let repo = S3Repository::open(&options(server.endpoint(), BUCKET, "cluster/main")).unwrap();
    (
        server,
        Subject {
            repo: Arc::new(repo),
        },
    )
}

conformance_tests!(s3());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_live_under_the_prefix_and_the_prefix_is_optional() {
    let (server, subject) = s3().await;
    subject
        .repo
        .put(&path("wal/a"), Bytes::from_static(b"a"))
        .await
        .unwrap();
    assert!(subject
        .repo
        .describe()
        .starts_with("s3://pgwarden-conformance/cluster/main"));
    let root = S3Repository::open(&options(server.endpoint(), BUCKET, "")).unwrap();
    let everything = root.list(&path("cluster")).await.unwrap();
    assert_eq!(everything.len(), 1, "{everything:?}");
    assert_eq!(everything[0].path.as_str(), "cluster/main/wal/a");
    // Slashes around the prefix change nothing.
    let slashed =
        S3Repository::open(&options(server.endpoint(), BUCKET, "/cluster/main/")).unwrap();
    assert_eq!(slashed.get(&path("wal/a")).await.unwrap(), &b"a"[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_says_what_to_check() {
    // A port nothing listens on.
    let endpoint = format!("http://127.0.0.1:{}", testkit::free_port());
    let repo = S3Repository::open(&options(endpoint.clone(), BUCKET, "p")).unwrap();
    let err = repo
        .put(&path("wal/a"), Bytes::from_static(b"a"))
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::Remote { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&endpoint), "{message}");
    assert!(message.contains("reachable"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_an_error_not_an_empty_repository() {
    let server = S3Server::start().await.unwrap();
    let repo = S3Repository::open(&options(server.endpoint(), "no-such-bucket", "p")).unwrap();
    let err = repo.list(&path("wal")).await.unwrap_err();
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");
    // Not "no such object": `wal fetch` must not take it for the end of
    // the archive.
    let err = repo.get(&path("wal/a")).await.unwrap_err();
    assert!(matches!(err, RepoError::Remote { .. }), "{err:?}");
    let err = repo
        .put(&path("wal/a"), Bytes::from_static(b"a"))
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::Remote { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_a_file() {
    let server = S3Server::start().await.unwrap();
    server.create_bucket(BUCKET).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("pgwarden-test-s3-")
        .tempdir()
        .unwrap();
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        format!(
            "[backup]\naws_access_key_id = {ACCESS_KEY_ID}\naws_secret_access_key = {SECRET_ACCESS_KEY}\n"
        ),
    )
    .unwrap();
    let mut from_file = options(server.endpoint(), BUCKET, "p");
    from_file.credentials = S3Credentials::File {
        path: file.clone(),
        profile: "backup".to_string(),
    };
    let repo = S3Repository::open(&from_file).unwrap();
    repo.put(&path("x"), Bytes::from_static(b"x"))
        .await
        .unwrap();

    from_file.credentials = S3Credentials::File {
        path: file.clone(),
        profile: "default".to_string(),
    };
    match S3Repository::open(&from_file) {
        Err(S3Error::Credentials(CredentialsError::MissingKeys { profile, .. })) => {
            assert_eq!(profile, "default")
        }
        other => panic!("a missing profile: {:?}", other.err()),
    }
    from_file.credentials = S3Credentials::File {
        path: dir.path().join("absent"),
        profile: "backup".to_string(),
    };
    let err = S3Repository::open(&from_file).err().unwrap();
    assert!(
        err.to_string()
            .contains("readable by the user PostgreSQL runs as"),
        "{err}"
    );
}

#[test]
fn a_bad_prefix_is_refused() {
    let mut bad = options("http://127.0.0.1:1".to_string(), BUCKET, "a/../b");
    assert!(matches!(
        S3Repository::open(&bad),
        Err(S3Error::BadPrefix(_))
    ));
    bad.prefix = "has space".to_string();
    assert!(matches!(
        S3Repository::open(&bad),
        Err(S3Error::BadPrefix(_))
    ));
}
