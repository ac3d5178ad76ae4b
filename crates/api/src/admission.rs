//! Switchover and failover requests, translated to and from the core's
//! admission rules (`ha::switchover`): the routes read one snapshot, call
//! these, then write with compare-and-set. Nothing is decided here.

use axum::http::StatusCode;
use ha::switchover::{self, Ask, RefusalKind};
use store::cluster::Switchover;
use store::{ClusterRecords, HaView};

use crate::model::SwitchoverRequest;

/// A refusal: the status to answer with and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl From<switchover::Refusal> for Refusal {
    fn from(refusal: switchover::Refusal) -> Refusal {
        Refusal {
            status: match refusal.kind {
                RefusalKind::Conflict => StatusCode::CONFLICT,
                RefusalKind::NotFound => StatusCode::NOT_FOUND,
                RefusalKind::BadRequest => StatusCode::BAD_REQUEST,
            },
            message: refusal.message,
        }
    }
}

/// The `switchover` record to create for `request`, or why not.
pub fn admit_switchover(
    records: &ClusterRecords,
    request: &SwitchoverRequest,
    now_ms: u64,
) -> Result<Switchover, Refusal> {
    let at_ms = match &request.at {
        None => None,
        Some(at) => Some(at.unix_ms().map_err(|message| Refusal {
            status: StatusCode::BAD_REQUEST,
            message,
        })?),
    };
    let ask = Ask {
        from: request.from.clone(),
        to: request.to.clone(),
        at_ms,
    };
    let admitted = switchover::admit_switchover(&records.to_ha(), &ask, now_ms)?;
    Ok(record(admitted))
}

/// The `switchover` record of a manual failover to `to`, or why not.
pub fn admit_failover(
    records: &ClusterRecords,
    to: &str,
    now_ms: u64,
) -> Result<Switchover, Refusal> {
    let admitted = switchover::admit_failover(&records.to_ha(), to, now_ms)?;
    Ok(record(admitted))
}

fn record(request: ha::SwitchoverRequest) -> Switchover {
    Switchover {
        from: request.from,
        to: request.to,
        at_ms: request.at_ms,
        requested_ms: request.requested_ms,
        // Only the old primary's agent hands over, later.
        handoff: None,
        reason: None,
    }
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

    use store::cluster::{Leader, Role};
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

    /// db1 leads; db2 streams from it.
    fn cluster() -> ClusterRecords {
        let mut members = BTreeMap::new();
        for m in [
            member("db1", Role::Primary, false),
            member("db2", Role::Replica, true),
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

    fn ask(to: &str, at: Option<At>) -> SwitchoverRequest {
        SwitchoverRequest {
            from: None,
            to: Some(to.to_string()),
            at,
        }
    }

    #[test]
    fn an_admitted_switchover_becomes_the_record() {
        let planned = admit_switchover(&cluster(), &ask("db2", None), 1000).unwrap();
        assert_eq!(planned.from.as_deref(), Some("db1"));
        assert_eq!(planned.to.as_deref(), Some("db2"));
        assert_eq!((planned.requested_ms, planned.at_ms), (1000, None));
        let at = Some(At::Rfc3339("1970-01-01T00:05:00Z".to_string()));
        let planned = admit_switchover(&cluster(), &ask("db2", at), 200_000).unwrap();
        assert_eq!(planned.at_ms, Some(300_000));
    }

    #[test]
    fn refusals_keep_their_status() {
        let cases = [
            (ask("db9", None), StatusCode::NOT_FOUND),
            (ask("db1", None), StatusCode::CONFLICT),
            (
                ask("db2", Some(At::UnixSeconds(100))),
                StatusCode::BAD_REQUEST,
            ),
            (
                ask("db2", Some(At::Rfc3339("soon".to_string()))),
                StatusCode::BAD_REQUEST,
            ),
        ];
        for (request, status) in cases {
            let refusal = admit_switchover(&cluster(), &request, 200_000).unwrap_err();
            assert_eq!(refusal.status, status, "{request:?}: {}", refusal.message);
        }
        assert_eq!(
            admit_failover(&cluster(), "db2", 0).unwrap_err().status,
            StatusCode::CONFLICT
        );
    }

    #[test]
    fn finished_when_another_member_leads_and_the_record_is_gone() {
        let asked = admit_switchover(&cluster(), &ask("db2", None), 0).unwrap();
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
