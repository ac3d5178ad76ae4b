//! The repository `[backup]` in pgwarden.toml names.

use std::sync::Arc;

use config::{Backup, Repository as Where};

use crate::repo::s3::{S3Credentials, S3Error, S3Options, S3Repository};
use crate::repo::{PosixRepository, Repository};

/// Opens the repository of `backup`. Nothing is read or written yet: a
/// directory that is not mounted or a server that is down shows at the
/// first call. Fails only on what can be known now (an S3 credentials file
/// that cannot be read, say).
pub fn open(backup: &Backup) -> Result<Arc<dyn Repository>, S3Error> {
    Ok(match &backup.repository {
        Where::Directory(dir) => Arc::new(PosixRepository::new(dir)),
        Where::S3(s3) => Arc::new(S3Repository::open(&S3Options {
            bucket: s3.bucket.clone(),
            prefix: s3.prefix.clone(),
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
            credentials: match &s3.credentials_file {
                Some(path) => S3Credentials::File {
                    path: path.clone(),
                    profile: s3.profile.clone(),
                },
                None => S3Credentials::Environment,
            },
            ca_file: s3.ca_file.clone(),
        })?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_or_a_bucket() {
        let dir = open(&Backup {
            repository: Where::Directory("/mnt/backup".into()),
            retention: config::Retention::default(),
            replica_from: config::ReplicaMethod::DEFAULT_ORDER.to_vec(),
        })
        .unwrap();
        assert_eq!(dir.describe(), "/mnt/backup");
        let s3 = open(&Backup {
            repository: Where::S3(config::S3 {
                bucket: "pg-backups".into(),
                prefix: "main".into(),
                endpoint: Some("http://127.0.0.1:9".into()),
                region: "us-east-1".into(),
                credentials_file: None,
                profile: "default".into(),
                ca_file: None,
            }),
            retention: config::Retention::default(),
            replica_from: config::ReplicaMethod::DEFAULT_ORDER.to_vec(),
        })
        .unwrap();
        assert_eq!(s3.describe(), "s3://pg-backups/main at http://127.0.0.1:9");
    }
}
