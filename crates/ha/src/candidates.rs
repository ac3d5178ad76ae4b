//! Who may take over — in a failover, a switchover or a manual failover —
//! and in which order. The one definition the leader, the candidates and
//! the API's admission all use.

use std::collections::BTreeMap;
use std::fmt;

use crate::observation::{Cluster, MemberView, Reach, SyncSet};

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
    /// Quorum commit: it has not yet heard from enough members of the
    /// synchronous set to know that none holds a commit it lacks.
    QuorumNotHeard {
        heard: usize,
        need: usize,
    },
    /// It holds the leader key already.
    Leads,
    /// It does not run as a standby.
    NotStandby,
    /// A switchover target must stream from the leader.
    NotStreamingFrom {
        leader: String,
    },
    /// On a timeline the leader is not on (and not catching up to it).
    OtherTimeline {
        timeline: Option<u32>,
        leader: u32,
    },
    /// Its reachability check fails (or has not finished yet): the
    /// network its clients live on may not reach it.
    Unreachable {
        detail: String,
    },
}

impl Exclusion {
    /// What an operator can do about it, for `member`.
    pub fn remedy(&self, member: &str) -> String {
        match self {
            Exclusion::Witness | Exclusion::Leads => "pick another member".to_string(),
            Exclusion::NoFailover => "pick another member or remove the tag".to_string(),
            Exclusion::NotRunning | Exclusion::NoPosition => {
                format!("pick a running member, or start {member} first")
            }
            Exclusion::NotStandby
            | Exclusion::NotStreamingFrom { .. }
            | Exclusion::OldTimeline { .. }
            | Exclusion::OtherTimeline { .. } => format!(
                "wait until it streams from the leader, or run `pgwarden ctl reinit {member}`"
            ),
            Exclusion::TooFarBehind { .. } | Exclusion::NotSynchronous => {
                "wait until it has caught up, or pick another member".to_string()
            }
            Exclusion::QuorumNotHeard { .. } => {
                "wait until the other members of the synchronous set run and report, or start them"
                    .to_string()
            }
            Exclusion::Unreachable { .. } => format!(
                "pick another member, or repair the network between {member} and its clients \
                 (the targets of its [member] reachability) and wait until its check passes"
            ),
        }
    }
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
            Exclusion::QuorumNotHeard { heard, need } => write!(
                f,
                "it knows the final position of {heard} of the {need} members of the synchronous set it needs \
                 (each must have stopped receiving from the old primary and be no further ahead), \
                 so another may hold commits it lacks"
            ),
            Exclusion::Leads => write!(f, "it is the leader already"),
            Exclusion::NotStandby => write!(f, "it does not run as a standby"),
            Exclusion::NotStreamingFrom { leader } => {
                write!(f, "it does not stream from the leader {leader}")
            }
            Exclusion::OtherTimeline { timeline, leader } => match timeline {
                Some(timeline) => write!(f, "on timeline {timeline}, the leader on {leader}"),
                None => write!(f, "it has published no timeline, the leader is on {leader}"),
            },
            Exclusion::Unreachable { detail } => {
                write!(f, "its reachability check fails ({detail})")
            }
        }
    }
}

/// Ranks the members that may take over, best first (most advanced WAL
/// position, then priority, then name), and says why the others may not.
pub fn rank_candidates(cluster: &Cluster) -> (Vec<Candidate>, BTreeMap<String, Exclusion>) {
    let mut candidates = Vec::new();
    let mut excluded = BTreeMap::new();
    for (name, member) in &cluster.members {
        match failover_candidate(cluster, name, member) {
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

/// What any member that is to take over must be, however it is asked:
/// a PostgreSQL, allowed to lead, running.
pub fn able_to_lead(member: &MemberView) -> Result<(), Exclusion> {
    if member.witness {
        return Err(Exclusion::Witness);
    }
    if member.nofailover {
        return Err(Exclusion::NoFailover);
    }
    if !member.running {
        return Err(Exclusion::NotRunning);
    }
    Ok(())
}

/// Whether the network its clients live on reaches `member`: its
/// reachability check passes, or it has none. A member whose check has
/// not finished yet is not trusted with the clients either.
pub fn reaches_clients(member: &MemberView) -> Result<(), Exclusion> {
    match &member.reach {
        Reach::Unchecked | Reach::Passes => Ok(()),
        Reach::Pending => Err(Exclusion::Unreachable {
            detail: "no check has finished yet".to_string(),
        }),
        Reach::Fails { detail } => Err(Exclusion::Unreachable {
            detail: detail.clone(),
        }),
    }
}

/// Whether `name` may take over with no leader (a failover), and from
/// which WAL position.
pub fn failover_candidate(
    cluster: &Cluster,
    name: &str,
    member: &MemberView,
) -> Result<u64, Exclusion> {
    let settings = &cluster.settings;
    able_to_lead(member)?;
    let lsn = member.lsn.ok_or(Exclusion::NoPosition)?;
    let timeline = member.timeline.unwrap_or(0);
    if timeline < cluster.latest_timeline {
        return Err(Exclusion::OldTimeline {
            timeline,
            latest: cluster.latest_timeline,
        });
    }
    // A primary that lost its key still has everything it acknowledged;
    // blind to its clients or not, it beats no primary (a standby that
    // passes takes over from it later, by a switchover).
    if member.primary {
        return Ok(lsn);
    }
    reaches_clients(member)?;
    if let Some(last) = cluster.last_primary_lsn {
        let lag = last.saturating_sub(lsn);
        if lag > settings.maximum_lag_on_failover {
            return Err(Exclusion::TooFarBehind {
                lag,
                limit: settings.maximum_lag_on_failover,
            });
        }
    }
    if settings.synchronous_mode.on() {
        // The primary that published the set holds every commit it
        // acknowledged; with no set published yet, synchronous replication
        // never took effect (nothing was acknowledged under it) and the lag
        // limit alone decides.
        if let Some(sync) = cluster.sync.as_ref().filter(|s| s.leader != name) {
            if !sync.members.contains(name) || sync.quorum == 0 {
                return Err(Exclusion::NotSynchronous);
            }
            let heard = final_positions_heard(cluster, sync, name, lsn);
            let need = sync.must_hear();
            if heard < need {
                return Err(Exclusion::QuorumNotHeard { heard, need });
            }
        }
    }
    Ok(lsn)
}

/// How many members of the synchronous set `candidate` (at `lsn`) knows to
/// hold no commit it lacks: itself, and every member whose status says it
/// runs as a standby that receives from nobody (it will get nothing more
/// from the old primary, so its position is final) at `lsn` or below.
/// Each acknowledged commit lies on `sync.quorum` members, so hearing from
/// [`SyncSet::must_hear`] of them means one holds it — and the candidate
/// is at least as far.
fn final_positions_heard(cluster: &Cluster, sync: &SyncSet, candidate: &str, lsn: u64) -> usize {
    sync.members
        .iter()
        .filter(|name| {
            *name == candidate
                || cluster.members.get(*name).is_some_and(|m| {
                    m.running
                        && !m.primary
                        && !m.streaming
                        && m.upstream.is_none()
                        && m.lsn.is_some_and(|theirs| theirs <= lsn)
                })
        })
        .count()
}

/// How a standby stands as a switchover target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// It streams from the leader on its timeline: it can take over.
    Ready,
    /// It streams from the leader but has not yet replayed the switch to
    /// the leader's timeline (a member that has just handed over and
    /// rejoined): it will be ready in a moment, so it is waited for.
    CatchingUp,
}

/// Whether `name` may take over from `leader`, running on `timeline`, in a
/// planned switchover (a clean hand-over of every byte of WAL).
pub fn switchover_target(
    leader: &str,
    timeline: u32,
    name: &str,
    member: &MemberView,
) -> Result<Readiness, Exclusion> {
    if name == leader {
        return Err(Exclusion::Leads);
    }
    able_to_lead(member)?;
    if member.primary {
        return Err(Exclusion::NotStandby);
    }
    reaches_clients(member)?;
    if !member.streaming || member.upstream.as_deref() != Some(leader) {
        return Err(Exclusion::NotStreamingFrom {
            leader: leader.to_string(),
        });
    }
    match member.timeline {
        Some(t) if t == timeline => Ok(Readiness::Ready),
        Some(t) if t < timeline => Ok(Readiness::CatchingUp),
        other => Err(Exclusion::OtherTimeline {
            timeline: other,
            leader: timeline,
        }),
    }
}

/// The members that may take over from `leader` in a switchover, best
/// first: ready before catching up, then the most advanced, then priority,
/// then name.
pub fn switchover_targets(
    leader: &str,
    timeline: u32,
    members: &BTreeMap<String, MemberView>,
) -> Vec<(String, Readiness)> {
    let mut targets: Vec<(&String, &MemberView, Readiness)> = members
        .iter()
        .filter_map(|(name, view)| {
            let readiness = switchover_target(leader, timeline, name, view).ok()?;
            Some((name, view, readiness))
        })
        .collect();
    targets.sort_by(|(an, a, ar), (bn, b, br)| {
        (*ar == Readiness::CatchingUp)
            .cmp(&(*br == Readiness::CatchingUp))
            .then(b.lsn.cmp(&a.lsn))
            .then(b.priority.cmp(&a.priority))
            .then(an.cmp(bn))
    });
    targets
        .into_iter()
        .map(|(name, _, readiness)| (name.clone(), readiness))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::observation::{Settings, SyncMode, SyncSet};

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
    fn a_standby_whose_reachability_check_fails_or_is_pending_is_excluded() {
        let failing = MemberView {
            reach: Reach::Fails {
                detail: "0 of 1 targets answered".into(),
            },
            ..standby(1_000, 100)
        };
        let pending = MemberView {
            reach: Reach::Pending,
            ..standby(1_000, 100)
        };
        let passing = MemberView {
            reach: Reach::Passes,
            ..standby(900, 1)
        };
        let (ranked, excluded) = rank_candidates(&cluster(&[
            ("db1", failing.clone()),
            ("db2", pending),
            ("db3", passing),
            ("db4", standby(950, 1)),
        ]));
        assert_eq!(names(&ranked), ["db4", "db3"], "no check counts as passing");
        assert_eq!(
            excluded["db1"].to_string(),
            "its reachability check fails (0 of 1 targets answered)"
        );
        assert!(matches!(excluded["db2"], Exclusion::Unreachable { .. }));
        assert!(excluded["db1"]
            .remedy("db1")
            .contains("[member] reachability"));
        let mut primary = failing;
        primary.primary = true;
        let (ranked, _) = rank_candidates(&cluster(&[("db1", primary)]));
        assert_eq!(names(&ranked), ["db1"], "a blind primary beats none");
    }

    #[test]
    fn synchronous_mode_admits_only_the_synchronous_set() {
        let mut cluster = cluster(&[("db2", standby(1_000, 100)), ("db3", standby(990, 100))]);
        cluster.settings.synchronous_mode = SyncMode::First;
        cluster.sync = Some(SyncSet {
            leader: "db1".into(),
            members: BTreeSet::from(["db3".to_string()]),
            quorum: 1,
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
