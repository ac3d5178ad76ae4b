//! The list of what a base backup copies: the data directory's files and
//! directories, minus what PostgreSQL's own base backup leaves out (its
//! `excludeDirContents` and `excludeFiles`): WAL, runtime state rebuilt at
//! startup, temporary files and relations, the non-init forks of unlogged
//! relations. Tablespaces (the links in `pg_tblspc`) are followed; no other
//! link is.

use std::collections::HashSet;
use std::io::{self, ErrorKind};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::manifest::Directory;

/// Directories kept, but empty: their contents are rebuilt at startup or by
/// WAL replay.
const EMPTIED_DIRECTORIES: &[&str] = &[
    "pg_wal",
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Files never copied, wherever they are.
const EXCLUDED_FILES: &[&str] = &[
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postmaster.pid",
    "postmaster.opts",
    // A restore decides how the copy starts; a standby's signal would make
    // it a standby again.
    "standby.signal",
    "recovery.signal",
];

/// Relation cache files, rebuilt at startup (a prefix: `pg_internal.init.123`).
const RELCACHE_INIT: &str = "pg_internal.init";
/// Temporary files and directories (`pgsql_tmp123.4`).
const TEMP_PREFIX: &str = "pgsql_tmp";

/// A file to copy, as it was when listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Relative to the data directory, `/`-separated.
    pub path: String,
    pub source: PathBuf,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
}

#[derive(Debug, Default)]
pub struct Listing {
    pub directories: Vec<Directory>,
    pub files: Vec<Listed>,
}

/// Lists `data_dir`. Entries that vanish while it looks are left out: WAL
/// replay recreates whatever PostgreSQL still needs.
pub fn list(data_dir: &Path) -> io::Result<Listing> {
    let mut listing = Listing::default();
    let mut pending = vec![(data_dir.to_path_buf(), String::new())];
    while let Some((dir, relative)) = pending.pop() {
        let names = match read_names(&dir) {
            Ok(names) => names,
            Err(e) if e.kind() == ErrorKind::NotFound && !relative.is_empty() => continue,
            Err(e) => return Err(e),
        };
        let unlogged = if is_database_dir(&relative) {
            unlogged_relations(&names)
        } else {
            HashSet::new()
        };
        for name in names {
            let path = if relative.is_empty() {
                name.clone()
            } else {
                format!("{relative}/{name}")
            };
            let source = dir.join(&name);
            let meta = match std::fs::symlink_metadata(&source) {
                Ok(meta) => meta,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let kind = meta.file_type();
            let is_tablespace_link = kind.is_symlink() && relative == "pg_tblspc";
            let is_wal_link = kind.is_symlink() && path == "pg_wal";
            if kind.is_dir() || is_tablespace_link || is_wal_link {
                if name.starts_with(TEMP_PREFIX) {
                    continue;
                }
                let meta = match std::fs::metadata(&source) {
                    Ok(meta) if meta.is_dir() => meta,
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                listing.directories.push(Directory {
                    path: path.clone(),
                    mode: meta.mode() & 0o7777,
                });
                if path == "pg_wal" {
                    listing.directories.push(Directory {
                        path: "pg_wal/archive_status".into(),
                        mode: meta.mode() & 0o7777,
                    });
                }
                if !EMPTIED_DIRECTORIES.contains(&path.as_str()) {
                    pending.push((source, path));
                }
            } else if kind.is_file() {
                if excluded_file(&name) || unlogged_fork(&name, &unlogged) {
                    continue;
                }
                listing.files.push(Listed {
                    path,
                    source,
                    size: meta.len(),
                    mode: meta.mode() & 0o7777,
                    mtime: meta.mtime(),
                });
            } else if kind.is_symlink() {
                tracing::warn!(
                    "base backup: {} is a symbolic link outside pg_tblspc; not followed, not copied",
                    source.display()
                );
            }
        }
    }
    listing.directories.sort_by(|a, b| a.path.cmp(&b.path));
    listing.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(listing)
}

fn read_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match entry.file_name().into_string() {
            Ok(name) => names.push(name),
            Err(name) => tracing::warn!(
                "base backup: {} has a name that is not UTF-8 ({name:?}); PostgreSQL never makes such files, so it is not copied",
                dir.display()
            ),
        }
    }
    Ok(names)
}

fn excluded_file(name: &str) -> bool {
    EXCLUDED_FILES.contains(&name)
        || name.starts_with(RELCACHE_INIT)
        || name.starts_with(TEMP_PREFIX)
        || parse_relation(name).is_some_and(|r| r.temporary)
}

/// `base/<oid>` or `pg_tblspc/<oid>/<version dir>/<oid>`: where relation
/// files are.
fn is_database_dir(relative: &str) -> bool {
    let parts: Vec<&str> = relative.split('/').collect();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match parts.as_slice() {
        ["base", db] => digits(db),
        ["pg_tblspc", space, _, db] => digits(space) && digits(db),
        _ => false,
    }
}

/// Relfilenodes that have an init fork: unlogged relations, whose other
/// forks are reset from it at startup and so are not copied.
fn unlogged_relations(names: &[String]) -> HashSet<String> {
    names
        .iter()
        .filter_map(|n| parse_relation(n))
        .filter(|r| r.fork == Some("init") && !r.temporary)
        .map(|r| r.relfilenode.to_string())
        .collect()
}

fn unlogged_fork(name: &str, unlogged: &HashSet<String>) -> bool {
    parse_relation(name).is_some_and(|r| r.fork != Some("init") && unlogged.contains(r.relfilenode))
}

struct Relation<'a> {
    relfilenode: &'a str,
    fork: Option<&'a str>,
    temporary: bool,
}

/// `16385`, `16385_fsm`, `16385.1`, `t3_16390_vm.2`: a relation file's
/// name, or `None`.
fn parse_relation(name: &str) -> Option<Relation<'_>> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let base = match name.split_once('.') {
        Some((base, segment)) if digits(segment) => base,
        Some(_) => return None,
        None => name,
    };
    let (base, temporary) = match base.strip_prefix('t') {
        Some(rest) => {
            let (backend, rest) = rest.split_once('_')?;
            if !digits(backend) {
                return None;
            }
            (rest, true)
        }
        None => (base, false),
    };
    let (relfilenode, fork) = match base.split_once('_') {
        Some((node, fork)) if matches!(fork, "fsm" | "vm" | "init") => (node, Some(fork)),
        Some(_) => return None,
        None => (base, None),
    };
    digits(relfilenode).then_some(Relation {
        relfilenode,
        fork,
        temporary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, path: &str) {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, path).unwrap();
    }

    #[test]
    fn leaves_out_what_postgresql_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for path in [
            "PG_VERSION",
            "postgresql.auto.conf",
            "postmaster.pid",
            "postmaster.opts",
            "backup_label",
            "standby.signal",
            "global/pg_control",
            "global/pg_internal.init",
            "pg_wal/000000010000000000000001",
            "pg_wal/archive_status/000000010000000000000001.done",
            "pg_replslot/node1/state",
            "pg_stat_tmp/global.stat",
            "pg_subtrans/0000",
            "pg_xact/0000",
            "base/1/1259",
            "base/1/1259.1",
            "base/1/1259_fsm",
            "base/1/16400",
            "base/1/16400_vm",
            "base/1/16400_init",
            "base/1/t3_16500",
            "base/1/pg_internal.init",
            "base/pgsql_tmp/pgsql_tmp1.0",
            "base/1/pgsql_tmp12.3",
        ] {
            touch(root, path);
        }
        let listing = list(root).unwrap();
        let files: Vec<&str> = listing.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            files,
            [
                "PG_VERSION",
                "base/1/1259",
                "base/1/1259.1",
                "base/1/1259_fsm",
                "base/1/16400_init",
                "global/pg_control",
                "pg_xact/0000",
                "postgresql.auto.conf",
            ]
        );
        let dirs: Vec<&str> = listing
            .directories
            .iter()
            .map(|d| d.path.as_str())
            .collect();
        assert_eq!(
            dirs,
            [
                "base",
                "base/1",
                "global",
                "pg_replslot",
                "pg_stat_tmp",
                "pg_subtrans",
                "pg_wal",
                "pg_wal/archive_status",
                "pg_xact",
            ]
        );
    }

    #[test]
    fn follows_tablespace_links_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let space = dir.path().join("space");
        touch(&data, "PG_VERSION");
        touch(&space, "PG_15_202209061/5/16384");
        touch(dir.path(), "elsewhere/secret");
        std::fs::create_dir_all(data.join("pg_tblspc")).unwrap();
        std::os::unix::fs::symlink(&space, data.join("pg_tblspc/16390")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), data.join("other")).unwrap();
        let listing = list(&data).unwrap();
        let files: Vec<&str> = listing.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            files,
            ["PG_VERSION", "pg_tblspc/16390/PG_15_202209061/5/16384"]
        );
    }

    #[test]
    fn recognises_relation_file_names() {
        let r = parse_relation("16385_vm.3").unwrap();
        assert_eq!(
            (r.relfilenode, r.fork, r.temporary),
            ("16385", Some("vm"), false)
        );
        assert!(parse_relation("t12_16385").unwrap().temporary);
        for other in ["PG_VERSION", "16385_x", "16385.a", "t_1", "pg_filenode.map"] {
            assert!(parse_relation(other).is_none(), "{other}");
        }
    }
}
