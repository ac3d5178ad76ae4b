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
        "pgwarden chooses the synchronous standbys: turn on synchronous_mode in the dynamic configuration \
         (pgwarden ctl config set synchronous_mode=true)",
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
    fn parameter_names() {
        for good in ["work_mem", "auto_explain.log_min_duration", "_x"] {
            assert_eq!(bad_parameter_name(good), None, "{good}");
        }
        for bad in ["", "1abc", "work mem", "a..b", "a.", "x=1", "a\nb"] {
            assert!(bad_parameter_name(bad).is_some(), "{bad:?}");
        }
    }
}
