//! Synchronous replication, managed by the primary.
//!
//! The published set names the members that hold every acknowledged commit,
//! so a failover may promote any of them. Two orderings keep it true:
//! a member leaves the published set *before* PostgreSQL stops waiting for
//! it, and joins it only *after* PostgreSQL waits for it and reports it
//! synchronous. Every listed standby must confirm (`FIRST n` of exactly n
//! names), so each of them has every acknowledged commit.

use std::collections::BTreeSet;

use crate::observation::{Cluster, Running, Settings};
use crate::plan::Action;

/// The placeholder that makes a fresh primary wait for any standby until it
/// names specific ones (strict mode with nobody to name, and right after a
/// promotion).
pub const ANY_STANDBY: &str = "*";

/// Where the primary's WAL was once PostgreSQL waited for `names`: every
/// commit acknowledged without one of them lies below it, so a member
/// joins the published set only once it has flushed that far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Floor {
    names: BTreeSet<String>,
    lsn: u64,
}

/// Records the floor the first time the primary sees PostgreSQL wait for
/// a set of names (its WAL then is at least where it was when the wait
/// began); forgets it outside synchronous mode.
pub fn observe_floor(settings: &Settings, running: &Running, floor: &mut Option<Floor>) {
    if !settings.synchronous_mode {
        *floor = None;
        return;
    }
    let applied: BTreeSet<String> = running.sync_applied.iter().cloned().collect();
    if floor.as_ref().is_none_or(|f| f.names != applied) {
        *floor = Some(Floor {
            names: applied,
            lsn: running.lsn,
        });
    }
}

/// The actions that move PostgreSQL and the store towards the wanted
/// synchronous set, in a safe order. `floor` is the primary's memory of
/// where its WAL was when PostgreSQL started waiting for the applied names
/// ([`observe_floor`]).
pub fn manage(
    me: &str,
    cluster: &Cluster,
    running: &Running,
    floor: Option<&Floor>,
) -> Vec<Action> {
    let settings = &cluster.settings;
    let applied: BTreeSet<&str> = running.sync_applied.iter().map(String::as_str).collect();
    let published: BTreeSet<&str> = match &cluster.sync {
        Some(sync) if sync.leader == me => sync.members.iter().map(String::as_str).collect(),
        _ => BTreeSet::new(),
    };
    let mut actions = Vec::new();

    if !settings.synchronous_mode {
        if !published.is_empty() || cluster.sync.as_ref().is_some_and(|s| s.leader != me) {
            actions.push(Action::PublishSync {
                members: Vec::new(),
            });
        }
        if !applied.is_empty() {
            actions.push(Action::ApplySynchronous {
                names: Vec::new(),
                count: 0,
            });
        }
        return actions;
    }

    let wanted_count = settings.synchronous_count.max(1) as usize;
    let eligible = |name: &str| {
        cluster
            .members
            .get(name)
            .is_some_and(|m| !m.witness && !m.nofailover && !m.nosync)
    };
    let healthy: Vec<_> = {
        let mut replicas: Vec<_> = running
            .replicas
            .iter()
            .filter(|r| r.streaming && r.name != me && eligible(&r.name))
            .collect();
        replicas.sort_by(|a, b| b.flush_lsn.cmp(&a.flush_lsn).then(a.name.cmp(&b.name)));
        replicas
    };
    let is_healthy = |name: &str| healthy.iter().any(|r| r.name == name);

    // Keep the healthy members already waited for, then add the most advanced.
    let mut wanted: Vec<String> = applied
        .iter()
        .filter(|name| is_healthy(name))
        .map(|name| name.to_string())
        .collect();
    for replica in &healthy {
        if wanted.len() >= wanted_count {
            break;
        }
        if !wanted.contains(&replica.name) {
            wanted.push(replica.name.clone());
        }
    }
    wanted.truncate(wanted_count);
    if settings.synchronous_strict && wanted.len() < wanted_count {
        // Rather block writes than acknowledge them unprotected: keep
        // waiting for the missing ones (or any standby at all).
        for name in applied.iter().filter(|n| **n != ANY_STANDBY) {
            if wanted.len() < wanted_count && !wanted.iter().any(|w| w == name) {
                wanted.push(name.to_string());
            }
        }
        if wanted.is_empty() {
            wanted.push(ANY_STANDBY.to_string());
        }
    }
    wanted.sort();

    let wanted_set: BTreeSet<&str> = wanted.iter().map(String::as_str).collect();
    let owns_key = cluster.sync.as_ref().is_some_and(|s| s.leader == me);

    // 1. Members PostgreSQL is to stop waiting for leave the published set
    //    first; then PostgreSQL's list changes. The key names this primary
    //    before PostgreSQL waits for anyone: from then on only it and the
    //    members it publishes may be promoted.
    let safe: BTreeSet<&str> = published
        .iter()
        .copied()
        .filter(|name| wanted_set.contains(name) && applied.contains(name))
        .collect();
    if safe != published || !owns_key {
        actions.push(publish(&safe));
    }
    if wanted_set != applied {
        actions.push(Action::ApplySynchronous {
            count: wanted.len() as u32,
            names: wanted,
        });
        return actions;
    }
    // 2. PostgreSQL waits for exactly the wanted list: publish the members it
    //    reports synchronous, once they hold every commit acknowledged before
    //    it waited for them (a standby in the `streaming` state may still be
    //    far behind).
    let floor_lsn = match floor {
        Some(f)
            if f.names
                .iter()
                .map(String::as_str)
                .eq(applied.iter().copied()) =>
        {
            f.lsn
        }
        // Not observed for these names (a caller that skipped observe):
        // this round's position is the safe bound.
        _ => running.lsn,
    };
    let confirmed: BTreeSet<&str> = running
        .replicas
        .iter()
        .filter(|r| r.synchronous && r.streaming && applied.contains(r.name.as_str()))
        .filter(|r| r.flush_lsn >= floor_lsn || safe.contains(r.name.as_str()))
        .map(|r| r.name.as_str())
        .collect();
    // (One write of the key per round: the agent compares-and-sets it
    // against the revision it read.)
    if confirmed != safe && actions.is_empty() {
        actions.push(publish(&confirmed));
    }
    actions
}

fn publish(members: &BTreeSet<&str>) -> Action {
    Action::PublishSync {
        members: members.iter().map(|s| s.to_string()).collect(),
    }
}
