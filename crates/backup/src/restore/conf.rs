//! Editing PostgreSQL's configuration files in a restored data directory:
//! one `name = 'value'` per line, files owned by the PostgreSQL user.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pg::RunAs;

/// The setting a line sets, or "" for a comment or blank line.
pub fn setting_name(line: &str) -> &str {
    line.split_once('=')
        .map(|(name, _)| name.trim())
        .unwrap_or("")
}

/// A postgresql.conf string literal.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Writes `text` to `path`, mode 0600, owned by `run_as`.
pub fn write_owned(path: &Path, text: &str, run_as: &RunAs) -> std::io::Result<()> {
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    run_as
        .chown(path)
        .map_err(|e| std::io::Error::other(e.to_string()))
}
