//! The HTTP client of `pgwarden ctl` and of the API's forwarding to other
//! members: hyper-util's client over rustls (ring), HTTP/1.1.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot set up TLS for the API client: {0}")]
    Tls(String),
    #[error("\"{url}\" is not a usable API URL: {detail}; write e.g. http://10.0.0.1:8008")]
    BadUrl { url: String, detail: String },
    #[error("cannot reach {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{url} did not answer within {seconds} s")]
    Timeout { url: String, seconds: u64 },
    #[error("{url} answered {status} with a body that is not what was expected: {detail}")]
    BadBody {
        url: String,
        status: u16,
        detail: String,
    },
}

/// One answer: status and body.
#[derive(Clone, Debug)]
pub struct Reply {
    pub url: String,
    pub status: StatusCode,
    pub body: Bytes,
}

impl Reply {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::BadBody {
            url: self.url.clone(),
            status: self.status.as_u16(),
            detail: format!(
                "{e}: {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            ),
        })
    }

    /// The `error` of an error answer, or the body as text.
    pub fn error_message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_string())
    }
}

/// Cheap to clone; connections are pooled.
#[derive(Clone, Debug)]
pub struct ApiClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// One call.
#[derive(Clone, Debug)]
pub struct Call<'a> {
    pub method: Method,
    /// The member's base URL, e.g. `http://10.0.0.1:8008`.
    pub base: &'a str,
    /// Path and query, e.g. `/events?after=3`.
    pub path: &'a str,
    pub body: Option<&'a serde_json::Value>,
    /// Sent as `Authorization: Bearer …`.
    pub token: Option<&'a str>,
    pub if_match: Option<i64>,
    /// Sent as [`HOPS_HEADER`]: how many members forwarded the request.
    pub hops: Option<u32>,
    pub timeout: Duration,
}

/// How many times a request was forwarded from member to member.
pub const HOPS_HEADER: &str = "x-pgwarden-hops";

impl<'a> Call<'a> {
    pub fn new(method: Method, base: &'a str, path: &'a str) -> Call<'a> {
        Call {
            method,
            base,
            path,
            body: None,
            token: None,
            if_match: None,
            hops: None,
            timeout: Duration::from_secs(10),
        }
    }
}

impl ApiClient {
    /// `ca_file`: the CA that signed the members' API certificates; without
    /// it the system's trusted CAs are used for https URLs.
    pub fn new(ca_file: Option<&Path>) -> Result<ApiClient, ClientError> {
        let tls = crate::tls::client_config(ca_file).map_err(ClientError::Tls)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(ApiClient {
            http: Client::builder(TokioExecutor::new())
                // Under the server's idle timeout (`Limits::header_read`), so
                // that a pooled connection is not reused as the server
                // closes it.
                .pool_idle_timeout(Duration::from_secs(5))
                .pool_timer(TokioTimer::new())
                .build(connector),
        })
    }

    pub async fn send(&self, call: Call<'_>) -> Result<Reply, ClientError> {
        let url = format!("{}{}", call.base.trim_end_matches('/'), call.path);
        let bad_url = |detail: String| ClientError::BadUrl {
            url: call.base.to_string(),
            detail,
        };
        if !(call.base.starts_with("http://") || call.base.starts_with("https://")) {
            return Err(bad_url(
                "it does not start with http:// or https://".to_string(),
            ));
        }
        let mut request = Request::builder().method(call.method.clone()).uri(&url);
        if let Some(token) = call.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(hops) = call.hops {
            request = request.header(HOPS_HEADER, HeaderValue::from(hops));
        }
        if let Some(revision) = call.if_match {
            request = request.header(header::IF_MATCH, HeaderValue::from(revision));
        }
        let body = match call.body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(body).expect("a JSON value serializes"))
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|e| bad_url(e.to_string()))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                // hyper-util's error says "client error (Connect)"; the
                // cause says what happened.
                let mut detail = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    detail = format!("{detail}: {cause}");
                    source = cause.source();
                }
                ClientError::Unreachable {
                    url: url.clone(),
                    detail,
                }
            })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: url.clone(),
                    detail: format!("the answer broke off: {e}"),
                })?
                .to_bytes();
            Ok(Reply {
                url: url.clone(),
                status,
                body,
            })
        };
        tokio::time::timeout(call.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                url: url.clone(),
                seconds: call.timeout.as_secs(),
            })?
    }
}
