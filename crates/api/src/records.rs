//! One `get_prefix` snapshot of the cluster, decoded. Like the agent's
//! `ClusterRecords` (the agent depends on this crate, not the other way),
//! but a key holding garbage is reported next to the rest instead of
//! failing the whole read: an operator looking at a broken cluster needs to
//! see what can be seen.

use std::collections::BTreeMap;

use store::cluster::{
    ClusterKey, ClusterKeys, DynamicConfig, Leader, MemberStatus, PgState, Role, Switchover,
    SyncState,
};
use store::typed::decode_kv;
use store::{Snapshot, Store, StoreError, Versioned};

#[derive(Clone, Debug, Default)]
pub struct Records {
    pub revision: i64,
    pub config: Option<Versioned<DynamicConfig>>,
    pub leader: Option<Versioned<Leader>>,
    pub members: BTreeMap<String, Versioned<MemberStatus>>,
    pub sync: Option<Versioned<SyncState>>,
    pub switchover: Option<Versioned<Switchover>>,
    /// Keys that hold something this build cannot read.
    pub problems: Vec<String>,
}

impl Records {
    pub fn decode(keys: &ClusterKeys, snapshot: &Snapshot) -> Records {
        let mut records = Records {
            revision: snapshot.revision,
            ..Records::default()
        };
        for kv in &snapshot.kvs {
            let result: Result<(), StoreError> = (|| {
                match keys.classify(&kv.key) {
                    Some(ClusterKey::Config) => records.config = Some(decode_kv(kv)?),
                    Some(ClusterKey::Leader) => records.leader = Some(decode_kv(kv)?),
                    Some(ClusterKey::Member(name)) => {
                        records.members.insert(name, decode_kv(kv)?);
                    }
                    Some(ClusterKey::Sync) => records.sync = Some(decode_kv(kv)?),
                    Some(ClusterKey::Switchover) => records.switchover = Some(decode_kv(kv)?),
                    // The history and the events have their own endpoints,
                    // which read them when asked.
                    _ => {}
                }
                Ok(())
            })();
            if let Err(e) = result {
                records.problems.push(e.to_string());
            }
        }
        records
    }

    /// Reads the whole cluster prefix at one revision.
    pub async fn read(store: &dyn Store, keys: &ClusterKeys) -> Result<Records, StoreError> {
        let snapshot = store.get_prefix(keys.prefix()).await?;
        Ok(Records::decode(keys, &snapshot))
    }

    pub fn config(&self) -> DynamicConfig {
        self.config
            .as_ref()
            .map(|c| c.value.clone())
            .unwrap_or_default()
    }

    pub fn leader_name(&self) -> Option<&str> {
        self.leader.as_ref().map(|l| l.value.member.as_str())
    }

    pub fn term(&self) -> Option<u64> {
        self.leader.as_ref().map(|l| l.create_revision as u64)
    }

    pub fn member(&self, name: &str) -> Option<&MemberStatus> {
        self.members.get(name).map(|m| &m.value)
    }

    /// The leader, when its own status says it runs read-write.
    pub fn healthy_leader(&self) -> Option<&MemberStatus> {
        self.member(self.leader_name()?).filter(|m| runs_primary(m))
    }

    pub fn sync_members(&self) -> Vec<String> {
        self.sync
            .as_ref()
            .map(|s| s.value.members.clone())
            .unwrap_or_default()
    }
}

pub fn runs_primary(m: &MemberStatus) -> bool {
    m.role == Role::Primary && m.state == PgState::Running
}

pub fn streams(m: &MemberStatus) -> bool {
    m.role == Role::Replica && m.state == PgState::Running && m.streaming
}
