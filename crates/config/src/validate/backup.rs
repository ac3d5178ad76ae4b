//! `[backup]`: where backups and the WAL archive live.

use std::path::{Path, PathBuf};

use super::{Result, Validator};
use crate::locate::{KeyPath, Target};
use crate::raw::RawBackup;
use crate::schema::{Backup, ReplicaMethod, Repository, Retention, S3};

const REPOSITORY_HINT: &str =
    "write a directory, e.g. repository = \"/mnt/backup\", or an S3 bucket and prefix, e.g. repository = \"s3://backups/pg-main\"";

impl Validator<'_> {
    /// `data_dir`: member.data_dir, which the repository must not be in.
    pub(super) fn backup(&self, raw: RawBackup, data_dir: Option<&Path>) -> Result<Backup> {
        let table = KeyPath::of(&["backup"]);
        let path = table.key("repository");
        let written = self.required(
            &table,
            "repository",
            raw.repository.clone(),
            "\"/mnt/backup\"",
        )?;
        let retention = self.retention(&table, &raw)?;
        let replica_from = self.replica_from(&table, raw.replica_from.as_deref())?;
        let repository = match written.strip_prefix("s3://") {
            Some(rest) => Repository::S3(self.s3(&table, rest, raw)?),
            None if written.contains("://") => {
                return Err(self.err(
                    &path,
                    Target::Value,
                    format!("`{path}` \"{written}\" is neither a directory nor an s3:// URL"),
                    REPOSITORY_HINT,
                ))
            }
            None => {
                let dir = PathBuf::from(&written);
                self.absolute(&path, &dir)?;
                if data_dir.is_some_and(|d| !d.as_os_str().is_empty() && dir.starts_with(d)) {
                    return Err(self.err(
                        &path,
                        Target::Value,
                        format!("`{path}` {written} is inside member.data_dir"),
                        "keep the repository off this server's data directory (it would be lost with it): \
                         use another disk or, better, a share of another host",
                    ));
                }
                self.s3_keys_unused(&table, &raw)?;
                // Not checked for existence: an NFS share that is not
                // mounted yet must not keep the agent from starting;
                // archiving reports it and PostgreSQL retries.
                Repository::Directory(dir)
            }
        };
        Ok(Backup {
            repository,
            retention,
            replica_from,
        })
    }

    fn s3(&self, table: &KeyPath, rest: &str, raw: RawBackup) -> Result<S3> {
        let path = table.key("repository");
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_end_matches('/');
        if let Some(problem) = bucket_problem(bucket) {
            return Err(self.err(
                &path,
                Target::Value,
                format!("invalid bucket \"{bucket}\" in `{path}`: {problem}"),
                "S3 bucket names have 3 to 63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit",
            ));
        }
        if !prefix.is_empty() {
            if let Some(problem) = prefix_problem(prefix) {
                return Err(self.err(
                    &path,
                    Target::Value,
                    format!("invalid prefix \"{prefix}\" in `{path}`: {problem}"),
                    "write the prefix as names of letters, digits, '.', '_' and '-' separated by single '/', e.g. \"s3://backups/pg/main\"",
                ));
            }
        }
        let endpoint_path = table.key("s3_endpoint");
        if let Some(endpoint) = &raw.s3_endpoint {
            endpoint_problem(endpoint).map_or(Ok(()), |problem| {
                Err(self.err(
                    &endpoint_path,
                    Target::Value,
                    format!("invalid `{endpoint_path}` \"{endpoint}\": {problem}"),
                    "write scheme://host[:port] of the S3-compatible server, e.g. \"https://minio.example.com:9000\"; leave it out for AWS",
                ))
            })?;
        }
        let region = raw.s3_region.unwrap_or_else(|| "us-east-1".to_owned());
        let region_ok = !region.is_empty()
            && region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !region_ok {
            let path = table.key("s3_region");
            return Err(self.err(
                &path,
                Target::Value,
                format!("invalid `{path}` \"{region}\""),
                "write the bucket's region, e.g. \"eu-west-1\" (the default is \"us-east-1\"; most S3-compatible servers accept any)",
            ));
        }
        if let Some(file) = &raw.s3_credentials_file {
            self.existing_file(&table.key("s3_credentials_file"), file)?;
        }
        let profile_path = table.key("s3_profile");
        match (&raw.s3_profile, &raw.s3_credentials_file) {
            (Some(_), None) => {
                return Err(self.err(
                    &profile_path,
                    Target::Key,
                    "`backup.s3_profile` is set but `backup.s3_credentials_file` is not",
                    "name the credentials file the profile is in, or remove s3_profile to use the AWS environment",
                ))
            }
            (Some(profile), Some(_)) if profile.trim().is_empty() => {
                return Err(self.err(
                    &profile_path,
                    Target::Value,
                    "`backup.s3_profile` is empty",
                    "give the name of a [section] of the credentials file (the default is \"default\")",
                ))
            }
            _ => {}
        }
        if let Some(file) = &raw.s3_ca_file {
            let ca_path = table.key("s3_ca_file");
            self.existing_file(&ca_path, file)?;
            if raw
                .s3_endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"))
            {
                return Err(self.err(
                    &ca_path,
                    Target::Key,
                    "`backup.s3_ca_file` is set but `backup.s3_endpoint` uses http://",
                    "write the endpoint with https:// to check the server's certificate, or remove s3_ca_file",
                ));
            }
        }
        Ok(S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            endpoint: raw.s3_endpoint.map(|e| e.trim_end_matches('/').to_owned()),
            region,
            credentials_file: raw.s3_credentials_file,
            profile: raw.s3_profile.unwrap_or_else(|| "default".to_owned()),
            ca_file: raw.s3_ca_file,
        })
    }

    fn retention(&self, table: &KeyPath, raw: &RawBackup) -> Result<Retention> {
        let full_path = table.key("retention_full");
        let full = match raw.retention_full {
            None => Retention::default().full,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    self.err(
                        &full_path,
                        Target::Value,
                        format!("`{full_path}` = {n} is out of range"),
                        "keep 1 to 1000 full backups (the newest one is always kept)",
                    )
                })?,
        };
        let window = match &raw.retention_window {
            None => None,
            Some(text) => {
                Some(self.duration(&table.key("retention_window"), Some(text.clone()), "7d")?)
            }
        };
        Ok(Retention { full, window })
    }

    /// An ordered list of methods, each once; backup first by default.
    fn replica_from(
        &self,
        table: &KeyPath,
        written: Option<&[String]>,
    ) -> Result<Vec<ReplicaMethod>> {
        const METHODS_HINT: &str = "list the methods in the order to try them: \"backup\" (restore the newest \
             backup from the repository, then replay the archive) and \"primary\" (pg_basebackup from the \
             member it will stream from), e.g. replica_from = [\"backup\", \"primary\"] (the default)";
        let Some(written) = written else {
            return Ok(ReplicaMethod::DEFAULT_ORDER.to_vec());
        };
        let path = table.key("replica_from");
        if written.is_empty() {
            return Err(self.err(
                &path,
                Target::Value,
                format!("`{path}` is empty: a new standby would have no way to get its data"),
                METHODS_HINT,
            ));
        }
        let mut methods = Vec::with_capacity(written.len());
        for name in written {
            let method = ReplicaMethod::parse(name).ok_or_else(|| {
                self.err(
                    &path,
                    Target::Value,
                    format!("`{path}` has \"{name}\", which is not a way to build a standby"),
                    METHODS_HINT,
                )
            })?;
            if methods.contains(&method) {
                return Err(self.err(
                    &path,
                    Target::Value,
                    format!("`{path}` lists \"{name}\" twice"),
                    "name each method once: a failed method is not tried again",
                ));
            }
            methods.push(method);
        }
        Ok(methods)
    }

    /// The `s3_*` keys mean nothing for a directory: one set is a mistake.
    fn s3_keys_unused(&self, table: &KeyPath, raw: &RawBackup) -> Result<()> {
        let set = [
            ("s3_endpoint", raw.s3_endpoint.is_some()),
            ("s3_region", raw.s3_region.is_some()),
            ("s3_credentials_file", raw.s3_credentials_file.is_some()),
            ("s3_profile", raw.s3_profile.is_some()),
            ("s3_ca_file", raw.s3_ca_file.is_some()),
        ];
        match set.iter().find(|(_, is_set)| *is_set) {
            None => Ok(()),
            Some((key, _)) => Err(self.err(
                &table.key(key),
                Target::Key,
                format!("`backup.{key}` is set but `backup.repository` is a directory"),
                "the s3_* keys are for repository = \"s3://bucket/prefix\"; remove them for a directory",
            )),
        }
    }
}

/// What is wrong with an S3 bucket name, if anything.
fn bucket_problem(bucket: &str) -> Option<String> {
    if !(3..=63).contains(&bucket.len()) {
        return Some(format!("it is {} characters long", bucket.len()));
    }
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        return Some(format!("`{c}` is not allowed"));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(bucket.chars().next()) || !alnum(bucket.chars().last()) {
        return Some("it must start and end with a letter or digit".to_owned());
    }
    None
}

/// The prefix becomes repository path segments: the same rule as theirs.
fn prefix_problem(prefix: &str) -> Option<String> {
    for segment in prefix.split('/') {
        if segment.is_empty() {
            return Some("it has an empty name between two '/'".to_owned());
        }
        if segment.starts_with('.') {
            return Some(format!("\"{segment}\" starts with '.'"));
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Some(format!("`{c}` is not allowed"));
        }
    }
    None
}

/// `http(s)://host[:port]`, a trailing '/' allowed.
fn endpoint_problem(endpoint: &str) -> Option<String> {
    let Some(rest) = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
    else {
        return Some("it does not start with http:// or https://".to_owned());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Some("it has a path; give only scheme, host and port".to_owned());
    }
    let (host, port) = match rest.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, after)) => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Some("it has text after the ']' of an IPv6 address".to_owned()),
            },
            None => return Some("an IPv6 address without its closing ']'".to_owned()),
        },
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    if let Some(port) = port {
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Some(format!("\"{port}\" is not a port from 1 to 65535"));
        }
    }
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Some("it has no host".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3s_rules() {
        assert_eq!(bucket_problem("pg-backups.eu"), None);
        assert_eq!(bucket_problem("ab").unwrap(), "it is 2 characters long");
        assert_eq!(bucket_problem("Backups").unwrap(), "`B` is not allowed");
        assert_eq!(bucket_problem("my_bucket").unwrap(), "`_` is not allowed");
        assert!(bucket_problem("-backups").is_some());
        assert!(bucket_problem("backups.").is_some());
    }

    #[test]
    fn prefixes_are_repository_paths() {
        assert_eq!(prefix_problem("pg/main-1"), None);
        assert!(prefix_problem("pg//main").is_some());
        assert!(prefix_problem("pg/../main").is_some());
        assert!(prefix_problem("pg main").is_some());
    }

    #[test]
    fn endpoints_are_scheme_host_and_optional_port() {
        for good in [
            "https://s3.eu-west-1.amazonaws.com",
            "http://127.0.0.1:9000",
            "https://minio.example.com:9000/",
            "http://[::1]:9000",
            "http://[::1]",
        ] {
            assert_eq!(endpoint_problem(good), None, "{good}");
        }
        for bad in [
            "minio:9000",
            "https://minio/bucket",
            "https://minio:0",
            "https://minio:port",
            "https://",
            "http://[::1",
        ] {
            assert!(endpoint_problem(bad).is_some(), "{bad}");
        }
    }
}
