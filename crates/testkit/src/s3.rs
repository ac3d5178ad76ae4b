//! A local S3-compatible server for tests: moto's server mode (PyPI
//! `moto[server]`, installed by `scripts/install-deps`), on a free loopback
//! port, killed by PID on drop.
//!
//! moto checks `If-None-Match: *` and then stores, without a lock between
//! the two; it is therefore run single-threaded (each request ends before
//! the next starts), which makes a conditional put atomic as it is on S3.
//! It accepts any credentials and keeps everything in memory.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{free_port, wait_for, ScratchDir};

/// The region the server is addressed in (moto accepts any).
pub const REGION: &str = "us-east-1";
/// Credentials the server accepts (it accepts any).
pub const ACCESS_KEY_ID: &str = "pgwarden-test";
pub const SECRET_ACCESS_KEY: &str = "pgwarden-test-secret";

const READY_DEADLINE: Duration = Duration::from_secs(30);

/// moto's own `moto_server` runs threaded; this is the same application
/// served one request at a time.
const SERVER: &str = r#"
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)
"#;

#[derive(Debug, thiserror::Error)]
pub enum S3ServerError {
    #[error("cannot create the S3 server's directory: {0}")]
    Dir(#[source] io::Error),
    #[error(
        "cannot start `{python}` for the S3 server: {source}; run scripts/install-deps \
         (it installs `moto[server]` with pip) or point $PGWARDEN_PYTHON at a python3 that has it"
    )]
    Spawn {
        python: String,
        #[source]
        source: io::Error,
    },
    #[error("the S3 server (moto) did not answer: {wait}; the end of its log:\n{log}")]
    NotReady {
        #[source]
        wait: crate::WaitError,
        log: String,
    },
    #[error("the S3 server refused to create bucket {bucket}: {answer}")]
    Bucket { bucket: String, answer: String },
}

/// A running moto S3 server.
#[derive(Debug)]
pub struct S3Server {
    port: u16,
    child: Child,
    log: PathBuf,
    // Removed after the process is killed (fields drop after `Drop::drop`).
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts the server and waits until it answers.
    pub async fn start() -> Result<S3Server, S3ServerError> {
        let dir = tempfile::Builder::new()
            .prefix(ScratchDir::PREFIX)
            .tempdir()
            .map_err(S3ServerError::Dir)?;
        let log = dir.path().join("moto.log");
        let python = std::env::var("PGWARDEN_PYTHON").unwrap_or_else(|_| "python3".to_string());
        let spawn_error = |source| S3ServerError::Spawn {
            python: python.clone(),
            source,
        };
        let out = File::create(&log).map_err(spawn_error)?;
        let err = out.try_clone().map_err(spawn_error)?;
        let port = free_port();
        let mut command = Command::new(&python);
        command
            .arg("-c")
            .arg(SERVER)
            .arg(port.to_string())
            // Anything moto spills to disk goes with the directory.
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: between fork and exec only prctl(2) is called, which is
        // async-signal-safe. The server dies with this test process even
        // when that is killed outright.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)
            });
        }
        let child = command.spawn().map_err(spawn_error)?;
        let mut server = S3Server {
            port,
            child,
            log,
            _dir: dir,
        };
        let ready = wait_for("moto to answer HTTP", READY_DEADLINE, || {
            let answer = match server.child.try_wait() {
                Ok(Some(status)) => Err(format!("it exited: {status}")),
                _ => request(port, "GET", "/").map(|_| ()),
            };
            async move { answer }
        })
        .await;
        if let Err(wait) = ready {
            return Err(S3ServerError::NotReady {
                wait,
                log: server.log_tail(),
            });
        }
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto accepts an unsigned request for it).
    pub fn create_bucket(&self, bucket: &str) -> Result<(), S3ServerError> {
        let answer = request(self.port, "PUT", &format!("/{bucket}"));
        match answer {
            Ok(status) if status.contains(" 200 ") => Ok(()),
            Ok(status) => Err(S3ServerError::Bucket {
                bucket: bucket.to_string(),
                answer: status,
            }),
            Err(e) => Err(S3ServerError::Bucket {
                bucket: bucket.to_string(),
                answer: e,
            }),
        }
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // Not reaped before this, so the PID is still this child's.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 request with an empty body; the status line of the answer.
fn request(port: u16, method: &str, path: &str) -> Result<String, String> {
    let exchange = || -> io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
        )?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        let answer = String::from_utf8_lossy(&answer);
        Ok(answer.lines().next().unwrap_or_default().to_string())
    };
    exchange().map_err(|e| e.to_string())
}
