//! `pgwarden demo --keep`: the cluster stays up; a `stop` script in its
//! directory ends exactly the processes the demo started, by PID, and
//! removes the directories.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lab::agents::LeftRunning;

/// What was left running, and how to reach it.
pub struct Kept {
    pub left: LeftRunning,
    pub proxy: Option<i32>,
    /// The backup repository the members archive into.
    pub repository: PathBuf,
}

impl Kept {
    pub fn stop_script_path(&self) -> PathBuf {
        self.left.dir.join("stop")
    }

    /// Writes the `stop` script; returns its path.
    pub fn write_stop_script(&self) -> Result<PathBuf> {
        let path = self.stop_script_path();
        fs::write(&path, self.stop_script())
            .with_context(|| format!("write {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("make {} executable", path.display()))?;
        Ok(path)
    }

    /// A POSIX shell script: each PID is signalled only while its command
    /// line still names what the demo started there, so a PID reused by
    /// another program after a reboot is left alone.
    pub fn stop_script(&self) -> String {
        let mut s = String::from(
            "#!/bin/sh\n\
             # Stops what `pgwarden demo --keep` left running and removes its directories.\n\
             set -u\n\
             # signal PID SIGNAL TEXT: signal PID if its command line still contains TEXT\n\
             signal() {\n\
             \x20 tr '\\0' ' ' < \"/proc/$1/cmdline\" 2>/dev/null | grep -qF -- \"$3\" && kill -\"$2\" \"$1\" 2>/dev/null\n\
             \x20 return 0\n\
             }\n\
             # gone PID...: wait up to 60 s for each PID to exit, then kill it\n\
             gone() {\n\
             \x20 for pid in \"$@\"; do\n\
             \x20   i=0\n\
             \x20   while kill -0 \"$pid\" 2>/dev/null && [ \"$i\" -lt 600 ]; do sleep 0.1; i=$((i + 1)); done\n\
             \x20   kill -KILL \"$pid\" 2>/dev/null\n\
             \x20 done\n\
             \x20 return 0\n\
             }\n",
        );
        // The proxy and every agent at once: one by one, a standby would
        // take over from each leader that stops.
        let mut first = Vec::new();
        if let Some(pid) = self.proxy {
            s += &format!("signal {pid} TERM 'pgwarden proxy'\n");
            first.push(pid.to_string());
        }
        for (name, pid, _) in &self.left.agents {
            if let Some(pid) = pid {
                s += &format!(
                    "signal {pid} TERM 'pgwarden agent'  # {name}: stops its PostgreSQL\n"
                );
                first.push(pid.to_string());
            }
        }
        s += &format!("gone {}\n", first.join(" "));
        s += "# A PostgreSQL whose agent was already gone: fast shutdown.\n";
        for (_, _, data_dir) in &self.left.agents {
            let data = shell_quote(data_dir);
            s += &format!(
                "if [ -f {data}/postmaster.pid ]; then\n\
                 \x20 pid=$(head -n 1 {data}/postmaster.pid)\n\
                 \x20 signal \"$pid\" INT {data}\n\
                 \x20 gone \"$pid\"\n\
                 fi\n"
            );
        }
        for pid in &self.left.etcd {
            s += &format!("signal {pid} TERM etcd\n");
        }
        let etcd: Vec<String> = self.left.etcd.iter().map(|p| p.to_string()).collect();
        s += &format!("gone {}\n", etcd.join(" "));
        s += &format!(
            "rm -rf {} {} {}\necho \"stopped the demo cluster and removed {}\"\n",
            shell_quote(&self.left.dir),
            shell_quote(&self.left.etcd_dir),
            shell_quote(&self.repository),
            self.left.dir.display()
        );
        s
    }
}

/// `path` in single quotes for sh.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// How to reach the cluster and stop it, one command a line.
pub fn instructions(
    binary: &Path,
    api_urls: &[String],
    proxy: &super::proxy::ProxyProcess,
    superuser_password_file: &Path,
    standby: &str,
    stop: &Path,
) -> Vec<String> {
    let pgwarden = binary.display();
    let password = format!(
        "PGPASSWORD=\"$(cat {})\"",
        superuser_password_file.display()
    );
    vec![
        "The cluster keeps running (--keep). To look at it:".to_string(),
        format!("  export PGWARDEN_API={}", api_urls.join(",")),
        format!("  {pgwarden} ctl list"),
        format!("  {pgwarden} ctl events"),
        format!("  {pgwarden} ctl switchover --to {standby}"),
        "psql through the proxy, to the primary, then to a standby:".to_string(),
        format!(
            "  {password} psql -h 127.0.0.1 -p {} -U postgres",
            proxy.read_write.port()
        ),
        format!(
            "  {password} psql -h 127.0.0.1 -p {} -U postgres",
            proxy.read_only.port()
        ),
        "To stop everything and remove its files:".to_string(),
        format!("  {}", stop.display()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_script_names_every_process_and_directory() {
        let kept = Kept {
            left: LeftRunning {
                dir: "/tmp/pgwarden-demo-x".into(),
                etcd_dir: "/tmp/pgwarden-demo-y".into(),
                agents: vec![
                    (
                        "db1".into(),
                        Some(101),
                        "/tmp/pgwarden-demo-x/db1/data".into(),
                    ),
                    ("db2".into(), None, "/tmp/pgwarden-demo-x/db2/data".into()),
                ],
                etcd: vec![300],
            },
            proxy: Some(200),
            repository: "/tmp/pgwarden-demo-z".into(),
        };
        let script = kept.stop_script();
        assert!(script.starts_with("#!/bin/sh\n"));
        for expected in [
            "signal 200 TERM 'pgwarden proxy'\n",
            "signal 101 TERM 'pgwarden agent'  # db1: stops its PostgreSQL\n",
            "gone 200 101\n",
            "if [ -f '/tmp/pgwarden-demo-x/db2/data'/postmaster.pid ]; then\n  \
             pid=$(head -n 1 '/tmp/pgwarden-demo-x/db2/data'/postmaster.pid)\n  \
             signal \"$pid\" INT '/tmp/pgwarden-demo-x/db2/data'\n  gone \"$pid\"\nfi\n",
            "signal 300 TERM etcd\ngone 300\n",
            "rm -rf '/tmp/pgwarden-demo-x' '/tmp/pgwarden-demo-y' '/tmp/pgwarden-demo-z'\n",
        ] {
            assert!(script.contains(expected), "{expected}\nnot in\n{script}");
        }
        // The proxy and agents stop before PostgreSQL, etcd last.
        let at = |text: &str| script.find(text).unwrap();
        assert!(at("gone 200 101") < at("postmaster.pid"));
        assert!(at("postmaster.pid") < at("signal 300"));
        assert_eq!(
            kept.stop_script_path(),
            Path::new("/tmp/pgwarden-demo-x/stop")
        );
    }

    #[test]
    fn quotes_survive_a_path_with_a_quote() {
        assert_eq!(shell_quote(Path::new("/tmp/a'b")), r"'/tmp/a'\''b'");
    }
}
