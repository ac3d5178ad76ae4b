//! The REST API every agent serves, and the client `pgwarden ctl` uses.
//!
//! The agent talks to its API through [`local`]: after every round it
//! publishes a [`local::LocalState`], and the API hands requests that only
//! the agent can carry out (restart, reinit) back over a channel.

pub mod local;
