//! The database system identifier, from the data directory's
//! `global/pg_control`: every cluster's WAL lives under its own, so the
//! archives of two clusters (or of one re-created with initdb) never mix.

use std::path::{Path, PathBuf};

/// The data directory a WAL path given by PostgreSQL belongs to:
/// `archive_command` gets `pg_wal/NAME` and `restore_command` writes to
/// `pg_wal/RECOVERYXLOG`, both relative to the data directory, where
/// PostgreSQL runs them.
pub fn data_dir_of(wal_path: &Path) -> PathBuf {
    wal_path
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The system identifier in `data_dir/global/pg_control`: the first field
/// of the control file, in the machine's byte order.
pub fn system_identifier(data_dir: &Path) -> std::io::Result<u64> {
    let file = data_dir.join("global").join("pg_control");
    let bytes = std::fs::read(&file)?;
    let first: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| std::io::Error::other("it is shorter than 8 bytes"))?;
    Ok(u64::from_ne_bytes(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_directory_is_two_levels_up() {
        assert_eq!(
            data_dir_of(Path::new("pg_wal/000000010000000000000001")),
            PathBuf::new()
        );
        assert_eq!(
            data_dir_of(Path::new("/var/lib/pg/data/pg_wal/RECOVERYXLOG")),
            PathBuf::from("/var/lib/pg/data")
        );
    }

    #[test]
    fn reads_the_first_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("global")).unwrap();
        let mut control = 7301234567890123456u64.to_ne_bytes().to_vec();
        control.extend_from_slice(&[0; 100]);
        std::fs::write(dir.path().join("global/pg_control"), control).unwrap();
        assert_eq!(system_identifier(dir.path()).unwrap(), 7301234567890123456);
        assert!(system_identifier(&dir.path().join("nope")).is_err());
    }
}
