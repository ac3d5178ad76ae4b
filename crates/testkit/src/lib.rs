//! What only tests need, on top of [`lab`]: everything of `lab` is
//! re-exported here (so a test writes `testkit::AgentCluster`), plus TLS
//! certificates made for the occasion ([`tls`]), TLS etcd clusters
//! ([`etcd::start_tls`]), CPU load ([`load`]), a local S3-compatible
//! server ([`s3`]), hosts in network namespaces for partition tests
//! ([`netlab`]) and named hosts for the quickstart test ([`hostnet`]).
//!
//! A dev-dependency only: the `pgwarden` binary links `lab` for its demo,
//! never this crate.

pub use lab::*;

pub mod etcd;
pub mod hostnet;
pub mod load;
pub mod netlab;
pub mod s3;
pub mod tls;

pub use hostnet::HostNet;
pub use netlab::NetLab;
