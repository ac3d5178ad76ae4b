//! Files pgwarden writes for PostgreSQL: atomically, owned by the PostgreSQL
//! user, with the modes PostgreSQL expects.
//!
//! pgwarden may run as root while the data directory belongs to `postgres`,
//! and a database superuser can run programs as `postgres` (`COPY … TO
//! PROGRAM`). So nothing here follows a symbolic link in a place that user
//! can change: files are opened with `O_NOFOLLOW` relative to an opened
//! directory, and modes and owners are set on the opened file, never by path.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::error::PgError;
use crate::run_as::RunAs;

/// The most pgwarden reads of a file PostgreSQL's user can write (a
/// configuration file, postmaster.pid, a lock file).
pub(crate) const READ_LIMIT: u64 = 1 << 20;

/// Replaces `path` with `contents` so a reader sees the old file or the new
/// one, never half of it.
pub(crate) fn write_atomically(
    run_as: &RunAs,
    path: &Path,
    contents: &str,
    mode: u32,
) -> Result<(), PgError> {
    let what = "write a file for PostgreSQL";
    let (dir_path, file_name) = split(path, what)?;
    let dir = open_dir(&dir_path, what)?;
    let tmp_name = format!(".{}.pgwarden-tmp", file_name.to_string_lossy());
    let tmp = dir_path.join(&tmp_name);
    // A leftover (or planted) temporary name goes first: O_EXCL below then
    // creates a fresh file and never opens whatever stood there.
    match unlinkat(&dir, tmp_name.as_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(errno) => return Err(PgError::io(what, &tmp, errno.into())),
    }
    let fd = openat(
        &dir,
        tmp_name.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(|errno| PgError::io(what, &tmp, errno.into()))?;
    let mut file = File::from(fd);
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| PgError::io(what, &tmp, e))?;
    file.write_all(contents.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| PgError::io(what, &tmp, e))?;
    run_as.chown_opened(&file, &tmp)?;
    // rename replaces a link at `path` itself; it never writes through one.
    renameat(&dir, tmp_name.as_str(), &dir, file_name)
        .map_err(|errno| PgError::io(what, path, errno.into()))?;
    Ok(())
}

/// Creates `path` (and missing parents) owned by the PostgreSQL user.
/// Refuses when `path` is a symbolic link rather than chown its target.
pub(crate) fn create_dir(run_as: &RunAs, path: &Path, mode: u32) -> Result<(), PgError> {
    let what = "create a directory for PostgreSQL";
    fs::create_dir_all(path).map_err(|e| PgError::io(what, path, e))?;
    let dir = open_dir(path, what)?;
    dir.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| PgError::io(what, path, e))?;
    run_as.chown_opened(&dir, path)
}

/// Removes a file, treating "already gone" as success. A symbolic link is
/// removed itself (unlink never follows one).
pub(crate) fn remove_if_present(path: &Path) -> Result<(), PgError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(PgError::io("remove a file", path, e))
        }
        _ => Ok(()),
    }
}

/// Reads a file PostgreSQL's user can write: not through a symbolic link,
/// only a regular file, at most [`READ_LIMIT`] bytes. `Ok(None)` when it
/// does not exist.
pub(crate) fn read_postgres_file(path: &Path, what: &str) -> Result<Option<String>, PgError> {
    let Some(file) = open_regular(path, what)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    file.take(READ_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| PgError::io(what, path, e))?;
    if bytes.len() as u64 > READ_LIMIT {
        return Err(PgError::Refused(format!(
            "{what}: {} is larger than {READ_LIMIT} bytes, which no file pgwarden reads \
             should be; look at what wrote it",
            path.display()
        )));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The last `max_bytes` of a log file PostgreSQL's user writes, or why they
/// cannot be shown. When pgwarden runs as root, only a file owned by that
/// user is read: anything else (a hard link to a root-only file) would leak
/// into errors and events.
pub(crate) fn read_tail(run_as: &RunAs, path: &Path, max_bytes: u64) -> Result<String, PgError> {
    let what = "read the end of the server log";
    let Some(mut file) = open_regular(path, what)? else {
        return Ok(String::new());
    };
    let meta = file.metadata().map_err(|e| PgError::io(what, path, e))?;
    if let Some(uid) = run_as.owner_uid() {
        if meta.uid() != uid {
            return Err(PgError::Refused(format!(
                "{what}: {} is owned by uid {}, not by {}; it is not PostgreSQL's log, so it \
                 is not shown. Check member.log_file and who replaced the file",
                path.display(),
                meta.uid(),
                run_as.name()
            )));
        }
    }
    let start = meta.len().saturating_sub(max_bytes);
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.take(max_bytes).read_to_end(&mut bytes))
        .map_err(|e| PgError::io(what, path, e))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Opens `path` for reading if it is a regular file and not a symbolic link.
fn open_regular(path: &Path, what: &str) -> Result<Option<File>, PgError> {
    let opened = fs::OpenOptions::new()
        .read(true)
        // O_NONBLOCK: opening a FIFO planted at `path` must not hang us.
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(Errno::ELOOP as i32) => {
            return Err(refuse_link(path, what))
        }
        Err(e) => return Err(PgError::io(what, path, e)),
    };
    let meta = file.metadata().map_err(|e| PgError::io(what, path, e))?;
    if !meta.is_file() {
        return Err(PgError::Refused(format!(
            "{what}: {} is not a regular file; remove whatever stands there and retry",
            path.display()
        )));
    }
    Ok(Some(file))
}

/// Opens the directory `path` itself, refusing a symbolic link in its place.
fn open_dir(path: &Path, what: &str) -> Result<File, PgError> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
        .open(path)
        .map_err(|e| match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
            Errno::ELOOP | Errno::ENOTDIR => refuse_link(path, what),
            _ => PgError::io(what, path, e),
        })
}

fn refuse_link(path: &Path, what: &str) -> PgError {
    PgError::Refused(format!(
        "{what}: {} is a symbolic link or not what it should be; pgwarden never follows links \
         in places PostgreSQL's user can change. If the link is yours, set member.data_dir \
         or member.log_file to the real path; if not, find out who made it, remove it, and \
         retry",
        path.display()
    ))
}

/// `path`'s directory (`.` for a bare name) and file name.
fn split<'a>(
    path: &'a Path,
    what: &str,
) -> Result<(std::path::PathBuf, &'a std::ffi::OsStr), PgError> {
    let name = path
        .file_name()
        .ok_or_else(|| PgError::Refused(format!("{what}: {} names no file", path.display())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    Ok((dir, name))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn writing_replaces_a_planted_link_and_leaves_its_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, "precious").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
        let target = dir.path().join("pgwarden.conf");
        symlink(&outside, &target).unwrap();
        symlink(&outside, dir.path().join(".pgwarden.conf.pgwarden-tmp")).unwrap();
        write_atomically(&RunAs::current(), &target, "port = 5432\n", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "precious");
        assert_eq!(
            fs::metadata(&outside).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let written = fs::symlink_metadata(&target).unwrap();
        assert!(written.is_file());
        assert_eq!(written.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&target).unwrap(), "port = 5432\n");
    }

    #[test]
    fn a_directory_that_is_a_link_is_refused_not_changed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
        let log = dir.path().join("log");
        symlink(&outside, &log).unwrap();
        let err = create_dir(&RunAs::current(), &log, 0o700).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(
            err.to_string().contains(&log.display().to_string()),
            "{err}"
        );
        assert_eq!(
            fs::metadata(&outside).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }

    #[test]
    fn reads_refuse_links_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("secret");
        fs::write(&outside, "hunter2").unwrap();
        let link = dir.path().join("postmaster.pid");
        symlink(&outside, &link).unwrap();
        let err = read_postgres_file(&link, "read postmaster.pid").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = read_tail(&RunAs::current(), &link, 100).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");

        let big = dir.path().join("big");
        fs::write(&big, vec![b'x'; READ_LIMIT as usize + 1]).unwrap();
        let err = read_postgres_file(&big, "read it").unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        assert_eq!(read_tail(&RunAs::current(), &big, 3).unwrap(), "xxx");
        assert_eq!(
            read_postgres_file(&dir.path().join("none"), "x").unwrap(),
            None
        );
    }
}
