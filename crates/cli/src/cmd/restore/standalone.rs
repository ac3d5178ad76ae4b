//! A restored data directory as a server of its own: the backup brought the
//! member's pgwarden.conf (its port, where it streamed from, its synchronous
//! standbys, its archive_command). A copy restored to look at old data must
//! not stream from, block on, or archive into the cluster, and listens where
//! the operator says. Everything else the member had (memory, parameters)
//! is kept.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use backup::restore::conf::{quote, setting_name, write_owned};
use pg::RunAs;

/// Where the standalone server listens, and the timeline recovery follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standalone {
    pub listen_addresses: String,
    pub port: u16,
    /// `unix_socket_directories`; empty: TCP only.
    pub socket_dir: String,
    pub timeline: String,
}

/// Settings that tie a server to its cluster, replaced by ours.
const REPLACED: &[&str] = &[
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "cluster_name",
    "primary_conninfo",
    "primary_slot_name",
    "synchronous_standby_names",
    "archive_mode",
    "archive_command",
    "archive_library",
    "restore_command",
    "recovery_target_timeline",
];

/// pg::instance's file, included from postgresql.conf.
const MANAGED_FILE: &str = "pgwarden.conf";
const INCLUDE_LINE: &str = "include_if_exists = 'pgwarden.conf'";

impl Standalone {
    /// pgwarden.conf's text: the backup's lines without the replaced
    /// settings, then ours.
    pub fn render(&self, existing: &str) -> String {
        let mut text: String = existing
            .lines()
            .filter(|line| !REPLACED.contains(&setting_name(line)))
            .map(|line| format!("{line}\n"))
            .collect();
        text.push_str(
            "# A standalone server restored by `pgwarden restore`: not a member of the cluster.\n",
        );
        for (name, value) in [
            ("listen_addresses", self.listen_addresses.as_str()),
            ("port", &self.port.to_string()),
            ("unix_socket_directories", &self.socket_dir),
            ("cluster_name", "pgwarden-restore"),
            ("primary_conninfo", ""),
            ("primary_slot_name", ""),
            ("synchronous_standby_names", ""),
            ("archive_mode", "off"),
            ("recovery_target_timeline", &self.timeline),
        ] {
            text.push_str(&format!("{name} = {}\n", quote(value)));
        }
        text
    }

    /// Rewrites `data_dir`'s pgwarden.conf (owned by `run_as`) and makes
    /// postgresql.conf include it.
    pub fn write(&self, data_dir: &Path, run_as: &RunAs) -> std::io::Result<()> {
        let path = data_dir.join(MANAGED_FILE);
        let existing = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        write_owned(&path, &self.render(&existing), run_as)?;
        let conf = data_dir.join("postgresql.conf");
        let text = fs::read_to_string(&conf)?;
        if !text.lines().any(|line| line.trim() == INCLUDE_LINE) {
            write_owned(&conf, &format!("{text}\n{INCLUDE_LINE}\n"), run_as)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clusters_ties_are_cut_and_the_rest_kept() {
        let member = "listen_addresses = '*'\n\
                      port = '5432'\n\
                      primary_conninfo = 'host=''db1'''\n\
                      synchronous_standby_names = 'db2'\n\
                      archive_mode = 'on'\n\
                      archive_command = 'pgwarden wal push %p'\n\
                      # From this member's pgwarden.toml:\n\
                      shared_buffers = '1GB'\n";
        let text = Standalone {
            listen_addresses: "localhost".into(),
            port: 6543,
            socket_dir: "/run/postgresql".into(),
            timeline: "latest".into(),
        }
        .render(member);
        assert!(text.contains("shared_buffers = '1GB'\n"), "{text}");
        assert!(text.contains("port = '6543'\n"), "{text}");
        assert!(text.contains("primary_conninfo = ''\n"), "{text}");
        assert!(text.contains("synchronous_standby_names = ''\n"), "{text}");
        assert!(text.contains("archive_mode = 'off'\n"), "{text}");
        assert!(!text.contains("5432"), "{text}");
        assert!(!text.contains("db1"), "{text}");
        assert!(!text.contains("wal push"), "{text}");
        assert!(
            text.contains("recovery_target_timeline = 'latest'\n"),
            "{text}"
        );
    }
}
