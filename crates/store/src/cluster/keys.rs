//! Where each record of a cluster lives: the key layout, and what a key
//! found under the cluster's prefix is.

use super::names::check_name;
use super::{
    BackupAssignment, BackupRequest, DynamicConfig, Event, FailsafeList, History, Initialize,
    LastBackup, LastDumps, Leader, MemberStatus, PrimaryPosition, RemovedMember, Switchover,
    SyncSet,
};
use crate::error::StoreError;
use crate::typed::{TypedKey, TypedPrefix};

pub const DEFAULT_NAMESPACE: &str = "/pgwarden";

/// The typed keys of one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterKeys {
    cluster: String,
    /// `<namespace>/<cluster>/`
    root: String,
}

/// What a key under [`ClusterKeys::prefix`] is, for routing watch events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterKey {
    Leader,
    Member(String),
    Config,
    Initialize,
    Sync,
    Failsafe,
    Switchover,
    History,
    PrimaryPosition,
    BackupRequest,
    BackupAssignment,
    LastBackup,
    LastDumps,
    /// A member retired with `pgwarden ctl remove`.
    Removed(String),
    Event(u64),
}

impl ClusterKeys {
    /// `namespace` is a path like `/pgwarden` (a trailing `/` is ignored).
    pub fn new(namespace: &str, cluster: &str) -> Result<ClusterKeys, StoreError> {
        let namespace = namespace.trim_end_matches('/');
        if !namespace.is_empty() && !namespace.starts_with('/') {
            return Err(StoreError::InvalidName {
                what: "store namespace",
                name: namespace.to_string(),
                detail: "it must start with `/`, like /pgwarden".to_string(),
            });
        }
        check_name("cluster name", cluster)?;
        Ok(ClusterKeys {
            cluster: cluster.to_string(),
            root: format!("{namespace}/{cluster}/"),
        })
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The prefix of every key of the cluster: watch it to see everything.
    pub fn prefix(&self) -> &str {
        &self.root
    }

    pub fn leader(&self) -> TypedKey<Leader> {
        TypedKey::new(format!("{}leader", self.root))
    }

    pub fn members(&self) -> TypedPrefix<MemberStatus> {
        TypedPrefix::new(format!("{}members/", self.root))
    }

    pub fn member(&self, name: &str) -> Result<TypedKey<MemberStatus>, StoreError> {
        check_name("member name", name)?;
        Ok(self.members().key(name))
    }

    pub fn config(&self) -> TypedKey<DynamicConfig> {
        TypedKey::new(format!("{}config", self.root))
    }

    pub fn initialize(&self) -> TypedKey<Initialize> {
        TypedKey::new(format!("{}initialize", self.root))
    }

    pub fn sync(&self) -> TypedKey<SyncSet> {
        TypedKey::new(format!("{}sync", self.root))
    }

    pub fn failsafe(&self) -> TypedKey<FailsafeList> {
        TypedKey::new(format!("{}failsafe", self.root))
    }

    pub fn switchover(&self) -> TypedKey<Switchover> {
        TypedKey::new(format!("{}switchover", self.root))
    }

    pub fn history(&self) -> TypedKey<History> {
        TypedKey::new(format!("{}history", self.root))
    }

    pub fn primary_position(&self) -> TypedKey<PrimaryPosition> {
        TypedKey::new(format!("{}primary_position", self.root))
    }

    pub fn backup_request(&self) -> TypedKey<BackupRequest> {
        TypedKey::new(format!("{}backup/request", self.root))
    }

    pub fn backup_assignment(&self) -> TypedKey<BackupAssignment> {
        TypedKey::new(format!("{}backup/assignment", self.root))
    }

    pub fn last_backup(&self) -> TypedKey<LastBackup> {
        TypedKey::new(format!("{}backup/last", self.root))
    }

    pub fn last_dumps(&self) -> TypedKey<LastDumps> {
        TypedKey::new(format!("{}backup/dumps", self.root))
    }

    pub fn removed_members(&self) -> TypedPrefix<RemovedMember> {
        TypedPrefix::new(format!("{}removed/", self.root))
    }

    pub fn removed(&self, name: &str) -> Result<TypedKey<RemovedMember>, StoreError> {
        check_name("member name", name)?;
        Ok(self.removed_members().key(name))
    }

    pub fn events(&self) -> TypedPrefix<Event> {
        TypedPrefix::new(format!("{}events/", self.root))
    }

    /// Event keys are zero-padded so key order is sequence order.
    pub fn event(&self, seq: u64) -> TypedKey<Event> {
        self.events().key(&format!("{seq:020}"))
    }

    /// What `key` is, or `None` when it is not one of this cluster's keys.
    pub fn classify(&self, key: &str) -> Option<ClusterKey> {
        let rest = key.strip_prefix(self.root.as_str())?;
        Some(match rest {
            "leader" => ClusterKey::Leader,
            "config" => ClusterKey::Config,
            "initialize" => ClusterKey::Initialize,
            "sync" => ClusterKey::Sync,
            "failsafe" => ClusterKey::Failsafe,
            "switchover" => ClusterKey::Switchover,
            "history" => ClusterKey::History,
            "primary_position" => ClusterKey::PrimaryPosition,
            "backup/request" => ClusterKey::BackupRequest,
            "backup/assignment" => ClusterKey::BackupAssignment,
            "backup/last" => ClusterKey::LastBackup,
            "backup/dumps" => ClusterKey::LastDumps,
            _ => {
                if let Some(name) = rest.strip_prefix("members/") {
                    check_name("member name", name).ok()?;
                    ClusterKey::Member(name.to_string())
                } else if let Some(name) = rest.strip_prefix("removed/") {
                    check_name("member name", name).ok()?;
                    ClusterKey::Removed(name.to_string())
                } else {
                    let seq = rest.strip_prefix("events/")?;
                    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    ClusterKey::Event(seq.parse().ok()?)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::keys;

    #[test]
    fn keys_follow_the_documented_layout() {
        let keys = keys();
        assert_eq!(keys.prefix(), "/pgwarden/main/");
        assert_eq!(keys.leader().key(), "/pgwarden/main/leader");
        assert_eq!(
            keys.member("db1").unwrap().key(),
            "/pgwarden/main/members/db1"
        );
        assert_eq!(keys.config().key(), "/pgwarden/main/config");
        assert_eq!(keys.initialize().key(), "/pgwarden/main/initialize");
        assert_eq!(keys.sync().key(), "/pgwarden/main/sync");
        assert_eq!(keys.failsafe().key(), "/pgwarden/main/failsafe");
        assert_eq!(keys.switchover().key(), "/pgwarden/main/switchover");
        assert_eq!(keys.history().key(), "/pgwarden/main/history");
        assert_eq!(
            keys.event(7).key(),
            "/pgwarden/main/events/00000000000000000007"
        );
        assert_eq!(
            ClusterKeys::new("/other/", "c").unwrap().leader().key(),
            "/other/c/leader"
        );
    }

    #[test]
    fn keys_classify_back() {
        let keys = keys();
        assert_eq!(
            keys.classify("/pgwarden/main/leader"),
            Some(ClusterKey::Leader)
        );
        assert_eq!(
            keys.classify("/pgwarden/main/members/db2"),
            Some(ClusterKey::Member("db2".to_string()))
        );
        assert_eq!(
            keys.classify(keys.event(12).key()),
            Some(ClusterKey::Event(12))
        );
        assert_eq!(
            keys.classify("/pgwarden/main/removed/db3"),
            Some(ClusterKey::Removed("db3".to_string()))
        );
        assert_eq!(
            keys.classify("/pgwarden/main/history"),
            Some(ClusterKey::History)
        );
        assert_eq!(keys.classify("/pgwarden/other/leader"), None);
        assert_eq!(keys.classify("/pgwarden/main/events/x"), None);
        assert_eq!(keys.classify("/pgwarden/main/what"), None);
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        let err = ClusterKeys::new("/pgwarden", "a/b").unwrap_err();
        assert!(
            err.to_string().contains("invalid cluster name `a/b`"),
            "{err}"
        );
        assert!(keys().member("").is_err());
        assert!(ClusterKeys::new("pgwarden", "main").is_err());
    }
}
