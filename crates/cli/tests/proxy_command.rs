//! `pgwarden proxy -c proxy.toml` as an operator runs it.

use std::process::{Command, Stdio};
use std::time::Duration;

use api::{ApiClient, Call};
use hyper::{Method, StatusCode};
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
    let base = format!("http://127.0.0.1:{http}");
    let client = ApiClient::new(None).unwrap();
    let get = |path: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let reply = client
                .send(Call::new(Method::GET, &base, path))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((
                reply.status,
                String::from_utf8_lossy(&reply.body).into_owned(),
            ))
        }
    };
    // An empty cluster: no primary yet, so unhealthy, but it answers.
    let (status, health) = wait_for(
        "the proxy's health endpoint",
        Duration::from_secs(30),
        || async {
            get("/health").await.and_then(|(status, h)| {
                if h.contains("no primary") {
                    Ok((status, h))
                } else {
                    Err(h)
                }
            })
        },
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    let (status, metrics) = get("/metrics").await.unwrap();
    assert_eq!(status, StatusCode::OK, "{metrics}");
    assert!(
        metrics.contains("pgwarden_proxy_store_reachable 1"),
        "{metrics}"
    );
}
