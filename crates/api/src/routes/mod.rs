//! The router: one module per area of the API.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::client::ApiClient;
use crate::error::HttpError;
use crate::metrics::Counters;
use crate::ApiContext;

mod agent;
mod backup;
mod config;
pub(crate) mod failsafe;
mod read;
mod status;
mod switchover;

/// What every handler gets.
pub type AppState = Arc<Shared>;

pub struct Shared {
    pub ctx: ApiContext,
    pub counters: Counters,
    pub client: ApiClient,
}

impl std::ops::Deref for Shared {
    type Target = ApiContext;
    fn deref(&self) -> &ApiContext {
        &self.ctx
    }
}

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/health", get(status::health).options(status::health))
        .route("/primary", get(status::primary).options(status::primary))
        .route("/replica", get(status::replica).options(status::replica))
        .route(
            "/read-only",
            get(status::read_only).options(status::read_only),
        )
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
        .route("/failsafe", post(failsafe::confirm))
        .route("/backup", get(backup::show).post(backup::run))
        .route("/backup/list", get(backup::list))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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
