//! From the cluster's records to routes: pure, no I/O, no clock.
//!
//! The read-write route is the member that holds the leader key *and*
//! publishes itself as a running primary in that key's term (safety rule 2
//! of DESIGN.md): a member that still says "primary" after losing the key,
//! or a new leader that has not finished promoting, gets no writes.

use std::collections::BTreeMap;
use std::time::Duration;

use store::cluster::{MemberStatus, PgState, Role};

/// Where one member's PostgreSQL listens, from its `pg_url`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    pub member: String,
    /// `host:port`, resolved at connect time.
    pub addr: String,
}

/// The leader key as read: who holds it and its term (create revision).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderKey {
    pub member: String,
    pub term: u64,
}

/// What the operator configured about reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadPolicy {
    pub max_lag_bytes: Option<u64>,
    pub max_lag: Option<Duration>,
    pub fallback_to_primary: bool,
    /// Members not listed weigh 1; weight 0 takes no reads.
    pub weights: BTreeMap<String, u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Primary {
    pub backend: Backend,
    pub term: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standby {
    pub backend: Backend,
    pub weight: u32,
}

/// The routes computed from one view of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    pub primary: Option<Primary>,
    /// Standbys that qualify for reads, by member name.
    pub standbys: Vec<Standby>,
    /// Read-only connections go to the primary (no standby qualifies and the
    /// policy allows it).
    pub reads_to_primary: bool,
    /// Why each member that gets no connections is left out, for logs.
    pub excluded: BTreeMap<String, String>,
}

impl Routes {
    /// Whether both send connections to the same places. The reasons for
    /// exclusions are left out: a lagging standby's lag changes every
    /// heartbeat without changing where anything goes.
    pub fn same_routing(&self, other: &Routes) -> bool {
        self.primary == other.primary
            && self.standbys == other.standbys
            && self.reads_to_primary == other.reads_to_primary
    }

    /// Whether a read-only connection to `member` may stay open.
    pub fn serves_reads(&self, member: &str) -> bool {
        self.standbys.iter().any(|s| s.backend.member == member)
            || (self.reads_to_primary
                && self
                    .primary
                    .as_ref()
                    .is_some_and(|p| p.backend.member == member))
    }
}

/// Computes the routes. `members` are the decodable member statuses (a bad
/// record only hides its own member).
pub fn compute(
    leader: Option<&LeaderKey>,
    members: &[MemberStatus],
    policy: &ReadPolicy,
) -> Routes {
    let mut routes = Routes::default();
    for status in members {
        let backend = match backend_of(status) {
            Ok(backend) => backend,
            Err(why) => {
                routes.excluded.insert(status.name.clone(), why);
                continue;
            }
        };
        if let Some(leader) = leader.filter(|l| l.member == status.name) {
            match primary_problem(status, leader) {
                None => {
                    routes.primary = Some(Primary {
                        backend,
                        term: leader.term,
                    })
                }
                Some(why) => {
                    routes.excluded.insert(status.name.clone(), why);
                }
            }
            continue;
        }
        let weight = policy.weights.get(&status.name).copied().unwrap_or(1);
        match standby_problem(status, policy, weight) {
            None => routes.standbys.push(Standby { backend, weight }),
            Some(why) => {
                routes.excluded.insert(status.name.clone(), why);
            }
        }
    }
    routes.standbys.sort_by(|a, b| a.backend.cmp(&b.backend));
    routes.reads_to_primary =
        routes.standbys.is_empty() && policy.fallback_to_primary && routes.primary.is_some();
    routes
}

fn primary_problem(status: &MemberStatus, leader: &LeaderKey) -> Option<String> {
    if status.role != Role::Primary || status.state != PgState::Running {
        return Some(format!(
            "holds the leader key but reports {:?}/{:?}, not a running primary",
            status.role, status.state
        ));
    }
    if status.term != Some(leader.term) {
        return Some(format!(
            "holds the leader key of term {} but reports term {:?}",
            leader.term, status.term
        ));
    }
    None
}

fn standby_problem(status: &MemberStatus, policy: &ReadPolicy, weight: u32) -> Option<String> {
    if status.role != Role::Replica || status.state != PgState::Running {
        return Some(format!(
            "is {:?}/{:?}, not a running standby",
            status.role, status.state
        ));
    }
    if !status.streaming {
        return Some("is not streaming".to_string());
    }
    if status.tags.noloadbalance {
        return Some("is tagged noloadbalance".to_string());
    }
    if weight == 0 {
        return Some("has weight 0".to_string());
    }
    if let Some(limit) = policy.max_lag_bytes {
        match status.lag_bytes {
            Some(lag) if lag <= limit => {}
            Some(lag) => return Some(format!("lags {lag} bytes, over the limit of {limit}")),
            None => return Some("publishes no lag in bytes".to_string()),
        }
    }
    if let Some(limit) = policy.max_lag {
        let limit_ms = limit.as_millis() as u64;
        match status.lag_ms {
            Some(lag) if lag <= limit_ms => {}
            Some(lag) => return Some(format!("lags {lag} ms, over the limit of {limit_ms} ms")),
            None => return Some("publishes no lag in time".to_string()),
        }
    }
    None
}

/// Where a member's connections go, from its `pg_url`.
pub fn backend_of(status: &MemberStatus) -> Result<Backend, String> {
    let address = status.pg_address().map_err(|e| format!("has an {e}"))?;
    Ok(Backend {
        member: status.name.clone(),
        addr: address.to_string(),
    })
}

/// Weighted least connections: the standby whose open connections per unit
/// of weight would be lowest after taking one more; ties go to the first
/// (callers rotate the start to spread ties). `open[i]` belongs to
/// `standbys[i]`.
pub fn pick_standby(standbys: &[Standby], open: &[u64], start: usize) -> Option<usize> {
    let n = standbys.len();
    let mut best: Option<(usize, u64, u64)> = None;
    for k in 0..n {
        let i = (start + k) % n;
        let weight = u64::from(standbys[i].weight.max(1));
        let load = open.get(i).copied().unwrap_or(0) + 1;
        // load/weight < best_load/best_weight, without division.
        let better = match best {
            None => true,
            Some((_, best_load, best_weight)) => load * best_weight < best_load * weight,
        };
        if better {
            best = Some((i, load, weight));
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use store::cluster::Tags;

    use super::*;

    fn status(name: &str, role: Role, port: u16) -> MemberStatus {
        MemberStatus {
            name: name.to_string(),
            role,
            state: PgState::Running,
            timeline: Some(1),
            flush_lsn: None,
            receive_lsn: None,
            replay_lsn: None,
            lag_bytes: Some(0),
            lag_ms: Some(0),
            api_url: String::new(),
            pg_url: format!("postgres://127.0.0.1:{port}/postgres"),
            tags: Tags::default(),
            updated_ms: 0,
            upstream: None,
            streaming: role == Role::Replica,
            term: (role == Role::Primary).then_some(7),
            note: String::new(),
        }
    }

    fn leader(member: &str) -> LeaderKey {
        LeaderKey {
            member: member.to_string(),
            term: 7,
        }
    }

    fn cluster() -> Vec<MemberStatus> {
        vec![
            status("db1", Role::Primary, 5001),
            status("db2", Role::Replica, 5002),
            status("db3", Role::Replica, 5003),
        ]
    }

    fn names(routes: &Routes) -> Vec<&str> {
        routes
            .standbys
            .iter()
            .map(|s| s.backend.member.as_str())
            .collect()
    }

    #[test]
    fn writes_go_to_the_leader_that_reports_primary_in_its_term() {
        let routes = compute(Some(&leader("db1")), &cluster(), &ReadPolicy::default());
        let primary = routes.primary.unwrap();
        assert_eq!(primary.backend.addr, "127.0.0.1:5001");
        assert_eq!(primary.term, 7);
        assert_eq!(
            names(&compute(None, &cluster(), &ReadPolicy::default())),
            ["db2", "db3"]
        );
    }

    #[test]
    fn no_writes_without_the_key_or_in_another_term_or_while_promoting() {
        let policy = ReadPolicy::default();
        assert_eq!(compute(None, &cluster(), &policy).primary, None);

        let mut stale = cluster();
        stale[0].term = Some(6);
        let routes = compute(Some(&leader("db1")), &stale, &policy);
        assert_eq!(routes.primary, None);
        assert!(routes.excluded["db1"].contains("term 7"), "{routes:?}");

        let mut promoting = cluster();
        promoting[1].state = PgState::Promoting;
        promoting[1].term = Some(7);
        assert_eq!(
            compute(Some(&leader("db2")), &promoting, &policy).primary,
            None
        );

        // A demoted member still claiming primary without the key: no writes.
        let routes = compute(Some(&leader("db2")), &cluster(), &policy);
        assert_eq!(routes.primary, None);
        assert!(routes.excluded.contains_key("db2"));
    }

    #[test]
    fn reads_skip_lagging_stopped_unstreaming_and_noloadbalance_standbys() {
        let mut members = cluster();
        members.push(status("db4", Role::Replica, 5004));
        members.push(status("db5", Role::Replica, 5005));
        members.push(status("db6", Role::Replica, 5006));
        members[1].lag_bytes = Some(2_000_000);
        members[2].streaming = false;
        members[3].tags.noloadbalance = true;
        members[4].state = PgState::Stopped;
        let policy = ReadPolicy {
            max_lag_bytes: Some(1_000_000),
            ..ReadPolicy::default()
        };
        let routes = compute(Some(&leader("db1")), &members, &policy);
        assert_eq!(names(&routes), ["db6"]);
        assert!(routes.excluded["db2"].contains("over the limit"));
        assert!(routes.excluded["db3"].contains("not streaming"));
        assert!(routes.excluded["db4"].contains("noloadbalance"));
        assert!(routes.serves_reads("db6"));
        assert!(!routes.serves_reads("db1"));
    }

    #[test]
    fn an_unknown_time_lag_counts_as_too_far_behind_only_with_a_time_limit() {
        let mut members = cluster();
        members[1].lag_ms = None;
        members[2].lag_ms = Some(5_000);
        let no_limit = compute(Some(&leader("db1")), &members, &ReadPolicy::default());
        assert_eq!(names(&no_limit), ["db2", "db3"]);
        let policy = ReadPolicy {
            max_lag: Some(Duration::from_secs(1)),
            fallback_to_primary: true,
            ..ReadPolicy::default()
        };
        let routes = compute(Some(&leader("db1")), &members, &policy);
        assert!(routes.standbys.is_empty());
        assert!(routes.reads_to_primary);
        assert!(routes.serves_reads("db1"));
    }

    #[test]
    fn reads_fall_back_to_the_primary_only_when_allowed() {
        let members = vec![status("db1", Role::Primary, 5001)];
        let policy = ReadPolicy::default();
        assert!(!compute(Some(&leader("db1")), &members, &policy).reads_to_primary);
        let policy = ReadPolicy {
            fallback_to_primary: true,
            ..ReadPolicy::default()
        };
        assert!(compute(Some(&leader("db1")), &members, &policy).reads_to_primary);
        // No primary: nothing to fall back to.
        assert!(!compute(None, &members, &policy).reads_to_primary);
    }

    #[test]
    fn a_changing_lag_of_an_excluded_standby_changes_no_route() {
        let policy = ReadPolicy {
            max_lag_bytes: Some(100),
            ..ReadPolicy::default()
        };
        let mut members = cluster();
        members[2].lag_bytes = Some(1_000);
        let before = compute(Some(&leader("db1")), &members, &policy);
        members[2].lag_bytes = Some(2_000);
        let after = compute(Some(&leader("db1")), &members, &policy);
        assert_ne!(before, after);
        assert!(before.same_routing(&after));
        members[1].lag_bytes = Some(2_000);
        let worse = compute(Some(&leader("db1")), &members, &policy);
        assert!(!before.same_routing(&worse));
    }

    #[test]
    fn weights_apply_and_zero_excludes() {
        let policy = ReadPolicy {
            weights: BTreeMap::from([("db2".to_string(), 3), ("db3".to_string(), 0)]),
            ..ReadPolicy::default()
        };
        let routes = compute(Some(&leader("db1")), &cluster(), &policy);
        assert_eq!(names(&routes), ["db2"]);
        assert_eq!(routes.standbys[0].weight, 3);
    }

    #[test]
    fn least_connections_by_weight() {
        let standby = |name: &str, weight| Standby {
            backend: Backend {
                member: name.to_string(),
                addr: String::new(),
            },
            weight,
        };
        let standbys = [standby("a", 1), standby("b", 3)];
        assert_eq!(pick_standby(&standbys, &[0, 0], 0), Some(1));
        assert_eq!(pick_standby(&standbys, &[0, 1], 0), Some(1));
        // Equal load per weight: the scan's first.
        assert_eq!(pick_standby(&standbys, &[0, 2], 0), Some(0));
        // b takes three for every one of a's.
        assert_eq!(pick_standby(&standbys, &[1, 3], 0), Some(1));
        assert_eq!(pick_standby(&standbys, &[2, 5], 0), Some(1));
        assert_eq!(pick_standby(&standbys, &[1, 6], 0), Some(0));
        assert_eq!(pick_standby(&[], &[], 0), None);
        // Ties rotate with the start.
        let even = [standby("a", 1), standby("b", 1)];
        assert_eq!(pick_standby(&even, &[0, 0], 1), Some(1));
    }

    #[test]
    fn pg_urls_parse_or_exclude_their_member() {
        let mut s = status("db1", Role::Replica, 1);
        for (url, addr) in [
            ("postgres://10.0.0.2:5433/postgres", "10.0.0.2:5433"),
            (
                "postgresql://u:p@db.example:6000/x?sslmode=off",
                "db.example:6000",
            ),
            ("postgres://db.example", "db.example:5432"),
            ("postgres://[::1]:5432/postgres", "[::1]:5432"),
        ] {
            s.pg_url = url.to_string();
            assert_eq!(backend_of(&s).unwrap().addr, addr, "{url}");
        }
        for url in [
            "http://h:1",
            "postgres://:5432",
            "postgres://h:0",
            "postgres://h:x",
        ] {
            s.pg_url = url.to_string();
            assert!(backend_of(&s).is_err(), "{url}");
        }
        let mut members = cluster();
        members[1].pg_url = "garbage".to_string();
        let routes = compute(Some(&leader("db1")), &members, &ReadPolicy::default());
        assert_eq!(names(&routes), ["db3"]);
        assert!(routes.excluded["db2"].contains("pg_url"));
    }
}
