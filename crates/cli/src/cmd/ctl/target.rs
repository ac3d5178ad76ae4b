//! Which members' APIs to talk to, with what token, and the one call that
//! tries each in turn.

use std::time::Duration;

use api::client::{ApiClient, Call, ClientError, Reply};
use hyper::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{CtlArgs, CtlError};

/// The API of a default `[api]` section on this host.
const DEFAULT_API: &str = "http://127.0.0.1:8008";

/// Where the packaged unit's configuration lives: on a member's host, ctl
/// reads it when neither `-c`, `$PGWARDEN_CONFIG` nor `--api` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/pgwarden/pgwarden.toml";

pub struct Target {
    pub urls: Vec<String>,
    pub token: Option<String>,
    pub client: ApiClient,
}

fn read_token(path: &std::path::Path) -> Result<String, CtlError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CtlError::Usage(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    let token = text.trim_end_matches(['\n', '\r']).to_string();
    if token.is_empty() {
        return Err(CtlError::Usage(format!(
            "the token file {} is empty; put the API token in it (the content of the members' api.token_file)",
            path.display()
        )));
    }
    Ok(token)
}

impl Target {
    pub fn new(args: &CtlArgs) -> Result<Target, CtlError> {
        let mut urls = args.api.clone();
        let mut token = None;
        let found = (args.config.is_none()
            && args.api.is_empty()
            && std::path::Path::new(DEFAULT_CONFIG).exists())
        .then(|| std::path::PathBuf::from(DEFAULT_CONFIG));
        if let Some(path) = args.config.as_ref().or(found.as_ref()) {
            let config = config::load(path).map_err(|e| {
                let how = if found.is_some() {
                    format!(
                        "\n(ctl read {DEFAULT_CONFIG} because it exists and neither -c, $PGWARDEN_CONFIG \
                         nor --api was given: run ctl as a user who may read it and its secrets, \
                         e.g. `runuser -u postgres -- pgwarden ctl …`, or name the members with --api)"
                    )
                } else {
                    String::new()
                };
                CtlError::Usage(format!("{e}{how}"))
            })?;
            if urls.is_empty() {
                urls.push(config.api.local_url());
                urls.extend(config.peers.iter().map(|p| p.api.clone()));
            }
            token = config.api.token.as_ref().map(|t| t.expose().to_string());
        }
        if urls.is_empty() {
            urls.push(DEFAULT_API.to_string());
        }
        if let Some(path) = &args.token_file {
            token = Some(read_token(path)?);
        } else if let Ok(env) = std::env::var("PGWARDEN_API_TOKEN") {
            if !env.is_empty() {
                token = Some(env);
            }
        }
        let client =
            ApiClient::new(args.ca_file.as_deref()).map_err(|e| CtlError::Usage(e.to_string()))?;
        Ok(Target {
            urls,
            token,
            client,
        })
    }

    /// Sends to the first member that answers. Only a failure to connect
    /// moves on to the next: a request that reached a member may have been
    /// carried out, and must not be repeated elsewhere.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<i64>,
        timeout: Duration,
    ) -> Result<Reply, CtlError> {
        let mut failures = Vec::new();
        for url in &self.urls {
            match self
                .send_to(url, method.clone(), path, body, if_match, timeout)
                .await
            {
                Err(ClientError::Unreachable { url, detail }) => {
                    failures.push(format!("{url}: {detail}"))
                }
                other => return other.map_err(client_error),
            }
        }
        Err(CtlError::Unreachable(format!(
            "no member's API answered; check the URLs (--api, -c), that the agents run, and for https that --ca-file names the CA of their certificates:\n  {}",
            failures.join("\n  ")
        )))
    }

    pub async fn send_to(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<i64>,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        self.client
            .send(Call {
                body,
                token: self.token.as_deref(),
                if_match,
                timeout,
                ..Call::new(method, base, path)
            })
            .await
    }

    /// A GET whose success is decoded as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CtlError> {
        let reply = self
            .send(Method::GET, path, None, None, Duration::from_secs(10))
            .await?;
        success(&reply)?;
        reply.json().map_err(|e| CtlError::Refused(e.to_string()))
    }
}

pub fn client_error(e: ClientError) -> CtlError {
    match e {
        ClientError::Timeout { .. } => CtlError::TimedOut(e.to_string()),
        ClientError::Unreachable { .. } => CtlError::Unreachable(e.to_string()),
        ClientError::BadUrl { .. } | ClientError::Tls(_) => CtlError::Usage(e.to_string()),
        ClientError::BadBody { .. } => CtlError::Refused(e.to_string()),
    }
}

/// `Ok` for a 2xx answer, else the API's refusal.
pub fn success(reply: &Reply) -> Result<(), CtlError> {
    if reply.status.is_success() {
        Ok(())
    } else {
        Err(CtlError::Refused(format!(
            "{} ({}): {}",
            reply.url,
            reply.status,
            reply.error_message()
        )))
    }
}
