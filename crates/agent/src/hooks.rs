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
    let mut backoff = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match post_once(url, json, timeout).await {
            Ok(200..=299) => return Ok(()),
            Ok(status) => format!("answered HTTP {status}"),
            Err(err) => err,
        };
        if attempt > retries {
            return Err(format!("{error} (after {attempt} attempts)"));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn post_once(url: &str, json: &str, timeout: Duration) -> Result<u16, String> {
    let client = api::ApiClient::new(None).map_err(|e| e.to_string())?;
    let body: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let mut call = api::Call::new(hyper::Method::POST, url, "");
    call.body = Some(&body);
    call.timeout = timeout;
    let reply = client.send(call).await.map_err(|e| e.to_string())?;
    Ok(reply.status.as_u16())
}
