//! Errors: why the server could not start ([`ApiError`]) and the JSON error
//! answers of the endpoints ([`HttpError`]).

use std::io;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use store::StoreError;

/// Why [`crate::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {listen} for the REST API: {source}; check `api.listen` and that no other process uses the port")]
    Bind {
        listen: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up HTTPS for the REST API: {0}")]
    Tls(String),
}

/// An error answer: a 4xx/5xx status and `{"error": "..."}`, plus optional
/// fields that show the state the refusal was based on.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
    pub extra: Option<(&'static str, Value)>,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            message: message.into(),
            extra: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::CONFLICT, message)
    }

    pub fn unavailable(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// Attaches a JSON field next to `error` (e.g. the cluster as it looks).
    pub fn with(mut self, name: &'static str, value: Value) -> HttpError {
        self.extra = Some((name, value));
        self
    }
}

impl From<StoreError> for HttpError {
    fn from(err: StoreError) -> HttpError {
        match err {
            StoreError::BadData { .. } => HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the store holds a value this member cannot read: {err}"),
            ),
            _ => HttpError::unavailable(format!(
                "the store did not answer: {err}; check that etcd is reachable from this member, or ask another member"
            )),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some((name, value)) = self.extra {
            body[name] = value;
        }
        (self.status, Json(body)).into_response()
    }
}
