//! Failsafe mode, the asking side: a primary that cannot reach the store
//! asks every other member, agent to agent, whether it still follows it.
//! A trait, so the simulation can leave it out.

use std::collections::BTreeSet;
use std::time::Duration;

use api::{ApiClient, Call};
use async_trait::async_trait;
use hyper::Method;
use serde_json::json;

#[async_trait]
pub trait FailsafePeers: Send + Sync {
    /// Asks each `(name, api_url)` whether it follows `leader` in `term`; the names
    /// that said yes. Bounded in time: a member that does not answer has
    /// not confirmed.
    async fn confirm(
        &self,
        leader: &str,
        term: u64,
        ttl_ms: u64,
        members: &[(String, String)],
    ) -> BTreeSet<String>;
}

/// Over the members' REST APIs (`POST /failsafe`).
pub struct HttpPeers {
    client: ApiClient,
    token: Option<String>,
}

impl HttpPeers {
    pub fn new(client: ApiClient, token: Option<String>) -> HttpPeers {
        HttpPeers { client, token }
    }
}

#[async_trait]
impl FailsafePeers for HttpPeers {
    async fn confirm(
        &self,
        leader: &str,
        term: u64,
        ttl_ms: u64,
        members: &[(String, String)],
    ) -> BTreeSet<String> {
        // The round waits for the answers, and they hold a TTL from when
        // they were asked: a slow one is worth little.
        let timeout = Duration::from_millis((ttl_ms / 4).clamp(200, 1_000));
        let body = json!({ "leader": leader, "term": term, "ttl_ms": ttl_ms });
        let asks = members.iter().map(|(name, url)| {
            let call = Call {
                body: Some(&body),
                token: self.token.as_deref(),
                timeout,
                ..Call::new(Method::POST, url, "/failsafe")
            };
            async move {
                match self.client.send(call).await {
                    Ok(reply) if reply.status.is_success() => {
                        confirmed_by(name, leader, &reply).then(|| name.clone())
                    }
                    Ok(reply) => {
                        tracing::debug!("failsafe: {name} says no: {}", reply.error_message());
                        None
                    }
                    Err(err) => {
                        tracing::debug!("failsafe: {name} did not answer: {err}");
                        None
                    }
                }
            }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// Whether a yes came from `asked` itself, promising to follow `leader`: an
/// api_url that leads elsewhere (a stale address, another cluster, this
/// member) must not count as `asked`'s word.
fn confirmed_by(asked: &str, leader: &str, reply: &api::client::Reply) -> bool {
    let answer: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
    let (member, follows) = (answer["member"].as_str(), answer["follows"].as_str());
    if member == Some(asked) && follows == Some(leader) {
        return true;
    }
    tracing::warn!(
        "failsafe: {} answered for {asked} as {member:?} following {follows:?}: not counted; check {asked}'s api_url",
        reply.url
    );
    false
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// An API that says yes to every question, as `member`.
    async fn yes_as(member: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let body =
                        format!(r#"{{"member":"{member}","follows":"db1","promised_ms":6000}}"#);
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn only_the_member_asked_can_confirm() {
        let peers = HttpPeers::new(ApiClient::new(None).unwrap(), None);
        let db2 = yes_as("db2").await;
        let db3_points_at_db2 = db2.clone();
        let confirmed = peers
            .confirm(
                "db1",
                7,
                3_000,
                &[("db2".into(), db2), ("db3".into(), db3_points_at_db2)],
            )
            .await;
        assert_eq!(confirmed, BTreeSet::from(["db2".to_string()]));
    }
}
