//! The routing table the listeners read: routes plus the counters of each
//! routed backend, published whole through a `tokio::sync::watch`, so a new
//! connection costs one uncontended read and an `Arc` clone.

use std::sync::Arc;

use crate::metrics::{BackendStats, Metrics};
use crate::routing::Routes;

#[derive(Debug, Default)]
pub struct Table {
    pub routes: Routes,
    /// The store has not answered for longer than `store_grace`: refuse
    /// writes rather than guess who is primary.
    pub store_lost: bool,
    /// Built from a view of the cluster; false only in the empty table
    /// published at startup.
    pub loaded: bool,
    pub primary_stats: Option<Arc<BackendStats>>,
    /// In the order of `routes.standbys`.
    pub standby_stats: Vec<Arc<BackendStats>>,
}

impl Table {
    pub fn new(routes: Routes, store_lost: bool, metrics: &Metrics) -> Table {
        Table {
            primary_stats: routes.primary.as_ref().map(|p| metrics.backend(&p.backend)),
            standby_stats: routes
                .standbys
                .iter()
                .map(|s| metrics.backend(&s.backend))
                .collect(),
            routes,
            store_lost,
            loaded: true,
        }
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        let writes = match (&self.routes.primary, self.store_lost) {
            (_, true) => "refused (store unreachable)".to_string(),
            (Some(p), _) => format!(
                "{} at {} (term {})",
                p.backend.member, p.backend.addr, p.term
            ),
            (None, _) => "held (no primary)".to_string(),
        };
        let reads: Vec<String> = self
            .routes
            .standbys
            .iter()
            .map(|s| format!("{} at {}", s.backend.member, s.backend.addr))
            .collect();
        let reads = if !reads.is_empty() {
            reads.join(", ")
        } else if self.routes.reads_to_primary {
            "the primary".to_string()
        } else {
            "held (no standby qualifies)".to_string()
        };
        let mut line = format!("routing: writes to {writes}; reads to {reads}");
        for (member, why) in &self.routes.excluded {
            let _ = std::fmt::Write::write_fmt(&mut line, format_args!("; {member} {why}"));
        }
        line
    }
}
