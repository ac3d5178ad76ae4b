//! `pgwarden proxy -c proxy.toml` as an operator runs it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::etcd::EtcdCluster;
use testkit::{free_port, wait_for};

mod common;

use common::binary;

#[test]
fn a_bad_proxy_toml_is_refused_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(
        &file,
        "[proxy]\nread_write = \"127.0.0.1:5000\"\nhold_timeout = \"soon\"\n",
    )
    .unwrap();
    let output = Command::new(binary())
        .args(["proxy", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3:16: invalid duration for `proxy.hold_timeout`",
            file.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
}

/// Kills the proxy process on drop, also when the test fails.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_proxy_serves_health_and_metrics_from_the_store() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    let http = free_port();
    std::fs::write(
        &file,
        format!(
            "[store]\nendpoints = {:?}\ncluster = \"test\"\n\n[proxy]\nread_write = \"127.0.0.1:{}\"\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n",
            etcd.endpoints(),
            free_port()
        ),
    )
    .unwrap();
    let _proxy = Running(
        Command::new(binary())
            .args(["proxy", "-c"])
            .arg(&file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let get = |path: &str| -> Result<String, String> {
        let mut s = TcpStream::connect(("127.0.0.1", http)).map_err(|e| e.to_string())?;
        s.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    };
    // An empty cluster: no primary yet, so unhealthy, but it answers.
    let health = wait_for(
        "the proxy's health endpoint",
        Duration::from_secs(30),
        || async {
            get("/health").and_then(|h| {
                if h.contains("no primary") {
                    Ok(h)
                } else {
                    Err(h)
                }
            })
        },
    )
    .await
    .unwrap();
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    let metrics = get("/metrics").unwrap();
    assert!(
        metrics.contains("pgwarden_proxy_store_reachable 1"),
        "{metrics}"
    );
}
