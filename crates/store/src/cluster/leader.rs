//! The leader key, and what the leader publishes beside it for the others:
//! how far it has written, its synchronous standbys, its failsafe members.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::typed::Record;

/// Who holds the leader key. Its term is the key's create revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    pub member: String,
}

impl Record for Leader {
    const KIND: &'static str = "leader";
}

/// How far the primary has written, published by the leader every
/// heartbeat. Not leased: after the primary dies it bounds how far behind a
/// standby may be and still be promoted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryPosition {
    pub member: String,
    pub timeline: u32,
    pub lsn: u64,
    pub term: u64,
}

impl Record for PrimaryPosition {
    const KIND: &'static str = "primary position";
}

/// Failsafe mode: the members a primary cut off from the store asks, as
/// its leader last published them, with their REST APIs. Only these may
/// take over while failsafe is on: a primary cannot ask one it never knew.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailsafeList {
    pub leader: String,
    /// Member name → API URL, the leader included.
    pub members: BTreeMap<String, String>,
}

impl Record for FailsafeList {
    const KIND: &'static str = "failsafe members";
}

/// The synchronous standbys the primary has actually configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSet {
    pub leader: String,
    pub members: Vec<String>,
    pub term: u64,
    /// Quorum commit: each acknowledged commit is on at least this many of
    /// `members`. Absent: on every one of them (`FIRST n`, and records
    /// written before quorum commit existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
}

impl SyncSet {
    /// On how many of the members each acknowledged commit is.
    pub fn quorum(&self) -> u32 {
        self.quorum.unwrap_or(self.members.len() as u32)
    }
}

impl Record for SyncSet {
    const KIND: &'static str = "synchronous state";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typed::{decode, encode};

    #[test]
    fn the_leader_round_trips_with_its_schema_version() {
        let leader = Leader {
            member: "db1".to_string(),
        };
        let bytes = encode("k", &leader).unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"schema":1,"member":"db1"}"#
        );
        assert_eq!(decode::<Leader>("k", &bytes).unwrap(), leader);
    }
}
