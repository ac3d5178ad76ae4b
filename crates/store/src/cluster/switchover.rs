//! A pending switchover or manual failover, and the old primary's hand-over.

use serde::{Deserialize, Serialize};

use crate::typed::Record;

/// A pending planned switchover, or a manual failover.
///
/// Created (create-if-absent) by the REST API; carried out and deleted by
/// the agents. With `from` set it is a switchover: only if that member
/// still leads, its primary stops cleanly and hands over. With `from`
/// unset it is a manual failover: when no member leads, only `to` may take
/// the leader key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switchover {
    /// Only if this member still leads; `None`: a manual failover.
    pub from: Option<String>,
    /// The member to promote; `None`: the best candidate.
    pub to: Option<String>,
    /// Not before this time (unix ms); `None`: now.
    pub at_ms: Option<u64>,
    /// When it was asked for (unix ms).
    #[serde(default)]
    pub requested_ms: u64,
    /// Written by the old primary once it has shut down cleanly.
    #[serde(default)]
    pub handoff: Option<Handoff>,
    /// Why it was asked for, when an agent asked (a leader whose
    /// reachability check failed); `None`: an operator asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The old primary's half of a switchover: it has stopped, and `to` may
/// take the leader key once it has replayed up to `final_lsn`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    pub to: String,
    /// The end of the old primary's WAL (its shutdown checkpoint).
    pub final_lsn: u64,
    pub timeline: u32,
    /// When the old primary released the leader key (unix ms).
    pub released_ms: u64,
}

impl Record for Switchover {
    const KIND: &'static str = "switchover";
}
