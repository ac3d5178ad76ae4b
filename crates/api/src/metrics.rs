//! `/metrics` in the Prometheus text format, and the request counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_text::Exposition;
use store::cluster::{ArchiveHealth, History, LastBackup, LastDumps};

use crate::local::LocalState;
use crate::routes::AppState;

/// Requests served, by route and status; what the limits refused.
#[derive(Debug, Default)]
pub struct Counters {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    refused_connections: AtomicU64,
    refused_long_polls: AtomicU64,
}

/// What the limits (`crate::limits`) refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    /// Over the connection limit: answered 503 or closed.
    pub connections: u64,
    /// Over the long poll limit: answered 503.
    pub long_polls: u64,
}

impl Counters {
    pub fn count(&self, route: &str, status: u16) {
        let mut requests = self.requests.lock().expect("counter lock");
        *requests.entry((route.to_string(), status)).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<(String, u16), u64> {
        self.requests.lock().expect("counter lock").clone()
    }

    pub fn refuse_connection(&self) {
        self.refused_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn refuse_long_poll(&self) {
        self.refused_long_polls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused(&self) -> Refused {
        Refused {
            connections: self.refused_connections.load(Ordering::Relaxed),
            long_polls: self.refused_long_polls.load(Ordering::Relaxed),
        }
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

/// What the store says, for the cluster-wide metrics; `None` when it
/// could not be read.
#[derive(Clone, Debug, Default)]
pub struct ClusterFacts {
    pub history: History,
    pub last_backup: Option<LastBackup>,
    pub last_dumps: Option<LastDumps>,
    /// Unix ms, for ages.
    pub now_ms: u64,
}

/// The metrics text. `cluster` is `None` when the store could not be read.
pub fn render(
    local: &LocalState,
    cluster: Option<&ClusterFacts>,
    requests: &BTreeMap<(String, u16), u64>,
    refused: &Refused,
) -> String {
    let history = cluster.map(|c| &c.history);
    let member = ("member", local.member.as_str());
    let mut out = Exposition::default();
    let current = if !local.pg_running {
        "stopped"
    } else if local.primary {
        "primary"
    } else {
        "replica"
    };
    let mut roles = out.gauge(
        "pgwarden_role",
        "1 for the role this member's PostgreSQL has now.",
    );
    for role in ["primary", "replica", "stopped"] {
        roles.sample(&[member, ("role", role)], role == current);
    }
    out.gauge(
        "pgwarden_leader",
        "1 while this member holds the leader key.",
    )
    .sample(&[member], local.leader);
    out.gauge(
        "pgwarden_postgres_running",
        "1 while PostgreSQL accepts connections.",
    )
    .sample(&[member], local.pg_running);
    out.gauge(
        "pgwarden_store_reachable",
        "1 while the store answered the last round.",
    )
    .sample(&[member], local.store_reachable);
    out.gauge(
        "pgwarden_store_undecodable_keys",
        "Store keys this member could not decode in its last round (see its log, the events and `ctl list`).",
    )
    .sample(&[member], local.undecodable_keys.len() as u64);
    // Unknown values are left out rather than shown as 0.
    if let Some(timeline) = local.timeline {
        out.gauge("pgwarden_timeline", "The PostgreSQL timeline.")
            .sample(&[member], timeline);
    }
    if let Some(bytes) = local.lag_bytes {
        out.gauge("pgwarden_lag_bytes", "Bytes of WAL behind the primary.")
            .sample(&[member], bytes);
    }
    if let Some(ms) = local.lag_ms {
        out.gauge("pgwarden_lag_seconds", "Replay delay behind the primary.")
            .sample(&[member], seconds(ms));
    }
    if let Some(ms) = local.lease_remaining_ms {
        out.gauge(
            "pgwarden_leader_lease_remaining_seconds",
            "How long the leader lease surely holds (leader only).",
        )
        .sample(&[member], seconds(ms));
    }
    if let Some(reach) = &local.reachability {
        out.gauge(
            "pgwarden_reachability_passes",
            "1 while this member's reachability check passes ([member] reachability); 0 while it fails or has not finished.",
        )
        .sample(
            &[member],
            reach.state == store::cluster::ReachState::Passes,
        );
    }
    if let Some(archive) = &local.archive {
        archive_metrics(&mut out, member, archive);
    }
    if !local.slots.is_empty() {
        let mut held = out.gauge(
            "pgwarden_slot_retained_bytes",
            "Bytes of WAL the primary keeps for the replication slot of a member (`standby`).",
        );
        for slot in local.slots.iter() {
            if let Some(bytes) = slot.retained_bytes {
                held.sample(&[member, ("standby", slot.member.as_str())], bytes);
            }
        }
        let mut active = out.gauge(
            "pgwarden_slot_active",
            "1 while a standby streams through its replication slot.",
        );
        for slot in local.slots.iter() {
            active.sample(&[member, ("standby", slot.member.as_str())], slot.active);
        }
    }
    if let Some(history) = history {
        // The history only grows (one entry per promotion, and one per
        // retired member, not counted), so its length is a counter.
        out.counter(
            "pgwarden_failovers_total",
            "Promotions recorded in the timeline history.",
        )
        .sample(
            &[],
            history
                .entries
                .iter()
                .filter(|e| e.removed.is_none())
                .count(),
        );
        let last = history.entries.iter().rfind(|e| e.removed.is_none());
        if let Some(ms) = last.and_then(|e| e.duration_ms) {
            out.gauge(
                "pgwarden_last_failover_duration_seconds",
                "From seeing the need to the end of the last promotion.",
            )
            .sample(&[], seconds(ms));
        }
    }
    if let Some(last) = cluster.and_then(|c| c.last_backup.as_ref().map(|l| (l, c.now_ms))) {
        backup_metrics(&mut out, last.0, last.1);
    }
    if let Some(dumps) = cluster.and_then(|c| c.last_dumps.as_ref().map(|d| (d, c.now_ms))) {
        dump_metrics(&mut out, dumps.0, dumps.1);
    }
    let mut served = out.counter(
        "pgwarden_api_requests_total",
        "REST API requests served, by route and status.",
    );
    for ((route, status), count) in requests {
        served.sample(&[("route", route), ("status", &status.to_string())], *count);
    }
    out.counter(
        "pgwarden_api_refused_total",
        "REST API connections and long polls refused for being over the limit (docs/api.md, Limits).",
    )
    .sample(&[("limit", "connections")], refused.connections)
    .sample(&[("limit", "long_polls")], refused.long_polls);
    out.into_text()
}

/// A primary's WAL archiving (`pg_stat_archiver` and pg_wal's waiting
/// segments).
fn archive_metrics(out: &mut Exposition, member: (&str, &str), archive: &ArchiveHealth) {
    out.gauge(
        "pgwarden_archive_failing",
        "1 while the last attempt to archive a WAL segment failed.",
    )
    .sample(&[member], archive.failing);
    out.gauge(
        "pgwarden_archive_waiting_segments",
        "WAL segments (and history files) waiting in pg_wal to be archived.",
    )
    .sample(&[member], archive.waiting);
    out.gauge(
        "pgwarden_archive_waiting_bytes",
        "Bytes of WAL waiting in pg_wal to be archived.",
    )
    .sample(&[member], archive.waiting_bytes);
    out.counter(
        "pgwarden_archive_failed_total",
        "Failed attempts to archive, since PostgreSQL's statistics were reset.",
    )
    .sample(&[member], archive.failed_count);
    if let Some(ms) = archive.last_archived_ms {
        out.gauge(
            "pgwarden_archive_last_archived_timestamp_seconds",
            "When the last WAL segment was archived (unix time).",
        )
        .sample(&[member], seconds(ms));
    }
}

/// From `backup/last`: the cluster's, the same on every member.
fn backup_metrics(out: &mut Exposition, last: &LastBackup, now_ms: u64) {
    if last.id.is_some() {
        out.gauge(
            "pgwarden_backup_last_success_age_seconds",
            "Since the last base backup completed.",
        )
        .sample(&[], seconds(now_ms.saturating_sub(last.done_ms)));
        out.gauge(
            "pgwarden_backup_last_duration_seconds",
            "How long the last completed base backup took.",
        )
        .sample(&[], seconds(last.done_ms.saturating_sub(last.started_ms)));
        out.gauge(
            "pgwarden_backup_last_size_bytes",
            "The data directory bytes the last completed base backup covers.",
        )
        .sample(&[], last.bytes);
        out.gauge(
            "pgwarden_backup_last_stored_bytes",
            "The bytes the last completed base backup wrote to the repository.",
        )
        .sample(&[], last.stored_bytes);
    }
    out.counter(
        "pgwarden_backup_failures_total",
        "Base backups that failed.",
    )
    .sample(&[], last.failures);
}

/// From `backup/dumps`: each dumped database's, the same on every member.
fn dump_metrics(out: &mut Exposition, dumps: &LastDumps, now_ms: u64) {
    if dumps.databases.is_empty() {
        return;
    }
    let mut age = out.gauge(
        "pgwarden_dump_last_success_age_seconds",
        "Since the last logical dump of the database was taken (a run that found nothing changed does not count).",
    );
    for (database, last) in &dumps.databases {
        if last.id.is_some() {
            age.sample(
                &[("database", database)],
                seconds(now_ms.saturating_sub(last.done_ms)),
            );
        }
    }
    let mut failures = out.counter(
        "pgwarden_dump_failures_total",
        "Logical dumps of the database that failed.",
    );
    for (database, last) in &dumps.databases {
        failures.sample(&[("database", database)], last.failures);
    }
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use store::cluster::{HistoryEntry, LastDump};

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
                removed: None,
            }],
        };
        let mut requests = BTreeMap::new();
        requests.insert(("/health".to_string(), 200), 4);
        let cluster = ClusterFacts {
            history,
            ..ClusterFacts::default()
        };
        let refused = Refused {
            connections: 7,
            long_polls: 2,
        };
        let text = render(&local, Some(&cluster), &requests, &refused);
        for line in [
            "pgwarden_role{member=\"db2\",role=\"replica\"} 1",
            "pgwarden_role{member=\"db2\",role=\"primary\"} 0",
            "pgwarden_timeline{member=\"db2\"} 3",
            "pgwarden_lag_bytes{member=\"db2\"} 2048",
            "pgwarden_lag_seconds{member=\"db2\"} 1.5",
            "pgwarden_failovers_total 1",
            "pgwarden_last_failover_duration_seconds 2.5",
            "pgwarden_api_requests_total{route=\"/health\",status=\"200\"} 4",
            "pgwarden_api_refused_total{limit=\"connections\"} 7",
            "pgwarden_api_refused_total{limit=\"long_polls\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("lease_remaining"));
    }

    fn everything() -> String {
        let local = LocalState {
            member: "db1".to_string(),
            pg_running: true,
            primary: true,
            leader: true,
            store_reachable: true,
            timeline: Some(4),
            lag_bytes: Some(0),
            lag_ms: Some(0),
            lease_remaining_ms: Some(2500),
            archive: Some(ArchiveHealth {
                waiting: 2,
                waiting_bytes: 32 << 20,
                last_archived_ms: Some(1_000),
                ..ArchiveHealth::default()
            }),
            slots: vec![store::cluster::SlotStatus {
                member: "db3".to_string(),
                active: false,
                retained_bytes: Some(48 << 20),
            }],
            ..LocalState::default()
        };
        let history = History {
            entries: vec![HistoryEntry {
                timeline: 4,
                switch_lsn: 1,
                reason: "switchover".to_string(),
                time_ms: 0,
                from: Some("db2".to_string()),
                to: Some("db1".to_string()),
                duration_ms: Some(800),
                removed: None,
            }],
        };
        let mut requests = BTreeMap::new();
        requests.insert(("/metrics".to_string(), 200), 1);
        let cluster = ClusterFacts {
            history,
            last_backup: Some(last_backup()),
            last_dumps: Some(last_dumps()),
            now_ms: 10_000_000,
        };
        render(&local, Some(&cluster), &requests, &Refused::default())
    }

    fn last_backup() -> LastBackup {
        LastBackup {
            id: Some("20261203-220000F".into()),
            started_ms: 9_000_000,
            done_ms: 9_600_000,
            bytes: 50_000_000,
            stored_bytes: 4_000_000,
            failures: 2,
            ..LastBackup::default()
        }
    }

    fn last_dumps() -> LastDumps {
        let mut dumps = LastDumps::default();
        dumps.databases.insert(
            "app".into(),
            LastDump {
                id: Some("20261203-220100".into()),
                done_ms: 9_700_000,
                failures: 1,
                ..LastDump::default()
            },
        );
        // Never dumped yet: no age, only its failures.
        dumps.databases.insert(
            "billing".into(),
            LastDump {
                failures: 3,
                ..LastDump::default()
            },
        );
        dumps
    }

    #[test]
    fn each_dumped_database_has_its_age_and_failures() {
        let text = everything();
        for line in [
            "pgwarden_dump_last_success_age_seconds{database=\"app\"} 300",
            "pgwarden_dump_failures_total{database=\"app\"} 1",
            "pgwarden_dump_failures_total{database=\"billing\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(
            !text.contains("age_seconds{database=\"billing\"}"),
            "{text}"
        );
    }

    #[test]
    fn the_last_backup_its_age_and_the_failures() {
        let text = everything();
        for line in [
            "pgwarden_backup_last_success_age_seconds 400",
            "pgwarden_backup_last_duration_seconds 600",
            "pgwarden_backup_last_size_bytes 50000000",
            "pgwarden_backup_last_stored_bytes 4000000",
            "pgwarden_backup_failures_total 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        // None completed yet: only the failures.
        let cluster = ClusterFacts {
            last_backup: Some(LastBackup {
                failures: 1,
                ..LastBackup::default()
            }),
            ..ClusterFacts::default()
        };
        let text = render(
            &LocalState::default(),
            Some(&cluster),
            &BTreeMap::new(),
            &Refused::default(),
        );
        assert!(!text.contains("pgwarden_backup_last_"), "{text}");
        assert!(text.contains("pgwarden_backup_failures_total 1"), "{text}");
    }

    #[test]
    fn the_wal_each_slot_holds() {
        let text = everything();
        for line in [
            r#"pgwarden_slot_retained_bytes{member="db1",standby="db3"} 50331648"#,
            r#"pgwarden_slot_active{member="db1",standby="db3"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn each_metric_has_the_right_type() {
        assert_eq!(
            prometheus_text::types(&everything()),
            [
                ("pgwarden_role", "gauge"),
                ("pgwarden_leader", "gauge"),
                ("pgwarden_postgres_running", "gauge"),
                ("pgwarden_store_reachable", "gauge"),
                ("pgwarden_store_undecodable_keys", "gauge"),
                ("pgwarden_timeline", "gauge"),
                ("pgwarden_lag_bytes", "gauge"),
                ("pgwarden_lag_seconds", "gauge"),
                ("pgwarden_leader_lease_remaining_seconds", "gauge"),
                ("pgwarden_archive_failing", "gauge"),
                ("pgwarden_archive_waiting_segments", "gauge"),
                ("pgwarden_archive_waiting_bytes", "gauge"),
                ("pgwarden_archive_failed_total", "counter"),
                ("pgwarden_archive_last_archived_timestamp_seconds", "gauge"),
                ("pgwarden_slot_retained_bytes", "gauge"),
                ("pgwarden_slot_active", "gauge"),
                ("pgwarden_failovers_total", "counter"),
                ("pgwarden_last_failover_duration_seconds", "gauge"),
                ("pgwarden_backup_last_success_age_seconds", "gauge"),
                ("pgwarden_backup_last_duration_seconds", "gauge"),
                ("pgwarden_backup_last_size_bytes", "gauge"),
                ("pgwarden_backup_last_stored_bytes", "gauge"),
                ("pgwarden_backup_failures_total", "counter"),
                ("pgwarden_dump_last_success_age_seconds", "gauge"),
                ("pgwarden_dump_failures_total", "counter"),
                ("pgwarden_api_requests_total", "counter"),
                ("pgwarden_api_refused_total", "counter"),
            ]
        );
    }

    #[test]
    fn the_reachability_check_is_a_gauge_only_with_targets() {
        let mut local = LocalState {
            member: "db2".to_string(),
            ..LocalState::default()
        };
        let text = render(&local, None, &BTreeMap::new(), &Refused::default());
        assert!(!text.contains("pgwarden_reachability_passes"), "{text}");
        local.reachability = Some(store::cluster::Reachability {
            state: store::cluster::ReachState::Fails,
            ..Default::default()
        });
        let text = render(&local, None, &BTreeMap::new(), &Refused::default());
        assert!(
            text.contains("pgwarden_reachability_passes{member=\"db2\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let local = LocalState {
            member: "db\"1\\\nx".to_string(),
            ..LocalState::default()
        };
        let mut requests = BTreeMap::new();
        requests.insert(("/a\"b".to_string(), 404), 2);
        let text = render(&local, None, &requests, &Refused::default());
        assert!(
            text.lines()
                .any(|l| l == r#"pgwarden_leader{member="db\"1\\\nx"} 0"#),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == r#"pgwarden_api_requests_total{route="/a\"b",status="404"} 2"#),
            "{text}"
        );
    }
}
