//! One read of a cluster's prefix, decoded: what the agent decides on, what
//! the REST API shows and what a switchover is checked against.

use std::collections::BTreeMap;

use crate::cluster::{
    BackupAssignment, BackupRequest, ClusterKey, ClusterKeys, DynamicConfig, FailsafeList, History,
    Initialize, LastBackup, Leader, MemberStatus, PrimaryPosition, RemovedMember, Switchover,
    SyncSet,
};
use crate::error::StoreError;
use crate::typed::{decode_kv, Versioned};
use crate::types::KeyValue;
use crate::Store;

/// Everything under the cluster prefix but the events, at one revision.
#[derive(Clone, Debug, Default)]
pub struct ClusterRecords {
    pub revision: i64,
    pub config: Option<Versioned<DynamicConfig>>,
    pub initialize: Option<Versioned<Initialize>>,
    pub leader: Option<Versioned<Leader>>,
    pub members: BTreeMap<String, Versioned<MemberStatus>>,
    pub sync: Option<Versioned<SyncSet>>,
    pub failsafe: Option<Versioned<FailsafeList>>,
    pub history: Option<Versioned<History>>,
    pub primary_position: Option<Versioned<PrimaryPosition>>,
    pub switchover: Option<Versioned<Switchover>>,
    pub backup_request: Option<Versioned<BackupRequest>>,
    pub backup_assignment: Option<Versioned<BackupAssignment>>,
    pub last_backup: Option<Versioned<LastBackup>>,
    /// Members retired with `pgwarden ctl remove`, by name.
    pub removed: BTreeMap<String, Versioned<RemovedMember>>,
    /// Keys holding something this build cannot read, each naming its key
    /// ([`StoreError::BadData`]). Each is left out of the fields above and
    /// the rest is read; the API and `ctl list` list them, the agent logs
    /// them and raises an event and a metric.
    pub problems: Vec<StoreError>,
    /// Of those, the keys of records a decision cannot do without (leader,
    /// config, initialize, sync, failsafe, primary position, switchover):
    /// leaving one out would read as "none", which could start a race, a
    /// bootstrap or a promotion the record forbids. The agent decides as if
    /// the store were unreachable while one is listed (docs/store.md).
    pub blocking: Vec<String>,
}

impl ClusterRecords {
    pub fn decode<'a>(
        keys: &ClusterKeys,
        revision: i64,
        kvs: impl IntoIterator<Item = &'a KeyValue>,
    ) -> ClusterRecords {
        let mut records = ClusterRecords {
            revision,
            ..ClusterRecords::default()
        };
        for kv in kvs {
            if let Err(err) = records.add(keys, kv) {
                if blocks_decisions(keys.classify(&kv.key)) {
                    records.blocking.push(kv.key.clone());
                }
                records.problems.push(err);
            }
        }
        records
    }

    fn add(&mut self, keys: &ClusterKeys, kv: &KeyValue) -> Result<(), StoreError> {
        match keys.classify(&kv.key) {
            Some(ClusterKey::Config) => self.config = Some(decode_kv(kv)?),
            Some(ClusterKey::Initialize) => self.initialize = Some(decode_kv(kv)?),
            Some(ClusterKey::Leader) => self.leader = Some(decode_kv(kv)?),
            Some(ClusterKey::Member(name)) => {
                self.members.insert(name, decode_kv(kv)?);
            }
            Some(ClusterKey::Sync) => self.sync = Some(decode_kv(kv)?),
            Some(ClusterKey::Failsafe) => self.failsafe = Some(decode_kv(kv)?),
            Some(ClusterKey::History) => self.history = Some(decode_kv(kv)?),
            Some(ClusterKey::PrimaryPosition) => self.primary_position = Some(decode_kv(kv)?),
            Some(ClusterKey::Switchover) => self.switchover = Some(decode_kv(kv)?),
            Some(ClusterKey::BackupRequest) => self.backup_request = Some(decode_kv(kv)?),
            Some(ClusterKey::BackupAssignment) => self.backup_assignment = Some(decode_kv(kv)?),
            Some(ClusterKey::LastBackup) => self.last_backup = Some(decode_kv(kv)?),
            Some(ClusterKey::Removed(name)) => {
                self.removed.insert(name, decode_kv(kv)?);
            }
            // Events and dumps are read by whoever shows them, when asked.
            Some(ClusterKey::Event(_)) | Some(ClusterKey::LastDumps) | None => {}
        }
        Ok(())
    }

    /// Each key that did not decode, with why.
    pub fn undecodable(&self) -> Vec<(String, String)> {
        self.problems
            .iter()
            .map(|problem| match problem {
                StoreError::BadData { key, detail } => (key.clone(), detail.clone()),
                other => (String::new(), other.to_string()),
            })
            .collect()
    }

    /// Reads the whole cluster prefix at one revision.
    pub async fn read(store: &dyn Store, keys: &ClusterKeys) -> Result<ClusterRecords, StoreError> {
        let snapshot = store.get_prefix(keys.prefix()).await?;
        Ok(ClusterRecords::decode(
            keys,
            snapshot.revision,
            &snapshot.kvs,
        ))
    }

    /// The leader's term: the revision that created its key, which the store
    /// increments on every write, so a later leader always has a larger one.
    pub fn term(&self) -> Option<u64> {
        self.leader.as_ref().map(|l| l.create_revision as u64)
    }

    /// The dynamic configuration, defaults where the key is missing.
    pub fn config(&self) -> DynamicConfig {
        self.config
            .as_ref()
            .map(|c| c.value.clone())
            .unwrap_or_default()
    }

    pub fn leader_name(&self) -> Option<&str> {
        self.leader.as_ref().map(|l| l.value.member.as_str())
    }

    pub fn member(&self, name: &str) -> Option<&MemberStatus> {
        self.members.get(name).map(|m| &m.value)
    }

    /// The leader, when its own status says it runs read-write.
    pub fn healthy_leader(&self) -> Option<&MemberStatus> {
        self.member(self.leader_name()?)
            .filter(|m| m.is_running_primary())
    }

    /// The synchronous standbys the primary has published.
    /// The published synchronous standbys, none while they protect no
    /// commit (quorum 0, as while a quorum set changes).
    pub fn sync_members(&self) -> Vec<String> {
        self.sync
            .as_ref()
            .filter(|s| s.value.quorum() > 0)
            .map(|s| s.value.members.clone())
            .unwrap_or_default()
    }

    /// On how many of [`ClusterRecords::sync_members`] each acknowledged
    /// commit is.
    pub fn sync_quorum(&self) -> u32 {
        self.sync.as_ref().map_or(0, |s| s.value.quorum())
    }
}

/// Whether a record of this kind, left out, could be read as a permission
/// (no leader: race; no initialize: bootstrap; no sync set: any standby;
/// no config: defaults, unpaused) rather than a mere gap. Member statuses
/// are not: a member without one is absent, as if its agent were down,
/// which the core already handles. History and backup records only feed
/// displays and schedules.
fn blocks_decisions(kind: Option<ClusterKey>) -> bool {
    matches!(
        kind,
        Some(
            ClusterKey::Leader
                | ClusterKey::Config
                | ClusterKey::Initialize
                | ClusterKey::Sync
                | ClusterKey::Failsafe
                | ClusterKey::PrimaryPosition
                | ClusterKey::Switchover
        )
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{ManualClock, MemoryStore};

    #[tokio::test]
    async fn a_bad_key_is_a_problem_naming_it_and_the_rest_is_read() {
        let store = MemoryStore::new(Arc::new(ManualClock::default()));
        let keys = ClusterKeys::new("/pgwarden", "main").unwrap();
        let leader = Leader {
            member: "db1".into(),
        };
        keys.leader().create(&store, &leader, None).await.unwrap();
        store
            .put("/pgwarden/main/members/db2", b"garbage".to_vec(), None)
            .await
            .unwrap();
        keys.append_event(&store, 1, "db1", "test", "ignored", 10)
            .await
            .unwrap();
        let records = ClusterRecords::read(&store, &keys).await.unwrap();
        assert_eq!(records.leader_name(), Some("db1"));
        assert_eq!(
            records.term(),
            Some(records.leader.as_ref().unwrap().create_revision as u64)
        );
        assert!(records.members.is_empty());
        assert_eq!(records.problems.len(), 1, "{:?}", records.problems);
        assert!(records.problems[0]
            .to_string()
            .contains("/pgwarden/main/members/db2"));
        assert_eq!(records.config(), DynamicConfig::default());
        assert!(
            records.blocking.is_empty(),
            "a member status blocks nothing"
        );
        assert_eq!(
            records.undecodable()[0].0,
            "/pgwarden/main/members/db2",
            "{:?}",
            records.undecodable()
        );
    }

    #[tokio::test]
    async fn a_bad_record_that_decisions_need_blocks_and_a_bad_history_does_not() {
        let store = MemoryStore::new(Arc::new(ManualClock::default()));
        let keys = ClusterKeys::new("/pgwarden", "main").unwrap();
        for key in ["leader", "config", "initialize", "sync", "history"] {
            store
                .put(&format!("/pgwarden/main/{key}"), b"{oops".to_vec(), None)
                .await
                .unwrap();
        }
        let records = ClusterRecords::read(&store, &keys).await.unwrap();
        assert_eq!(records.problems.len(), 5, "{:?}", records.problems);
        let mut blocking = records.blocking.clone();
        blocking.sort();
        assert_eq!(
            blocking,
            [
                "/pgwarden/main/config",
                "/pgwarden/main/initialize",
                "/pgwarden/main/leader",
                "/pgwarden/main/sync"
            ]
        );
        assert_eq!(records.leader_name(), None);
    }
}
