//! `[member] reachability`: whether the network this member's clients live
//! on reaches it. A task of its own checks the targets every interval, off
//! the decision rounds (a target that hangs never delays one), and hands
//! the latest result over a watch channel; each round takes the latest.

use std::time::Duration;

use config::{ReachTarget, Reachability};
use ha::Reach;
use tokio::sync::watch;

/// Starts checking `config`'s targets; `None` when it has none (the member
/// then publishes no check and counts as passing). The task ends once the
/// receiver is dropped.
pub fn spawn(config: &Reachability) -> Option<watch::Receiver<Reach>> {
    if config.targets.is_empty() {
        return None;
    }
    let (tx, rx) = watch::channel(Reach::Pending);
    let config = config.clone();
    tokio::spawn(async move {
        let client = api::ApiClient::new(None).map_err(|err| {
            let err = err.to_string();
            tracing::error!("reachability: HTTP targets cannot be checked, the HTTP client could not be set up: {err}");
            err
        });
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let reach = check_all(&config, client.as_ref().map_err(String::as_str)).await;
            if tx.send(reach).is_err() {
                return;
            }
        }
    });
    Some(rx)
}

/// One check of every target, all at once; passes when at least
/// `config.min` answer.
/// `client` is what HTTP targets are asked with, or why there is none.
pub async fn check_all(config: &Reachability, client: Result<&api::ApiClient, &str>) -> Reach {
    let results = futures::future::join_all(
        config
            .targets
            .iter()
            .map(|target| check(target, config.timeout, client)),
    )
    .await;
    let answered = results.iter().filter(|r| r.is_ok()).count();
    if answered >= config.min as usize {
        return Reach::Passes;
    }
    let failures: Vec<String> = config
        .targets
        .iter()
        .zip(&results)
        .filter_map(|(target, result)| result.as_ref().err().map(|e| format!("{target}: {e}")))
        .collect();
    Reach::Fails {
        detail: format!(
            "{answered} of {} targets answered, {} needed; {}",
            config.targets.len(),
            config.min,
            failures.join("; ")
        ),
    }
}

/// Whether one target answers within `timeout`: a TCP connection is
/// accepted, or a GET answers 2xx or 3xx.
async fn check(
    target: &ReachTarget,
    timeout: Duration,
    client: Result<&api::ApiClient, &str>,
) -> Result<(), String> {
    let timed_out = || format!("no answer within {}", config::format_duration(timeout));
    match target {
        ReachTarget::Tcp(address) => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address.as_str()))
                .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err(timed_out()),
            }
        }
        ReachTarget::Http(url) => {
            let client = client.map_err(|e| format!("the HTTP client could not be set up: {e}"))?;
            let mut call = api::Call::new(hyper::Method::GET, url, "");
            call.timeout = timeout;
            match client.send(call).await {
                Ok(reply) if reply.status.is_success() || reply.status.is_redirection() => Ok(()),
                Ok(reply) => Err(format!("answered HTTP {}", reply.status.as_u16())),
                Err(api::ClientError::Timeout { .. }) => Err(timed_out()),
                Err(err) => Err(err.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn config(targets: Vec<ReachTarget>, min: u32) -> Reachability {
        Reachability {
            targets,
            min,
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(500),
        }
    }

    /// An HTTP server answering every request with `status`.
    async fn http(status: u16) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    let _ = socket.read(&mut buffer).await;
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        format!("http://{address}/health")
    }

    /// A port nothing listens on.
    async fn closed_port() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        address.to_string()
    }

    #[tokio::test]
    async fn enough_answering_targets_pass_and_the_others_are_named_when_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        let closed = closed_port().await;
        let ok = http(204).await;
        let broken = http(503).await;
        let client = api::ApiClient::new(None).unwrap();
        let targets = vec![
            ReachTarget::Tcp(open.clone()),
            ReachTarget::Tcp(closed.clone()),
            ReachTarget::Http(ok),
            ReachTarget::Http(broken.clone()),
        ];
        assert_eq!(
            check_all(&config(targets.clone(), 2), Ok(&client)).await,
            Reach::Passes
        );
        let Reach::Fails { detail } = check_all(&config(targets, 3), Ok(&client)).await else {
            panic!("3 of 4 needed, 2 answer");
        };
        assert!(
            detail.starts_with("2 of 4 targets answered, 3 needed; "),
            "{detail}"
        );
        assert!(detail.contains(&format!("{closed}: ")), "{detail}");
        assert!(
            detail.contains(&format!("{broken}: answered HTTP 503")),
            "{detail}"
        );
    }

    #[tokio::test]
    async fn a_target_that_never_answers_fails_at_the_timeout() {
        // A server that accepts and never says a word.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let client = api::ApiClient::new(None).unwrap();
        let started = std::time::Instant::now();
        let reach = check_all(&config(vec![ReachTarget::Http(url)], 1), Ok(&client)).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        let Reach::Fails { detail } = reach else {
            panic!("{reach:?}")
        };
        assert!(detail.contains("no answer within 500ms"), "{detail}");
        silent.abort();
    }

    #[tokio::test]
    async fn the_task_publishes_pending_then_each_result() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        let mut rx = spawn(&config(vec![ReachTarget::Tcp(open)], 1)).unwrap();
        assert_eq!(*rx.borrow(), Reach::Pending);
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*rx.borrow(), Reach::Passes);
        drop(listener);
        let failed = tokio::time::timeout(
            Duration::from_secs(5),
            rx.wait_for(|r| matches!(r, Reach::Fails { .. })),
        )
        .await;
        assert!(failed.is_ok(), "the check did not notice the listener gone");
        assert!(spawn(&config(vec![], 1)).is_none());
    }
}
