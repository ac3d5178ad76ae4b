//! What the proxy's test binaries share.

use store::cluster::{MemberStatus, PgState, Role, Tags};

/// A running member at `addr` (`host:port`) with no lag: streaming when a
/// replica, leading in `term` when a primary that gives one.
pub fn member_status(
    name: &str,
    role: Role,
    addr: impl std::fmt::Display,
    term: Option<u64>,
) -> MemberStatus {
    MemberStatus {
        name: name.to_string(),
        role,
        state: PgState::Running,
        timeline: Some(1),
        flush_lsn: None,
        receive_lsn: None,
        replay_lsn: None,
        lag_bytes: Some(0),
        lag_ms: Some(0),
        api_url: String::new(),
        pg_url: format!("postgres://{addr}/postgres"),
        tags: Tags::default(),
        updated_ms: 0,
        upstream: None,
        streaming: role == Role::Replica,
        term,
        note: String::new(),
        can_backup: false,
        pending_restart: Vec::new(),
        config_errors: Vec::new(),
        archive: None,
        slots: Vec::new(),
        reachability: None,
    }
}
