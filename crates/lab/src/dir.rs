//! Temporary directories the PostgreSQL user can work in.

use std::path::{Path, PathBuf};

use pg::RunAs;

/// A temporary directory, removed with everything in it on drop. Owned by the
/// user PostgreSQL runs as, so data directories can be created inside.
#[derive(Debug)]
pub struct ScratchDir {
    dir: tempfile::TempDir,
}

impl ScratchDir {
    /// Prefix of the directories of tests and benches, so a leak is easy
    /// to spot: `ls -d /tmp/pgwarden-test-*`. The demo uses its own.
    pub const PREFIX: &'static str = "pgwarden-test-";

    pub fn new(run_as: &RunAs) -> std::io::Result<ScratchDir> {
        ScratchDir::with_prefix(run_as, Self::PREFIX)
    }

    pub fn with_prefix(run_as: &RunAs, prefix: &str) -> std::io::Result<ScratchDir> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        run_as.chown(dir.path()).map_err(std::io::Error::other)?;
        Ok(ScratchDir { dir })
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
