//! Running PostgreSQL's programs: as the right user, with a timeout, with
//! stderr kept for the error.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::error::PgError;
use crate::run_as::RunAs;

/// One program invocation, described before it runs.
pub(crate) struct Invocation<'a> {
    pub what: &'a str,
    pub program: std::path::PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(&'static str, String)>,
    pub timeout: Duration,
}

/// What a finished program printed.
pub(crate) struct Finished {
    pub stdout: String,
    pub stderr: String,
}

impl<'a> Invocation<'a> {
    pub fn new(what: &'a str, bin_dir: &Path, program: &str, timeout: Duration) -> Self {
        Invocation {
            what,
            program: bin_dir.join(program),
            args: Vec::new(),
            env: Vec::new(),
            timeout,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.env.push((key, value.into()));
        self
    }

    fn program_name(&self) -> String {
        self.program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Runs to completion; a non-zero exit is an error carrying stderr.
    pub async fn run(self, run_as: &RunAs) -> Result<Finished, PgError> {
        self.run_with_stderr_lines(run_as, |_| {}).await
    }

    /// Runs to completion, handing each stderr line to `on_line` as it
    /// arrives (pg_basebackup and pg_rewind report progress there).
    pub async fn run_with_stderr_lines(
        self,
        run_as: &RunAs,
        mut on_line: impl FnMut(&str),
    ) -> Result<Finished, PgError> {
        let program = self.program_name();
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Keep a timed-out program from outliving us.
            .kill_on_drop(true);
        // A relative working directory we cannot enter as postgres would make
        // some tools complain; `/` always works.
        command.current_dir("/");
        run_as.apply(&mut command);
        let mut child = command.spawn().map_err(|source| PgError::Spawn {
            what: self.what.to_string(),
            program: self.program.display().to_string(),
            source,
        })?;
        let mut stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");

        let mut stderr_text = String::new();
        let outcome = tokio::time::timeout(self.timeout, async {
            let mut stdout_text = String::new();
            let read_stdout = stdout.read_to_string(&mut stdout_text);
            let read_stderr = async {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    on_line(&line);
                    stderr_text.push_str(&line);
                    stderr_text.push('\n');
                }
            };
            let (_, _) = tokio::join!(read_stdout, read_stderr);
            let status = child.wait().await;
            (status, stdout_text)
        })
        .await;

        let stderr_text = stderr_text.trim().to_string();
        match outcome {
            Err(_) => Err(PgError::Timeout {
                what: self.what.to_string(),
                program,
                timeout: self.timeout,
                stderr: stderr_text,
            }),
            Ok((Err(source), _)) => Err(PgError::Spawn {
                what: self.what.to_string(),
                program,
                source,
            }),
            Ok((Ok(status), stdout)) if status.success() => Ok(Finished {
                stdout,
                stderr: stderr_text,
            }),
            Ok((Ok(status), stdout)) => Err(PgError::Failed {
                what: self.what.to_string(),
                program,
                status: status.to_string(),
                stderr: if stderr_text.is_empty() {
                    stdout.trim().to_string()
                } else {
                    stderr_text
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_program_that_overruns_its_timeout_is_killed() {
        let started = std::time::Instant::now();
        let err = Invocation::new(
            "wait for nothing",
            Path::new("/bin"),
            "sleep",
            Duration::from_millis(200),
        )
        .arg("30")
        .run(&RunAs::current())
        .await
        .err()
        .expect("sleep 30 must time out");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(err, PgError::Timeout { .. }), "{err}");
        assert!(
            err.to_string().contains("did not finish within 200ms"),
            "{err}"
        );
        assert!(
            err.to_string().contains("raise timing.pg_ctl_timeout"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_failure_carries_stderr() {
        let err = Invocation::new(
            "list a missing file",
            Path::new("/bin"),
            "ls",
            Duration::from_secs(5),
        )
        .arg("/no/such/pgwarden/path")
        .run(&RunAs::current())
        .await
        .err()
        .expect("ls of a missing path fails");
        let message = err.to_string();
        assert!(
            message.starts_with("list a missing file: ls failed"),
            "{message}"
        );
        assert!(message.contains("/no/such/pgwarden/path"), "{message}");
    }

    #[tokio::test]
    async fn a_missing_program_says_which() {
        let err = Invocation::new(
            "run a ghost",
            Path::new("/nonexistent"),
            "pg_ghost",
            Duration::from_secs(5),
        )
        .run(&RunAs::current())
        .await
        .err()
        .expect("a missing program cannot run");
        assert!(err.to_string().contains("/nonexistent/pg_ghost"), "{err}");
        assert!(err.to_string().contains("member.bin_dir"), "{err}");
    }

    #[tokio::test]
    async fn stderr_lines_arrive_one_by_one() {
        let mut lines = Vec::new();
        Invocation::new("print", Path::new("/bin"), "sh", Duration::from_secs(5))
            .arg("-c")
            .arg("echo one >&2; echo two >&2")
            .run_with_stderr_lines(&RunAs::current(), |line| lines.push(line.to_string()))
            .await
            .unwrap();
        assert_eq!(lines, ["one", "two"]);
    }
}
