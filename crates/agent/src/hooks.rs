//! Telling people: a command and a webhook run for every event of this
//! member. Both run on their own task with a timeout; a failing or slow hook
//! is logged and never delays a decision.

use std::process::Stdio;
use std::time::Duration;

use store::cluster::Event;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The configured hooks of one member.
#[derive(Clone, Debug)]
pub struct Hooks {
    pub cluster: String,
    pub config: config::Hooks,
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.config.command.is_none() && self.config.webhook.is_none()
    }

    /// Runs every hook for `event`; returns when all have finished or given
    /// up. Meant to be spawned.
    pub async fn announce(&self, event: &Event) {
        let json = event_json(&self.cluster, event);
        if let Some(command) = &self.config.command {
            if let Err(err) =
                run_command(command, &self.cluster, event, &json, self.config.timeout).await
            {
                tracing::warn!(
                    "hook command `{command}` for event {} failed: {err}",
                    event.seq
                );
            }
        }
        if let Some(url) = &self.config.webhook {
            if let Err(err) =
                post_webhook(url, &json, self.config.timeout, self.config.retries).await
            {
                tracing::warn!("webhook {url} for event {} failed: {err}", event.seq);
            }
        }
    }
}

/// The event as the hooks see it: the stored record plus the cluster.
pub fn event_json(cluster: &str, event: &Event) -> String {
    serde_json::json!({
        "cluster": cluster,
        "seq": event.seq,
        "time_ms": event.time_ms,
        "member": event.member,
        "kind": event.kind,
        "details": event.details,
    })
    .to_string()
}

/// `sh -c command` with the event in `PGWARDEN_EVENT_*` and as JSON on
/// stdin; killed after `timeout`.
pub async fn run_command(
    command: &str,
    cluster: &str,
    event: &Event,
    json: &str,
    timeout: Duration,
) -> Result<(), String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("PGWARDEN_CLUSTER", cluster)
        .env("PGWARDEN_EVENT_SEQ", event.seq.to_string())
        .env("PGWARDEN_EVENT_TIME_MS", event.time_ms.to_string())
        .env("PGWARDEN_EVENT_MEMBER", &event.member)
        .env("PGWARDEN_EVENT_KIND", &event.kind)
        .env("PGWARDEN_EVENT_DETAILS", &event.details)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start sh: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let json = json.to_string();
    let run = async move {
        // A command that does not read stdin closes it: not an error.
        let _ = stdin.write_all(json.as_bytes()).await;
        drop(stdin);
        child.wait_with_output().await
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => Err(format!(
            "did not finish within {timeout:?} and was killed; make it faster or raise hooks.timeout"
        )),
        Ok(Err(err)) => Err(format!("could not wait for it: {err}")),
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => Err(format!(
            "exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

/// POSTs `json` to `url`, retrying with a doubling backoff.
pub async fn post_webhook(
    url: &str,
    json: &str,
    timeout: Duration,
    retries: u32,
) -> Result<(), String> {
    let client =
        api::ApiClient::new(None).map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
    let body: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("the event is not JSON: {e}"))?;
    let mut backoff = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut call = api::Call::new(hyper::Method::POST, url, "");
        call.body = Some(&body);
        call.timeout = timeout;
        let error = match client.send(call).await {
            Ok(reply) if reply.status.is_success() => return Ok(()),
            Ok(reply) => format!("answered HTTP {}", reply.status.as_u16()),
            Err(err) => err.to_string(),
        };
        if attempt > retries {
            return Err(format!("{error} (after {attempt} attempts)"));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn event() -> Event {
        Event {
            seq: 7,
            time_ms: 1_700_000_000_000,
            member: "db2".into(),
            kind: "promoted".into(),
            details: "switchover from db1".into(),
        }
    }

    #[tokio::test]
    async fn the_command_sees_the_event_in_its_environment_and_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let command = format!(
            "echo \"$PGWARDEN_EVENT_KIND $PGWARDEN_EVENT_MEMBER $PGWARDEN_EVENT_SEQ\" > {0}; cat >> {0}",
            out.display()
        );
        let json = event_json("main", &event());
        run_command(&command, "main", &event(), &json, Duration::from_secs(5))
            .await
            .unwrap();
        let written = std::fs::read_to_string(&out).unwrap();
        assert!(written.starts_with("promoted db2 7\n"), "{written}");
        let stdin: serde_json::Value =
            serde_json::from_str(written.lines().nth(1).unwrap()).unwrap();
        assert_eq!(stdin["details"], "switchover from db1");
        assert_eq!(stdin["cluster"], "main");
    }

    #[tokio::test]
    async fn a_failing_or_slow_command_is_an_error_saying_so() {
        let json = event_json("main", &event());
        let err = run_command(
            "echo oops >&2; exit 3",
            "main",
            &event(),
            &json,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(err.contains("oops"), "{err}");
        let started = std::time::Instant::now();
        let err = run_command(
            "sleep 30",
            "main",
            &event(),
            &json,
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert!(err.contains("killed"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// Answers 503 to the first `failures` requests, then 204.
    async fn webhook_server(
        failures: usize,
    ) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![0u8; 8192];
                let _ = socket.read(&mut buf).await;
                let status = if n < failures {
                    "503 Service Unavailable"
                } else {
                    "204 No Content"
                };
                let answer =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (url, seen, task)
    }

    #[tokio::test]
    async fn the_webhook_is_retried_until_it_answers_2xx() {
        let (url, seen, task) = webhook_server(2).await;
        let json = event_json("main", &event());
        post_webhook(&url, &json, Duration::from_secs(2), 3)
            .await
            .unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 3);
        task.abort();
    }

    #[tokio::test]
    async fn the_webhook_gives_up_after_its_retries() {
        let (url, seen, task) = webhook_server(100).await;
        let json = event_json("main", &event());
        let err = post_webhook(&url, &json, Duration::from_secs(2), 1)
            .await
            .unwrap_err();
        assert!(err.contains("503") && err.contains("2 attempts"), "{err}");
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        task.abort();
    }
}
