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

/// The quickstart's first layout (issue 19): a readable proxy.toml in a
/// directory the proxy's user cannot enter. The error names the directory,
/// for whom, and the fix, not the file.
#[test]
fn a_configuration_behind_a_closed_directory_names_the_directory() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: running the proxy as another user needs root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a nobody user");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let etc = dir.path().join("pgwarden");
    std::fs::create_dir(&etc).unwrap();
    std::fs::set_permissions(&etc, PermissionsExt::from_mode(0o750)).unwrap();
    let file = etc.join("proxy.toml");
    std::fs::write(&file, "[proxy]\n").unwrap();
    std::fs::set_permissions(&file, PermissionsExt::from_mode(0o644)).unwrap();
    let output = Command::new(binary())
        .args(["proxy", "-c"])
        .arg(&file)
        .uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        format!(
            "{}: cannot read the configuration file: Permission denied",
            file.display()
        ),
        format!(
            "hint: {} is not traversable by nobody (drwxr-x--- root:root); run: ",
            etc.display()
        ),
        format!("chmod o+x {}", etc.display()),
    ] {
        assert!(stderr.contains(&expected), "no `{expected}` in:\n{stderr}");
    }
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
