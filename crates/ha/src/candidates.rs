//! Who may become primary when there is no leader, and in which order.

use std::collections::BTreeMap;
use std::fmt;

use crate::observation::{Cluster, MemberView};

/// A member that may take over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub lsn: u64,
    pub priority: u32,
}

/// Why a member may not take over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exclusion {
    Witness,
    NoFailover,
    NotRunning,
    NoPosition,
    /// It is on an older timeline than the cluster: it missed a promotion.
    OldTimeline {
        timeline: u32,
        latest: u32,
    },
    /// Further behind the last published primary position than allowed.
    TooFarBehind {
        lag: u64,
        limit: u64,
    },
    /// Synchronous mode and not in the synchronous set, so it may lack
    /// acknowledged commits.
    NotSynchronous,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::Witness => write!(f, "a witness has no PostgreSQL"),
            Exclusion::NoFailover => write!(f, "tagged nofailover"),
            Exclusion::NotRunning => write!(f, "PostgreSQL is not running"),
            Exclusion::NoPosition => write!(f, "it has published no WAL position"),
            Exclusion::OldTimeline { timeline, latest } => {
                write!(f, "on timeline {timeline}, the cluster is on {latest}")
            }
            Exclusion::TooFarBehind { lag, limit } => {
                write!(
                    f,
                    "{lag} bytes behind the last primary position (limit {limit})"
                )
            }
            Exclusion::NotSynchronous => write!(
                f,
                "not in the synchronous set, it may lack acknowledged commits"
            ),
        }
    }
}

/// Ranks the members that may take over, best first (most advanced WAL
/// position, then priority, then name), and says why the others may not.
pub fn rank_candidates(cluster: &Cluster) -> (Vec<Candidate>, BTreeMap<String, Exclusion>) {
    let mut candidates = Vec::new();
    let mut excluded = BTreeMap::new();
    for (name, member) in &cluster.members {
        match eligibility(cluster, name, member) {
            Ok(lsn) => candidates.push(Candidate {
                name: name.clone(),
                lsn,
                priority: member.priority,
            }),
            Err(why) => {
                excluded.insert(name.clone(), why);
            }
        }
    }
    candidates.sort_by(|a, b| {
        b.lsn
            .cmp(&a.lsn)
            .then(b.priority.cmp(&a.priority))
            .then(a.name.cmp(&b.name))
    });
    (candidates, excluded)
}

fn eligibility(cluster: &Cluster, name: &str, member: &MemberView) -> Result<u64, Exclusion> {
    let settings = &cluster.settings;
    if member.witness {
        return Err(Exclusion::Witness);
    }
    if member.nofailover {
        return Err(Exclusion::NoFailover);
    }
    if !member.running {
        return Err(Exclusion::NotRunning);
    }
    let lsn = member.lsn.ok_or(Exclusion::NoPosition)?;
    let timeline = member.timeline.unwrap_or(0);
    if timeline < cluster.latest_timeline {
        return Err(Exclusion::OldTimeline {
            timeline,
            latest: cluster.latest_timeline,
        });
    }
    // A primary that lost its key still has everything it acknowledged.
    if member.primary {
        return Ok(lsn);
    }
    if let Some(last) = cluster.last_primary_lsn {
        let lag = last.saturating_sub(lsn);
        if lag > settings.maximum_lag_on_failover {
            return Err(Exclusion::TooFarBehind {
                lag,
                limit: settings.maximum_lag_on_failover,
            });
        }
    }
    if settings.synchronous_mode {
        // The primary that published the set holds every commit it
        // acknowledged, like the members it names; with no set published
        // yet, synchronous replication never took effect (nothing was
        // acknowledged under it) and the lag limit alone decides.
        let allowed = cluster
            .sync
            .as_ref()
            .is_none_or(|sync| sync.leader == name || sync.members.contains(name));
        if !allowed {
            return Err(Exclusion::NotSynchronous);
        }
    }
    Ok(lsn)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::observation::{Settings, SyncSet};

    fn standby(lsn: u64, priority: u32) -> MemberView {
        MemberView {
            running: true,
            timeline: Some(2),
            lsn: Some(lsn),
            priority,
            streaming: true,
            ..MemberView::default()
        }
    }

    fn cluster(members: &[(&str, MemberView)]) -> Cluster {
        Cluster {
            members: members
                .iter()
                .map(|(n, m)| (n.to_string(), m.clone()))
                .collect(),
            latest_timeline: 2,
            last_primary_lsn: Some(1_000),
            switchover: None,
            settings: Settings {
                maximum_lag_on_failover: 100,
                ..Settings::default()
            },
            ..Cluster::default()
        }
    }

    fn names(candidates: &[Candidate]) -> Vec<&str> {
        candidates.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn the_most_advanced_wins_then_priority_then_name() {
        let (ranked, _) = rank_candidates(&cluster(&[
            ("db1", standby(950, 100)),
            ("db2", standby(990, 100)),
            ("db3", standby(990, 200)),
            ("db4", standby(950, 100)),
        ]));
        assert_eq!(names(&ranked), ["db3", "db2", "db1", "db4"]);
    }

    #[test]
    fn members_past_the_lag_limit_are_excluded() {
        let (ranked, excluded) = rank_candidates(&cluster(&[
            ("db1", standby(899, 100)),
            ("db2", standby(900, 1)),
        ]));
        assert_eq!(names(&ranked), ["db2"]);
        assert_eq!(
            excluded["db1"],
            Exclusion::TooFarBehind {
                lag: 101,
                limit: 100
            }
        );
    }

    #[test]
    fn nofailover_witnesses_stopped_and_old_timelines_are_excluded() {
        let mut old = standby(1_000, 100);
        old.timeline = Some(1);
        let (ranked, excluded) = rank_candidates(&cluster(&[
            (
                "a",
                MemberView {
                    nofailover: true,
                    ..standby(1_000, 100)
                },
            ),
            (
                "b",
                MemberView {
                    witness: true,
                    ..MemberView::default()
                },
            ),
            (
                "c",
                MemberView {
                    running: false,
                    ..standby(1_000, 100)
                },
            ),
            ("d", old),
            ("e", standby(1_000, 100)),
        ]));
        assert_eq!(names(&ranked), ["e"]);
        assert_eq!(excluded["a"], Exclusion::NoFailover);
        assert_eq!(excluded["b"], Exclusion::Witness);
        assert_eq!(excluded["c"], Exclusion::NotRunning);
        assert_eq!(
            excluded["d"],
            Exclusion::OldTimeline {
                timeline: 1,
                latest: 2
            }
        );
    }

    #[test]
    fn synchronous_mode_admits_only_the_synchronous_set() {
        let mut cluster = cluster(&[("db2", standby(1_000, 100)), ("db3", standby(990, 100))]);
        cluster.settings.synchronous_mode = true;
        cluster.sync = Some(SyncSet {
            leader: "db1".into(),
            members: BTreeSet::from(["db3".to_string()]),
        });
        let (ranked, excluded) = rank_candidates(&cluster);
        assert_eq!(
            names(&ranked),
            ["db3"],
            "db2 is ahead but may lack acknowledged commits"
        );
        assert_eq!(excluded["db2"], Exclusion::NotSynchronous);
    }
}
