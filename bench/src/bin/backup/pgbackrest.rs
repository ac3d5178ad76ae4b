//! pgBackRest, the reference: its own configuration and repository in the
//! bench's directory, run as the PostgreSQL user (as PostgreSQL runs its
//! archive-push and archive-get).

use std::path::{Path, PathBuf};

use pg::RunAs;

const STANZA: &str = "bench";

pub struct PgBackRest {
    config: PathBuf,
    run_as: RunAs,
}

/// A backup as `pgbackrest info` describes it.
pub struct Taken {
    pub label: String,
    /// What this backup added to the repository.
    pub stored_bytes: u64,
}

impl PgBackRest {
    /// Writes the configuration for the server in `data_dir` (reached on
    /// its unix socket in `socket_dir`) into `dir`, with the same
    /// compression (zstd level 3) and parallelism as pgwarden's.
    pub fn configure(
        dir: &Path,
        data_dir: &Path,
        socket_dir: &Path,
        port: u16,
        parallelism: u64,
        run_as: &RunAs,
    ) -> Result<PgBackRest, String> {
        let home = dir.join("pgbackrest");
        for sub in ["repo", "lock", "log", "spool"] {
            let path = home.join(sub);
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            run_as.chown(&path).map_err(|e| e.to_string())?;
        }
        run_as.chown(&home).map_err(|e| e.to_string())?;
        let config = home.join("pgbackrest.conf");
        let text = format!(
            "[global]\n\
             repo1-path={repo}\n\
             lock-path={lock}\n\
             log-path={log}\n\
             spool-path={spool}\n\
             log-level-console=warn\n\
             log-level-file=off\n\
             compress-type=zst\n\
             compress-level=3\n\
             process-max={parallelism}\n\
             start-fast=y\n\
             repo1-retention-full=1000\n\
             \n\
             [{STANZA}]\n\
             pg1-path={data}\n\
             pg1-port={port}\n\
             pg1-socket-path={socket}\n",
            repo = home.join("repo").display(),
            lock = home.join("lock").display(),
            log = home.join("log").display(),
            spool = home.join("spool").display(),
            data = data_dir.display(),
            socket = socket_dir.display(),
        );
        std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
        run_as.chown(&config).map_err(|e| e.to_string())?;
        Ok(PgBackRest {
            config,
            run_as: run_as.clone(),
        })
    }

    fn prefix(&self) -> String {
        format!(
            "pgbackrest --config={} --stanza={STANZA}",
            self.config.display()
        )
    }

    /// PostgreSQL's archive_command.
    pub fn archive_push(&self) -> String {
        format!("{} archive-push %p", self.prefix())
    }

    /// The restore_command of a server restored into `data_dir`
    /// (archive-get checks that it runs in the directory it is told).
    pub fn archive_get(&self, data_dir: &Path) -> String {
        format!(
            "{} --pg1-path={} archive-get %f \"%p\"",
            self.prefix(),
            data_dir.display()
        )
    }

    /// Runs `pgbackrest ARGS…` as the PostgreSQL user; its stdout.
    async fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut command = tokio::process::Command::new("pgbackrest");
        command
            .arg(format!("--config={}", self.config.display()))
            .arg(format!("--stanza={STANZA}"))
            .args(args)
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        self.run_as.apply(&mut command);
        let out = command
            .output()
            .await
            .map_err(|e| format!("pgbackrest: {e}; is it installed (scripts/install-deps)?"))?;
        if !out.status.success() {
            return Err(format!(
                "pgbackrest {}: {}\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub async fn stanza_create(&self) -> Result<(), String> {
        self.run(&["stanza-create"]).await.map(|_| ())
    }

    /// A backup of `kind` (`full`, `incr`).
    pub async fn backup(&self, kind: &str) -> Result<(), String> {
        self.run(&[&format!("--type={kind}"), "backup"])
            .await
            .map(|_| ())
    }

    /// The newest backup.
    pub async fn last(&self) -> Result<Taken, String> {
        let text = self.run(&["--output=json", "info"]).await?;
        let info: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("pgbackrest info: {e}: {text}"))?;
        let last = info[0]["backup"]
            .as_array()
            .and_then(|b| b.last())
            .ok_or_else(|| format!("pgbackrest info lists no backup: {text}"))?;
        Ok(Taken {
            label: last["label"].as_str().unwrap_or_default().to_string(),
            stored_bytes: last["info"]["repository"]["delta"].as_u64().unwrap_or(0),
        })
    }

    /// Restores `label` into `target` (a new directory, or with `delta` an
    /// existing data directory), recovering to the end of the archive
    /// without archiving itself.
    pub async fn restore(&self, label: &str, target: &Path, delta: bool) -> Result<(), String> {
        let mut args = vec![
            format!("--pg1-path={}", target.display()),
            format!("--set={label}"),
            "--archive-mode=off".to_string(),
            format!(
                "--recovery-option=restore_command={}",
                self.archive_get(target)
            ),
        ];
        if delta {
            args.push("--delta".into());
        }
        args.push("restore".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args).await.map(|_| ())
    }
}
