//! How a restored data directory starts: backup_label (where replay
//! begins), `recovery.signal` (archive recovery, not a standby), and the
//! recovery settings in postgresql.auto.conf, read after every other file
//! so they win: where WAL comes from (`restore_command`), where to stop,
//! and to promote there.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use pg::{Lsn, RunAs};

use super::conf::{quote, setting_name, write_owned};

/// Where recovery stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Replay every archived segment there is, then promote.
    Latest,
    /// Stop as soon as the restored backup is consistent.
    Immediate,
    /// Stop before the first transaction committed after this time.
    Time(jiff::Timestamp),
    /// Stop at this WAL position.
    Lsn(Lsn),
    /// Stop at a restore point made with `pg_create_restore_point(name)`.
    Name(String),
}

/// The recovery a restored server performs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// PostgreSQL's `restore_command` (`%f` the file wanted, `%p` where to
    /// put it), normally `pgwarden wal fetch %f %p`.
    pub restore_command: String,
    pub target: RecoveryTarget,
    /// Leave `archive_mode` as the backup had it. Off by default: a copy
    /// restored to look at old data must not push its new timeline into the
    /// cluster's archive. On for a cluster rebuilt from its backup.
    pub keep_archiving: bool,
}

/// The settings pgwarden manages in postgresql.auto.conf; a restore
/// replaces any earlier values of them.
const MANAGED: &[&str] = &[
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_xid",
    "recovery_target_inclusive",
    "recovery_target_action",
    "archive_mode",
];

const AUTO_CONF: &str = "postgresql.auto.conf";

impl Recovery {
    /// `(name, value)` pairs for postgresql.auto.conf.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut settings = vec![("restore_command", self.restore_command.clone())];
        match &self.target {
            RecoveryTarget::Latest => {}
            RecoveryTarget::Immediate => settings.push(("recovery_target", "immediate".into())),
            RecoveryTarget::Time(time) => {
                // PostgreSQL's own form: its check refuses RFC 3339's `T`/`Z`.
                let text = time.strftime("%Y-%m-%d %H:%M:%S%.f+00").to_string();
                settings.push(("recovery_target_time", text))
            }
            RecoveryTarget::Lsn(lsn) => settings.push(("recovery_target_lsn", lsn.to_string())),
            RecoveryTarget::Name(name) => settings.push(("recovery_target_name", name.clone())),
        }
        settings.push(("recovery_target_action", "promote".into()));
        if !self.keep_archiving {
            settings.push(("archive_mode", "off".into()));
        }
        settings
    }

    /// postgresql.auto.conf's text with this recovery's settings instead of
    /// any earlier ones.
    pub fn auto_conf(&self, existing: &str, backup_id: &str) -> String {
        let mut text: String = existing
            .lines()
            .filter(|line| !MANAGED.contains(&setting_name(line)))
            .filter(|line| !line.starts_with(HEADER))
            .map(|line| format!("{line}\n"))
            .collect();
        text.push_str(&format!("{HEADER} {backup_id}\n"));
        for (name, value) in self.settings() {
            text.push_str(&format!("{name} = {}\n", quote(&value)));
        }
        text
    }

    /// Writes backup_label, recovery.signal and the settings into a
    /// restored data directory, owned by `run_as`; removes the signal and
    /// map files that would make it start otherwise.
    pub fn write(
        &self,
        data_dir: &Path,
        backup_id: &str,
        backup_label: &str,
        run_as: &RunAs,
    ) -> std::io::Result<()> {
        let auto_conf = data_dir.join(AUTO_CONF);
        let existing = match fs::read_to_string(&auto_conf) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        write_owned(&auto_conf, &self.auto_conf(&existing, backup_id), run_as)?;
        write_owned(&data_dir.join("backup_label"), backup_label, run_as)?;
        write_owned(&data_dir.join("recovery.signal"), "", run_as)?;
        // Tablespaces are restored as directories inside pg_tblspc: a map
        // would make PostgreSQL replace them with links to the old places.
        for stale in ["standby.signal", "tablespace_map"] {
            match fs::remove_file(data_dir.join(stale)) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Removes this module's recovery settings from a data directory's
/// postgresql.auto.conf, once recovery is over: a recovery target left
/// there would stop the next recovery (this server started as a standby
/// after a failover) at the same point and promote it.
pub fn clear(data_dir: &Path, run_as: &RunAs) -> std::io::Result<()> {
    let auto_conf = data_dir.join(AUTO_CONF);
    let existing = fs::read_to_string(&auto_conf)?;
    let kept: String = existing
        .lines()
        .filter(|line| !MANAGED.contains(&setting_name(line)) && !line.starts_with(HEADER))
        .map(|line| format!("{line}\n"))
        .collect();
    if kept != existing {
        write_owned(&auto_conf, &kept, run_as)?;
    }
    Ok(())
}

const HEADER: &str = "# Recovery settings written by pgwarden, restoring backup";

#[cfg(test)]
mod tests {
    use super::*;

    fn recovery(target: RecoveryTarget) -> Recovery {
        Recovery {
            restore_command: "pgwarden wal fetch %f %p".into(),
            target,
            keep_archiving: false,
        }
    }

    #[test]
    fn each_target_is_one_setting_and_recovery_promotes_there() {
        let time: jiff::Timestamp = "2025-01-02T03:04:05.123456Z".parse().unwrap();
        let text = recovery(RecoveryTarget::Time(time)).auto_conf("", "B1");
        assert!(
            text.contains("recovery_target_time = '2025-01-02 03:04:05.123456+00'\n"),
            "{text}"
        );
        assert!(
            text.contains("restore_command = 'pgwarden wal fetch %f %p'\n"),
            "{text}"
        );
        assert!(
            text.contains("recovery_target_action = 'promote'\n"),
            "{text}"
        );
        assert!(text.contains("archive_mode = 'off'\n"), "{text}");
        let lsn = recovery(RecoveryTarget::Lsn("0/3000148".parse().unwrap())).auto_conf("", "B1");
        assert!(lsn.contains("recovery_target_lsn = '0/3000148'\n"), "{lsn}");
        let name = recovery(RecoveryTarget::Name("before 'it'".into())).auto_conf("", "B1");
        assert!(
            name.contains("recovery_target_name = 'before ''it'''\n"),
            "{name}"
        );
        let latest = recovery(RecoveryTarget::Latest).auto_conf("", "B1");
        let targets = latest.lines().filter(|l| {
            l.starts_with("recovery_target") && !l.starts_with("recovery_target_action")
        });
        assert_eq!(targets.count(), 0, "{latest}");
    }

    #[test]
    fn replaces_earlier_recovery_settings_and_keeps_the_rest() {
        let earlier = "# Do not edit this file manually!\n\
                       work_mem = '8MB'\n\
                       # Recovery settings written by pgwarden, restoring backup B0\n\
                       restore_command = 'cp x %p'\n\
                       recovery_target_name = 'old'\n\
                       archive_mode = 'on'\n";
        let mut keep = recovery(RecoveryTarget::Immediate);
        keep.keep_archiving = true;
        let text = keep.auto_conf(earlier, "B1");
        assert_eq!(
            text,
            "# Do not edit this file manually!\n\
             work_mem = '8MB'\n\
             # Recovery settings written by pgwarden, restoring backup B1\n\
             restore_command = 'pgwarden wal fetch %f %p'\n\
             recovery_target = 'immediate'\n\
             recovery_target_action = 'promote'\n"
        );
    }
}
