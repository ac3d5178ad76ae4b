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
        let reported = status
            .term
            .map_or("no term".to_string(), |term| format!("term {term}"));
        return Some(format!(
            "holds the leader key of term {} but its status reports {reported}",
            leader.term
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
