//! Whole local clusters on this one machine, for `pgwarden demo` and the
//! benches (and, through `testkit`, for the tests): etcd, PostgreSQL run as
//! the postgres user, `pgwarden agent` processes, a write load that logs
//! every acknowledged write, on free loopback ports in temporary
//! directories (or on hosts of a [`Network`], such as testkit's network
//! namespaces). Everything is killed by PID and removed on drop (also when
//! the caller panics) unless it is explicitly left running.

pub mod agents;
pub mod dir;
pub mod etcd;
pub mod network;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod slow_link;
pub mod wait;
pub mod workload;

pub use agents::{AgentCluster, AgentMember, ClusterOptions};
pub use dir::ScratchDir;
pub use network::{Host, Network};
pub use ports::free_port;
pub use postgres::{PgCluster, PgNode};
pub use wait::{wait_for, WaitError};
pub use workload::{Ack, Target, Workload, WorkloadReport};
