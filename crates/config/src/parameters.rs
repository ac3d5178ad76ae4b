//! Which PostgreSQL parameters an operator may set, in pgwarden.toml or in
//! the cluster's dynamic configuration.

/// Settings pgwarden derives from its own keys or changes as roles change,
/// with what to do instead: a second source would conflict with pgwarden's
/// value, and for the replication settings, silently break failover.
const MANAGED: [(&str, &str); 14] = [
    ("listen_addresses", "set member.listen_address instead"),
    ("port", "set member.port instead"),
    ("unix_socket_directories", "set member.socket_dir instead"),
    ("data_directory", "set member.data_dir instead"),
    ("cluster_name", "pgwarden sets it to the member's name (member.name)"),
    (
        "synchronous_standby_names",
        "pgwarden chooses the synchronous standbys: set synchronous_mode in the dynamic configuration \
         (pgwarden ctl config set synchronous_mode=quorum, the default, or true)",
    ),
    (
        "synchronous_commit",
        "pgwarden keeps it on, so that in synchronous mode a commit waits for a synchronous standby",
    ),
    (
        "primary_conninfo",
        "pgwarden points every standby at the current primary itself",
    ),
    (
        "primary_slot_name",
        "pgwarden gives every standby a slot named after it",
    ),
    (
        "recovery_target_timeline",
        "pgwarden always follows the latest timeline, as failover needs",
    ),
    // Settings that run commands or load code never come from the
    // configuration (DESIGN.md, secure by default): pgwarden writes its own.
    ("archive_mode", ARCHIVE),
    ("archive_command", ARCHIVE),
    ("archive_library", ARCHIVE),
    ("restore_command", ARCHIVE),
];

const ARCHIVE: &str = "pgwarden archives WAL itself (`pgwarden wal push`, `wal fetch`): \
     set a repository in pgwarden.toml [backup] (docs/backup.md)";

/// Settings that run a program or load a library into the server, beyond
/// the archive ones pgwarden manages. Anyone who can write the store (or
/// call `PATCH /config`) must not gain code execution on every member
/// from it: these come only from each member's own pgwarden.toml, which
/// takes root on that host to change.
const RUNS_CODE: [&str; 10] = [
    "archive_cleanup_command",
    "recovery_end_command",
    "ssl_passphrase_command",
    "shared_preload_libraries",
    "session_preload_libraries",
    "local_preload_libraries",
    "dynamic_library_path",
    "jit_provider",
    // PostgreSQL 18.
    "oauth_validator_libraries",
    "extension_control_path",
];

/// Why the cluster's dynamic configuration cannot set `name`, and where to
/// set it instead, when it runs a program or loads code (and pgwarden does
/// not manage it: see [`managed_parameter`]). A member's pgwarden.toml
/// may set it.
pub fn runs_code(name: &str) -> Option<&'static str> {
    RUNS_CODE
        .iter()
        .any(|code| name.eq_ignore_ascii_case(code))
        .then_some(
            "it runs a program or loads code: set it in [postgresql.parameters] \
             of each member's pgwarden.toml instead",
        )
}

/// What to do instead of setting `name`, when pgwarden manages it.
pub fn managed_parameter(name: &str) -> Option<&'static str> {
    MANAGED
        .iter()
        .find(|(managed, _)| name.eq_ignore_ascii_case(managed))
        .map(|(_, instead)| *instead)
}

/// Why `name` cannot be a PostgreSQL parameter name, if it cannot:
/// letters, digits, `_` and `.` (for extensions' settings, e.g.
/// `auto_explain.log_min_duration`), starting with a letter or `_`.
pub fn bad_parameter_name(name: &str) -> Option<String> {
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if starts_well && rest_ok && !name.ends_with('.') && !name.contains("..") {
        None
    } else {
        // Control characters escaped: the message is one line of a log.
        let name: String = name
            .chars()
            .map(|c| match c.is_control() {
                true => c.escape_default().to_string(),
                false => c.to_string(),
            })
            .collect();
        Some(format!(
            "`{name}` is not a PostgreSQL parameter name: use letters, digits, _ and . (e.g. work_mem, auto_explain.log_min_duration)"
        ))
    }
}

/// Why `value` cannot be written as `name`'s value in postgresql.conf.
pub fn bad_parameter_value(name: &str, value: &str) -> Option<String> {
    value.chars().any(char::is_control).then(|| {
        format!(
            "{name} holds a control character (a newline?); postgresql.conf values are one line"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_names_are_found_in_any_case() {
        assert_eq!(managed_parameter("Port"), Some("set member.port instead"));
        assert!(managed_parameter("synchronous_standby_names").is_some());
        assert_eq!(managed_parameter("work_mem"), None);
    }

    #[test]
    fn code_running_names_are_found_in_any_case_and_none_is_managed() {
        assert!(runs_code("Shared_Preload_Libraries").is_some());
        assert!(runs_code("jit_provider").is_some());
        assert_eq!(runs_code("work_mem"), None);
        // The archive settings are managed: their message says what to do.
        assert_eq!(runs_code("archive_command"), None);
        for name in RUNS_CODE {
            assert_eq!(managed_parameter(name), None, "{name}");
        }
    }

    #[test]
    fn parameter_names() {
        for good in ["work_mem", "auto_explain.log_min_duration", "_x"] {
            assert_eq!(bad_parameter_name(good), None, "{good}");
        }
        for bad in ["", "1abc", "work mem", "a..b", "a.", "x=1", "a\nb"] {
            assert!(bad_parameter_name(bad).is_some(), "{bad:?}");
        }
        assert!(bad_parameter_name("a\nb")
            .unwrap()
            .starts_with("`a\\nb` is not"));
    }
}
