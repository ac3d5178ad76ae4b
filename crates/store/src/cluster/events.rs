//! The bounded event log: what members did, newest last.

use serde::{Deserialize, Serialize};

use super::{ClusterKey, ClusterKeys};
use crate::error::StoreError;
use crate::typed::Record;
use crate::types::Expect;
use crate::Store;

/// How many events the store keeps (agents and the API append with
/// it); the oldest are trimmed.
pub const EVENTS_KEPT: usize = 1000;

impl ClusterKeys {
    /// Appends an event with the next sequence number and trims the oldest
    /// so at most `keep` remain. Returns the stored event.
    pub async fn append_event(
        &self,
        store: &dyn Store,
        time_ms: u64,
        member: &str,
        kind: &str,
        details: &str,
        keep: usize,
    ) -> Result<Event, StoreError> {
        let events = self.events();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let snapshot = store.get_prefix(events.prefix()).await?;
            let existing: Vec<(u64, i64)> = snapshot
                .kvs
                .iter()
                .filter_map(|kv| match self.classify(&kv.key) {
                    Some(ClusterKey::Event(seq)) => Some((seq, kv.mod_revision)),
                    _ => None,
                })
                .collect();
            let seq = existing.iter().map(|(seq, _)| seq + 1).max().unwrap_or(1);
            let event = Event {
                seq,
                time_ms,
                member: member.to_string(),
                kind: kind.to_string(),
                details: details.to_string(),
            };
            match self
                .event(seq)
                .compare_and_set(store, Expect::Absent, &event, None)
                .await
            {
                Ok(_) => {
                    let excess = (existing.len() + 1).saturating_sub(keep);
                    let mut oldest = existing;
                    oldest.sort_unstable();
                    for (old_seq, revision) in oldest.into_iter().take(excess) {
                        match self
                            .event(old_seq)
                            .compare_and_delete(store, revision)
                            .await
                        {
                            Ok(_) | Err(StoreError::Conflict { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    return Ok(event);
                }
                // Another member appended the same sequence number first.
                Err(StoreError::Conflict { .. }) if attempts < 10 => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// One entry of the bounded event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub time_ms: u64,
    pub member: String,
    pub kind: String,
    pub details: String,
}

impl Record for Event {
    const KIND: &'static str = "event";
}

#[cfg(test)]
mod tests {
    use crate::cluster::fixtures::{keys, store};

    #[tokio::test]
    async fn events_are_numbered_and_trimmed_to_the_bound() {
        let store = store();
        let keys = keys();
        for i in 0..7u64 {
            let event = keys
                .append_event(&store, 1000 + i, "db1", "test", &format!("event {i}"), 5)
                .await
                .unwrap();
            assert_eq!(event.seq, i + 1);
        }
        let events = keys.events().list(&store).await.unwrap();
        let seqs: Vec<u64> = events.entries.values().map(|e| e.value.seq).collect();
        assert_eq!(seqs, [3, 4, 5, 6, 7]);
        assert_eq!(
            events.entries.values().last().unwrap().value.details,
            "event 6"
        );
    }
}
