//! Whether a user can reach, read or write a path, and if not, which
//! component stops it and what to run about it.
//!
//! "Permission denied" on `/etc/pgwarden/proxy.toml` says nothing of the
//! cause when the file is readable and `/etc/pgwarden` is not traversable.
//! These checks walk the path from `/` the way the kernel does, with the
//! mode bits, owner and groups of a given user, so `pgwarden config check`
//! run as root can check for the `postgres` user, and an error names the
//! component at fault, for whom, and the command that fixes it.

use std::ffi::CString;
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

/// A user, as the kernel checks permissions for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one included).
    pub groups: Vec<u32>,
}

impl Who {
    /// The user this process runs as (effective ids).
    pub fn current() -> Who {
        let uid = Uid::effective();
        let gid = Gid::effective();
        let mut groups: Vec<u32> = nix::unistd::getgroups()
            .unwrap_or_default()
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        groups.push(gid.as_raw());
        let name = User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string());
        Who {
            name,
            uid: uid.as_raw(),
            gid: gid.as_raw(),
            groups,
        }
    }

    /// A system user by name, with the groups it would have after login.
    pub fn named(name: &str) -> Option<Who> {
        let user = User::from_name(name).ok().flatten()?;
        let mut groups: Vec<u32> = CString::new(name)
            .ok()
            .and_then(|c| nix::unistd::getgrouplist(&c, user.gid).ok())
            .unwrap_or_default()
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        groups.push(user.gid.as_raw());
        Some(Who {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
        })
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// `name:group`, for `chown` and `install -o -g`.
    pub fn owner_spec(&self) -> String {
        let group = Group::from_gid(Gid::from_raw(self.gid))
            .ok()
            .flatten()
            .map(|g| g.name)
            .unwrap_or_else(|| self.gid.to_string());
        format!("{}:{group}", self.name)
    }

    fn may(&self, meta: &Metadata, bits: u32) -> bool {
        if self.is_root() {
            // Root reads and writes anything; it searches a directory, or
            // runs a file, only if anyone may.
            return bits & 0o1 == 0 || meta.mode() & 0o111 != 0;
        }
        let mode = meta.mode();
        let class = if meta.uid() == self.uid {
            mode >> 6
        } else if self.groups.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        class & bits == bits
    }
}

const READ: u32 = 0o4;
const WRITE: u32 = 0o2;
const SEARCH: u32 = 0o1;

/// Why `who` cannot do something with a path, and what to run about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// The component at fault.
    pub path: PathBuf,
    /// E.g. `/etc/pgwarden is not traversable by proxy (drwxr-x--- root:postgres)`.
    pub problem: String,
    /// A command that fixes it, e.g. `chmod o+x /etc/pgwarden`.
    pub fix: String,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; fix: {}", self.problem, self.fix)
    }
}

/// `drwxr-x--- root:postgres`.
fn describe(meta: &Metadata) -> String {
    let kind = if meta.is_dir() { 'd' } else { '-' };
    let mode = meta.permissions().mode();
    let mut bits = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let b = (mode >> shift) & 0o7;
        bits.push(if b & 4 != 0 { 'r' } else { '-' });
        bits.push(if b & 2 != 0 { 'w' } else { '-' });
        bits.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    let user = User::from_uid(Uid::from_raw(meta.uid()))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| meta.uid().to_string());
    let group = Group::from_gid(Gid::from_raw(meta.gid()))
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| meta.gid().to_string());
    format!("{kind}{bits} {user}:{group}")
}

/// The permission class (`u`, `g` or `o`) through which `who` gets at
/// `meta`: what a `chmod` must change.
fn class(meta: &Metadata, who: &Who) -> &'static str {
    if meta.uid() == who.uid {
        "u"
    } else if who.groups.contains(&meta.gid()) {
        "g"
    } else {
        "o"
    }
}

/// The fix that gives `who` `perm` on `path`: a chmod of the class `who`
/// falls in (never a chgrp: the directory's group usually means something,
/// e.g. `root:postgres`).
fn grant(path: &Path, meta: &Metadata, who: &Who, perm: &str) -> String {
    format!("chmod {}+{perm} {}", class(meta, who), path.display())
}

/// Every directory from `/` down to `path`'s parent must exist, be a
/// directory, and be searchable by `who`.
pub fn reach(path: &Path, who: &Who) -> Result<(), Denied> {
    let mut at = PathBuf::new();
    let parent = path.parent().unwrap_or(Path::new("/"));
    for component in parent.components() {
        match component {
            Component::RootDir => at.push("/"),
            Component::Normal(part) => at.push(part),
            // As the kernel resolves it (`..` of a link aside).
            Component::ParentDir => {
                at.pop();
                continue;
            }
            _ => continue,
        }
        let meta = match std::fs::metadata(&at) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(Denied {
                    path: at.clone(),
                    problem: format!("{} does not exist", at.display()),
                    fix: format!(
                        "install -d -o {} -m 750 {}   (or correct the path)",
                        who.owner_spec().replace(':', " -g "),
                        at.display()
                    ),
                })
            }
            Err(err) => {
                return Err(Denied {
                    path: at.clone(),
                    problem: format!("{} cannot be examined: {err}", at.display()),
                    fix: format!("check {} as root", at.display()),
                })
            }
        };
        if !meta.is_dir() {
            return Err(Denied {
                path: at.clone(),
                problem: format!("{} is not a directory", at.display()),
                fix: "correct the path".to_string(),
            });
        }
        if !who.may(&meta, SEARCH) {
            return Err(Denied {
                path: at.clone(),
                problem: format!(
                    "{} is not traversable by {} ({})",
                    at.display(),
                    who.name,
                    describe(&meta)
                ),
                fix: grant(&at, &meta, who, "x"),
            });
        }
    }
    Ok(())
}

/// `who` can reach and read the file `path` (which must exist).
pub fn readable(path: &Path, who: &Who) -> Result<(), Denied> {
    reach(path, who)?;
    let meta = std::fs::metadata(path).map_err(|err| Denied {
        path: path.to_owned(),
        problem: format!("{}: {err}", path.display()),
        fix: "create it or correct the path".to_string(),
    })?;
    if who.may(&meta, READ) {
        return Ok(());
    }
    Err(Denied {
        path: path.to_owned(),
        problem: format!(
            "{} is not readable by {} ({})",
            path.display(),
            who.name,
            describe(&meta)
        ),
        fix: if meta.is_dir() {
            grant(path, &meta, who, "rx")
        } else {
            format!("chown {} {}", who.owner_spec(), path.display())
        },
    })
}

/// `who` can create and remove entries in the existing directory `dir`.
pub fn writable_dir(dir: &Path, who: &Who) -> Result<(), Denied> {
    reach(&dir.join("x"), who)?;
    let meta = std::fs::metadata(dir).map_err(|err| Denied {
        path: dir.to_owned(),
        problem: format!("{}: {err}", dir.display()),
        fix: "create it or correct the path".to_string(),
    })?;
    if who.may(&meta, WRITE | SEARCH) {
        return Ok(());
    }
    Err(Denied {
        path: dir.to_owned(),
        problem: format!(
            "{} is not writable by {} ({})",
            dir.display(),
            who.name,
            describe(&meta)
        ),
        fix: format!("chown {} {}", who.owner_spec(), dir.display()),
    })
}

/// Why this process could not read `path`, when a component is at fault
/// (for the hint of an "cannot read" error); `None` when the walk finds
/// nothing wrong.
pub fn why_unreadable(path: &Path) -> Option<Denied> {
    let absolute = std::path::absolute(path).ok()?;
    readable(&absolute, &Who::current()).err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn nobody() -> Who {
        Who {
            name: "someone".into(),
            uid: 64_999,
            gid: 64_999,
            groups: vec![64_999],
        }
    }

    #[test]
    fn the_component_that_is_not_traversable_is_named_with_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
        let closed = dir.path().join("etc");
        std::fs::create_dir(&closed).unwrap();
        std::fs::set_permissions(&closed, PermissionsExt::from_mode(0o750)).unwrap();
        let file = closed.join("proxy.toml");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, PermissionsExt::from_mode(0o644)).unwrap();

        let denied = readable(&file, &nobody()).unwrap_err();
        assert_eq!(denied.path, closed);
        assert!(
            denied
                .problem
                .contains("is not traversable by someone (drwxr-x---"),
            "{denied}"
        );
        assert!(
            denied
                .fix
                .contains(&format!("chmod o+x {}", closed.display())),
            "{denied}"
        );
        std::fs::set_permissions(&closed, PermissionsExt::from_mode(0o751)).unwrap();
        assert_eq!(readable(&file, &nobody()), Ok(()));
        std::fs::set_permissions(&file, PermissionsExt::from_mode(0o600)).unwrap();
        let denied = readable(&file, &nobody()).unwrap_err();
        assert!(
            denied.problem.contains("is not readable by someone"),
            "{denied}"
        );
        assert!(denied.fix.starts_with("chown someone:"), "{denied}");
    }

    #[test]
    fn a_directory_owned_by_root_is_not_writable_by_another_user() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
        let root = Who {
            name: "root".into(),
            uid: 0,
            gid: 0,
            groups: vec![0],
        };
        if Who::current().uid == 0 {
            assert_eq!(writable_dir(dir.path(), &root), Ok(()));
        }
        let denied = writable_dir(dir.path(), &nobody()).unwrap_err();
        assert!(
            denied.problem.contains("is not writable by someone"),
            "{denied}"
        );
        assert!(
            denied.fix == format!("chown someone:64999 {}", dir.path().display()),
            "{denied}"
        );
        let missing = dir.path().join("no/such/dir");
        let denied = writable_dir(&missing, &nobody()).unwrap_err();
        assert_eq!(denied.path, dir.path().join("no"));
        assert!(
            denied
                .fix
                .starts_with("install -d -o someone -g 64999 -m 750"),
            "{denied}"
        );
    }
}
