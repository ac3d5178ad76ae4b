//! Where a lab cluster's processes run and how this process reaches them.
//!
//! Without a [`Network`] everything runs here and listens on loopback. With
//! one (testkit's `NetLab`: network namespaces on a bridge), etcd and each
//! member run on hosts of their own, listen on their host's address, and
//! this process reaches them through loopback ports the network forwards:
//! port P on a host is 127.0.0.1:P here, so ports mean the same member on
//! both sides (`inet_server_port()`, `sender_port`).

use std::fmt::Debug;
use std::io;
use std::process::Command;

/// A host of the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// Where every etcd node runs.
    Etcd,
    /// Member `i`, counted from 0 (`db1` is `Member(0)`).
    Member(usize),
}

/// Hosts on a network of the caller's making.
pub trait Network: Send + Sync + Debug {
    /// The address `host` listens on and the other hosts reach it at.
    fn address(&self, host: Host) -> String;
    /// The network every host's address is in, for pg_hba.conf (`a.b.c.d/n`).
    fn hba_network(&self) -> String;
    /// Makes `command` start on `host` (keeping its PID: no wrapper process).
    fn enter(&self, host: Host, command: &mut Command) -> io::Result<()>;
    /// Makes `port` on `host` reachable from this process at 127.0.0.1:`port`,
    /// the way another host of the network reaches it (a cut host is then
    /// unreachable here too). `port` must come from [`crate::free_port`].
    fn expose(&self, host: Host, port: u16) -> io::Result<()>;
}
