//! Whether a member may be retired (`pgwarden ctl remove`), and how. The
//! API admits a removal with these rules, and so does the member's own
//! agent when it is asked to retire itself (`--force`), so what one admits
//! the other does not refuse.

use crate::observation::Cluster;
use crate::switchover::{Refusal, RefusalKind};

/// What a removal is to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Its agent runs (its status is live) and `--force` was given: ask
    /// that agent to stop its PostgreSQL and retire itself.
    AskAgent,
    /// Record it as removed now, deleting what names it: its status (if
    /// any) and, with `clear_switchover`, a pending switchover or manual
    /// failover to it.
    Record { clear_switchover: bool },
}

/// What the removal is asked of, beside the cluster as the store shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ask {
    pub member: String,
    /// Also when its agent runs: that agent stops PostgreSQL first.
    pub force: bool,
    /// The primary keeps a replication slot for it: a member whose agent
    /// is down (no status) is known by it.
    pub has_slot: bool,
    /// Asked of the member's own agent (the second half of `--force`).
    pub by_itself: bool,
}

fn refuse(kind: RefusalKind, message: impl Into<String>) -> Refusal {
    Refusal {
        kind,
        message: message.into(),
    }
}

/// How to remove `ask.member`, or why not. `wall_ms`: now (unix ms).
pub fn admit_removal(cluster: &Cluster, ask: &Ask, wall_ms: u64) -> Result<Removal, Refusal> {
    let name = ask.member.as_str();
    if cluster.removed.contains_key(name) {
        return Err(refuse(
            RefusalKind::Conflict,
            format!(
                "{name} was already removed; its agent refuses to rejoin until its data directory is \
                 re-cloned (or `pgwarden ctl readmit {name}`)"
            ),
        ));
    }
    if cluster.leader.as_ref().is_some_and(|l| l.member == name) {
        return Err(refuse(
            RefusalKind::Conflict,
            format!(
                "{name} is the leader: switch over to another member first \
                 (`pgwarden ctl switchover --from {name}`), then remove it"
            ),
        ));
    }
    let status = cluster.members.get(name);
    let in_sync = cluster
        .sync
        .as_ref()
        .is_some_and(|s| s.members.contains(name));
    let on_failsafe_list = cluster
        .failsafe_list
        .as_ref()
        .is_some_and(|f| f.members.contains(name));
    let request = cluster.switchover.as_ref();
    let asked_to = request.is_some_and(|r| r.to.as_deref() == Some(name));
    if status.is_none() && !ask.has_slot && !in_sync && !on_failsafe_list && !asked_to {
        return Err(refuse(
            RefusalKind::NotFound,
            format!(
                "there is no member {name}: no status, no replication slot on the primary and no \
                 reference to it in the store; `pgwarden ctl list` shows the members"
            ),
        ));
    }
    if let Some(handoff) = request.and_then(|r| r.live_handoff(wall_ms, cluster.settings.ttl_ms)) {
        if handoff.to == name {
            return Err(refuse(
                RefusalKind::Conflict,
                format!(
                    "a switchover from {} to {name} is under way: wait for it to end, then switch over \
                     away from {name} if it took over, and remove it",
                    handoff.from
                ),
            ));
        }
    }
    if status.is_some() && !ask.force && !ask.by_itself {
        return Err(refuse(
            RefusalKind::Conflict,
            format!(
                "the agent of {name} is running (its status is live): stop it first, then run \
                 `pgwarden ctl remove {name}` again; or `pgwarden ctl remove {name} --force` to have \
                 that agent stop its PostgreSQL and retire"
            ),
        ));
    }
    if status.is_some() && !ask.by_itself {
        return Ok(Removal::AskAgent);
    }
    Ok(Removal::Record {
        clear_switchover: asked_to,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::observation::{Handoff, Leader, MemberView, Removed, SwitchoverRequest, SyncSet};

    fn cluster() -> Cluster {
        Cluster {
            leader: Some(Leader {
                member: "db1".into(),
                term: 2,
            }),
            members: BTreeMap::from([
                ("db1".to_string(), MemberView::default()),
                ("db2".to_string(), MemberView::default()),
            ]),
            ..Cluster::default()
        }
    }

    fn ask(member: &str) -> Ask {
        Ask {
            member: member.into(),
            ..Ask::default()
        }
    }

    #[test]
    fn the_leader_is_refused_with_the_way_out() {
        let err = admit_removal(&cluster(), &ask("db1"), 0).unwrap_err();
        assert_eq!(err.kind, RefusalKind::Conflict);
        assert!(
            err.message.contains("switchover --from db1"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_running_agent_needs_force_which_asks_that_agent() {
        let err = admit_removal(&cluster(), &ask("db2"), 0).unwrap_err();
        assert_eq!(err.kind, RefusalKind::Conflict);
        assert!(err.message.contains("--force"), "{}", err.message);
        let forced = Ask {
            force: true,
            ..ask("db2")
        };
        assert_eq!(admit_removal(&cluster(), &forced, 0), Ok(Removal::AskAgent));
        let itself = Ask {
            by_itself: true,
            ..ask("db2")
        };
        assert_eq!(
            admit_removal(&cluster(), &itself, 0),
            Ok(Removal::Record {
                clear_switchover: false
            })
        );
    }

    #[test]
    fn a_stopped_member_is_known_by_its_slot_or_a_reference() {
        let err = admit_removal(&cluster(), &ask("db3"), 0).unwrap_err();
        assert_eq!(err.kind, RefusalKind::NotFound);
        let slot = Ask {
            has_slot: true,
            ..ask("db3")
        };
        assert!(admit_removal(&cluster(), &slot, 0).is_ok());
        let mut synced = cluster();
        synced.sync = Some(SyncSet {
            leader: "db1".into(),
            members: BTreeSet::from(["db3".to_string()]),
            quorum: 1,
        });
        assert!(admit_removal(&synced, &ask("db3"), 0).is_ok());
    }

    #[test]
    fn a_request_to_it_is_cleared_and_a_hand_over_to_it_refuses() {
        let mut asked = cluster();
        asked.switchover = Some(SwitchoverRequest {
            from: Some("db1".into()),
            to: Some("db3".into()),
            requested_ms: 0,
            at_ms: Some(1_000_000),
            handoff: None,
        });
        assert_eq!(
            admit_removal(&asked, &ask("db3"), 0),
            Ok(Removal::Record {
                clear_switchover: true
            })
        );
        asked.switchover.as_mut().unwrap().handoff = Some(Handoff {
            from: "db1".into(),
            to: "db3".into(),
            final_lsn: 10,
            timeline: 1,
            released_ms: 0,
        });
        let err = admit_removal(&asked, &ask("db3"), 0).unwrap_err();
        assert!(err.message.contains("under way"), "{}", err.message);
    }

    #[test]
    fn twice_is_refused() {
        let mut gone = cluster();
        gone.removed.insert("db3".into(), Removed::default());
        let err = admit_removal(&gone, &ask("db3"), 0).unwrap_err();
        assert!(err.message.contains("already removed"), "{}", err.message);
    }
}
