//! Telling people: a command and a webhook run for every event of this
//! member. Both run on their own task with a timeout; a failing or slow hook
//! is logged and never delays a decision. A few announcements run at once and
//! a few more wait; beyond that an event's hooks are skipped with a warning,
//! so a burst of events cannot pile up processes.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use store::cluster::Event;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::Semaphore;

/// How many events' hooks run at once.
pub const MAX_RUNNING: usize = 4;
/// How many more wait for one of those to finish; further events are not
/// announced (the event log in the store still has them).
pub const MAX_WAITING: usize = 64;

/// The configured hooks of one member.
#[derive(Clone, Debug)]
pub struct Hooks {
    pub cluster: String,
    pub config: config::Hooks,
    limit: Arc<Limit>,
}

#[derive(Debug)]
struct Limit {
    running: Arc<Semaphore>,
    max_running: usize,
    /// Running plus waiting.
    pending: AtomicUsize,
    max_waiting: usize,
}

/// What became of one event's announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announcement {
    /// Running, or waiting its turn.
    Queued,
    /// Too many already running and waiting: skipped, with a warning.
    Dropped,
}

impl Hooks {
    pub fn new(cluster: impl Into<String>, config: config::Hooks) -> Hooks {
        Hooks::with_limits(cluster, config, MAX_RUNNING, MAX_WAITING)
    }

    pub fn with_limits(
        cluster: impl Into<String>,
        config: config::Hooks,
        max_running: usize,
        max_waiting: usize,
    ) -> Hooks {
        Hooks {
            cluster: cluster.into(),
            config,
            limit: Arc::new(Limit {
                running: Arc::new(Semaphore::new(max_running)),
                max_running,
                pending: AtomicUsize::new(0),
                max_waiting,
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.config.command.is_none() && self.config.webhook.is_none()
    }

    /// Announces `event` on a task of its own once fewer than the maximum
    /// run; drops it with a warning when too many wait already.
    pub fn spawn_announce(&self, event: Event) -> Announcement {
        let limit = &self.limit;
        let bound = limit.max_running + limit.max_waiting;
        if limit.pending.fetch_add(1, Ordering::SeqCst) >= bound {
            limit.pending.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(
                "hooks for event {} ({}) skipped: {} are running and {} more wait; make the hooks \
                 faster (hooks.timeout bounds each run) or find out why events come in bursts",
                event.seq,
                event.kind,
                limit.max_running,
                limit.max_waiting
            );
            return Announcement::Dropped;
        }
        let hooks = self.clone();
        tokio::spawn(async move {
            let permit = hooks.limit.running.clone().acquire_owned().await;
            hooks.announce(&event).await;
            drop(permit);
            hooks.limit.pending.fetch_sub(1, Ordering::SeqCst);
        });
        Announcement::Queued
    }

    /// Runs every hook for `event`; returns when all have finished or given
    /// up.
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
/// stdin, in a process group of its own; after `timeout` the whole group is
/// killed, so what the command started in the background goes too.
pub async fn run_command(
    command: &str,
    cluster: &str,
    event: &Event,
    json: &str,
    timeout: Duration,
) -> Result<(), String> {
    let mut sh = Command::new("sh");
    pg::scrub_child_env(&mut sh);
    let mut child = sh
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
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start sh: {e}"))?;
    // The group's id is sh's pid; taken now, while sh surely exists.
    let group = child.id().map(|id| Pid::from_raw(id as i32));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let json = json.to_string();
    let run = async move {
        // A command that does not read stdin closes it: not an error.
        let _ = stdin.write_all(json.as_bytes()).await;
        drop(stdin);
        child.wait_with_output().await
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => {
            if let Some(group) = group {
                // sh itself is killed (kill_on_drop) as `run` is dropped; this
                // reaches the processes it started too.
                let _ = killpg(group, Signal::SIGKILL);
            }
            Err(format!(
                "did not finish within {timeout:?} and was killed with everything it started; \
                 make it faster or raise hooks.timeout"
            ))
        }
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
    async fn the_command_does_not_see_the_passwords_pgwarden_read_from_its_environment() {
        // Unique to this test (nextest runs each test in a process of its own).
        std::env::set_var("PGWARDEN_TEST_HOOK_SECRET", "hunter2");
        pg::hide_from_children(["PGWARDEN_TEST_HOOK_SECRET".to_string()]);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let json = event_json("main", &event());
        let command = format!("env > {}", out.display());
        run_command(&command, "main", &event(), &json, Duration::from_secs(5))
            .await
            .unwrap();
        let env = std::fs::read_to_string(&out).unwrap();
        assert!(env.contains("PGWARDEN_EVENT_KIND=promoted"), "{env}");
        assert!(!env.contains("PGWARDEN_TEST_HOOK_SECRET"), "{env}");
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

    /// Polls `done` until it holds or `within` passes.
    async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + within;
        while !done() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    fn read_pid(path: &std::path::Path) -> i32 {
        std::fs::read_to_string(path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn a_timed_out_command_takes_what_it_started_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, grandchild) = (dir.path().join("hook"), dir.path().join("grandchild"));
        let command = format!(
            "sleep 1000 & echo $! > {}; echo $$ > {}; sleep 1000",
            grandchild.display(),
            hook.display()
        );
        let json = event_json("main", &event());
        let started = tokio::spawn(async move {
            run_command(
                &command,
                "main",
                &event(),
                &json,
                Duration::from_millis(500),
            )
            .await
        });
        assert!(
            eventually(Duration::from_secs(5), || hook.exists()
                && grandchild.exists())
            .await
        );
        let (hook_pid, grandchild_pid) = (read_pid(&hook), read_pid(&grandchild));
        assert!(pg::pid::is_alive(grandchild_pid));
        let err = started.await.unwrap().unwrap_err();
        assert!(err.contains("killed with everything it started"), "{err}");
        let gone = eventually(Duration::from_secs(5), || {
            !pg::pid::is_alive(hook_pid) && !pg::pid::is_alive(grandchild_pid)
        })
        .await;
        if !gone {
            // Leave nothing behind even when the test fails.
            let _ = killpg(Pid::from_raw(hook_pid), Signal::SIGKILL);
        }
        assert!(
            gone,
            "the hook {hook_pid} or its child {grandchild_pid} outlived the timeout"
        );
    }

    /// Everything tracing writes while it is the default subscriber.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_burst_of_events_runs_a_few_hooks_at_a_time_and_drops_the_rest_loudly() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("trace");
        let config = config::Hooks {
            command: Some(format!(
                "echo start >> {0}; sleep 0.3; echo end >> {0}",
                trace.display()
            )),
            timeout: Duration::from_secs(10),
            ..config::Hooks::default()
        };
        let hooks = Hooks::with_limits("main", config, 2, 3);
        let outcomes: Vec<_> = (0..12)
            .map(|seq| hooks.spawn_announce(Event { seq, ..event() }))
            .collect();
        let queued = outcomes
            .iter()
            .filter(|o| **o == Announcement::Queued)
            .count();
        assert_eq!(queued, 5, "{outcomes:?}");

        let lines = || std::fs::read_to_string(&trace).unwrap_or_default();
        assert!(
            eventually(Duration::from_secs(20), || lines().lines().count()
                == 2 * queued)
            .await,
            "the queued hooks did not all finish: {}",
            lines()
        );
        let mut running = 0i32;
        let mut most = 0;
        for line in lines().lines() {
            running += if line == "start" { 1 } else { -1 };
            most = most.max(running);
        }
        assert_eq!(most, 2, "{}", lines());
        let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            log.matches("skipped: 2 are running and 3 more wait")
                .count(),
            7,
            "{log}"
        );
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
