use std::path::PathBuf;
use std::time::Duration;

/// What went wrong touching the local PostgreSQL. Each variant names the
/// operation and carries what the tool said, so an operator can act on it.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "{what}: could not run {program}: {source}; check that member.bin_dir holds \
         PostgreSQL's programs and that they are executable"
    )]
    Spawn {
        what: String,
        program: String,
        source: std::io::Error,
    },
    #[error(
        "{what}: {program} did not finish within {timeout:?} and was killed; if it needs longer \
         on this host, raise timing.pg_ctl_timeout (timing.clone_timeout for pg_basebackup and \
         pg_rewind); its stderr: {stderr}"
    )]
    Timeout {
        what: String,
        program: String,
        timeout: Duration,
        stderr: String,
    },
    #[error("{what}: {program} failed ({status}): {stderr}")]
    Failed {
        what: String,
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {detail}")]
    Sql { what: String, detail: String },
    #[error("the system user `{user}` does not exist; PostgreSQL refuses to run as root, so pgwarden runs it as `{user}`: install the postgresql package (it creates the user) or create the user with `useradd --system {user}`")]
    NoSuchUser { user: String },
    #[error("unexpected output from {program}: {detail}")]
    Unexpected { program: String, detail: String },
}

impl PgError {
    pub(crate) fn io(
        what: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        PgError::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sql(what: impl Into<String>, source: tokio_postgres::Error) -> Self {
        PgError::Sql {
            what: what.into(),
            detail: describe_sql_error(&source),
        }
    }
}

/// tokio-postgres says only "db error" at the top; the server's message,
/// detail and hint are what an operator needs.
fn describe_sql_error(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        let mut text = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
