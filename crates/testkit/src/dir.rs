//! Temporary directories the PostgreSQL user can work in.

use std::path::{Path, PathBuf};

use pg::RunAs;

/// A temporary directory, removed with everything in it on drop. Owned by the
/// user PostgreSQL runs as, so data directories can be created inside.
#[derive(Debug)]
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    /// Prefix of every directory the test kit creates, so a leak is easy to
    /// spot: `ls -d /tmp/pgwarden-test-*`.
    pub const PREFIX: &'static str = "pgwarden-test-";

    pub fn new(run_as: &RunAs) -> std::io::Result<TestDir> {
        TestDir::with_prefix(run_as, Self::PREFIX)
    }

    pub fn with_prefix(run_as: &RunAs, prefix: &str) -> std::io::Result<TestDir> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        run_as.chown(dir.path()).map_err(std::io::Error::other)?;
        Ok(TestDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Leaves the directory in place when this is dropped.
    pub fn keep(&mut self) -> PathBuf {
        self.dir.disable_cleanup(true);
        self.dir.path().to_path_buf()
    }
}
