//! Whether a switchover or a manual failover may be asked for. The API
//! admits a request with these rules and the leader carries it out with the
//! same ones ([`crate::candidates::switchover_target`]), so what one admits
//! the other does not refuse a moment later.

use crate::candidates::{
    able_to_lead, reaches_clients, switchover_target, switchover_targets, Exclusion,
};
use crate::observation::{Cluster, Millis, SwitchoverRequest};

/// How far in the past `at` may be (clock skew between the operator's
/// machine and the member) before it is refused as a mistake.
pub const AT_PAST_SLACK_MS: u64 = 10_000;

/// How long the leader waits, from the time a switchover is due, for a
/// target that streams from it but has not yet replayed the switch to its
/// timeline, before it gives the switchover up.
pub fn catch_up_bound_ms(ttl_ms: Millis) -> Millis {
    2 * ttl_ms
}

/// A switchover asked for (`ctl switchover`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ask {
    /// The leader the operator believes it asks; checked.
    pub from: Option<String>,
    /// Who is to take over; `None`: the best standby.
    pub to: Option<String>,
    /// When (unix ms); `None`: now.
    pub at_ms: Option<u64>,
}

/// What kind of no.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The cluster is not in a state that allows it.
    Conflict,
    /// The named member does not exist.
    NotFound,
    /// The request itself is wrong.
    BadRequest,
}

/// A refused request and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

fn refuse(kind: RefusalKind, message: impl Into<String>) -> Refusal {
    Refusal {
        kind,
        message: message.into(),
    }
}

/// The member that holds the leader key and runs read-write.
pub fn healthy_leader(cluster: &Cluster) -> Option<&str> {
    let leader = cluster.leader.as_ref()?;
    let view = cluster.members.get(&leader.member)?;
    (view.running && view.primary).then_some(leader.member.as_str())
}

/// The request to record for a switchover, or why not.
pub fn admit_switchover(
    cluster: &Cluster,
    ask: &Ask,
    wall_ms: u64,
) -> Result<SwitchoverRequest, Refusal> {
    let cluster = &cluster.without_removed();
    // The agents carry a switchover out, and paused they take no action:
    // it would wait, unannounced, for whoever resumes.
    if cluster.settings.paused {
        return Err(refuse(
            RefusalKind::Conflict,
            "the cluster is paused (maintenance), so the agents would not carry a switchover out; \
             run `pgwarden ctl resume` first",
        ));
    }
    let Some(leader) = healthy_leader(cluster) else {
        return Err(refuse(
            RefusalKind::Conflict,
            match &cluster.leader {
                None => "no member leads the cluster, so there is nothing to switch over from; \
                         use `pgwarden ctl failover --to MEMBER`"
                    .to_string(),
                Some(l) => format!(
                    "the leader {} is not running read-write, so a clean switchover is impossible; \
                     use `pgwarden ctl failover --to MEMBER`",
                    l.member
                ),
            },
        ));
    };
    if let Some(from) = ask.from.as_deref().filter(|from| *from != leader) {
        return Err(refuse(
            RefusalKind::Conflict,
            format!(
                "{from} is not the leader ({leader} is); check `pgwarden ctl list` and ask again"
            ),
        ));
    }
    let timeline = cluster.members[leader].timeline.unwrap_or(0);
    match &ask.to {
        Some(to) => {
            let view = cluster.members.get(to).ok_or_else(|| no_member(to))?;
            switchover_target(leader, timeline, to, view)
                .map_err(|why| refuse(RefusalKind::Conflict, explain(to, &why)))?;
        }
        None => {
            if switchover_targets(leader, timeline, &cluster.members).is_empty() {
                return Err(refuse(
                    RefusalKind::Conflict,
                    format!(
                        "no member can take over: none is a running standby streaming from {leader} \
                         without nofailover whose reachability check passes; fix a standby first"
                    ),
                ));
            }
        }
    }
    let at_ms = match ask.at_ms {
        Some(at) if at.saturating_add(AT_PAST_SLACK_MS) < wall_ms => {
            return Err(refuse(
                RefusalKind::BadRequest,
                format!(
                    "`at` is {} s in the past; give a future time, or none for now",
                    (wall_ms - at) / 1000
                ),
            ))
        }
        // A time that has (nearly) come is an immediate switchover.
        at => at.filter(|at| *at > wall_ms),
    };
    Ok(SwitchoverRequest {
        from: Some(leader.to_string()),
        to: ask.to.clone(),
        requested_ms: wall_ms,
        at_ms,
        handoff: None,
    })
}

/// The request to record for a manual failover to `to`, or why not: only
/// for a cluster without a healthy leader.
pub fn admit_failover(
    cluster: &Cluster,
    to: &str,
    wall_ms: u64,
) -> Result<SwitchoverRequest, Refusal> {
    let cluster = &cluster.without_removed();
    if let Some(leader) = healthy_leader(cluster) {
        return Err(refuse(
            RefusalKind::Conflict,
            format!(
                "{leader} leads and runs read-write; a failover is for a cluster without a healthy leader: \
                 use `pgwarden ctl switchover --to {to}`"
            ),
        ));
    }
    let view = cluster.members.get(to).ok_or_else(|| no_member(to))?;
    able_to_lead(view)
        .and_then(|()| reaches_clients(view))
        .map_err(|why| refuse(RefusalKind::Conflict, explain(to, &why)))?;
    Ok(SwitchoverRequest {
        from: None,
        to: Some(to.to_string()),
        requested_ms: wall_ms,
        at_ms: None,
        handoff: None,
    })
}

fn no_member(name: &str) -> Refusal {
    refuse(
        RefusalKind::NotFound,
        format!("there is no member {name}; `pgwarden ctl list` shows the members"),
    )
}

fn explain(name: &str, why: &Exclusion) -> String {
    format!("{name} may not take over: {why}; {}", why.remedy(name))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::observation::{Leader, MemberView, Settings};

    fn member(primary: bool, streaming: bool, timeline: u32) -> MemberView {
        MemberView {
            running: true,
            primary,
            timeline: Some(timeline),
            lsn: Some(1_000),
            upstream: (!primary).then(|| "db1".to_string()),
            streaming,
            ..MemberView::default()
        }
    }

    /// db1 leads on timeline 2; db2 streams; db3 runs but does not stream.
    fn cluster() -> Cluster {
        Cluster {
            settings: Settings::default(),
            leader: Some(Leader {
                member: "db1".into(),
                term: 5,
            }),
            members: BTreeMap::from([
                ("db1".to_string(), member(true, false, 2)),
                ("db2".to_string(), member(false, true, 2)),
                ("db3".to_string(), member(false, false, 2)),
            ]),
            latest_timeline: 2,
            ..Cluster::default()
        }
    }

    fn ask(from: Option<&str>, to: Option<&str>) -> Ask {
        Ask {
            from: from.map(str::to_string),
            to: to.map(str::to_string),
            at_ms: None,
        }
    }

    #[test]
    fn a_switchover_to_a_streaming_standby_is_admitted() {
        let request = admit_switchover(&cluster(), &ask(Some("db1"), Some("db2")), 1000).unwrap();
        assert_eq!(request.from.as_deref(), Some("db1"));
        assert_eq!(request.to.as_deref(), Some("db2"));
        assert_eq!((request.requested_ms, request.at_ms), (1000, None));
        assert!(admit_switchover(&cluster(), &ask(None, None), 1000).is_ok());
    }

    #[test]
    fn a_target_streaming_from_the_leader_but_still_on_the_old_timeline_is_admitted() {
        let mut c = cluster();
        c.members.get_mut("db2").unwrap().timeline = Some(1);
        assert!(admit_switchover(&c, &ask(None, Some("db2")), 0).is_ok());
    }

    #[test]
    fn refusals_say_why_and_what_to_do() {
        let c = cluster();
        let cases = [
            (
                ask(Some("db2"), None),
                RefusalKind::Conflict,
                "not the leader",
            ),
            (
                ask(None, Some("db3")),
                RefusalKind::Conflict,
                "does not stream from the leader db1",
            ),
            (
                ask(None, Some("db1")),
                RefusalKind::Conflict,
                "the leader already",
            ),
            (
                ask(None, Some("db9")),
                RefusalKind::NotFound,
                "no member db9",
            ),
        ];
        for (request, kind, words) in cases {
            let refusal = admit_switchover(&c, &request, 0).unwrap_err();
            assert_eq!(refusal.kind, kind, "{request:?}");
            assert!(refusal.message.contains(words), "{}", refusal.message);
        }
        let streaming_refusal = admit_switchover(&c, &ask(None, Some("db3")), 0).unwrap_err();
        assert!(streaming_refusal
            .message
            .contains("pgwarden ctl reinit db3"));
        let mut no_candidate = cluster();
        no_candidate.members.get_mut("db2").unwrap().nofailover = true;
        let refusal = admit_switchover(&no_candidate, &ask(None, None), 0).unwrap_err();
        assert!(refusal.message.contains("no member can take over"));
        let refusal = admit_switchover(&no_candidate, &ask(None, Some("db2")), 0).unwrap_err();
        assert!(
            refusal.message.contains("remove the tag"),
            "{}",
            refusal.message
        );
        let mut leaderless = cluster();
        leaderless.leader = None;
        let refusal = admit_switchover(&leaderless, &ask(None, None), 0).unwrap_err();
        assert!(refusal.message.contains("failover"));
    }

    #[test]
    fn a_target_whose_reachability_check_fails_is_refused_saying_what_to_do() {
        use crate::observation::Reach;
        let mut c = cluster();
        c.members.get_mut("db2").unwrap().reach = Reach::Fails {
            detail: "0 of 1 targets answered, 1 needed; 10.1.0.1:80: refused".into(),
        };
        let refusal = admit_switchover(&c, &ask(None, Some("db2")), 0).unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::Conflict);
        assert!(
            refusal
                .message
                .starts_with("db2 may not take over: its reachability check fails (0 of 1 targets"),
            "{}",
            refusal.message
        );
        assert!(
            refusal.message.contains("[member] reachability"),
            "{}",
            refusal.message
        );
        let refusal = admit_switchover(&c, &ask(None, None), 0).unwrap_err();
        assert!(
            refusal.message.contains("whose reachability check passes"),
            "{}",
            refusal.message
        );
        c.members.get_mut("db1").unwrap().running = false;
        c.members.get_mut("db3").unwrap().reach = Reach::Pending;
        for to in ["db2", "db3"] {
            let refusal = admit_failover(&c, to, 0).unwrap_err();
            assert!(
                refusal.message.contains("reachability check"),
                "{}",
                refusal.message
            );
        }
    }

    #[test]
    fn no_switchover_while_paused() {
        let mut c = cluster();
        c.settings.paused = true;
        let refusal = admit_switchover(&c, &ask(None, Some("db2")), 0).unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::Conflict);
        assert!(
            refusal.message.contains("pgwarden ctl resume"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn at_in_the_past_is_refused_and_in_the_future_scheduled() {
        let mut request = ask(None, Some("db2"));
        request.at_ms = Some(100_000);
        let refusal = admit_switchover(&cluster(), &request, 200_000).unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::BadRequest);
        assert!(
            refusal.message.contains("100 s in the past"),
            "{}",
            refusal.message
        );
        request.at_ms = Some(195_000);
        let now = admit_switchover(&cluster(), &request, 200_000).unwrap();
        assert_eq!(now.at_ms, None, "within the slack: at once");
        request.at_ms = Some(300_000);
        let planned = admit_switchover(&cluster(), &request, 200_000).unwrap();
        assert_eq!(planned.at_ms, Some(300_000));
    }

    #[test]
    fn failover_only_without_a_healthy_leader() {
        let refusal = admit_failover(&cluster(), "db2", 0).unwrap_err();
        assert!(
            refusal.message.contains("switchover"),
            "{}",
            refusal.message
        );
        let mut c = cluster();
        c.members.get_mut("db1").unwrap().running = false;
        let planned = admit_failover(&c, "db3", 7).unwrap();
        assert_eq!((planned.from, planned.to.as_deref()), (None, Some("db3")));
        assert_eq!(
            admit_failover(&c, "db9", 7).unwrap_err().kind,
            RefusalKind::NotFound
        );
        c.members.get_mut("db2").unwrap().nofailover = true;
        assert!(admit_failover(&c, "db2", 7)
            .unwrap_err()
            .message
            .contains("nofailover"));
    }
}
