//! The demo's `pgwarden proxy`: a process of its own, started the way an
//! operator starts it, so `--keep` can leave it running.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lab::free_port;

pub struct ProxyProcess {
    pub read_write: SocketAddr,
    pub read_only: SocketAddr,
    pub log: PathBuf,
    child: Option<Child>,
}

impl ProxyProcess {
    /// Writes `proxy.toml` into `dir` and starts the proxy; returns once it
    /// accepts connections.
    pub fn start(
        binary: &Path,
        dir: &Path,
        store_endpoints: &[String],
        cluster: &str,
    ) -> Result<ProxyProcess> {
        let read_write: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let read_only: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config = dir.join("proxy.toml");
        fs::write(
            &config,
            format!(
                "[store]\nendpoints = {store_endpoints:?}\ncluster = \"{cluster}\"\n\n\
                 [proxy]\nread_write = \"{read_write}\"\nread_only = \"{read_only}\"\n\
                 hold_timeout = \"30s\"\n\n[http]\nlisten = \"{http}\"\n"
            ),
        )
        .with_context(|| format!("write {}", config.display()))?;
        let log = dir.join("proxy.log");
        let out = fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(binary)
            .args(["proxy", "-c"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start pgwarden proxy")?;
        let mut proxy = ProxyProcess {
            read_write,
            read_only,
            log,
            child: Some(child),
        };
        proxy.wait_listening(http)?;
        Ok(proxy)
    }

    fn wait_listening(&mut self, http: SocketAddr) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if std::net::TcpStream::connect(http).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                bail!(
                    "pgwarden proxy exited ({status}):\n{}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("pgwarden proxy did not listen on {http} within 20 s");
    }

    /// Leaves the proxy running; returns its PID.
    pub fn leave_running(&mut self) -> Option<i32> {
        // Dropping a `Child` neither kills nor waits for it.
        self.child.take().map(|c| c.id() as i32)
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
