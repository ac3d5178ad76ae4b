//! `[bootstrap]`: a new cluster restored from a base backup instead of
//! initdb.

use super::{Result, Validator};
use crate::locate::{KeyPath, Target};
use crate::raw::RawBootstrap;
use crate::schema::Bootstrap;

impl Validator<'_> {
    /// `has_backup`: the file has a `[backup]` table, the repository the
    /// backup comes from.
    pub(super) fn bootstrap(&self, raw: RawBootstrap, has_backup: bool) -> Result<Bootstrap> {
        let table = KeyPath::of(&["bootstrap"]);
        let written = self.required(&table, "from_backup", raw.from_backup, "\"latest\"")?;
        let path = table.key("from_backup");
        if !has_backup {
            return Err(self.err(
                &path,
                Target::Key,
                "`bootstrap.from_backup` is set but there is no [backup] table to restore from",
                "add [backup] with the repository that holds the backup (docs/backup.md), or \
                 remove [bootstrap] to create the cluster with initdb",
            ));
        }
        let backup_id = match written.as_str() {
            "latest" => None,
            id if is_backup_id(id) => Some(id.to_string()),
            other => {
                return Err(self.err(
                    &path,
                    Target::Value,
                    format!("`{path}` \"{other}\" is not a backup id"),
                    "write \"latest\", or an id as `pgwarden backup list` shows it, e.g. \
                     \"20261203-140000F\"",
                ))
            }
        };
        let recovery_target = raw.recovery_target.unwrap_or_else(|| "latest".to_string());
        if recovery_target.trim().is_empty() {
            return Err(self.err(
                &table.key("recovery_target"),
                Target::Value,
                "`bootstrap.recovery_target` is empty",
                "write \"latest\" (the end of the archive), a time (\"2026-12-03 14:01:00+00\"), \
                 a WAL position (\"0/3000148\") or a restore point's name",
            ));
        }
        Ok(Bootstrap {
            backup_id,
            recovery_target,
        })
    }
}

/// `YYYYMMDD-HHMMSS` and `F` (full) or `I` (incremental), as backups are
/// named.
fn is_backup_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && matches!(b[15], b'F' | b'I')
}

#[cfg(test)]
mod tests {
    use super::is_backup_id;

    #[test]
    fn backup_ids() {
        assert!(is_backup_id("20261203-140000F"));
        assert!(is_backup_id("20261203-140000I"));
        assert!(!is_backup_id("20261203-140000"));
        assert!(!is_backup_id("2026120x-140000F"));
        assert!(!is_backup_id("../20261203-1400F"));
    }
}
