//! Synchronous replication, managed by the primary.
//!
//! The published set says which members may take over without losing an
//! acknowledged commit: every commit the primary acknowledged is on at
//! least `quorum` of its `members`. Publishing no member with quorum 0
//! (only the primary itself may take over) is always true; everything else
//! is kept true by ordering:
//!
//! * `FIRST n` (synchronous mode `on`): every named standby must confirm,
//!   so each of them holds every acknowledged commit (quorum = n). A member
//!   leaves the published set *before* PostgreSQL stops waiting for it,
//!   and joins it only *after* PostgreSQL waits for it and it has caught up.
//! * `ANY k` (quorum commit): any k of the named standbys confirm. Before
//!   PostgreSQL waits for another set, the published set grows to include
//!   it and its quorum drops to the smaller k (old and new commits both
//!   lie on that many of the union); once k members of the new set have
//!   flushed past where the WAL was when PostgreSQL began waiting for it,
//!   the published set shrinks to exactly what PostgreSQL waits for.

use std::collections::BTreeSet;

use crate::observation::{Cluster, Replica, Running, SyncMode};
use crate::plan::Action;

/// The placeholder that makes a fresh primary wait for any standby until it
/// names specific ones (strict mode with nobody to name, and right after a
/// promotion).
pub const ANY_STANDBY: &str = "*";

/// synchronous_standby_names as applied: the names and `Some(k)` for
/// `ANY k`, `None` for `FIRST n` of exactly the n names.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Applied {
    names: BTreeSet<String>,
    any: Option<u32>,
}

impl Applied {
    fn of(running: &Running) -> Applied {
        Applied {
            names: running.sync_applied.iter().cloned().collect(),
            any: running.sync_applied_any,
        }
    }

    /// The named members each acknowledged commit is on, and on how many
    /// of them at least (none counted when `*` lets any standby confirm).
    fn holds(&self) -> (BTreeSet<String>, u32) {
        if self.names.is_empty() || self.names.contains(ANY_STANDBY) {
            return (BTreeSet::new(), 0);
        }
        let count = self.any.unwrap_or(self.names.len() as u32);
        (self.names.clone(), count)
    }

    fn action(&self) -> Action {
        Action::ApplySynchronous {
            names: self.names.iter().cloned().collect(),
            count: match self.any {
                Some(k) => k,
                None => self.names.len() as u32,
            },
            quorum: self.any.is_some(),
        }
    }
}

/// Where the primary's WAL was once PostgreSQL waited for an applied set:
/// every commit acknowledged before lies below it, so a member counts as
/// holding them only once it has flushed that far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Floor {
    applied: Applied,
    lsn: u64,
}

/// Records the floor the first time the primary sees PostgreSQL wait for
/// a set (its WAL then is at least where it was when the wait began);
/// forgets it outside synchronous mode.
pub fn observe_floor(cluster: &Cluster, running: &Running, floor: &mut Option<Floor>) {
    if !cluster.settings.synchronous_mode.on() {
        *floor = None;
        return;
    }
    let applied = Applied::of(running);
    if floor.as_ref().is_none_or(|f| f.applied != applied) {
        *floor = Some(Floor {
            applied,
            lsn: running.lsn,
        });
    }
}

/// The actions that move PostgreSQL and the store towards the wanted
/// synchronous set, in a safe order. `floor` is the primary's memory of
/// where its WAL was when PostgreSQL started waiting for the applied set
/// ([`observe_floor`]).
pub fn manage(
    me: &str,
    cluster: &Cluster,
    running: &Running,
    floor: Option<&Floor>,
) -> Vec<Action> {
    match cluster.settings.synchronous_mode {
        SyncMode::Off => asynchronous(me, cluster, running),
        SyncMode::First => first(me, cluster, running, floor),
        SyncMode::Quorum => quorum(me, cluster, running, floor),
    }
}

fn asynchronous(me: &str, cluster: &Cluster, running: &Running) -> Vec<Action> {
    let mut actions = Vec::new();
    let published = cluster
        .sync
        .as_ref()
        .is_some_and(|s| s.leader != me || !s.members.is_empty());
    if published {
        actions.push(publish(&BTreeSet::new(), 0));
    }
    if !running.sync_applied.is_empty() {
        actions.push(Action::ApplySynchronous {
            names: Vec::new(),
            count: 0,
            quorum: false,
        });
    }
    actions
}

/// The standbys that may be waited for, most advanced first.
fn healthy<'r>(me: &str, cluster: &Cluster, running: &'r Running) -> Vec<&'r Replica> {
    let eligible = |name: &str| {
        cluster
            .members
            .get(name)
            .is_some_and(|m| !m.witness && !m.nofailover && !m.nosync)
    };
    let mut replicas: Vec<_> = running
        .replicas
        .iter()
        .filter(|r| r.streaming && r.name != me && eligible(&r.name))
        .collect();
    replicas.sort_by(|a, b| b.flush_lsn.cmp(&a.flush_lsn).then(a.name.cmp(&b.name)));
    replicas
}

/// The floor's position for `applied`, or this round's position (the safe
/// bound) when it was not observed.
fn floor_lsn(floor: Option<&Floor>, applied: &Applied, running: &Running) -> u64 {
    match floor {
        Some(f) if f.applied == *applied => f.lsn,
        _ => running.lsn,
    }
}

fn first(me: &str, cluster: &Cluster, running: &Running, floor: Option<&Floor>) -> Vec<Action> {
    let settings = &cluster.settings;
    let applied_now = Applied::of(running);
    let applied: BTreeSet<&str> = running.sync_applied.iter().map(String::as_str).collect();
    // A set published under quorum commit (its members need not each hold
    // every commit) counts as none here.
    let published: BTreeSet<&str> = match &cluster.sync {
        Some(sync) if sync.leader == me && sync.quorum as usize == sync.members.len() => {
            sync.members.iter().map(String::as_str).collect()
        }
        _ => BTreeSet::new(),
    };
    let owned_as_first = cluster
        .sync
        .as_ref()
        .is_some_and(|s| s.leader == me && s.quorum as usize == s.members.len());
    let mut actions = Vec::new();

    let wanted_count = settings.synchronous_count.max(1) as usize;
    let healthy = healthy(me, cluster, running);
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

    // 1. Members PostgreSQL is to stop waiting for leave the published set
    //    first; then PostgreSQL's list changes. The key names this primary
    //    before PostgreSQL waits for anyone: from then on only it and the
    //    members it publishes may be promoted.
    let safe: BTreeSet<&str> = published
        .iter()
        .copied()
        .filter(|name| wanted_set.contains(name) && applied.contains(name))
        .collect();
    if safe != published || !owned_as_first {
        actions.push(publish_all(&safe));
    }
    if wanted_set != applied || applied_now.any.is_some() {
        actions.push(Action::ApplySynchronous {
            count: wanted.len() as u32,
            names: wanted,
            quorum: false,
        });
        return actions;
    }
    // 2. PostgreSQL waits for exactly the wanted list: publish the members it
    //    reports synchronous, once they hold every commit acknowledged before
    //    it waited for them (a standby in the `streaming` state may still be
    //    far behind).
    let floor_lsn = floor_lsn(floor, &applied_now, running);
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
        actions.push(publish_all(&confirmed));
    }
    actions
}

fn quorum(me: &str, cluster: &Cluster, running: &Running, floor: Option<&Floor>) -> Vec<Action> {
    let settings = &cluster.settings;
    let count = settings.synchronous_count.max(1);
    let applied = Applied::of(running);

    // Every healthy standby is named: any `count` of them may confirm.
    let mut names: BTreeSet<String> = healthy(me, cluster, running)
        .iter()
        .map(|r| r.name.clone())
        .collect();
    let mut k = count.min(names.len() as u32);
    if settings.synchronous_strict && names.len() < count as usize {
        // Rather block writes than acknowledge them unprotected: keep
        // waiting for the missing ones (or any standby at all).
        names.extend(applied.names.iter().cloned());
        if names.len() > 1 {
            names.remove(ANY_STANDBY);
        }
        if names.is_empty() {
            names.insert(ANY_STANDBY.to_string());
        }
        k = count;
    }
    let wanted = Applied {
        any: (!names.is_empty()).then_some(k),
        names,
    };

    let (published, published_quorum) = match &cluster.sync {
        Some(sync) if sync.leader == me => (sync.members.clone(), sync.quorum),
        _ => (BTreeSet::new(), 0),
    };
    let owns_key = cluster.sync.as_ref().is_some_and(|s| s.leader == me);
    let mut actions = Vec::new();

    if applied != wanted {
        // 1. Before PostgreSQL waits for the wanted set, the published one
        //    covers both: what was acknowledged so far lies on
        //    `published_quorum` of the published members, what will be on
        //    `k` of the wanted ones.
        let (wanted_names, wanted_k) = wanted.holds();
        let covers = owns_key && wanted_names.is_subset(&published) && published_quorum <= wanted_k;
        if !covers {
            let members: BTreeSet<String> = published.union(&wanted_names).cloned().collect();
            actions.push(publish(&members, published_quorum.min(wanted_k)));
        }
        actions.push(wanted.action());
        return actions;
    }
    // 2. PostgreSQL waits for exactly the wanted set: the published set
    //    becomes that set once `k` of it have flushed past where the WAL was
    //    when the wait began (each commit before lies below it, each after
    //    on `k` of them).
    let (names, k) = applied.holds();
    let floor_lsn = floor_lsn(floor, &applied, running);
    let confirmed = running
        .replicas
        .iter()
        .filter(|r| r.synchronous && r.streaming && names.contains(&r.name))
        .filter(|r| r.flush_lsn >= floor_lsn)
        .count();
    let target = if k == 0 {
        Some((BTreeSet::new(), 0))
    } else if confirmed >= k as usize {
        Some((names, k))
    } else {
        None
    };
    match target {
        Some((members, quorum))
            if !owns_key || members != published || quorum != published_quorum =>
        {
            actions.push(publish(&members, quorum));
        }
        // Not confirmed yet: what is published stays true meanwhile.
        None if !owns_key => actions.push(publish(&BTreeSet::new(), 0)),
        _ => {}
    }
    actions
}

/// A `FIRST n` set: every member holds every acknowledged commit.
fn publish_all(members: &BTreeSet<&str>) -> Action {
    Action::PublishSync {
        members: members.iter().map(|s| s.to_string()).collect(),
        quorum: members.len() as u32,
    }
}

fn publish(members: &BTreeSet<String>, quorum: u32) -> Action {
    Action::PublishSync {
        members: members.iter().cloned().collect(),
        quorum,
    }
}
