//! `/metrics` in the Prometheus text format, and the request counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use store::cluster::History;

use crate::local::LocalState;
use crate::routes::AppState;

/// Requests served, by route and status.
#[derive(Debug, Default)]
pub struct Counters {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
}

impl Counters {
    pub fn count(&self, route: &str, status: u16) {
        let mut requests = self.requests.lock().expect("counter lock");
        *requests.entry((route.to_string(), status)).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<(String, u16), u64> {
        self.requests.lock().expect("counter lock").clone()
    }
}

pub async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    // The route pattern, not the raw path, so that counters stay few.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let response = next.run(request).await;
    state.counters.count(&route, response.status().as_u16());
    response
}

fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics text. `history` is `None` when the store could not be read.
pub fn render(
    local: &LocalState,
    history: Option<&History>,
    requests: &BTreeMap<(String, u16), u64>,
) -> String {
    let member = escape(&local.member);
    let m = format!("{{member=\"{member}\"}}");
    let mut out = String::new();
    let current = if !local.pg_running {
        "stopped"
    } else if local.primary {
        "primary"
    } else {
        "replica"
    };
    let roles: Vec<(String, f64)> = ["primary", "replica", "stopped"]
        .iter()
        .map(|role| {
            (
                format!("{{member=\"{member}\",role=\"{role}\"}}"),
                if *role == current { 1.0 } else { 0.0 },
            )
        })
        .collect();
    gauge(
        &mut out,
        "pgwarden_role",
        "1 for the role this member's PostgreSQL has now.",
        &roles,
    );
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    gauge(
        &mut out,
        "pgwarden_leader",
        "1 while this member holds the leader key.",
        &[(m.clone(), flag(local.leader))],
    );
    gauge(
        &mut out,
        "pgwarden_postgres_running",
        "1 while PostgreSQL accepts connections.",
        &[(m.clone(), flag(local.pg_running))],
    );
    gauge(
        &mut out,
        "pgwarden_store_reachable",
        "1 while the store answered the last round.",
        &[(m.clone(), flag(local.store_reachable))],
    );
    let optional = |out: &mut String, name: &str, help: &str, value: Option<f64>| {
        if let Some(value) = value {
            gauge(out, name, help, &[(m.clone(), value)]);
        }
    };
    optional(
        &mut out,
        "pgwarden_timeline",
        "The PostgreSQL timeline.",
        local.timeline.map(f64::from),
    );
    optional(
        &mut out,
        "pgwarden_lag_bytes",
        "Bytes of WAL behind the primary.",
        local.lag_bytes.map(|b| b as f64),
    );
    optional(
        &mut out,
        "pgwarden_lag_seconds",
        "Replay delay behind the primary.",
        local.lag_ms.map(|ms| ms as f64 / 1000.0),
    );
    optional(
        &mut out,
        "pgwarden_leader_lease_remaining_seconds",
        "How long the leader lease surely holds (leader only).",
        local.lease_remaining_ms.map(|ms| ms as f64 / 1000.0),
    );
    if let Some(history) = history {
        let _ = writeln!(
            out,
            "# HELP pgwarden_failovers_total Promotions recorded in the timeline history.\n# TYPE pgwarden_failovers_total counter\npgwarden_failovers_total {}",
            history.entries.len()
        );
        if let Some(ms) = history.entries.last().and_then(|e| e.duration_ms) {
            gauge(
                &mut out,
                "pgwarden_last_failover_duration_seconds",
                "From seeing the need to the end of the last promotion.",
                &[(String::new(), ms as f64 / 1000.0)],
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP pgwarden_api_requests_total REST API requests served, by route and status.\n# TYPE pgwarden_api_requests_total counter"
    );
    for ((route, status), count) in requests {
        let _ = writeln!(
            out,
            "pgwarden_api_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
            escape(route)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use store::cluster::HistoryEntry;

    use super::*;

    #[test]
    fn renders_role_lag_history_and_requests() {
        let local = LocalState {
            member: "db2".to_string(),
            pg_running: true,
            streaming: true,
            timeline: Some(3),
            lag_bytes: Some(2048),
            lag_ms: Some(1500),
            ..LocalState::default()
        };
        let history = History {
            entries: vec![HistoryEntry {
                timeline: 2,
                switch_lsn: 1,
                reason: "failover".to_string(),
                time_ms: 0,
                from: None,
                to: Some("db2".to_string()),
                duration_ms: Some(2500),
            }],
        };
        let mut requests = BTreeMap::new();
        requests.insert(("/health".to_string(), 200), 4);
        let text = render(&local, Some(&history), &requests);
        for line in [
            "pgwarden_role{member=\"db2\",role=\"replica\"} 1",
            "pgwarden_role{member=\"db2\",role=\"primary\"} 0",
            "pgwarden_timeline{member=\"db2\"} 3",
            "pgwarden_lag_bytes{member=\"db2\"} 2048",
            "pgwarden_lag_seconds{member=\"db2\"} 1.5",
            "pgwarden_failovers_total 1",
            "pgwarden_last_failover_duration_seconds 2.5",
            "pgwarden_api_requests_total{route=\"/health\",status=\"200\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("lease_remaining"));
    }
}
