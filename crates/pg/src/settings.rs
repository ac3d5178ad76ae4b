//! The pgwarden-owned configuration file, `pgwarden.conf`, included from
//! postgresql.conf. pgwarden rewrites it whole; operators put their own
//! parameters in the pgwarden configuration instead of editing it.

use std::collections::BTreeMap;

/// A synchronous standby name no member can have (member names have no
/// spaces): commits wait until it is taken out again.
pub const COMMITS_HELD: &str = "FIRST 1 (\"pgwarden: commits held\")";

/// `wal_receiver_timeout`: a standby's receiver asks its primary for a
/// reply after half of it without a message, and gives up after it.
pub const WAL_RECEIVER_TIMEOUT_MS: u64 = 1_000;

/// A receiver that has heard nothing for this long is not streaming: it
/// asked for a reply a quarter of the timeout ago, which a live primary
/// answers at once. Telling so before the receiver gives up saves that
/// quarter and the next round's look (docs/agent.md, "The fast path").
pub const RECEIVER_QUIET_LIMIT_MS: u64 = WAL_RECEIVER_TIMEOUT_MS * 3 / 4;

/// Everything pgwarden sets in PostgreSQL's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub listen_addresses: String,
    pub port: u16,
    /// `unix_socket_directories`; empty disables unix sockets.
    pub socket_dir: String,
    /// The member name: `cluster_name`, and the `application_name` a standby
    /// uses towards its primary.
    pub member: String,
    pub max_connections: u32,
    pub max_wal_senders: u32,
    pub max_replication_slots: u32,
    pub wal_keep_size: String,
    pub synchronous_standby_names: String,
    /// Commits wait for a standby that does not exist (asynchronous mode,
    /// a primary that hears from neither the store nor any standby), in
    /// place of `synchronous_standby_names`.
    pub commits_held: bool,
    pub synchronous_commit: String,
    /// Where a standby streams from; `None` on a primary.
    pub primary_conninfo: Option<String>,
    pub primary_slot_name: Option<String>,
    /// With a WAL archive: the `archive_command` (archive_mode is then
    /// `always`: standbys archive what they receive too, so a segment a
    /// primary completed but had not archived when it died or was stopped
    /// still reaches the archive; pushing the same content twice succeeds)
    /// and the `restore_command` (recovery and standbys fetch from the
    /// archive what they cannot stream).
    pub archive_command: Option<String>,
    pub restore_command: Option<String>,
    /// The cluster-wide parameters of the dynamic configuration, written
    /// after pgwarden's own so they win.
    pub cluster_parameters: BTreeMap<String, String>,
    /// This member's parameters (pgwarden.toml), written last: a host's own
    /// file is the more specific source.
    pub parameters: BTreeMap<String, String>,
}

impl Settings {
    /// Settings for a member with pgwarden's defaults.
    pub fn new(member: impl Into<String>, listen_addresses: impl Into<String>, port: u16) -> Self {
        Settings {
            listen_addresses: listen_addresses.into(),
            port,
            socket_dir: String::new(),
            member: member.into(),
            max_connections: 100,
            max_wal_senders: 10,
            max_replication_slots: 10,
            wal_keep_size: "128MB".into(),
            synchronous_standby_names: String::new(),
            commits_held: false,
            synchronous_commit: "on".into(),
            primary_conninfo: None,
            primary_slot_name: None,
            archive_command: None,
            restore_command: None,
            cluster_parameters: BTreeMap::new(),
            parameters: BTreeMap::new(),
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# Written by pgwarden; rewritten whole on every change. Do not edit:\n\
             # set parameters cluster-wide with `pgwarden ctl config set parameters.NAME=VALUE`,\n\
             # or for this member in pgwarden.toml [postgresql.parameters].\n",
        );
        let mut line =
            |key: &str, value: &str| out.push_str(&format!("{key} = {}\n", quote(value)));
        line("listen_addresses", &self.listen_addresses);
        line("port", &self.port.to_string());
        line("unix_socket_directories", &self.socket_dir);
        line("cluster_name", &self.member);
        line("max_connections", &self.max_connections.to_string());
        line("wal_level", "replica");
        // pg_rewind needs to know which pages changed; checksums also do, but
        // a cluster initialised without them must still be rewindable.
        line("wal_log_hints", "on");
        line("hot_standby", "on");
        line("hot_standby_feedback", "on");
        line("max_wal_senders", &self.max_wal_senders.to_string());
        line(
            "max_replication_slots",
            &self.max_replication_slots.to_string(),
        );
        line("wal_keep_size", &self.wal_keep_size);
        // A frozen or cut-off primary keeps its standbys' TCP connections
        // open: the receiver asks for a reply after half of its timeout and
        // gives up after it, so within a second no standby receives from it
        // and the fast failover path can tell (docs/agent.md).
        line("wal_sender_timeout", "2s");
        line(
            "wal_receiver_timeout",
            &format!("{WAL_RECEIVER_TIMEOUT_MS}ms"),
        );
        line("wal_retrieve_retry_interval", "100ms");
        line("recovery_target_timeline", "latest");
        line(
            "synchronous_standby_names",
            if self.commits_held {
                COMMITS_HELD
            } else {
                &self.synchronous_standby_names
            },
        );
        line("synchronous_commit", &self.synchronous_commit);
        line(
            "primary_conninfo",
            self.primary_conninfo.as_deref().unwrap_or(""),
        );
        line(
            "primary_slot_name",
            self.primary_slot_name.as_deref().unwrap_or(""),
        );
        if let Some(command) = &self.archive_command {
            line("archive_mode", "always");
            line("archive_command", command);
        }
        if let Some(command) = &self.restore_command {
            line("restore_command", command);
        }
        for (source, parameters, cluster) in [
            (
                "the cluster's dynamic configuration",
                &self.cluster_parameters,
                true,
            ),
            ("this member's pgwarden.toml", &self.parameters, false),
        ] {
            if !parameters.is_empty() {
                out.push_str(&format!("# From {source}:\n"));
            }
            for (key, value) in parameters {
                match refused(key, value, cluster) {
                    None => out.push_str(&format!("{key} = {}\n", quote(value))),
                    Some(why) => tracing::error!("not written to pgwarden.conf: {why}"),
                }
            }
        }
        out
    }
}

/// Why an operator's parameter is not written, if it is not. Both sources
/// are checked before they get here (pgwarden.toml when it is read, the
/// dynamic configuration by the agent): this is defence in depth, as a name
/// is written unquoted and a line break would start a line of its own.
fn refused(name: &str, value: &str, cluster: bool) -> Option<String> {
    if let Some(problem) = config::bad_parameter_name(name) {
        return Some(problem);
    }
    if let Some(instead) = config::managed_parameter(name) {
        return Some(format!("{name} is managed by pgwarden: {instead}"));
    }
    if cluster {
        if let Some(instead) = config::runs_code(name) {
            return Some(format!("{name} cannot be set cluster-wide: {instead}"));
        }
    }
    config::bad_parameter_value(name, value)
}

/// A postgresql.conf string literal.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_primary_streams_from_nobody() {
        let text = Settings::new("db1", "127.0.0.1", 5433).render();
        assert!(text.contains("port = '5433'\n"), "{text}");
        assert!(text.contains("cluster_name = 'db1'\n"), "{text}");
        assert!(text.contains("primary_conninfo = ''\n"), "{text}");
        assert!(text.contains("wal_level = 'replica'\n"), "{text}");
    }

    #[test]
    fn a_standby_names_its_primary_and_slot() {
        let mut settings = Settings::new("db2", "*", 5432);
        settings.primary_conninfo = Some("host='db1' port='5432'".into());
        settings.primary_slot_name = Some("db2".into());
        let text = settings.render();
        assert!(
            text.contains("primary_conninfo = 'host=''db1'' port=''5432'''\n"),
            "{text}"
        );
        assert!(text.contains("primary_slot_name = 'db2'\n"), "{text}");
    }

    #[test]
    fn archiving_only_with_an_archive() {
        let text = Settings::new("db1", "*", 5432).render();
        assert!(!text.contains("archive"), "{text}");
        assert!(!text.contains("restore_command"), "{text}");
        let mut settings = Settings::new("db1", "*", 5432);
        settings.archive_command = Some("/usr/bin/pgwarden wal push -c '/etc/p g.toml' %p".into());
        settings.restore_command = Some("/usr/bin/pgwarden wal fetch %f %p".into());
        let text = settings.render();
        assert!(text.contains("archive_mode = 'always'\n"), "{text}");
        assert!(
            text.contains(
                "archive_command = '/usr/bin/pgwarden wal push -c ''/etc/p g.toml'' %p'\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("restore_command = '/usr/bin/pgwarden wal fetch %f %p'\n"),
            "{text}"
        );
    }

    #[test]
    fn operator_parameters_that_would_inject_a_line_or_run_code_are_not_written() {
        let mut settings = Settings::new("db1", "*", 5432);
        for (name, value) in [
            ("work_mem", "8MB"),
            ("x\nshared_preload_libraries", "evil"),
            ("a = 'b'\nc", "1"),
            ("log_line_prefix", "x'\nshared_preload_libraries = 'evil"),
            ("port", "5999"),
            ("shared_preload_libraries", "evil"),
            ("application_name", "it's a \\ test"),
        ] {
            settings
                .cluster_parameters
                .insert(name.into(), value.into());
        }
        settings.parameters.insert(
            "shared_preload_libraries".into(),
            "pg_stat_statements".into(),
        );
        let text = settings.render();
        assert!(text.contains("work_mem = '8MB'\n"), "{text}");
        assert!(
            text.contains("application_name = 'it''s a \\\\ test'\n"),
            "{text}"
        );
        assert!(!text.contains("evil"), "{text}");
        assert!(!text.contains("5999"), "{text}");
        assert!(!text.contains("log_line_prefix"), "{text}");
        // A member's own file may load a library.
        assert!(
            text.contains("shared_preload_libraries = 'pg_stat_statements'\n"),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, _) = line.split_once(" = ").unwrap();
            assert!(config::bad_parameter_name(name).is_none(), "{line:?}");
        }
    }

    #[test]
    fn operator_parameters_come_last_so_they_win_and_the_members_own_last_of_all() {
        let mut settings = Settings::new("db1", "*", 5432);
        settings
            .cluster_parameters
            .insert("max_connections".into(), "200".into());
        settings
            .parameters
            .insert("max_connections".into(), "300".into());
        let text = settings.render();
        let ours = text.find("max_connections = '100'").unwrap();
        let cluster = text.find("max_connections = '200'").unwrap();
        let member = text.find("max_connections = '300'").unwrap();
        assert!(ours < cluster && cluster < member, "{text}");
    }
}
