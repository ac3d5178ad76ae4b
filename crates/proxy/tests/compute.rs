//! `routing`: from the leader key and member statuses to routes, and the
//! least-connections pick. Pure: no store, no sockets.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::member_status;
use proxy::routing::{
    backend_of, compute, pick_standby, Backend, LeaderKey, ReadPolicy, Routes, Standby,
};
use store::cluster::{MemberStatus, PgState, Role};

fn status(name: &str, role: Role, port: u16) -> MemberStatus {
    let term = (role == Role::Primary).then_some(7);
    member_status(name, role, format!("127.0.0.1:{port}"), term)
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
    assert!(
        routes.excluded["db1"].ends_with("its status reports term 6"),
        "{routes:?}"
    );

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
