//! The router: one module per area of the API.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::client::ApiClient;
use crate::error::HttpError;
use crate::limits::Limits;
use crate::metrics::Counters;
use crate::ApiContext;

mod agent;
mod backup;
mod config;
pub(crate) mod failsafe;
mod read;
mod remove;
mod status;
mod switchover;

/// What every handler gets.
pub type AppState = Arc<Shared>;

pub struct Shared {
    pub ctx: ApiContext,
    pub counters: Counters,
    pub client: ApiClient,
    pub limits: Limits,
    /// One permit per long poll held ([`Limits::long_polls`]).
    pub long_polls: Arc<Semaphore>,
}

impl std::ops::Deref for Shared {
    type Target = ApiContext;
    fn deref(&self) -> &ApiContext {
        &self.ctx
    }
}

/// The health checks: answered from the agent's last round alone.
fn checks() -> Router<AppState> {
    Router::new()
        .route("/health", get(status::health).options(status::health))
        .route("/primary", get(status::primary).options(status::primary))
        .route("/replica", get(status::replica).options(status::replica))
        .route(
            "/read-only",
            get(status::read_only).options(status::read_only),
        )
}

pub fn router(state: AppState) -> Router {
    let routes = checks()
        .route("/cluster", get(read::cluster))
        .route("/history", get(read::history))
        .route("/events", get(read::events))
        .route("/metrics", get(read::metrics))
        .route("/config", get(config::show).patch(config::patch))
        .route("/pause", post(config::pause))
        .route("/resume", post(config::resume))
        .route(
            "/switchover",
            post(switchover::request).delete(switchover::cancel),
        )
        .route("/failover", post(switchover::failover))
        .route("/restart", post(agent::restart))
        .route("/reinit", post(agent::reinit))
        .route("/remove", post(remove::remove))
        .route("/readmit", post(remove::readmit))
        .route("/failsafe", post(failsafe::confirm))
        .route("/backup", get(backup::show).post(backup::run))
        .route("/backup/list", get(backup::list))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), read_body))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_token,
        ))
        // Outermost, so refused requests are counted too.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::count_requests,
        ));
    routes.with_state(state)
}

/// What a connection over [`Limits::connections`] is served: the health
/// checks, so that load balancers keep seeing the member, and a 503 for
/// anything else.
pub fn overflow_router(state: AppState) -> Router {
    checks()
        .fallback(too_many_connections)
        .layer(middleware::from_fn_with_state(state.clone(), read_body))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_token,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::count_requests,
        ))
        .with_state(state)
}

async fn too_many_connections(State(state): State<AppState>) -> HttpError {
    HttpError::unavailable(format!(
        "this member serves too many API connections (the limit is {}); retry later or ask another member",
        state.limits.connections
    ))
}

/// Reads the whole body within [`Limits::body_read`] before the handler
/// runs, so that a client that sends a head and then stalls cannot hold a
/// connection (and a handler) for longer. Bodies are small JSON documents.
async fn read_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let body =
        match tokio::time::timeout(state.limits.body_read, axum::body::to_bytes(body, MAX_BODY))
            .await
        {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => {
                return HttpError::bad_request(format!(
                    "cannot read the request body: {e} (at most {MAX_BODY} bytes)"
                ))
                .into_response()
            }
            Err(_) => {
                return HttpError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} s",
                        state.limits.body_read.as_secs()
                    ),
                )
                .into_response()
            }
        };
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// More than any JSON body the API takes (a configuration patch is a few
/// KiB), and little enough that the connection limit bounds the memory.
const MAX_BODY: usize = 256 * 1024;

async fn not_found() -> HttpError {
    HttpError::not_found("no such endpoint; docs/api.md lists them")
}

async fn method_not_allowed() -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method; docs/api.md lists them",
    )
}

/// A JSON body, or a 400 naming what is wrong with it. An empty body is
/// `{}`, so that `POST /switchover` without arguments works.
pub fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, HttpError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| HttpError::bad_request(format!("bad JSON body: {e}; nothing was changed")))
}
