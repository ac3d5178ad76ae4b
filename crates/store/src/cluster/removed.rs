//! Members retired with `pgwarden ctl remove` (`<cluster>/removed/<name>`),
//! and the one transaction that retires one.

use serde::{Deserialize, Serialize};

use super::{ClusterKeys, HistoryEntry};
use crate::error::StoreError;
use crate::typed::{encode, Record};
use crate::types::{Condition, Expect, Write};
use crate::Store;

/// A retired member. While it exists the primary keeps no slot for the
/// member, no agent counts it, and its own agent refuses to rejoin unless
/// its data directory is empty (then it deletes this record and clones
/// afresh) or an operator re-admits it (`pgwarden ctl readmit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedMember {
    pub name: String,
    /// Its data directory's system identifier and timeline when it was
    /// removed, where known (its agent retired itself, or its last status).
    #[serde(default)]
    pub system_identifier: Option<u64>,
    #[serde(default)]
    pub timeline: Option<u32>,
    pub removed_ms: u64,
    /// The member whose API or agent recorded it.
    pub by: String,
}

impl Record for RemovedMember {
    const KIND: &'static str = "removed member";
}

/// One retirement as read from a snapshot: what to write, and the
/// revisions it holds only while unchanged.
#[derive(Clone, Debug)]
pub struct Retirement {
    pub record: RemovedMember,
    /// The leader key's revision as read (`None`: absent): the removal
    /// holds only while the leadership it was admitted under stands.
    pub leader_revision: Option<i64>,
    /// Its status key's revision, to delete it (`None`: it has none).
    pub status_revision: Option<i64>,
    /// A switchover or manual failover to it, by revision, to delete.
    pub switchover_revision: Option<i64>,
}

impl Retirement {
    /// The retirement `record` against the snapshot `records`: the leader
    /// key and the member's status as read, and the switchover to it when
    /// the admission rule says to cancel it.
    pub fn against(
        records: &crate::ClusterRecords,
        record: RemovedMember,
        clear_switchover: bool,
    ) -> Retirement {
        Retirement {
            leader_revision: records.leader.as_ref().map(|l| l.mod_revision),
            status_revision: records.members.get(&record.name).map(|m| m.mod_revision),
            switchover_revision: records
                .switchover
                .as_ref()
                .filter(|_| clear_switchover)
                .map(|s| s.mod_revision),
            record,
        }
    }
}

impl ClusterKeys {
    /// Records the retirement in one transaction: the removed record
    /// (created, so a second removal fails), its status and a request to
    /// it deleted, guarded by the leader key and each deleted key being as
    /// read. A [`StoreError::Conflict`]: something changed, read again.
    pub async fn retire(
        &self,
        store: &dyn Store,
        retirement: &Retirement,
    ) -> Result<(), StoreError> {
        let name = &retirement.record.name;
        let removed = self.removed(name)?;
        let status = self.member(name)?;
        let revision = |r: Option<i64>| r.map_or(Expect::Absent, Expect::ModRevision);
        let mut conditions = vec![
            Condition {
                key: removed.key().to_string(),
                expect: Expect::Absent,
            },
            Condition {
                key: self.leader().key().to_string(),
                expect: revision(retirement.leader_revision),
            },
        ];
        let mut writes = vec![Write::Put {
            key: removed.key().to_string(),
            value: encode(removed.key(), &retirement.record)?,
            lease: None,
        }];
        if let Some(rev) = retirement.status_revision {
            conditions.push(Condition {
                key: status.key().to_string(),
                expect: Expect::ModRevision(rev),
            });
            writes.push(Write::Delete {
                key: status.key().to_string(),
            });
        }
        if let Some(rev) = retirement.switchover_revision {
            conditions.push(Condition {
                key: self.switchover().key().to_string(),
                expect: Expect::ModRevision(rev),
            });
            writes.push(Write::Delete {
                key: self.switchover().key().to_string(),
            });
        }
        store.transaction(&conditions, &writes).await?;
        Ok(())
    }

    /// Appends the retirement to the timeline history (not a promotion:
    /// `removed` names the member), at the cluster's timeline and
    /// primary position then.
    pub async fn record_retirement(
        &self,
        store: &dyn Store,
        record: &RemovedMember,
        timeline: u32,
        lsn: u64,
    ) -> Result<(), StoreError> {
        let key = self.history();
        for _ in 0..10 {
            let current = key.get(store).await?;
            let mut history = current
                .as_ref()
                .map(|h| h.value.clone())
                .unwrap_or_default();
            history.entries.push(HistoryEntry {
                timeline,
                switch_lsn: lsn,
                reason: format!("{} removed (`pgwarden ctl remove`)", record.name),
                time_ms: record.removed_ms,
                from: Some(record.name.clone()),
                to: None,
                duration_ms: None,
                removed: Some(record.name.clone()),
            });
            let expect = current.map_or(Expect::Absent, |h| Expect::ModRevision(h.mod_revision));
            match key.compare_and_set(store, expect, &history, None).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(StoreError::Conflict {
            key: key.key().to_string(),
            current: None,
        })
    }
}
