//! Scripted runs: a fixed schedule of faults in virtual time, applied
//! instead of random injection. A regression test written as a script
//! keeps reproducing the situation that found its bug whatever the random
//! fault injection comes to draw; the seed then only orders the rounds
//! and jitters their timing.

use std::fmt;

use crate::world::{secs, Millis};

/// What happens to one member. The durations count from when the fault
/// starts; once one ends, the member may take the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Agent and PostgreSQL die (no shutdown), the data stays; the host is
    /// back after `down` with a fresh agent.
    HostCrash { down: Millis },
    /// The same, in the middle of a round: once its agent has made `calls`
    /// more calls.
    HostCrashAfterCalls { calls: u32, down: Millis },
    /// The agent dies, PostgreSQL keeps running (and writing); a fresh
    /// agent starts after `down` (0: at the next step).
    AgentCrash { down: Millis },
    /// PostgreSQL dies and refuses to start for `unstartable`.
    PgCrash { unstartable: Millis },
    /// Agent and PostgreSQL pause together, connections stay open.
    Freeze { lasts: Millis },
    /// The agent cannot reach the store.
    CutOff { lasts: Millis },
    /// The host is cut off from the store and from every other member
    /// (replication stops both ways); its own clients still reach it.
    Partition { lasts: Millis },
    /// The agent loses the store once it has made `calls` more calls.
    CutOffAfterCalls { calls: u32, lasts: Millis },
    /// The agent loses the store right after its next lease grant:
    /// between the grant and whatever the round does with it.
    CutOffAfterGrant { lasts: Millis },
    /// Each round's store requests arrive `delay` late, and replication to
    /// and from the host crawls.
    Delay { delay: Millis, lasts: Millis },
    /// The member's reachability check fails (its client network is cut
    /// off, its cluster network not) for `lasts`; with `flap` set it fails
    /// and passes by turns, `flap` each. Independent of the other faults.
    Unreachable { lasts: Millis, flap: Option<Millis> },
}

/// One entry of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Fault {
        member: String,
        fault: Fault,
    },
    /// Nobody reaches the store (no quorum).
    StoreOutage {
        lasts: Millis,
    },
    /// The run fails unless the leader key is held so (`None`: by nobody):
    /// a script states the situation it needs, so it cannot silently stop
    /// reaching it.
    ExpectLeader {
        member: Option<String>,
    },
    /// The run fails unless some member other than `not` holds the key.
    ExpectLeaderOtherThan {
        not: String,
    },
    /// Raw bytes under a key of the cluster (`members/db9`, `leader`), as
    /// a hand edit or a newer agent would leave them; `None` deletes it.
    Store {
        key: String,
        value: Option<Vec<u8>>,
    },
    /// `pgwarden ctl remove`: the member is recorded removed as the API
    /// records it (its status deleted with it); its agent keeps running,
    /// as after `--force`, and must stay out.
    Remove {
        member: String,
    },
}

/// A schedule of faults in virtual time, written out in a test. Steps due
/// at the same time run in the order they were added, after the faults
/// ending then have healed and before the world ticks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Script {
    pub(crate) steps: Vec<(Millis, Step)>,
}

impl Script {
    pub fn new() -> Script {
        Script::default()
    }

    /// `fault` strikes `member` (`"db1"`, …) at `at`.
    pub fn fault(self, at: Millis, member: &str, fault: Fault) -> Script {
        self.step(
            at,
            Step::Fault {
                member: member.to_string(),
                fault,
            },
        )
    }

    /// The store loses its quorum at `at` for `lasts`.
    pub fn store_outage(self, at: Millis, lasts: Millis) -> Script {
        self.step(at, Step::StoreOutage { lasts })
    }

    /// At `at`, `member` must hold the leader key (`None`: nobody may).
    pub fn expect_leader(self, at: Millis, member: Option<&str>) -> Script {
        self.step(
            at,
            Step::ExpectLeader {
                member: member.map(str::to_string),
            },
        )
    }

    /// At `at`, a member other than `not` must hold the leader key.
    pub fn expect_leader_other_than(self, at: Millis, not: &str) -> Script {
        self.step(
            at,
            Step::ExpectLeaderOtherThan {
                not: not.to_string(),
            },
        )
    }

    /// At `at`, the cluster's `key` (`leader`, `members/db9`) holds bytes
    /// no record decodes from, unbound to any lease: it stays until
    /// [`Script::delete_key`].
    pub fn garbage(self, at: Millis, key: &str) -> Script {
        self.step(
            at,
            Step::Store {
                key: key.to_string(),
                value: Some(b"{not a record".to_vec()),
            },
        )
    }

    /// At `at`, the cluster's `key` is deleted (an operator's fix).
    pub fn delete_key(self, at: Millis, key: &str) -> Script {
        self.step(
            at,
            Step::Store {
                key: key.to_string(),
                value: None,
            },
        )
    }

    /// At `at`, `member` is removed from the cluster (`ctl remove`).
    pub fn remove(self, at: Millis, member: &str) -> Script {
        self.step(
            at,
            Step::Remove {
                member: member.to_string(),
            },
        )
    }

    fn step(mut self, at: Millis, step: Step) -> Script {
        // Stable: equal times keep the order they were written in.
        let index = self.steps.partition_point(|(t, _)| *t <= at);
        self.steps.insert(index, (at, step));
        self
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Fault { member, fault } => write!(f, "{member}: {fault:?}"),
            Step::StoreOutage { lasts } => write!(f, "store outage for {}", secs(*lasts)),
            Step::ExpectLeader { member: Some(m) } => write!(f, "expect {m} to lead"),
            Step::ExpectLeader { member: None } => write!(f, "expect no leader"),
            Step::ExpectLeaderOtherThan { not } => write!(f, "expect a leader other than {not}"),
            Step::Store {
                key,
                value: Some(_),
            } => write!(f, "garbage under {key}"),
            Step::Store { key, value: None } => write!(f, "delete {key}"),
            Step::Remove { member } => write!(f, "remove {member}"),
        }
    }
}

impl fmt::Display for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(at, step)| format!("{} {step}", secs(*at)))
            .collect();
        write!(f, "{}", steps.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_run_in_time_order_and_equal_times_in_written_order() {
        let script = Script::new()
            .fault(5_000, "db2", Fault::Freeze { lasts: 1_000 })
            .expect_leader(1_000, Some("db1"))
            .fault(1_000, "db1", Fault::AgentCrash { down: 0 })
            .store_outage(5_000, 500);
        assert_eq!(
            script.to_string(),
            "1.000s expect db1 to lead; 1.000s db1: AgentCrash { down: 0 }; \
             5.000s db2: Freeze { lasts: 1000 }; 5.000s store outage for 0.500s"
        );
    }
}
