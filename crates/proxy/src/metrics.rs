//! Counters the proxy keeps, rendered as Prometheus text. Plain atomics:
//! the forwarding path only increments and decrements.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_text::Exposition;

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
    /// Connections that had to wait (`pgwarden_proxy_holds_total`), and how
    /// long they waited in all.
    pub held_total: AtomicU64,
    pub hold_micros_total: AtomicU64,
    /// Held connections that got no route in time, and connections refused
    /// at once (store lost, nothing to route reads to).
    pub refused_total: AtomicU64,
    /// Open connections closed because their backend lost its route.
    pub fenced_total: AtomicU64,
    /// Client connections open now, on both ports.
    pub client_connections: AtomicU64,
    /// Clients turned away beyond `proxy.max_client_connections`.
    pub too_many_total: AtomicU64,
    /// Clients closed for sending nothing within `proxy.startup_timeout`.
    pub startup_timeouts_total: AtomicU64,
    /// Cancel requests sent on to a backend, and dropped (no session with
    /// their key).
    pub cancels_forwarded_total: AtomicU64,
    pub cancels_dropped_total: AtomicU64,
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

    /// The `/metrics` text (Prometheus text format, version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        out.gauge(
            "pgwarden_proxy_held_connections",
            "Client connections waiting for a route.",
        )
        .sample(&[], self.held.load(Relaxed));
        out.counter(
            "pgwarden_proxy_holds_total",
            "Client connections that had to wait for a route.",
        )
        .sample(&[], self.held_total.load(Relaxed));
        out.counter(
            "pgwarden_proxy_hold_seconds_total",
            "Time client connections spent waiting for a route.",
        )
        .sample(&[], self.hold_micros_total.load(Relaxed) as f64 / 1e6);
        out.counter(
            "pgwarden_proxy_refused_connections_total",
            "Client connections closed without a route.",
        )
        .sample(&[], self.refused_total.load(Relaxed));
        out.counter(
            "pgwarden_proxy_fenced_connections_total",
            "Open connections closed because their backend lost its route.",
        )
        .sample(&[], self.fenced_total.load(Relaxed));
        out.gauge(
            "pgwarden_proxy_client_connections",
            "Client connections open now, on both ports.",
        )
        .sample(&[], self.client_connections.load(Relaxed));
        out.counter(
            "pgwarden_proxy_too_many_connections_total",
            "Client connections refused beyond proxy.max_client_connections (53300).",
        )
        .sample(&[], self.too_many_total.load(Relaxed));
        out.counter(
            "pgwarden_proxy_startup_timeouts_total",
            "Client connections closed for sending nothing within proxy.startup_timeout.",
        )
        .sample(&[], self.startup_timeouts_total.load(Relaxed));
        out.counter(
            "pgwarden_proxy_cancel_requests_total",
            "Cancel requests sent on to the backend holding the session, or dropped.",
        )
        .sample(
            &[("result", "forwarded")],
            self.cancels_forwarded_total.load(Relaxed),
        )
        .sample(
            &[("result", "dropped")],
            self.cancels_dropped_total.load(Relaxed),
        );
        out.counter(
            "pgwarden_proxy_routing_changes_total",
            "Times the routing table changed.",
        )
        .sample(&[], self.routing_changes.load(Relaxed));
        out.gauge(
            "pgwarden_proxy_store_reachable",
            "1 while the store answers.",
        )
        .sample(&[], self.store_reachable.load(Relaxed));
        let backends = self.backends.lock().expect("metrics lock");
        let mut open = out.gauge(
            "pgwarden_proxy_backend_connections",
            "Open client connections per backend and port.",
        );
        for (backend, stats) in backends.iter() {
            for (port, count) in [
                ("read_write", &stats.open_read_write),
                ("read_only", &stats.open_read_only),
            ] {
                open.sample(
                    &[
                        ("member", &backend.member),
                        ("addr", &backend.addr),
                        ("port", port),
                    ],
                    count.load(Relaxed),
                );
            }
        }
        let mut routed = out.counter(
            "pgwarden_proxy_routed_connections_total",
            "Client connections routed per backend.",
        );
        for (backend, stats) in backends.iter() {
            routed.sample(
                &[("member", &backend.member), ("addr", &backend.addr)],
                stats.total.load(Relaxed),
            );
        }
        out.into_text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_one_backend(member: &str) -> Metrics {
        let metrics = Metrics::default();
        let stats = metrics.backend(&Backend {
            member: member.to_string(),
            addr: "10.0.0.2:5432".to_string(),
        });
        stats.open_read_write.store(2, Relaxed);
        stats.total.store(5, Relaxed);
        metrics.add_hold(Duration::from_millis(1500));
        metrics.store_reachable.store(true, Relaxed);
        metrics
    }

    #[test]
    fn each_metric_has_the_right_type_and_its_value() {
        let text = with_one_backend("db2").render();
        assert_eq!(
            prometheus_text::types(&text),
            [
                ("pgwarden_proxy_held_connections", "gauge"),
                ("pgwarden_proxy_holds_total", "counter"),
                ("pgwarden_proxy_hold_seconds_total", "counter"),
                ("pgwarden_proxy_refused_connections_total", "counter"),
                ("pgwarden_proxy_fenced_connections_total", "counter"),
                ("pgwarden_proxy_client_connections", "gauge"),
                ("pgwarden_proxy_too_many_connections_total", "counter"),
                ("pgwarden_proxy_startup_timeouts_total", "counter"),
                ("pgwarden_proxy_cancel_requests_total", "counter"),
                ("pgwarden_proxy_routing_changes_total", "counter"),
                ("pgwarden_proxy_store_reachable", "gauge"),
                ("pgwarden_proxy_backend_connections", "gauge"),
                ("pgwarden_proxy_routed_connections_total", "counter"),
            ]
        );
        for line in [
            "pgwarden_proxy_held_connections 0",
            "pgwarden_proxy_holds_total 1",
            "pgwarden_proxy_hold_seconds_total 1.5",
            "pgwarden_proxy_store_reachable 1",
            "pgwarden_proxy_too_many_connections_total 0",
            r#"pgwarden_proxy_cancel_requests_total{result="dropped"} 0"#,
            r#"pgwarden_proxy_backend_connections{member="db2",addr="10.0.0.2:5432",port="read_write"} 2"#,
            r#"pgwarden_proxy_backend_connections{member="db2",addr="10.0.0.2:5432",port="read_only"} 0"#,
            r#"pgwarden_proxy_routed_connections_total{member="db2",addr="10.0.0.2:5432"} 5"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let text = with_one_backend("db\"2\\\n").render();
        assert!(
            text.lines().any(|l| l
                == r#"pgwarden_proxy_routed_connections_total{member="db\"2\\\n",addr="10.0.0.2:5432"} 5"#),
            "{text}"
        );
    }
}
