//! PostgreSQL refuses to run as root. When pgwarden runs as root, every
//! PostgreSQL program runs as the `postgres` system user and every file
//! pgwarden creates for it is owned by that user.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Once;

use nix::unistd::{chown, fchown, Gid, Uid, User};

use crate::error::PgError;

/// Which operating-system user PostgreSQL programs run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// `None`: the current user (pgwarden itself is not root).
    user: Option<OsUser>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct OsUser {
    name: String,
    uid: u32,
    gid: u32,
}

static SAID_SO: Once = Once::new();

impl RunAs {
    pub const SYSTEM_USER: &'static str = "postgres";

    /// The current user, or `postgres` when the current user is root.
    pub fn detect() -> Result<RunAs, PgError> {
        if !Uid::effective().is_root() {
            return Ok(RunAs { user: None });
        }
        let run_as = RunAs::user(Self::SYSTEM_USER)?;
        SAID_SO.call_once(|| {
            tracing::info!(
                "running as root: PostgreSQL programs run as the `{}` system user and its files are owned by it",
                Self::SYSTEM_USER
            );
        });
        Ok(run_as)
    }

    /// Whoever runs pgwarden, root or not (for programs that are not
    /// PostgreSQL's own).
    pub fn current() -> RunAs {
        RunAs { user: None }
    }

    /// A named system user.
    pub fn user(name: &str) -> Result<RunAs, PgError> {
        let no_such_user = || PgError::NoSuchUser {
            user: name.to_string(),
        };
        let user = User::from_name(name)
            .map_err(|_| no_such_user())?
            .ok_or_else(no_such_user)?;
        Ok(RunAs {
            user: Some(OsUser {
                name: user.name,
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            }),
        })
    }

    /// The user's name, for messages.
    pub fn name(&self) -> String {
        match &self.user {
            Some(user) => user.name.clone(),
            None => User::from_uid(Uid::effective())
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| Uid::effective().to_string()),
        }
    }

    /// Makes `command` run as this user, without the secrets pgwarden keeps
    /// to itself ([`crate::hide_from_children`]).
    pub fn apply(&self, command: &mut tokio::process::Command) {
        crate::child_env::scrub(command);
        if let Some(user) = &self.user {
            // std drops supplementary groups when uid is set from root.
            command.uid(user.uid).gid(user.gid);
        }
    }

    /// Hands `path` to this user (a no-op when pgwarden is not root). It
    /// follows a symbolic link (a restored `pg_wal` or tablespace link must
    /// hand over its target): use it only on paths pgwarden has just made,
    /// and [`RunAs::chown_opened`] on anything PostgreSQL's user could have
    /// changed.
    pub fn chown(&self, path: &Path) -> Result<(), PgError> {
        if let Some(user) = &self.user {
            chown(
                path,
                Some(Uid::from_raw(user.uid)),
                Some(Gid::from_raw(user.gid)),
            )
            .map_err(|errno| {
                PgError::io(
                    format!("give {} to {}", path.display(), user.name),
                    path,
                    errno.into(),
                )
            })?;
        }
        Ok(())
    }

    /// Hands an opened file to this user: the file itself, whatever its
    /// path has become since it was opened.
    pub fn chown_opened(&self, file: impl AsFd, path: &Path) -> Result<(), PgError> {
        if let Some(user) = &self.user {
            fchown(
                file,
                Some(Uid::from_raw(user.uid)),
                Some(Gid::from_raw(user.gid)),
            )
            .map_err(|errno| {
                PgError::io(
                    format!("give {} to {}", path.display(), user.name),
                    path,
                    errno.into(),
                )
            })?;
        }
        Ok(())
    }

    /// The user id files handed to this user carry, when pgwarden is root.
    pub(crate) fn owner_uid(&self) -> Option<u32> {
        self.user.as_ref().map(|u| u.uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_user_is_a_clear_error() {
        let err = RunAs::user("pgwarden-no-such-user")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`pgwarden-no-such-user` does not exist"),
            "{err}"
        );
        assert!(err.contains("useradd --system"), "{err}");
    }

    #[test]
    fn root_runs_postgresql_as_postgres() {
        let run_as = RunAs::detect().unwrap();
        if Uid::effective().is_root() {
            assert_eq!(run_as.name(), RunAs::SYSTEM_USER);
        } else {
            assert_eq!(run_as, RunAs::current());
        }
    }
}
