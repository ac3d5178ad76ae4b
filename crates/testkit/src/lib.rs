//! Throwaway real servers for tests, benchmarks and the demo: PostgreSQL
//! instances and etcd clusters on free loopback ports in temporary
//! directories, killed by PID and removed on drop (also when a test panics).

pub mod agents;
pub mod dir;
pub mod etcd;
pub mod load;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod wait;
pub mod workload;

pub use agents::{AgentCluster, AgentMember, ClusterOptions};
pub use dir::TestDir;
pub use ports::free_port;
pub use postgres::{PgCluster, PgNode};
pub use wait::{wait_for, WaitError};
pub use workload::{Ack, Target, Workload, WorkloadReport};
