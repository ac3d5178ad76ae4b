//! One PostgreSQL data directory and the operations on it.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::command::Invocation;
use crate::conninfo::{self, Endpoint};
use crate::controldata::{self, ControlData};
use crate::error::PgError;
use crate::files::{
    create_dir, read_postgres_file, read_tail, remove_if_present, write_atomically,
};
use crate::hba::render_hba;
use crate::probe::{self, Probe};
use crate::run_as::RunAs;
use crate::settings::Settings;

/// How long a postmaster started in the background may take to write its
/// postmaster.pid (it does so first thing).
/// How much of the server log's end a failed start shows.
const LOG_TAIL_BYTES: u64 = 16 * 1024;
/// How often a promotion is checked for its end.
const PROMOTE_POLL: Duration = Duration::from_millis(5);
const POSTMASTER_PID_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long an immediate shutdown may take before pg_ctl is tried instead
/// (PostgreSQL itself kills children that ignore SIGQUIT after 5 s).
const IMMEDIATE_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The file pgwarden owns inside the data directory.
pub const MANAGED_FILE: &str = "pgwarden.conf";
const INCLUDE_LINE: &str = "include_if_exists = 'pgwarden.conf'";

/// A database role and its password. The password never shows in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub password: String,
}

impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Role")
            .field("name", &self.name)
            .field("password", &"********")
            .finish()
    }
}

/// A physical replication slot and the WAL it holds back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotUsage {
    pub name: String,
    /// A standby streams through it now.
    pub active: bool,
    /// `None`: it reserves no WAL yet.
    pub retained_bytes: Option<u64>,
}

/// Bounds on how long PostgreSQL's programs may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// initdb, start, stop, promote, reload.
    pub pg_ctl: Duration,
    /// pg_basebackup and pg_rewind.
    pub clone: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            pg_ctl: Duration::from_secs(60),
            clone: Duration::from_secs(3600),
        }
    }
}

/// Everything an `Instance` needs to know, fixed for its life.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    pub data_dir: PathBuf,
    pub bin_dir: PathBuf,
    /// Where pg_ctl sends the server's log.
    pub log_file: PathBuf,
    /// Where this server is reached (for the probe and for replication slots).
    pub endpoint: Endpoint,
    pub superuser: Role,
    pub replication: Role,
    /// Client networks allowed in pg_hba.conf (scram-sha-256).
    pub hba_networks: Vec<String>,
    pub run_as: RunAs,
    pub timeouts: Timeouts,
}

/// How to stop: smart waits for clients, fast disconnects them, immediate
/// aborts without a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    Smart,
    Fast,
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// How far a clone has come, as pg_basebackup reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloneProgress {
    pub done_kb: u64,
    pub total_kb: u64,
}

/// What pg_rewind did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RewindOutcome {
    /// The target had diverged and was rewound.
    Rewound,
    /// The target had not diverged; nothing was copied.
    NotNeeded,
}

/// One PostgreSQL data directory.
#[derive(Clone, Debug)]
pub struct Instance {
    spec: InstanceSpec,
    /// One superuser connection reused by the probe and slot management: a
    /// new connection costs a fork and a SCRAM exchange, which a loaded
    /// machine makes slow enough to matter at every heartbeat.
    shared: Arc<tokio::sync::Mutex<Option<Arc<tokio_postgres::Client>>>>,
}

impl Instance {
    pub fn new(spec: InstanceSpec) -> Self {
        Instance {
            spec,
            shared: Arc::default(),
        }
    }

    /// The shared superuser connection, opened again when it has closed
    /// (the server restarted or crashed).
    pub async fn client(&self) -> Result<Arc<tokio_postgres::Client>, PgError> {
        let mut shared = self.shared.lock().await;
        if let Some(client) = shared.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let client = Arc::new(self.connect().await?);
        *shared = Some(client.clone());
        Ok(client)
    }

    pub fn spec(&self) -> &InstanceSpec {
        &self.spec
    }

    pub fn data_dir(&self) -> &Path {
        &self.spec.data_dir
    }

    /// The libpq password file, beside the data directory so that neither a
    /// clone nor a backup carries it.
    pub fn passfile(&self) -> PathBuf {
        self.beside_data_dir(".pgpass")
    }

    /// `<parent>/<data dir name><suffix>`: a path next to the data directory.
    fn beside_data_dir(&self, suffix: &str) -> PathBuf {
        let name = self
            .spec
            .data_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into());
        self.spec.data_dir.with_file_name(format!("{name}{suffix}"))
    }

    fn pg_ctl(&self, what: &'static str) -> Invocation<'static> {
        self.tool(what, "pg_ctl", self.spec.timeouts.pg_ctl)
    }

    /// One of PostgreSQL's programs, run on this data directory (`-D`).
    fn tool<'a>(&self, what: &'a str, program: &str, timeout: Duration) -> Invocation<'a> {
        Invocation::new(what, &self.spec.bin_dir, program, timeout)
            .arg("-D")
            .arg(self.data_path())
    }

    fn data_path(&self) -> String {
        self.spec.data_dir.display().to_string()
    }

    fn wait_secs(&self) -> String {
        self.spec.timeouts.pg_ctl.as_secs().max(1).to_string()
    }

    /// Whether the data directory holds a cluster (has PG_VERSION).
    pub fn is_initialized(&self) -> bool {
        self.spec.data_dir.join("PG_VERSION").is_file()
    }

    /// Refuses to overwrite a data directory that holds anything.
    fn ensure_empty_data_dir(&self, what: &str) -> Result<(), PgError> {
        let has_entries =
            fs::read_dir(&self.spec.data_dir).is_ok_and(|mut entries| entries.next().is_some());
        if has_entries {
            return Err(PgError::Refused(format!(
                "{what}: the data directory {} is not empty; pgwarden never overwrites data. \
                 Move it away first if it is really unwanted",
                self.spec.data_dir.display()
            )));
        }
        Ok(())
    }

    /// Writes the password file that standbys, pg_basebackup and pg_rewind use.
    pub fn write_passfile(&self) -> Result<(), PgError> {
        let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
        let mut text = String::new();
        for role in [&self.spec.replication, &self.spec.superuser] {
            text.push_str(&format!(
                "*:*:*:{}:{}\n",
                escape(&role.name),
                escape(&role.password)
            ));
        }
        write_atomically(&self.spec.run_as, &self.passfile(), &text, 0o600)
    }

    /// initdb with data checksums and a superuser password, pg_hba.conf with
    /// scram-sha-256 for every network connection, and the include of
    /// pgwarden's own file.
    pub async fn initdb(&self) -> Result<(), PgError> {
        let what = "initdb";
        self.ensure_empty_data_dir(what)?;
        create_dir(&self.spec.run_as, &self.spec.data_dir, 0o700)?;
        let pwfile = self
            .spec
            .data_dir
            .with_file_name(".pgwarden-initdb-password");
        write_atomically(
            &self.spec.run_as,
            &pwfile,
            &self.spec.superuser.password,
            0o600,
        )?;
        let result = self
            .tool(what, "initdb", self.spec.timeouts.pg_ctl)
            .arg("--data-checksums")
            .arg("--encoding=UTF8")
            .arg("--no-locale")
            .arg(format!("--username={}", self.spec.superuser.name))
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("--auth-local=peer")
            .arg("--auth-host=scram-sha-256")
            .run(&self.spec.run_as)
            .await;
        remove_if_present(&pwfile)?;
        result?;
        self.write_hba()?;
        self.ensure_include()?;
        self.write_passfile()
    }

    /// pg_hba.conf from this member's own networks: written with the
    /// settings, because a clone brings the primary's.
    fn write_hba(&self) -> Result<(), PgError> {
        let hba = render_hba(&self.spec.replication.name, &self.spec.hba_networks);
        write_atomically(
            &self.spec.run_as,
            &self.spec.data_dir.join("pg_hba.conf"),
            &hba,
            0o600,
        )
    }

    /// Makes postgresql.conf include pgwarden.conf (once).
    fn ensure_include(&self) -> Result<(), PgError> {
        let path = self.spec.data_dir.join("postgresql.conf");
        let text = read_postgres_file(&path, "read postgresql.conf")?.ok_or_else(|| {
            PgError::io(
                "read postgresql.conf",
                &path,
                std::io::ErrorKind::NotFound.into(),
            )
        })?;
        if text.lines().any(|line| line.trim() == INCLUDE_LINE) {
            return Ok(());
        }
        let text = format!("{text}\n# pgwarden's settings, last so they win.\n{INCLUDE_LINE}\n");
        write_atomically(&self.spec.run_as, &path, &text, 0o600)
    }

    /// Rewrites pgwarden.conf and pg_hba.conf atomically. A running server
    /// needs `reload` (or `restart` for settings such as `port`) to see them.
    pub fn write_settings(&self, settings: &Settings) -> Result<(), PgError> {
        self.ensure_include()?;
        self.write_hba()?;
        write_atomically(
            &self.spec.run_as,
            &self.spec.data_dir.join(MANAGED_FILE),
            &settings.render(),
            0o600,
        )
    }

    /// Creates or removes standby.signal: with it, the server starts as a
    /// standby. Removing it from a running server is refused: PostgreSQL
    /// removes it itself when promoted, and fails the promotion if it is gone.
    pub fn set_standby(&self, standby: bool) -> Result<(), PgError> {
        let path = self.spec.data_dir.join("standby.signal");
        if !standby && self.postmaster_pid().is_some() {
            return Err(PgError::Refused(format!(
                "will not remove {} while PostgreSQL runs: promote it instead (PostgreSQL removes the file itself)",
                path.display()
            )));
        }
        if standby {
            write_atomically(&self.spec.run_as, &path, "", 0o600)
        } else {
            remove_if_present(&path)
        }
    }

    pub fn is_standby_configured(&self) -> bool {
        self.spec.data_dir.join("standby.signal").exists()
    }

    /// The postmaster's PID if one is running for this data directory (a
    /// stale postmaster.pid whose PID another program now has names none).
    pub fn postmaster_pid(&self) -> Option<i32> {
        let path = self.spec.data_dir.join("postmaster.pid");
        let text = read_postgres_file(&path, "read postmaster.pid")
            .map_err(|err| tracing::warn!("{err}"))
            .ok()??;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        (crate::pid::is_alive(pid) && crate::pid::is_postgres(pid)).then_some(pid)
    }

    /// Starts the server and waits until it accepts connections.
    pub async fn start(&self) -> Result<(), PgError> {
        self.launch(true).await
    }

    /// Starts the server without waiting for it to accept connections: a
    /// standby does so only once it has streamed enough WAL to be
    /// consistent, which may need things (a slot on the primary) that the
    /// caller arranges afterwards.
    pub async fn start_in_background(&self) -> Result<(), PgError> {
        self.launch(false).await
    }

    async fn launch(&self, wait: bool) -> Result<(), PgError> {
        if self.postmaster_pid().is_some() {
            return Ok(());
        }
        self.clear_stale_lock_file().await?;
        if let Some(log_dir) = self.spec.log_file.parent() {
            // An existing directory outside the data directory is left as
            // it is: e.g. Debian's /var/log/postgresql, root's, which
            // PostgreSQL's user may write in but not chmod. Inside, the
            // directory is PostgreSQL's own and made so; a symbolic link is
            // never a directory here (create_dir refuses it).
            let is_real_dir = log_dir.symlink_metadata().is_ok_and(|m| m.is_dir());
            if !is_real_dir || log_dir.starts_with(self.data_dir()) {
                create_dir(&self.spec.run_as, log_dir, 0o700)?;
            }
        }
        let start = self.pg_ctl("start PostgreSQL").arg("start");
        let start = if wait {
            start.arg("-w").arg("-t").arg(self.wait_secs())
        } else {
            start.arg("-W")
        };
        start
            .arg("-l")
            .arg(self.spec.log_file.display().to_string())
            .run(&self.spec.run_as)
            .await
            .map_err(|err| self.with_log_tail(err))?;
        if !wait {
            // pg_ctl -W returns once the postmaster is forked. Until it has
            // written postmaster.pid, an observation takes the server for
            // stopped and may act on a data directory that is starting.
            let deadline = std::time::Instant::now() + POSTMASTER_PID_WAIT;
            while self.postmaster_pid().is_none() {
                if std::time::Instant::now() >= deadline {
                    return Err(self.with_log_tail(PgError::Failed {
                        what: "start PostgreSQL".into(),
                        program: "postgres".into(),
                        status: format!("no postmaster.pid within {POSTMASTER_PID_WAIT:?}"),
                        stderr:
                            "the server exited at once or did not start; the server log says why"
                                .into(),
                    }));
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }

    /// Removes postmaster.pid when its postmaster is dead and no process is
    /// attached to its shared memory any more. PostgreSQL does the same
    /// check itself, except that it takes a zombie (a killed postmaster its
    /// parent has not reaped yet) for a live server and refuses to start:
    /// a crash restart would wait for an unrelated process to call wait().
    /// While the dead postmaster's children still hold its shared memory,
    /// waits for them to go first (see [`crate::orphans`]).
    async fn clear_stale_lock_file(&self) -> Result<(), PgError> {
        let path = self.spec.data_dir.join("postmaster.pid");
        let Some(text) = read_postgres_file(&path, "read postmaster.pid")? else {
            return Ok(());
        };
        // Lines: 1 pid, 4 port, 5 socket directory, 7 shared memory key and id.
        let lines: Vec<&str> = text.lines().collect();
        let field = |n: usize| lines.get(n - 1).map(|l| l.trim());
        let Some(pid) = field(1).and_then(|l| l.parse::<i32>().ok()) else {
            return Ok(());
        };
        if crate::pid::is_alive(pid) {
            return Ok(());
        }
        if let Some(segment) = field(7)
            .and_then(crate::orphans::Segment::parse)
            .filter(|segment| segment.in_use())
        {
            let uid = self
                .spec
                .run_as
                .owner_uid()
                .unwrap_or_else(|| nix::unistd::getuid().as_raw());
            if !crate::orphans::wait_gone(segment, uid).await {
                // PostgreSQL will refuse, rightly; its error goes with the
                // failed start, and this says what to do about it.
                tracing::warn!(
                    "processes of dead postmaster {pid} still hold its shared memory (key {}, id {}), and this \
                     agent could not end them: find them with `ipcs -m -i {}` (cpid/lpid) or `grep -l SYSV{:08x} \
                     /proc/*/maps`, end them, and the agent starts PostgreSQL at its next try",
                    segment.key, segment.id, segment.id, segment.key
                );
                return Ok(());
            }
        }
        tracing::info!(
            "removing the stale {} of dead postmaster {pid}: nothing is attached to its shared memory",
            path.display()
        );
        // The socket's lock file names the same dead postmaster.
        // postmaster.pid is PostgreSQL's user's to write: only a real port, an
        // absolute directory and a lock file of that user's are believed.
        let port = field(4).and_then(|p| p.parse::<u16>().ok());
        let dir = field(5).map(Path::new).filter(|d| d.is_absolute());
        if let (Some(port), Some(dir)) = (port, dir) {
            let socket_lock = dir.join(format!(".s.PGSQL.{port}.lock"));
            let owner = read_postgres_file(&socket_lock, "read the socket's lock file")
                .ok()
                .flatten()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
            if owner == Some(pid) && self.owned_by_postgres(&socket_lock) {
                remove_if_present(&socket_lock)?;
            }
        }
        remove_if_present(&path)
    }

    /// Whether `path` (not a link's target) belongs to the user PostgreSQL
    /// runs as; always so when pgwarden is not root.
    fn owned_by_postgres(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match self.spec.run_as.owner_uid() {
            None => true,
            Some(uid) => fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.uid() == uid),
        }
    }

    /// Adds the end of the server log to a failed start: that is where
    /// PostgreSQL says why.
    fn with_log_tail(&self, err: PgError) -> PgError {
        let tail = match read_tail(&self.spec.run_as, &self.spec.log_file, LOG_TAIL_BYTES) {
            Ok(log) => {
                let lines: Vec<_> = log.lines().collect();
                lines[lines.len().saturating_sub(10)..].join("\n")
            }
            Err(err) => err.to_string(),
        };
        match err {
            PgError::Failed {
                what,
                program,
                status,
                stderr,
            } => PgError::Failed {
                what,
                program,
                status,
                stderr: format!(
                    "{stderr}\nend of the server log {}:\n{tail}",
                    self.spec.log_file.display()
                ),
            },
            other => other,
        }
    }

    /// Stops the server and waits until it is gone. Stopping a stopped server
    /// succeeds.
    pub async fn stop(&self, mode: StopMode) -> Result<(), PgError> {
        if mode == StopMode::Immediate {
            // Fencing: the signal first, before anything that could wait.
            if let Some(pid) = self.fence() {
                if self.wait_gone(pid, IMMEDIATE_STOP_WAIT).await {
                    self.shared.lock().await.take();
                    return Ok(());
                }
                tracing::warn!(
                    "postmaster {pid} is still running {IMMEDIATE_STOP_WAIT:?} after SIGQUIT: stopping it with pg_ctl"
                );
            }
        }
        // Our own shared connection would keep a smart shutdown waiting.
        self.shared.lock().await.take();
        if self.postmaster_pid().is_none() {
            return Ok(());
        }
        self.pg_ctl("stop PostgreSQL")
            .arg("stop")
            .arg("-m")
            .arg(mode.as_arg())
            .arg("-w")
            .arg("-t")
            .arg(self.wait_secs())
            .run(&self.spec.run_as)
            .await?;
        Ok(())
    }

    /// Sends the postmaster SIGQUIT (an immediate shutdown, what `pg_ctl
    /// stop -m immediate` sends) with no program in between: a fenced
    /// primary's backends stop acknowledging within microseconds of the
    /// decision, not after a fork and exec. The PID it signalled, if any.
    pub fn fence(&self) -> Option<i32> {
        let pid = self.postmaster_pid()?;
        match nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGQUIT,
        ) {
            Ok(()) => Some(pid),
            Err(err) => {
                tracing::warn!("could not signal postmaster {pid}: {err}");
                None
            }
        }
    }

    /// Whether `pid` has exited within `wait`.
    async fn wait_gone(&self, pid: i32, wait: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + wait;
        while crate::pid::is_alive(pid) {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }

    /// Stops (fast) and starts again, e.g. for a changed `port`.
    pub async fn restart(&self) -> Result<(), PgError> {
        self.stop(StopMode::Fast).await?;
        self.start().await
    }

    /// A primary's WAL position and the furthest any connected standby has
    /// confirmed flushing (`None`: no standby connected), in bytes.
    pub async fn wal_confirmed(&self) -> Result<(u64, Option<u64>), PgError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint, \
                 (SELECT max(flush_lsn - '0/0'::pg_lsn) FROM pg_stat_replication)::bigint",
                &[],
            )
            .await
            .map_err(|e| PgError::sql("read how far the standbys confirmed the WAL", e))?;
        let written: i64 = row.get(0);
        let confirmed: Option<i64> = row.get(1);
        Ok((written as u64, confirmed.map(|c| c as u64)))
    }

    /// Makes the server re-read its configuration by signalling the
    /// postmaster itself (SIGHUP), with no program in between: a commit
    /// hold takes effect within milliseconds. Falls back to pg_ctl.
    pub async fn reload_now(&self) -> Result<(), PgError> {
        if let Some(pid) = self.postmaster_pid() {
            let hup = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGHUP,
            );
            if hup.is_ok() {
                return Ok(());
            }
        }
        self.reload().await
    }

    /// Makes the running server re-read its configuration.
    pub async fn reload(&self) -> Result<(), PgError> {
        self.pg_ctl("reload PostgreSQL")
            .arg("reload")
            .run(&self.spec.run_as)
            .await?;
        Ok(())
    }

    /// Promotes a standby and waits until it accepts writes.
    pub async fn promote(&self) -> Result<(), PgError> {
        // pg_ctl's own wait (-w) looks every 100 ms, and a failover waits
        // on it: ask, then watch the server leave recovery from here.
        self.pg_ctl("promote PostgreSQL")
            .arg("promote")
            .arg("-W")
            .run(&self.spec.run_as)
            .await?;
        let client = self.connect().await?;
        let deadline = std::time::Instant::now() + self.spec.timeouts.pg_ctl;
        loop {
            let row = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map_err(|e| PgError::sql("check that the promotion ended", e))?;
            if !row.get::<_, bool>(0) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(self.with_log_tail(PgError::Failed {
                    what: "promote PostgreSQL".into(),
                    program: "postgres".into(),
                    status: format!("still in recovery after {:?}", self.spec.timeouts.pg_ctl),
                    stderr: "the server log says why".into(),
                }));
            }
            tokio::time::sleep(PROMOTE_POLL).await;
        }
    }

    /// pg_controldata of this data directory.
    pub async fn controldata(&self) -> Result<ControlData, PgError> {
        let out = self
            .tool(
                "read pg_control",
                "pg_controldata",
                self.spec.timeouts.pg_ctl,
            )
            .env("LC_ALL", "C")
            .run(&self.spec.run_as)
            .await?;
        controldata::parse(&out.stdout)
    }

    /// Clones this (empty) data directory from a running primary with
    /// pg_basebackup, streaming WAL alongside. `on_progress` sees every
    /// progress report. Afterwards write the settings (the copy carries the
    /// source's) and standby.signal before starting.
    pub async fn clone_from(
        &self,
        source: &Endpoint,
        mut on_progress: impl FnMut(CloneProgress),
    ) -> Result<(), PgError> {
        let what = "clone with pg_basebackup";
        self.ensure_empty_data_dir(what)?;
        self.write_passfile()?;
        create_dir(&self.spec.run_as, &self.spec.data_dir, 0o700)?;
        let conninfo = conninfo::build(&[
            ("host", &source.host),
            ("port", &source.port.to_string()),
            ("user", &self.spec.replication.name),
            ("application_name", "pgwarden_clone"),
        ]);
        let result = self
            .tool(what, "pg_basebackup", self.spec.timeouts.clone)
            .arg("--wal-method=stream")
            .arg("--checkpoint=fast")
            .arg("--progress")
            .arg("--no-password")
            .arg("-d")
            .arg(conninfo)
            .env("PGPASSFILE", self.passfile().display().to_string())
            .run_with_stderr_lines(&self.spec.run_as, |line| {
                if let Some(progress) = parse_basebackup_progress(line) {
                    on_progress(progress);
                }
            })
            .await;
        if result.is_err() {
            // Leave no half copy that a later start could mistake for a cluster.
            let _ = fs::remove_dir_all(&self.spec.data_dir);
        }
        result?;
        // The copy's log file is the source's; start ours afresh.
        let _ = fs::remove_file(&self.spec.log_file);
        Ok(())
    }

    /// Rewinds this stopped data directory to follow `source` with
    /// pg_rewind. pgwarden's own settings file survives the rewind.
    pub async fn rewind(&self, source: &Endpoint) -> Result<RewindOutcome, PgError> {
        // pg_rewind reads the source's timeline from its control file, which
        // a fresh promotion only updates at its next checkpoint: without one
        // it sees "the same timeline" and wrongly skips the rewind.
        let client = probe::connect(source, &self.spec.superuser).await?;
        client
            .batch_execute("CHECKPOINT")
            .await
            .map_err(|e| PgError::sql(format!("checkpoint the rewind source {source}"), e))?;
        drop(client);
        let managed = self.spec.data_dir.join(MANAGED_FILE);
        let kept = read_postgres_file(&managed, "keep pgwarden's settings across pg_rewind")?;
        self.write_passfile()?;
        let conninfo = conninfo::build(&[
            ("host", &source.host),
            ("port", &source.port.to_string()),
            ("user", &self.spec.superuser.name),
            ("dbname", "postgres"),
        ]);
        let out = self
            .tool(
                "rewind with pg_rewind",
                "pg_rewind",
                self.spec.timeouts.clone,
            )
            .arg(format!("--source-server={conninfo}"))
            .arg("--no-sync")
            .env("PGPASSFILE", self.passfile().display().to_string())
            .env("LC_ALL", "C")
            .run(&self.spec.run_as)
            .await;
        if let Some(kept) = kept {
            write_atomically(&self.spec.run_as, &managed, &kept, 0o600)?;
        }
        let out = out?;
        let said = format!("{}\n{}", out.stdout, out.stderr);
        Ok(if said.contains("no rewind required") {
            RewindOutcome::NotNeeded
        } else {
            RewindOutcome::Rewound
        })
    }

    /// Renames the (stopped) data directory out of the way, keeping it for
    /// the operator, so a fresh clone can take its place. Returns the new
    /// name.
    pub fn move_aside(&self) -> Result<PathBuf, PgError> {
        if self.postmaster_pid().is_some() {
            return Err(PgError::Refused(format!(
                "will not move {} aside while PostgreSQL runs on it: stop it first",
                self.spec.data_dir.display()
            )));
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aside = self.beside_data_dir(&format!(".moved-{stamp}"));
        fs::rename(&self.spec.data_dir, &aside)
            .map_err(|e| PgError::io("move the data directory aside", &aside, e))?;
        tracing::warn!(
            "moved the data directory {} aside to {}; remove it once it is no longer needed",
            self.spec.data_dir.display(),
            aside.display()
        );
        Ok(aside)
    }

    /// Creates the replication role (on a running primary).
    pub async fn create_replication_role(&self) -> Result<(), PgError> {
        let client = self.connect().await?;
        let role = &self.spec.replication;
        // Keep the password out of the server log whatever log_statement says.
        client
            .batch_execute("SET log_statement = 'none'; SET log_min_duration_statement = -1")
            .await
            .map_err(|e| PgError::sql("create the replication role", e))?;
        let sql = format!(
            "CREATE ROLE {} WITH LOGIN REPLICATION PASSWORD {}",
            quote_ident(&role.name),
            quote_literal(&role.password)
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| PgError::sql(format!("create the replication role {}", role.name), e))
    }

    /// The replication role of this member's credentials, created, or given
    /// back its rights and password: a restored backup carries the roles
    /// of the cluster it was taken from.
    pub async fn ensure_replication_role(&self) -> Result<(), PgError> {
        let client = self.connect().await?;
        let role = &self.spec.replication;
        let what = || format!("create or alter the replication role {}", role.name);
        client
            .batch_execute("SET log_statement = 'none'; SET log_min_duration_statement = -1")
            .await
            .map_err(|e| PgError::sql(what(), e))?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role.name])
            .await
            .map_err(|e| PgError::sql(what(), e))?
            .is_some();
        let sql = format!(
            "{} ROLE {} WITH LOGIN REPLICATION PASSWORD {}",
            if exists { "ALTER" } else { "CREATE" },
            quote_ident(&role.name),
            quote_literal(&role.password)
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| PgError::sql(what(), e))
    }

    /// initdb, start, and the replication role: a new primary.
    pub async fn bootstrap(&self, settings: &Settings) -> Result<(), PgError> {
        self.initdb().await?;
        self.write_settings(settings)?;
        self.start().await?;
        self.create_replication_role().await
    }

    /// Creates a physical replication slot that reserves WAL at once.
    /// Creating a slot that exists succeeds.
    pub async fn create_slot(&self, name: &str) -> Result<(), PgError> {
        let client = self.client().await?;
        client
            .execute(
                "SELECT pg_create_physical_replication_slot($1, true) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                &[&name],
            )
            .await
            .map_err(|e| PgError::sql(format!("create replication slot {name}"), e))?;
        Ok(())
    }

    /// Drops a replication slot; dropping a missing slot succeeds. A slot
    /// a standby streams through is freed first: its walsender is
    /// terminated (the standby reconnects and finds no slot).
    pub async fn drop_slot(&self, name: &str) -> Result<(), PgError> {
        let client = self.client().await?;
        for _ in 0..20 {
            let rows = client
                .query(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                     WHERE slot_name = $1 AND active_pid IS NOT NULL",
                    &[&name],
                )
                .await
                .map_err(|e| PgError::sql(format!("free replication slot {name}"), e))?;
            if rows.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await
            .map_err(|e| PgError::sql(format!("drop replication slot {name}"), e))?;
        Ok(())
    }

    /// This server's physical replication slots, with the WAL each holds
    /// back: from its `restart_lsn` to the current WAL position (the
    /// replay position on a standby).
    pub async fn slot_usage(&self) -> Result<Vec<SlotUsage>, PgError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT slot_name::text, active, \
                 pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                 ELSE pg_current_wal_lsn() END, restart_lsn)::bigint \
                 FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY 1",
                &[],
            )
            .await
            .map_err(|e| PgError::sql("list replication slots", e))?;
        Ok(rows
            .iter()
            .map(|row| SlotUsage {
                name: row.get(0),
                active: row.get(1),
                retained_bytes: row.get::<_, Option<i64>>(2).map(|b| b.max(0) as u64),
            })
            .collect())
    }

    /// The names of this server's replication slots.
    pub async fn slots(&self) -> Result<Vec<String>, PgError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT slot_name::text FROM pg_replication_slots ORDER BY 1",
                &[],
            )
            .await
            .map_err(|e| PgError::sql("list replication slots", e))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// A superuser connection to this server.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, PgError> {
        probe::connect(&self.spec.endpoint, &self.spec.superuser).await
    }

    /// What the server says of its configuration files.
    pub async fn config_report(&self) -> Result<probe::ConfigReport, PgError> {
        let client = self.client().await?;
        probe::config_report(&client).await
    }

    /// How archiving goes (`pg_stat_archiver`).
    pub async fn archiver_report(&self) -> Result<crate::ArchiverReport, PgError> {
        let client = self.client().await?;
        crate::archiver::archiver_report(&client).await
    }

    /// What the server says about itself right now.
    pub async fn probe(&self) -> Probe {
        probe::probe(self).await
    }

    /// primary_conninfo for a standby of `primary`, named `member`.
    pub fn primary_conninfo(&self, primary: &Endpoint, member: &str) -> String {
        conninfo::build(&[
            ("host", &primary.host),
            ("port", &primary.port.to_string()),
            ("user", &self.spec.replication.name),
            ("passfile", &self.passfile().display().to_string()),
            ("application_name", member),
            ("connect_timeout", "2"),
            ("keepalives_idle", "2"),
            ("keepalives_interval", "1"),
            ("keepalives_count", "3"),
        ])
    }
}

/// `12345/67890 kB (18%), 0/1 tablespace …` → progress.
fn parse_basebackup_progress(line: &str) -> Option<CloneProgress> {
    let (sizes, _) = line.trim().split_once(" kB")?;
    let (done, total) = sizes.split_once('/')?;
    Some(CloneProgress {
        done_kb: done.trim().parse().ok()?,
        total_kb: total.trim().parse().ok()?,
    })
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    // standard_conforming_strings is on in every supported release.
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_basebackup_progress_lines() {
        assert_eq!(
            parse_basebackup_progress("  12345/67890 kB (18%), 0/1 tablespace"),
            Some(CloneProgress {
                done_kb: 12345,
                total_kb: 67890
            })
        );
        assert_eq!(
            parse_basebackup_progress(
                "30756/30756 kB (100%), 1/1 tablespace (...data/base/1/1259)"
            ),
            Some(CloneProgress {
                done_kb: 30756,
                total_kb: 30756
            })
        );
        assert_eq!(
            parse_basebackup_progress("pg_basebackup: checkpoint completed"),
            None
        );
    }

    #[test]
    fn quotes_sql_names_and_strings() {
        assert_eq!(quote_ident("repl\"user"), "\"repl\"\"user\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
