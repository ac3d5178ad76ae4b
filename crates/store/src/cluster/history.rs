//! The timeline history: one entry per promotion.

use serde::{Deserialize, Serialize};

use crate::typed::Record;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The timeline the promotion started.
    pub timeline: u32,
    /// Where the new primary's WAL stood right after the promotion.
    pub switch_lsn: u64,
    pub reason: String,
    pub time_ms: u64,
    pub from: Option<String>,
    pub to: Option<String>,
    /// From the moment the promoting member saw the need (leader key gone,
    /// primary silent, switchover asked) to the end of the promotion.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Not a promotion: the member retired here (`pgwarden ctl remove`),
    /// `timeline` and `switch_lsn` being the cluster's then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
}

/// The timeline history, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub entries: Vec<HistoryEntry>,
}

impl Record for History {
    const KIND: &'static str = "timeline history";
}
