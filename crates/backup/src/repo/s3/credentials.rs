//! S3 credentials from a file in the AWS shared credentials format:
//!
//! ```ini
//! [default]
//! aws_access_key_id = AKIA...
//! aws_secret_access_key = ...
//! # aws_session_token = ...   (temporary credentials only)
//! ```
//!
//! Read each time a repository is opened, so a rotated key is picked up by
//! the next `wal push` without restarting anything.

use std::path::{Path, PathBuf};

/// One profile's keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, not even in a debug print.
        f.debug_struct("Keys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the S3 credentials file {path}: {source}; check that it exists and is readable by the user PostgreSQL runs as")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {problem}; the file holds `[profile]` sections of `key = value` lines (aws_access_key_id, aws_secret_access_key, aws_session_token)")]
    Syntax {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("the S3 credentials file {path} has no [{profile}] section with both aws_access_key_id and aws_secret_access_key")]
    MissingKeys { path: PathBuf, profile: String },
}

/// The keys of `profile` in the file at `path`.
pub fn read(path: &Path, profile: &str) -> Result<Keys, CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, profile).map_err(|e| match e {
        Parse::Syntax { line, problem } => CredentialsError::Syntax {
            path: path.to_path_buf(),
            line,
            problem,
        },
        Parse::Missing => CredentialsError::MissingKeys {
            path: path.to_path_buf(),
            profile: profile.to_string(),
        },
    })
}

#[derive(Debug, PartialEq)]
enum Parse {
    Syntax { line: usize, problem: String },
    Missing,
}

fn parse(text: &str, profile: &str) -> Result<Keys, Parse> {
    let (mut key_id, mut secret, mut token) = (None, None, None);
    let mut section: Option<&str> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let syntax = |problem: &str| Parse::Syntax {
            line: index + 1,
            problem: problem.to_string(),
        };
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .ok_or_else(|| syntax("a section header without its closing ']'"))?;
            // The config-file spelling `[profile NAME]` is accepted too.
            let name = name.trim();
            section = Some(name.strip_prefix("profile ").unwrap_or(name).trim());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| syntax("a line that is neither `[section]` nor `key = value`"))?;
        if section != Some(profile) {
            continue;
        }
        let value = Some(value.trim().to_string()).filter(|v| !v.is_empty());
        match key.trim() {
            "aws_access_key_id" => key_id = value,
            "aws_secret_access_key" => secret = value,
            "aws_session_token" => token = value,
            _ => {}
        }
    }
    match (key_id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Keys {
            access_key_id,
            secret_access_key,
            session_token: token,
        }),
        _ => Err(Parse::Missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# comment
[default]
aws_access_key_id = AKIDEFAULT
aws_secret_access_key=secret-default

[profile backup]
aws_access_key_id = AKIBACKUP
aws_secret_access_key = s3cr=t
aws_session_token = tok
region = eu-west-1
";

    #[test]
    fn reads_the_named_profile() {
        assert_eq!(
            parse(FILE, "default").unwrap(),
            Keys {
                access_key_id: "AKIDEFAULT".into(),
                secret_access_key: "secret-default".into(),
                session_token: None,
            }
        );
        let backup = parse(FILE, "backup").unwrap();
        assert_eq!(backup.secret_access_key, "s3cr=t");
        assert_eq!(backup.session_token.as_deref(), Some("tok"));
    }

    #[test]
    fn a_missing_profile_or_key_is_named() {
        assert_eq!(parse(FILE, "other"), Err(Parse::Missing));
        assert_eq!(
            parse("[default]\naws_access_key_id = x\n", "default"),
            Err(Parse::Missing)
        );
        let path = Path::new("/etc/pgwarden/s3.credentials");
        let message = CredentialsError::MissingKeys {
            path: path.into(),
            profile: "default".into(),
        }
        .to_string();
        assert!(message.contains("[default]"), "{message}");
    }

    #[test]
    fn a_bad_line_is_located() {
        assert_eq!(
            parse("[default]\naws_access_key_id AKID\n", "default"),
            Err(Parse::Syntax {
                line: 2,
                problem: "a line that is neither `[section]` nor `key = value`".into()
            })
        );
        assert!(matches!(
            parse("[default\n", "default"),
            Err(Parse::Syntax { line: 1, .. })
        ));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let keys = parse(FILE, "default").unwrap();
        assert!(!format!("{keys:?}").contains("secret-default"));
    }
}
