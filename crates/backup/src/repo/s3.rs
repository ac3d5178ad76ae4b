//! A repository in an S3-compatible object store (AWS S3, MinIO, Ceph RGW,
//! …), through `object_store`. A PUT is atomic on S3: readers see the old
//! object or the new one, never a part. `put_new` is a conditional PUT
//! (`If-None-Match: *`), so the server must support conditional writes
//! (AWS S3 does since 2024, as do MinIO and current Ceph); one that ignores
//! the header would let a second `put_new` replace the first.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};

use super::{Entry, RepoError, RepoPath, Repository};

pub mod credentials;
mod http;

pub use credentials::{CredentialsError, Keys};

/// Where an S3 repository is and how to reach it.
#[derive(Clone, Debug)]
pub struct S3Options {
    pub bucket: String,
    /// Key prefix inside the bucket (`/`-separated repository path
    /// segments, no slash at either end); empty for the bucket's root.
    pub prefix: String,
    /// `https://host:port` of an S3-compatible server, or `http://…` for
    /// one on a trusted network; `None` for AWS's endpoint of `region`.
    pub endpoint: Option<String>,
    pub region: String,
    pub credentials: S3Credentials,
    /// CA certificates (PEM) to trust for an https endpoint instead of the
    /// system's.
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub enum S3Credentials {
    /// A file in the AWS shared credentials format, and the profile in it.
    File { path: PathBuf, profile: String },
    /// Keys given directly.
    Keys(Keys),
    /// The standard AWS environment: `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), else a web
    /// identity token, container or EC2 instance credentials.
    Environment,
}

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("cannot set up TLS for the S3 repository: {0}")]
    Tls(String),
    #[error("{0:?} is not a usable key prefix: write repository path segments (letters, digits, '.', '_', '-') separated by '/'")]
    BadPrefix(String),
    #[error("cannot set up the S3 repository s3://{bucket}: {message}; check the bucket name, endpoint and region")]
    Setup { bucket: String, message: String },
}

pub struct S3Repository {
    store: Arc<dyn ObjectStore>,
    description: String,
}

impl S3Repository {
    /// Connects lazily: nothing is sent until the first call.
    pub fn open(options: &S3Options) -> Result<S3Repository, S3Error> {
        let prefix = options.prefix.trim_matches('/');
        if !prefix.is_empty() && RepoPath::new(prefix).is_err() {
            return Err(S3Error::BadPrefix(options.prefix.clone()));
        }
        let mut builder = match &options.credentials {
            S3Credentials::Environment => AmazonS3Builder::from_env(),
            S3Credentials::Keys(keys) => with_keys(AmazonS3Builder::new(), keys),
            S3Credentials::File { path, profile } => {
                with_keys(AmazonS3Builder::new(), &credentials::read(path, profile)?)
            }
        };
        builder = builder
            .with_bucket_name(&options.bucket)
            .with_region(&options.region)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(60),
                ..RetryConfig::default()
            })
            .with_http_connector(
                http::HyperConnector::new(options.ca_file.as_deref()).map_err(S3Error::Tls)?,
            );
        if let Some(endpoint) = &options.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let s3 = builder.build().map_err(|e| S3Error::Setup {
            bucket: options.bucket.clone(),
            message: e.to_string(),
        })?;
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        };
        let mut description = format!("s3://{}/{prefix}", options.bucket);
        if let Some(endpoint) = &options.endpoint {
            description.push_str(&format!(" at {endpoint}"));
        }
        Ok(S3Repository { store, description })
    }

    fn remote(&self, what: &'static str, path: &RepoPath, e: object_store::Error) -> RepoError {
        // object_store's message ends with the server's XML answer over
        // several lines; its first line and the S3 error code say it all.
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        let first = first
            .strip_suffix(": <?xml version=\"1.0\" encoding=\"utf-8\"?>")
            .unwrap_or(first);
        let message = match s3_code(&e) {
            Some((code, said)) => format!("{first}: {code}: {said}"),
            None => first.to_string(),
        };
        RepoError::Remote {
            repo: self.describe(),
            what,
            path: path.to_string(),
            message,
        }
    }
}

/// The S3 error code and message of a refusal other than a missing key
/// (`NoSuchBucket`, `AccessDenied`, …). object_store keeps the server's
/// answer only inside its error's source, so it is read from there.
fn s3_code(e: &object_store::Error) -> Option<(String, String)> {
    let debug = format!("{e:?}");
    let between = |open: &str, close: &str| {
        let start = debug.find(open)? + open.len();
        let end = debug[start..].find(close)? + start;
        Some(debug[start..end].to_string())
    };
    let code = between("<Code>", "</Code>")?;
    if code == "NoSuchKey" {
        return None;
    }
    let said = between("<Message>", "</Message>").unwrap_or_default();
    Some((code, said))
}

fn with_keys(builder: AmazonS3Builder, keys: &Keys) -> AmazonS3Builder {
    let builder = builder
        .with_access_key_id(&keys.access_key_id)
        .with_secret_access_key(&keys.secret_access_key);
    match &keys.session_token {
        Some(token) => builder.with_token(token),
        None => builder,
    }
}

fn object(path: &RepoPath) -> Result<ObjectPath, RepoError> {
    ObjectPath::parse(path.as_str()).map_err(|_| RepoError::BadPath(path.to_string()))
}

#[async_trait]
impl Repository for S3Repository {
    async fn put(&self, path: &RepoPath, data: Bytes) -> Result<(), RepoError> {
        self.store
            .put(&object(path)?, PutPayload::from(data))
            .await
            .map(drop)
            .map_err(|e| self.remote("write", path, e))
    }

    async fn put_new(&self, path: &RepoPath, data: Bytes) -> Result<(), RepoError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&object(path)?, PutPayload::from(data), options)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(RepoError::AlreadyExists(path.clone()))
            }
            Err(e) => Err(self.remote("create", path, e)),
        }
    }

    async fn get(&self, path: &RepoPath) -> Result<Bytes, RepoError> {
        let location = object(path)?;
        let read = async { self.store.get(&location).await?.bytes().await };
        match read.await {
            Ok(data) => Ok(data),
            Err(e @ object_store::Error::NotFound { .. }) if s3_code(&e).is_some() => {
                // A missing bucket is a broken repository, not a missing
                // object: `wal fetch` must not tell PostgreSQL "no more WAL".
                Err(self.remote("read", path, e))
            }
            Err(object_store::Error::NotFound { .. }) => Err(RepoError::NotFound(path.clone())),
            Err(e) => Err(self.remote("read", path, e)),
        }
    }

    async fn size(&self, path: &RepoPath) -> Result<Option<u64>, RepoError> {
        match self.store.head(&object(path)?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.remote("look at", path, e)),
        }
    }

    async fn list(&self, prefix: &RepoPath) -> Result<Vec<Entry>, RepoError> {
        let listed: Vec<_> = self
            .store
            .list(Some(&object(prefix)?))
            .try_collect()
            .await
            .map_err(|e| self.remote("list", prefix, e))?;
        // Objects put there by something else, under names no repository
        // path has, are not ours.
        let mut entries: Vec<Entry> = listed
            .into_iter()
            .filter_map(|meta| {
                let path = RepoPath::new(meta.location.as_ref()).ok()?;
                Some(Entry {
                    path,
                    size: meta.size,
                })
            })
            .collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    async fn delete(&self, path: &RepoPath) -> Result<(), RepoError> {
        match self.store.delete(&object(path)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.remote("delete", path, e)),
        }
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
