//! What the tests of the cluster's modules start from.

use std::sync::Arc;

use super::{ClusterKeys, MemberStatus, PgState, Role, Tags, DEFAULT_NAMESPACE};
use crate::{ManualClock, MemoryStore};

pub fn keys() -> ClusterKeys {
    ClusterKeys::new(DEFAULT_NAMESPACE, "main").unwrap()
}

pub fn store() -> MemoryStore {
    MemoryStore::new(Arc::new(ManualClock::default()))
}

/// A standby streaming from db2.
pub fn member() -> MemberStatus {
    MemberStatus {
        name: "db1".to_string(),
        role: Role::Replica,
        state: PgState::Running,
        timeline: Some(3),
        flush_lsn: None,
        receive_lsn: Some(0x3000060),
        replay_lsn: Some(0x3000028),
        lag_bytes: Some(56),
        lag_ms: Some(0),
        api_url: "http://127.0.0.1:8008".to_string(),
        pg_url: "postgres://127.0.0.1:5432/postgres".to_string(),
        tags: Tags::default(),
        updated_ms: 1_790_000_000_000,
        upstream: Some("db2".to_string()),
        streaming: true,
        term: None,
        note: "following db2".to_string(),
        can_backup: false,
        pending_restart: Vec::new(),
        config_errors: Vec::new(),
        archive: None,
        slots: Vec::new(),
        reachability: None,
    }
}
