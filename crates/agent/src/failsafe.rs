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
                    Ok(reply) if reply.status.is_success() => Some(name.clone()),
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
