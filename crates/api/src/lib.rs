//! The REST API every agent serves, and the client `pgwarden ctl` uses.
//!
//! The agent talks to its API through [`local`]: after every round it
//! publishes a [`local::LocalState`], and the API hands requests that only
//! the agent can carry out (restart, reinit) back over a channel. Everything
//! else is read from and written to the store: the agents act on what the
//! API writes there (a switchover record, the dynamic configuration).
//! docs/api.md describes the endpoints.

pub mod admission;
pub mod auth;
pub mod client;
pub mod error;
pub mod lag;
pub mod limits;
pub mod local;
pub mod merge;
pub mod metrics;
pub mod model;
mod routes;
mod server;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;
pub mod tls;

use std::sync::Arc;

pub use client::{ApiClient, Call, ClientError, Reply};
pub use error::{ApiError, HttpError};
pub use limits::Limits;
pub use server::{start, start_with_limits, ApiServer};

/// What the API needs from the agent that runs it.
#[derive(Clone)]
pub struct ApiContext {
    pub store: Arc<dyn store::Store>,
    pub keys: store::cluster::ClusterKeys,
    /// This member's name.
    pub member: String,
    pub link: local::AgentLink,
    /// The `[api]` section of the member's configuration.
    pub api: config::Api,
    /// The member's `[backup]` repository, when it has one (and could
    /// open it): `GET /backup/list` reads it.
    pub repository: Option<Arc<dyn backup::Repository>>,
}
