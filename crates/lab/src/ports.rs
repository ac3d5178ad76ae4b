//! Free loopback ports, kept apart across processes.
//!
//! nextest runs every test in its own process, so remembering handed-out
//! ports in memory is not enough, and a port from the kernel's ephemeral
//! range can be taken in the meantime as the source port of any outgoing
//! connection. Ports therefore come from below that range, and each is
//! claimed by binding an abstract Unix socket named after it: unique on the
//! machine, released by the kernel when the process ends however it ends,
//! and nothing to clean up on disk.

use std::net::{Ipv4Addr, TcpListener};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Below Linux's default ephemeral range (32768–60999).
const FIRST: u16 = 20_000;
const LAST: u16 = 32_000;

/// The claims this process holds, for its whole life.
static CLAIMS: Mutex<Vec<UnixListener>> = Mutex::new(Vec::new());

/// A loopback port nothing listens on right now and no other caller of
/// `free_port` on this machine has been given, so servers of tests running
/// side by side never race for one port.
pub fn free_port() -> u16 {
    let mut claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
    let span = u32::from(LAST - FIRST);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Processes start at different points so they rarely probe the same ports.
    let start = (std::process::id().wrapping_mul(7919) ^ nanos) % span;
    for step in 0..span {
        let port = FIRST + ((start + step) % span) as u16;
        let Some(claim) = claim(port) else { continue };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            claims.push(claim);
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {LAST}");
}

fn claim(port: u16) -> Option<UnixListener> {
    // The name predates this crate: changing it would let a build from
    // before the change hand out a port this one has claimed.
    let name = format!("pgwarden-testkit-port-{port}");
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
    UnixListener::bind_addr(&addr).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_not_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        // A claimed port cannot be claimed again, here or (the name being
        // machine-wide) by another process.
        assert!(claim(ports[0]).is_none());
    }
}
