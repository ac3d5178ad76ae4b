//! The `archive_command` and `restore_command` of a member whose
//! pgwarden.toml has a `[backup]` table: this very binary, with this very
//! configuration file. Written by the agent only, never taken from the
//! configuration (DESIGN.md: settings that run commands are pgwarden's).

use std::path::Path;

/// The two commands, as PostgreSQL runs them (`sh -c`, `%` escapes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveCommands {
    pub archive_command: String,
    pub restore_command: String,
}

/// The commands for `config`, or `None` without a `[backup]` table.
pub fn commands(config: &config::Config) -> std::io::Result<Option<ArchiveCommands>> {
    if config.backup.is_none() {
        return Ok(None);
    }
    let file = config.file.as_deref().ok_or_else(|| {
        std::io::Error::other(
            "the configuration was not loaded from a file, so archive_command cannot name one",
        )
    })?;
    let exe = std::env::current_exe()?;
    Ok(Some(for_binary(&exe, file)))
}

fn for_binary(exe: &Path, config_file: &Path) -> ArchiveCommands {
    let exe = word(&exe.display().to_string());
    let config_file = word(&config_file.display().to_string());
    ArchiveCommands {
        archive_command: format!("{exe} wal push -c {config_file} %p"),
        restore_command: format!("{exe} wal fetch -c {config_file} %f %p"),
    }
}

/// `text` as one shell word, with `%` doubled so PostgreSQL leaves it be.
fn word(text: &str) -> String {
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b));
    let quoted = if plain && !text.is_empty() {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    };
    quoted.replace('%', "%%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_stay_plain() {
        assert_eq!(
            for_binary(
                Path::new("/usr/local/bin/pgwarden"),
                Path::new("/etc/pgwarden/pgwarden.toml")
            ),
            ArchiveCommands {
                archive_command:
                    "/usr/local/bin/pgwarden wal push -c /etc/pgwarden/pgwarden.toml %p".into(),
                restore_command:
                    "/usr/local/bin/pgwarden wal fetch -c /etc/pgwarden/pgwarden.toml %f %p".into(),
            }
        );
    }

    #[test]
    fn odd_paths_are_quoted_for_the_shell_and_postgresql() {
        assert_eq!(word("/opt/my pg/it's"), r"'/opt/my pg/it'\''s'");
        assert_eq!(word("/srv/100%/x"), "'/srv/100%%/x'");
        assert_eq!(word("$(reboot)"), "'$(reboot)'");
    }
}
