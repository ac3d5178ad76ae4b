//! Text for people: the member table, history, events. Pure functions of
//! what the API answered.

use api::model::{ClusterView, MemberView};
use store::cluster::{ArchiveHealth, Event, HistoryEntry, PgState, ReachState, Role};

fn role(m: &MemberView) -> &'static str {
    match (m.leader, m.role) {
        (true, _) => "Leader",
        (false, Role::Replica) if m.sync => "Sync Standby",
        (false, Role::Replica) => "Replica",
        (false, Role::Primary) => "Primary (not leader)",
        (false, Role::Witness) => "Witness",
        (false, Role::Unknown) => "Unknown",
    }
}

/// How the decision core's note begins while an action keeps failing and
/// waits before its next attempt (`ha::retry`).
use ha::retry::FAILING_NOTE as FAILING;

fn state(m: &MemberView) -> String {
    if m.note.starts_with(FAILING) {
        return format!("{:?}, failing", m.state).to_lowercase();
    }
    match (m.state, m.role) {
        (PgState::Running, Role::Replica) if m.streaming => "streaming".to_string(),
        (PgState::Running, Role::Replica) => "running (not streaming)".to_string(),
        (state, _) => format!("{state:?}").to_lowercase(),
    }
}

fn lag_mb(m: &MemberView) -> String {
    if m.leader || m.role == Role::Primary {
        return String::new();
    }
    match m.lag_bytes {
        // Rounded like patronictl: a few bytes behind shows as 0.
        Some(bytes) => mib(bytes),
        None => "unknown".to_string(),
    }
}

/// A bordered table like `patronictl list`.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([h.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("| {c:<w$} ", w = *w))
            .collect::<String>()
            + "|\n"
    };
    let mut out = rule.clone();
    out += &line(headers.iter().map(|h| h.to_string()).collect());
    out += &rule;
    for row in rows {
        out += &line(row.clone());
    }
    out += &rule;
    out
}

/// Bytes as whole MiB, rounded (a few bytes show as 0).
fn mib(bytes: u64) -> String {
    format!("{}", (bytes + (1 << 19)) >> 20)
}

pub fn cluster(view: &ClusterView) -> String {
    // The WAL the primary's slot for each member holds back; a column only
    // when the primary reports its slots.
    let slots = view
        .members
        .iter()
        .find(|m| m.leader)
        .map(|m| m.slots.as_slice())
        .unwrap_or_default();
    let held = |name: &str| -> String {
        match slots.iter().find(|s| s.member == name) {
            Some(slot) => slot.retained_bytes.map_or("0".to_string(), mib),
            None => String::new(),
        }
    };
    let mut rows: Vec<Vec<String>> = view
        .members
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.host.clone(),
                role(m).to_string(),
                state(m),
                m.timeline.map_or(String::new(), |t| t.to_string()),
                lag_mb(m),
                held(&m.name),
            ]
        })
        .collect();
    // Slots whose member has no status: its agent is down, and the slot
    // (kept for `slot_retention_ms`) holds WAL meanwhile.
    for slot in slots {
        if !view.members.iter().any(|m| m.name == slot.member) {
            rows.push(vec![
                slot.member.clone(),
                String::new(),
                String::new(),
                "down (slot kept)".to_string(),
                String::new(),
                String::new(),
                held(&slot.member),
            ]);
        }
    }
    let mut headers = vec!["Member", "Host", "Role", "State", "TL", "Lag in MB"];
    if slots.is_empty() {
        for row in &mut rows {
            row.pop();
        }
    } else {
        headers.push("WAL held in MB");
    }
    let mut out = format!(
        "Cluster: {} (leader {}, term {})\n",
        view.cluster,
        view.leader.as_deref().unwrap_or("none"),
        view.term.map_or("-".to_string(), |t| t.to_string())
    );
    out += &table(&headers, &rows);
    if view.paused {
        out += " Maintenance mode: automatic failover is paused (`pgwarden ctl resume` ends it)\n";
    }
    if let Some(s) = &view.switchover {
        out += &format!(
            " Pending {}: from {} to {}{}{}\n",
            if s.from.is_some() {
                "switchover"
            } else {
                "failover"
            },
            s.from.as_deref().unwrap_or("-"),
            s.to.as_deref().unwrap_or("the best candidate"),
            s.at_ms
                .map(|at| format!(" at {}", api::time::format_rfc3339(at)))
                .unwrap_or_default(),
            if s.handoff.is_some() {
                " (handing over)"
            } else {
                ""
            }
        );
        if let Some(reason) = &s.reason {
            out += &format!(
                "   asked by {}: {reason}\n",
                s.from.as_deref().unwrap_or("-")
            );
        }
    }
    for m in &view.members {
        if let Some(line) = reach_line(m, view.leader.as_deref()) {
            out += &line;
        }
    }
    for m in view
        .members
        .iter()
        .filter(|m| !m.pending_restart.is_empty())
    {
        out += &format!(
            " Pending restart: {} ({}); `pgwarden ctl restart {}` applies it\n",
            m.name,
            m.pending_restart.join(", "),
            m.name
        );
    }
    for m in &view.members {
        for error in &m.config_errors {
            out += &format!(
                " Config error on {}: {error}; PostgreSQL ignores it now and would not start with it: \
                 fix it (`pgwarden ctl config set parameters.NAME=VALUE`, or the member's pgwarden.toml)\n",
                m.name
            );
        }
    }
    for m in &view.members {
        if let Some(failing) = m.note.strip_prefix(FAILING) {
            out += &format!(" Failing on {}: {failing}\n", m.name);
        }
    }
    for m in &view.members {
        if let Some(archive) = &m.archive {
            out += &archive_line(&m.name, archive);
        }
    }
    for removed in &view.removed {
        out += &format!(
            " Removed: {} at {} (`pgwarden ctl remove`): its agent refuses to rejoin until its data \
             directory is re-cloned (or `pgwarden ctl readmit {}`)\n",
            removed.name,
            api::time::format_rfc3339(removed.removed_ms),
            removed.name
        );
    }
    for problem in &view.problems {
        out += &format!(" Problem: {problem}\n");
    }
    out
}

/// A member whose reachability check does not pass, one line under the
/// table saying what it means for it.
fn reach_line(m: &MemberView, leader: Option<&str>) -> Option<String> {
    let reach = m.reachability.as_ref()?;
    let since = api::time::format_rfc3339(reach.since_ms);
    let leads = leader == Some(m.name.as_str());
    match reach.state {
        ReachState::Passes => None,
        ReachState::Pending => Some(format!(
            " Reachability of {}: no check has finished yet; {}\n",
            m.name,
            if leads {
                "it keeps leading"
            } else {
                "it is no failover candidate nor switchover target until one passes"
            }
        )),
        ReachState::Fails => Some(format!(
            " Reachability of {}: FAILING since {since}: {}; {}\n",
            m.name,
            reach.detail,
            if leads {
                "it hands over to a caught-up standby whose check passes once it has failed for \
                 reachability_grace_ms, and stays if none passes"
            } else {
                "it is no failover candidate nor switchover target while it fails"
            }
        )),
    }
}

/// A primary's WAL archiving, one line under the table.
fn archive_line(member: &str, a: &ArchiveHealth) -> String {
    let waiting = format!(
        "{} segment{} ({} MiB) waiting",
        a.waiting,
        if a.waiting == 1 { "" } else { "s" },
        a.waiting_bytes / (1024 * 1024)
    );
    let last = match (&a.last_archived_wal, a.last_archived_ms) {
        (Some(wal), Some(ms)) => format!("last {wal} at {}", api::time::format_rfc3339(ms)),
        _ => "nothing archived yet".to_string(),
    };
    if a.failing {
        format!(
            " Archive on {member}: FAILING: {} could not be archived at {} ({} failures); {waiting}, \
             and pg_wal grows until archiving works again: check the repository (reachable, \
             writable, not full) and the `pgwarden wal push` errors in PostgreSQL's log; {last}\n",
            a.last_failed_wal.as_deref().unwrap_or("a segment"),
            a.last_failed_ms
                .map(api::time::format_rfc3339)
                .unwrap_or_default(),
            a.failed_count,
        )
    } else {
        format!(" Archive on {member}: ok, {last}, {waiting}\n")
    }
}

pub fn history(entries: &[HistoryEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.timeline.to_string(),
                pg::Lsn(e.switch_lsn).to_string(),
                e.reason.clone(),
                api::time::format_rfc3339(e.time_ms),
                e.from.clone().unwrap_or_default(),
                e.to.clone().unwrap_or_default(),
                e.duration_ms
                    .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["TL", "LSN", "Reason", "Time", "From", "To", "Took"],
        &rows,
    )
}

pub fn event(e: &Event) -> String {
    format!(
        "{} #{} {} {}: {}",
        api::time::format_rfc3339(e.time_ms),
        e.seq,
        e.member,
        e.kind,
        e.details
    )
}

#[cfg(test)]
mod tests {
    use api::model::ClusterView;
    use store::cluster::{Reachability, Tags};

    use super::*;

    fn member(name: &str, role: Role, leader: bool, sync: bool, lag: Option<u64>) -> MemberView {
        MemberView {
            name: name.to_string(),
            host: "10.0.0.1:5432".to_string(),
            role,
            state: PgState::Running,
            leader,
            sync,
            streaming: role == Role::Replica,
            timeline: Some(2),
            lsn: Some(0x1_0000_0010),
            lag_bytes: lag,
            lag_ms: None,
            tags: Tags::default(),
            api_url: String::new(),
            pg_url: String::new(),
            upstream: None,
            note: String::new(),
            updated_ms: 0,
            pending_restart: Vec::new(),
            config_errors: Vec::new(),
            archive: None,
            slots: Vec::new(),
            reachability: None,
        }
    }

    #[test]
    fn archive_health_under_the_table() {
        let mut healthy = ArchiveHealth {
            waiting: 1,
            waiting_bytes: 16 << 20,
            last_archived_wal: Some("000000020000000000000005".into()),
            last_archived_ms: Some(0),
            ..Default::default()
        };
        assert_eq!(
            archive_line("db1", &healthy),
            " Archive on db1: ok, last 000000020000000000000005 at 1970-01-01T00:00:00Z, \
             1 segment (16 MiB) waiting\n"
        );
        healthy.failing = true;
        healthy.failed_count = 3;
        healthy.last_failed_wal = Some("000000020000000000000006".into());
        let failing = archive_line("db1", &healthy);
        assert!(
            failing.starts_with(
                " Archive on db1: FAILING: 000000020000000000000006 could not be archived"
            ),
            "{failing}"
        );
        assert!(failing.contains("(3 failures)"), "{failing}");
        assert!(failing.contains("check the repository"), "{failing}");
    }

    #[test]
    fn the_member_table() {
        let mut view = ClusterView {
            cluster: "main".to_string(),
            revision: 9,
            leader: Some("db1".to_string()),
            term: Some(7),
            sync: vec!["db2".to_string()],
            paused: true,
            switchover: None,
            members: vec![
                member("db1", Role::Primary, true, false, None),
                member("db2", Role::Replica, false, true, Some(0)),
                member("db3", Role::Replica, false, false, Some(3 << 20)),
            ],
            problems: vec![],
            removed: vec![],
        };
        let text = cluster(&view);
        assert!(
            text.starts_with("Cluster: main (leader db1, term 7)\n+--------+"),
            "{text}"
        );
        assert!(
            text.contains("| Member | Host          | Role         | State     | TL | Lag in MB |"),
            "{text}"
        );
        assert!(
            text.contains("| db1    | 10.0.0.1:5432 | Leader       | running   | 2  |           |"),
            "{text}"
        );
        assert!(
            text.contains("| db2    | 10.0.0.1:5432 | Sync Standby | streaming | 2  | 0         |"),
            "{text}"
        );
        assert!(
            text.contains("| db3    | 10.0.0.1:5432 | Replica      | streaming | 2  | 3         |"),
            "{text}"
        );
        assert!(text.contains("Maintenance mode"), "{text}");
        assert!(!text.contains("Pending restart"), "{text}");
        assert!(!text.contains("Failing"), "{text}");

        // An action that keeps failing: the state says so, its error is
        // under the table.
        let mut failing = view.clone();
        failing.members[2].role = Role::Unknown;
        failing.members[2].state = PgState::Stopped;
        failing.members[2].note =
            "FAILING: initdb failed 5 times in a row, next attempt in 7.5 s: \
                                   Permission denied (was: initialising the cluster (initdb))"
                .into();
        let text = cluster(&failing);
        assert!(
            text.contains("| Unknown      | stopped, failing |"),
            "{text}"
        );
        assert!(
            text.contains(" Failing on db3: initdb failed 5 times in a row, next attempt in 7.5 s: Permission denied"),
            "{text}"
        );

        view.members[2].pending_restart = vec!["shared_buffers".into(), "wal_buffers".into()];
        view.members[1].config_errors = vec!["work_mem: setting could not be applied".into()];
        assert!(
            cluster(&view).contains(
                " Config error on db2: work_mem: setting could not be applied; PostgreSQL ignores it now"
            ),
            "{}",
            cluster(&view)
        );
        assert!(
            cluster(&view).contains(
                " Pending restart: db3 (shared_buffers, wal_buffers); `pgwarden ctl restart db3` applies it\n"
            ),
            "{}",
            cluster(&view)
        );
    }

    #[test]
    fn the_wal_each_slot_holds_and_the_removed_members() {
        let slot = |member: &str, mb: u64| store::cluster::SlotStatus {
            member: member.to_string(),
            active: member == "db2",
            retained_bytes: Some(mb << 20),
        };
        let mut leader = member("db1", Role::Primary, true, false, None);
        leader.slots = vec![slot("db2", 0), slot("db3", 1500)];
        let view = ClusterView {
            cluster: "main".to_string(),
            revision: 9,
            leader: Some("db1".to_string()),
            term: Some(7),
            sync: vec![],
            paused: false,
            switchover: None,
            members: vec![leader, member("db2", Role::Replica, false, false, Some(0))],
            problems: vec![],
            removed: vec![store::cluster::RemovedMember {
                name: "db4".into(),
                system_identifier: None,
                timeline: Some(1),
                removed_ms: 0,
                by: "db1".into(),
            }],
        };
        let text = cluster(&view);
        assert!(
            text.contains("| TL | Lag in MB | WAL held in MB |"),
            "{text}"
        );
        assert!(
            text.contains("| db2    | 10.0.0.1:5432 | Replica | streaming        | 2  | 0         | 0              |"),
            "{text}"
        );
        assert!(
            text.contains("| db3    |               |         | down (slot kept) |    |           | 1500           |"),
            "{text}"
        );
        assert!(
            text.contains(
                " Removed: db4 at 1970-01-01T00:00:00Z (`pgwarden ctl remove`): its agent refuses"
            ),
            "{text}"
        );
    }

    #[test]
    fn members_whose_reachability_check_does_not_pass_are_named_with_what_it_means() {
        let mut view = ClusterView {
            cluster: "main".to_string(),
            revision: 9,
            leader: Some("db1".to_string()),
            term: Some(7),
            sync: vec![],
            paused: false,
            switchover: None,
            members: vec![
                member("db1", Role::Primary, true, false, None),
                member("db2", Role::Replica, false, false, Some(0)),
                member("db3", Role::Replica, false, false, Some(0)),
            ],
            problems: vec![],
            removed: vec![],
        };
        let failing = |detail: &str| {
            Some(Reachability {
                state: ReachState::Fails,
                detail: detail.into(),
                since_ms: 0,
            })
        };
        view.members[0].reachability =
            failing("0 of 1 targets answered, 1 needed; 10.1.0.1:80: timed out");
        view.members[1].reachability =
            failing("0 of 1 targets answered, 1 needed; 10.1.0.1:80: refused");
        view.members[2].reachability = Some(Reachability {
            state: ReachState::Passes,
            ..Reachability::default()
        });
        let text = cluster(&view);
        assert!(
            text.contains(" Reachability of db1: FAILING since 1970-01-01T00:00:00Z: 0 of 1 targets answered, 1 needed; 10.1.0.1:80: timed out; it hands over"),
            "{text}"
        );
        assert!(
            text.contains("; it is no failover candidate nor switchover target while it fails\n"),
            "{text}"
        );
        assert!(!text.contains("Reachability of db3"), "{text}");
    }

    #[test]
    fn events_and_history_show_utc_times() {
        let at_ms = api::time::parse_rfc3339("2026-11-21T22:18:09.250+02:00").unwrap();
        let e = Event {
            seq: 7,
            time_ms: at_ms,
            member: "db2".to_string(),
            kind: "promoted".to_string(),
            details: "timeline 3".to_string(),
        };
        assert_eq!(
            event(&e),
            "2026-11-21T20:18:09Z #7 db2 promoted: timeline 3"
        );
        let entry = HistoryEntry {
            timeline: 2,
            switch_lsn: 0x300_0000,
            reason: "failover".to_string(),
            time_ms: at_ms,
            from: Some("db1".to_string()),
            to: Some("db2".to_string()),
            duration_ms: Some(2500),
            removed: None,
        };
        let text = history(&[entry]);
        assert!(text.contains("2026-11-21T20:18:09Z"), "{text}");
    }

    #[test]
    fn history_shows_wal_positions_as_postgresql_writes_them() {
        let entry = HistoryEntry {
            timeline: 3,
            switch_lsn: 0x516_CD60,
            reason: "switchover from db2".to_string(),
            time_ms: 0,
            from: Some("db2".to_string()),
            to: Some("db1".to_string()),
            duration_ms: Some(120),
            removed: None,
        };
        let text = history(&[entry]);
        assert!(
            text.contains("| 3  | 0/516CD60 | switchover from db2 |"),
            "{text}"
        );
    }
}
