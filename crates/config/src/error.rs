//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// Why a configuration could not be loaded.
///
/// Displays as exactly two lines: where (`file:line:column: what`) and a
/// `  hint:` saying what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file itself could not be read; there is no line to point at.
    #[error(
        "{}: cannot read the configuration file: {io}\n  hint: {hint}",
        path.display()
    )]
    Unreadable {
        path: PathBuf,
        io: io::Error,
        /// What to do: which path component stops this user, when one
        /// does ([`ConfigError::unreadable`]).
        hint: String,
    },

    /// Something at a spot in the file is wrong.
    #[error("{file}:{line}:{column}: {message}\n  hint: {hint}")]
    Invalid {
        file: String,
        /// 1-based.
        line: usize,
        /// 1-based, in characters.
        column: usize,
        message: String,
        hint: String,
    },
}

impl ConfigError {
    /// The file at `path` could not be read: the hint names the path
    /// component that stops this process's user, and the fix, when the
    /// cause is a permission.
    pub fn unreadable(path: &std::path::Path, io: io::Error) -> ConfigError {
        let hint = match crate::access::why_unreadable(path) {
            Some(denied) if io.kind() == io::ErrorKind::PermissionDenied => {
                format!("{}; run: {}", denied.problem, denied.fix)
            }
            _ => "check the path and that the user running pgwarden may read it".to_string(),
        };
        ConfigError::Unreadable {
            path: path.to_owned(),
            io,
            hint,
        }
    }
}
