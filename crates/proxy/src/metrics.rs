//! Counters the proxy keeps, rendered as Prometheus text. Plain atomics:
//! the forwarding path only increments and decrements.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::routing::Backend;

/// One backend's connections, shared by every routing table that names it.
#[derive(Debug, Default)]
pub struct BackendStats {
    pub open_read_write: AtomicU64,
    pub open_read_only: AtomicU64,
    pub total: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    backends: Mutex<BTreeMap<Backend, Arc<BackendStats>>>,
    /// Connections waiting for a route right now.
    pub held: AtomicU64,
    pub held_total: AtomicU64,
    pub hold_micros_total: AtomicU64,
    /// Held connections that got no route in time, and connections refused
    /// at once (store lost, nothing to route reads to).
    pub refused_total: AtomicU64,
    /// Open connections closed because their backend lost its route.
    pub fenced_total: AtomicU64,
    pub routing_changes: AtomicU64,
    pub store_reachable: AtomicBool,
}

impl Metrics {
    /// The stats of `backend`, created on first use. Called by the watcher
    /// when it builds a table, never per connection.
    pub fn backend(&self, backend: &Backend) -> Arc<BackendStats> {
        let mut backends = self.backends.lock().expect("metrics lock");
        backends.entry(backend.clone()).or_default().clone()
    }

    pub fn add_hold(&self, waited: Duration) {
        self.held_total.fetch_add(1, Relaxed);
        self.hold_micros_total
            .fetch_add(waited.as_micros() as u64, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        gauge(
            "pgwarden_proxy_held_connections",
            "Client connections waiting for a route.",
            "gauge",
            self.held.load(Relaxed).to_string(),
        );
        gauge(
            "pgwarden_proxy_held_connections_total",
            "Client connections that had to wait for a route.",
            "counter",
            self.held_total.load(Relaxed).to_string(),
        );
        gauge(
            "pgwarden_proxy_hold_seconds_total",
            "Time client connections spent waiting for a route.",
            "counter",
            format!("{:.6}", self.hold_micros_total.load(Relaxed) as f64 / 1e6),
        );
        gauge(
            "pgwarden_proxy_refused_connections_total",
            "Client connections closed without a route.",
            "counter",
            self.refused_total.load(Relaxed).to_string(),
        );
        gauge(
            "pgwarden_proxy_fenced_connections_total",
            "Open connections closed because their backend lost its route.",
            "counter",
            self.fenced_total.load(Relaxed).to_string(),
        );
        gauge(
            "pgwarden_proxy_routing_changes_total",
            "Times the routing table changed.",
            "counter",
            self.routing_changes.load(Relaxed).to_string(),
        );
        gauge(
            "pgwarden_proxy_store_reachable",
            "1 while the store answers.",
            "gauge",
            u8::from(self.store_reachable.load(Relaxed)).to_string(),
        );
        let backends = self.backends.lock().expect("metrics lock");
        let _ = writeln!(
            out,
            "# HELP pgwarden_proxy_backend_connections Open client connections per backend and port.\n# TYPE pgwarden_proxy_backend_connections gauge"
        );
        for (backend, stats) in backends.iter() {
            for (port, open) in [
                ("read_write", &stats.open_read_write),
                ("read_only", &stats.open_read_only),
            ] {
                let _ = writeln!(
                    out,
                    "pgwarden_proxy_backend_connections{{member=\"{}\",addr=\"{}\",port=\"{port}\"}} {}",
                    backend.member,
                    backend.addr,
                    open.load(Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP pgwarden_proxy_backend_connections_total Client connections routed per backend.\n# TYPE pgwarden_proxy_backend_connections_total counter"
        );
        for (backend, stats) in backends.iter() {
            let _ = writeln!(
                out,
                "pgwarden_proxy_backend_connections_total{{member=\"{}\",addr=\"{}\"}} {}",
                backend.member,
                backend.addr,
                stats.total.load(Relaxed)
            );
        }
        out
    }
}
