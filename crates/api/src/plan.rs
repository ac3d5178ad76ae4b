//! Whether a switchover or failover may be asked for, judged on one
//! snapshot of the cluster. Pure: the routes read, call this, then write
//! with compare-and-set.

use axum::http::StatusCode;
use store::cluster::{MemberStatus, Switchover};

use crate::model::SwitchoverRequest;
use store::ClusterRecords;

/// How far in the past `at` may be (clock skew between the operator's
/// machine and the member) before it is refused as a mistake.
pub const AT_PAST_SLACK_MS: u64 = 10_000;

/// A refusal: the status to answer with and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// A member that could take over: a running streaming standby that is not
/// tagged nofailover and does not lead.
fn candidate_problem(m: &MemberStatus, leader: Option<&str>) -> Option<String> {
    if leader == Some(m.name.as_str()) {
        return Some(format!("{} is the leader already", m.name));
    }
    if m.tags.nofailover {
        return Some(format!(
            "{} is tagged nofailover; pick another member or remove the tag",
            m.name
        ));
    }
    if !m.is_streaming_standby() {
        return Some(format!(
            "{} is not a running streaming standby (role {:?}, state {:?}, streaming {}); wait until it streams or run `pgwarden ctl reinit {}`",
            m.name, m.role, m.state, m.streaming, m.name
        ));
    }
    None
}

/// The `switchover` record to create for `request`, or why not.
pub fn plan_switchover(
    records: &ClusterRecords,
    request: &SwitchoverRequest,
    now_ms: u64,
) -> Result<Switchover, Refusal> {
    // The agents carry a switchover out, and paused they take no action:
    // it would wait, unannounced, for whoever resumes.
    if records.config().paused {
        return Err(refuse(
            StatusCode::CONFLICT,
            "the cluster is paused (maintenance), so the agents would not carry a switchover out; \
             run `pgwarden ctl resume` first"
                .to_string(),
        ));
    }
    let Some(leader) = records.healthy_leader() else {
        return Err(refuse(
            StatusCode::CONFLICT,
            match records.leader_name() {
                None => "no member leads the cluster, so there is nothing to switch over from; use `pgwarden ctl failover --to MEMBER`".to_string(),
                Some(name) => format!("the leader {name} is not running read-write, so a clean switchover is impossible; use `pgwarden ctl failover --to MEMBER`"),
            },
        ));
    };
    if let Some(from) = &request.from {
        if from != &leader.name {
            return Err(refuse(
                StatusCode::CONFLICT,
                format!(
                    "{from} is not the leader ({} is); check `pgwarden ctl list` and ask again",
                    leader.name
                ),
            ));
        }
    }
    if let Some(to) = &request.to {
        let Some(member) = records.member(to) else {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                format!("there is no member {to}; `pgwarden ctl list` shows the members"),
            ));
        };
        if let Some(problem) = candidate_problem(member, Some(&leader.name)) {
            return Err(refuse(StatusCode::CONFLICT, problem));
        }
    } else if !records
        .members
        .values()
        .any(|m| candidate_problem(&m.value, Some(&leader.name)).is_none())
    {
        return Err(refuse(
            StatusCode::CONFLICT,
            "no member can take over: none is a running streaming standby without nofailover; fix a standby first",
        ));
    }
    let at_ms = match &request.at {
        None => None,
        Some(at) => {
            let at_ms = at
                .unix_ms()
                .map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
            if at_ms + AT_PAST_SLACK_MS < now_ms {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "`at` ({}) is in the past; give a future time, or none for now",
                        crate::time::format_rfc3339(at_ms)
                    ),
                ));
            }
            // A time that has (nearly) come is an immediate switchover.
            (at_ms > now_ms).then_some(at_ms)
        }
    };
    Ok(Switchover {
        from: Some(leader.name.clone()),
        to: request.to.clone(),
        at_ms,
        requested_ms: now_ms,
        handoff: None,
    })
}

/// The `switchover` record of a manual failover to `to`, or why not.
pub fn plan_failover(
    records: &ClusterRecords,
    to: &str,
    now_ms: u64,
) -> Result<Switchover, Refusal> {
    if let Some(leader) = records.healthy_leader() {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!(
                "{} leads and runs read-write; a failover is for a cluster without a healthy leader: use `pgwarden ctl switchover --to {to}`",
                leader.name
            ),
        ));
    }
    let Some(member) = records.member(to) else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("there is no member {to}; `pgwarden ctl list` shows the members"),
        ));
    };
    if member.tags.nofailover {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!("{to} is tagged nofailover; pick another member or remove the tag"),
        ));
    }
    if member.state != store::cluster::PgState::Running {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!(
                "{to} is not running (state {:?}); pick a running member",
                member.state
            ),
        ));
    }
    Ok(Switchover {
        from: None,
        to: Some(to.to_string()),
        at_ms: None,
        requested_ms: now_ms,
        handoff: None,
    })
}

/// Whether a switchover (`from` set) or failover finished: the record is
/// gone and a member other than `from` (the `to`, when named) leads and
/// runs read-write.
pub fn finished(records: &ClusterRecords, asked: &Switchover) -> Option<String> {
    if records.switchover.is_some() {
        return None;
    }
    let leader = records.healthy_leader()?;
    if asked.from.as_deref() == Some(leader.name.as_str()) {
        return None;
    }
    if asked.to.as_deref().is_some_and(|to| to != leader.name) {
        return None;
    }
    Some(leader.name.clone())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use store::cluster::{Leader, PgState, Role};
    use store::Versioned;

    use super::*;
    use crate::model::At;
    use crate::testing::member;

    fn versioned<T>(value: T) -> Versioned<T> {
        Versioned {
            value,
            mod_revision: 5,
            create_revision: 5,
            lease: None,
        }
    }

    /// db1 leads; db2 streams; db3 runs but does not stream.
    fn cluster() -> ClusterRecords {
        let mut members = BTreeMap::new();
        for m in [
            member("db1", Role::Primary, false),
            member("db2", Role::Replica, true),
            member("db3", Role::Replica, false),
        ] {
            members.insert(m.name.clone(), versioned(m));
        }
        ClusterRecords {
            leader: Some(versioned(Leader {
                member: "db1".to_string(),
            })),
            members,
            ..ClusterRecords::default()
        }
    }

    fn ask(from: Option<&str>, to: Option<&str>) -> SwitchoverRequest {
        SwitchoverRequest {
            from: from.map(str::to_string),
            to: to.map(str::to_string),
            at: None,
        }
    }

    #[test]
    fn a_switchover_to_a_streaming_standby_is_planned() {
        let planned = plan_switchover(&cluster(), &ask(Some("db1"), Some("db2")), 1000).unwrap();
        assert_eq!(planned.from.as_deref(), Some("db1"));
        assert_eq!(planned.to.as_deref(), Some("db2"));
        assert_eq!(planned.requested_ms, 1000);
        assert_eq!(planned.at_ms, None);
        assert!(plan_switchover(&cluster(), &ask(None, None), 1000).is_ok());
    }

    #[test]
    fn switchover_refusals_say_why() {
        let c = cluster();
        let cases = [
            (
                ask(Some("db2"), None),
                StatusCode::CONFLICT,
                "not the leader",
            ),
            (
                ask(None, Some("db3")),
                StatusCode::CONFLICT,
                "not a running streaming standby",
            ),
            (
                ask(None, Some("db1")),
                StatusCode::CONFLICT,
                "leader already",
            ),
            (
                ask(None, Some("db9")),
                StatusCode::NOT_FOUND,
                "no member db9",
            ),
        ];
        for (request, status, words) in cases {
            let refusal = plan_switchover(&c, &request, 0).unwrap_err();
            assert_eq!(refusal.status, status, "{request:?}");
            assert!(refusal.message.contains(words), "{}", refusal.message);
        }
        let mut no_candidate = cluster();
        no_candidate
            .members
            .get_mut("db2")
            .unwrap()
            .value
            .tags
            .nofailover = true;
        let refusal = plan_switchover(&no_candidate, &ask(None, None), 0).unwrap_err();
        assert!(refusal.message.contains("no member can take over"));
        let mut leaderless = cluster();
        leaderless.leader = None;
        let refusal = plan_switchover(&leaderless, &ask(None, None), 0).unwrap_err();
        assert!(refusal.message.contains("failover"));
    }

    #[test]
    fn no_switchover_while_paused() {
        let mut c = cluster();
        c.config = Some(versioned(store::cluster::DynamicConfig {
            paused: true,
            ..Default::default()
        }));
        let refusal = plan_switchover(&c, &ask(None, Some("db2")), 0).unwrap_err();
        assert_eq!(refusal.status, StatusCode::CONFLICT);
        assert!(
            refusal.message.contains("pgwarden ctl resume"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn at_in_the_past_is_refused_and_in_the_future_scheduled() {
        let mut request = ask(None, Some("db2"));
        request.at = Some(At::UnixSeconds(100));
        let refusal = plan_switchover(&cluster(), &request, 200_000).unwrap_err();
        assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
        request.at = Some(At::Rfc3339("1970-01-01T00:05:00Z".to_string()));
        let planned = plan_switchover(&cluster(), &request, 200_000).unwrap();
        assert_eq!(planned.at_ms, Some(300_000));
        request.at = Some(At::Rfc3339("soon".to_string()));
        assert_eq!(
            plan_switchover(&cluster(), &request, 0).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn failover_only_without_a_healthy_leader() {
        let refusal = plan_failover(&cluster(), "db2", 0).unwrap_err();
        assert!(
            refusal.message.contains("switchover"),
            "{}",
            refusal.message
        );
        let mut c = cluster();
        c.members.get_mut("db1").unwrap().value.state = PgState::Crashed;
        let planned = plan_failover(&c, "db3", 7).unwrap();
        assert_eq!(planned.from, None);
        assert_eq!(planned.to.as_deref(), Some("db3"));
        assert_eq!(
            plan_failover(&c, "db9", 7).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        c.members.get_mut("db2").unwrap().value.tags.nofailover = true;
        assert!(plan_failover(&c, "db2", 7)
            .unwrap_err()
            .message
            .contains("nofailover"));
    }

    #[test]
    fn finished_when_another_member_leads_and_the_record_is_gone() {
        let asked = plan_switchover(&cluster(), &ask(None, Some("db2")), 0).unwrap();
        let mut c = cluster();
        assert_eq!(finished(&c, &asked), None);
        c.leader = Some(versioned(Leader {
            member: "db2".to_string(),
        }));
        c.members.get_mut("db2").unwrap().value.role = Role::Primary;
        assert_eq!(finished(&c, &asked), Some("db2".to_string()));
        c.switchover = Some(versioned(asked.clone()));
        assert_eq!(finished(&c, &asked), None);
    }
}
