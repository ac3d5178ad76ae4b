//! The cluster's keys and records (the layout of DESIGN.md):
//!
//! ```text
//! <namespace>/<cluster>/leader            Leader          bound to the leader's lease
//! <namespace>/<cluster>/members/<name>    MemberStatus    bound to the member's lease
//! <namespace>/<cluster>/config            DynamicConfig   changed by compare-and-set
//! <namespace>/<cluster>/initialize        Initialize      written once (create-if-absent)
//! <namespace>/<cluster>/sync              SyncState
//! <namespace>/<cluster>/switchover        Switchover
//! <namespace>/<cluster>/history           History
//! <namespace>/<cluster>/primary_position  PrimaryPosition the leader's last WAL position, kept after it dies
//! <namespace>/<cluster>/events/<seq>      Event           bounded, oldest trimmed
//! ```
//!
//! The leader's term (fencing token) is the store revision that created its
//! key: the store numbers every write, so a later leadership always has a
//! larger term, and no second write is needed to pick one.
//!
//! The namespace is `/pgwarden` unless configured otherwise. Times are unix
//! milliseconds, WAL positions (LSNs) plain `u64` byte positions.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::typed::{Record, TypedKey, TypedPrefix};
use crate::types::Expect;
use crate::Store;

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
    Event(u64),
}

/// Checks a name used as one key segment (cluster, member).
pub fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    let invalid = |detail: &str| StoreError::InvalidName {
        what,
        name: name.to_string(),
        detail: detail.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("it is empty; give a name"));
    }
    if name.len() > 128 {
        return Err(invalid(
            "it is longer than 128 bytes; choose a shorter name",
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            "only ASCII letters, digits, `-`, `_` and `.` are allowed; rename it",
        ));
    }
    Ok(())
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

    pub fn sync(&self) -> TypedKey<SyncState> {
        TypedKey::new(format!("{}sync", self.root))
    }

    pub fn failsafe(&self) -> TypedKey<FailsafeMembers> {
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
            _ => {
                if let Some(name) = rest.strip_prefix("members/") {
                    check_name("member name", name).ok()?;
                    ClusterKey::Member(name.to_string())
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

/// Who holds the leader key. Its term is the key's create revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Leader {
    pub member: String,
}

impl Record for Leader {
    const KIND: &'static str = "leader";
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Replica,
    Witness,
    Unknown,
}

/// What the member's PostgreSQL is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PgState {
    Bootstrapping,
    Cloning,
    Starting,
    Running,
    Stopping,
    Stopped,
    Crashed,
    Promoting,
    Demoting,
    Rewinding,
    Unknown,
}

/// Operator tags of a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tags {
    /// Never promote this member.
    pub nofailover: bool,
    /// Never make this member a synchronous standby.
    pub nosync: bool,
    /// Keep this member out of the proxy's read-only balancing.
    pub noloadbalance: bool,
    /// Among equally good candidates, the higher is promoted.
    pub priority: u32,
}

impl Default for Tags {
    fn default() -> Self {
        Tags {
            nofailover: false,
            nosync: false,
            noloadbalance: false,
            priority: 100,
        }
    }
}

/// What a member publishes about itself every heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberStatus {
    pub name: String,
    pub role: Role,
    pub state: PgState,
    pub timeline: Option<u32>,
    /// On a primary: WAL flushed locally (`pg_current_wal_flush_lsn()`).
    pub flush_lsn: Option<u64>,
    /// On a standby: WAL received (`pg_last_wal_receive_lsn()`).
    pub receive_lsn: Option<u64>,
    /// On a standby: WAL replayed (`pg_last_wal_replay_lsn()`).
    pub replay_lsn: Option<u64>,
    /// Bytes behind the primary's last published position.
    pub lag_bytes: Option<u64>,
    /// On a standby: how long ago the last replayed transaction committed
    /// on the primary, 0 when everything received is replayed.
    #[serde(default)]
    pub lag_ms: Option<u64>,
    /// The member's REST API, e.g. `http://10.0.0.2:8008`.
    pub api_url: String,
    /// How to reach its PostgreSQL, e.g. `postgres://10.0.0.2:5432/postgres`.
    pub pg_url: String,
    pub tags: Tags,
    pub updated_ms: u64,
    /// The member a standby streams from (as configured).
    #[serde(default)]
    pub upstream: Option<String>,
    /// Whether a standby's WAL receiver is streaming.
    #[serde(default)]
    pub streaming: bool,
    /// On the leader's primary: the term it leads in (the proxy routes
    /// writes only to the member whose key and status agree on it).
    #[serde(default)]
    pub term: Option<u64>,
    /// What its agent last decided, in words.
    #[serde(default)]
    pub note: String,
    /// Parameters changed in its configuration that take effect only when
    /// its PostgreSQL restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_restart: Vec<String>,
    /// Settings its PostgreSQL could not apply: a bad value it ignores now
    /// and would refuse to start with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_errors: Vec<String>,
}

impl Record for MemberStatus {
    const KIND: &'static str = "member status";
}

impl MemberStatus {
    /// PostgreSQL runs read-write here, by its own account.
    pub fn is_running_primary(&self) -> bool {
        self.role == Role::Primary && self.state == PgState::Running
    }

    /// A standby whose WAL receiver streams, by its own account.
    pub fn is_streaming_standby(&self) -> bool {
        self.role == Role::Replica && self.state == PgState::Running && self.streaming
    }

    /// Where its PostgreSQL listens, from `pg_url`.
    pub fn pg_address(&self) -> Result<PgAddress, String> {
        parse_pg_url(&self.pg_url)
    }
}

/// A host (IPv6 without brackets) and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgAddress {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for PgAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `postgres://[user[:password]@]host[:port][/db][?…]` → host and port
/// (5432 when absent); the error says what is wrong with it.
pub fn parse_pg_url(url: &str) -> Result<PgAddress, String> {
    let bad = |why: &str| {
        format!(
            "unusable pg_url \"{url}\": {why}; check member.connect_address and member.port in that member's pgwarden.toml"
        )
    };
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| bad("it does not start with postgres://"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(bad("it names no host"));
    }
    let port = match port {
        None => 5432,
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
    };
    Ok(PgAddress {
        host: host.to_string(),
        port,
    })
}

/// Cluster-wide settings changed with `pgwarden ctl config`. Missing
/// fields take their defaults; unknown ones are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamicConfig {
    /// Leader (and member) lease TTL.
    pub ttl_ms: u64,
    /// How often agents refresh their lease and publish their status.
    pub heartbeat_ms: u64,
    /// A standby further behind than this (bytes of WAL) is not promoted.
    pub maximum_lag_on_failover: u64,
    pub synchronous_mode: bool,
    pub synchronous_count: u32,
    /// With no synchronous standby left, block writes rather than go
    /// asynchronous.
    pub synchronous_strict: bool,
    /// Keep the primary running while the store is unreachable if every
    /// member confirms it over the REST API.
    pub failsafe: bool,
    /// How long a crashed primary may take to restart in place before its
    /// agent releases the leader key.
    pub restart_grace_ms: u64,
    /// Automatic failover suspended (maintenance).
    pub paused: bool,
    /// PostgreSQL parameters applied on every member.
    pub parameters: BTreeMap<String, String>,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            ttl_ms: 3_000,
            heartbeat_ms: 500,
            maximum_lag_on_failover: 1 << 20,
            synchronous_mode: false,
            synchronous_count: 1,
            synchronous_strict: false,
            failsafe: false,
            restart_grace_ms: 2_000,
            paused: false,
            parameters: BTreeMap::new(),
        }
    }
}

impl DynamicConfig {
    /// What is wrong with the settings, one message per problem.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.ttl_ms < config::MIN_LEASE_TTL.as_millis() as u64 {
            problems.push(format!(
                "ttl_ms = {} is below 1000; etcd leases count whole seconds",
                self.ttl_ms
            ));
        }
        if !config::heartbeat_fits(
            Duration::from_millis(self.heartbeat_ms),
            Duration::from_millis(self.ttl_ms),
        ) {
            problems.push(format!(
                "heartbeat_ms = {} must be above 0 and at most half of ttl_ms = {}, so a lease is refreshed at least twice per TTL",
                self.heartbeat_ms, self.ttl_ms
            ));
        }
        if self.synchronous_count == 0 {
            problems.push("synchronous_count must be at least 1".to_string());
        }
        for (name, value) in &self.parameters {
            if let Some(instead) = config::managed_parameter(name) {
                problems.push(format!(
                    "parameters.{name} is managed by pgwarden: {instead}"
                ));
            } else if let Some(problem) = config::bad_parameter_name(name) {
                problems.push(problem);
            } else if let Some(problem) =
                config::bad_parameter_value(&format!("parameters.{name}"), value)
            {
                problems.push(problem);
            }
        }
        problems
    }
}

impl Record for DynamicConfig {
    const KIND: &'static str = "dynamic configuration";
}

/// The cluster's identity. Created (create-if-absent) by the member that
/// wins the right to run initdb, then completed with the system identifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Initialize {
    pub member: String,
    pub system_identifier: Option<u64>,
}

impl Record for Initialize {
    const KIND: &'static str = "initialize";
}

/// How far the primary has written, published by the leader every
/// heartbeat. Not leased: after the primary dies it bounds how far behind a
/// standby may be and still be promoted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct FailsafeMembers {
    pub leader: String,
    /// Member name → API URL, the leader included.
    pub members: BTreeMap<String, String>,
}

impl Record for FailsafeMembers {
    const KIND: &'static str = "failsafe members";
}

/// The synchronous standbys the primary has actually configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncState {
    pub leader: String,
    pub members: Vec<String>,
    pub term: u64,
}

impl Record for SyncState {
    const KIND: &'static str = "synchronous state";
}

/// A pending planned switchover, or a manual failover.
///
/// Created (create-if-absent) by the REST API; carried out and deleted by
/// the agents. With `from` set it is a switchover: only if that member
/// still leads, its primary stops cleanly and hands over. With `from`
/// unset it is a manual failover: when no member leads, only `to` may take
/// the leader key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

/// The old primary's half of a switchover: it has stopped, and `to` may
/// take the leader key once it has replayed up to `final_lsn`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

/// The timeline history, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    pub entries: Vec<HistoryEntry>,
}

impl Record for History {
    const KIND: &'static str = "timeline history";
}

/// One entry of the bounded event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    use std::sync::Arc;

    use super::*;
    use crate::typed::{decode, encode};
    use crate::{ManualClock, MemoryStore};

    fn keys() -> ClusterKeys {
        ClusterKeys::new(DEFAULT_NAMESPACE, "main").unwrap()
    }

    fn store() -> MemoryStore {
        MemoryStore::new(Arc::new(ManualClock::default()))
    }

    fn member() -> MemberStatus {
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
            pending_restart: Vec::new(),
            config_errors: Vec::new(),
        }
    }

    /// Every key of the dynamic configuration has a row in
    /// docs/configuration.md (all of them serialize: none is optional).
    #[test]
    fn every_dynamic_config_key_is_documented() {
        let doc = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/configuration.md"
        ));
        let section = doc
            .split("\n## ")
            .find(|s| s.starts_with("Dynamic configuration"))
            .expect("docs/configuration.md has a `## Dynamic configuration` section");
        let value = serde_json::to_value(DynamicConfig::default()).unwrap();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert!(keys.len() >= 10, "{keys:?}");
        let missing: Vec<&&String> = keys
            .iter()
            .filter(|key| !section.contains(&format!("| `{key}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md does not document {missing:?}"
        );
    }

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
    fn pg_urls_give_host_and_port_or_say_what_is_wrong() {
        for (url, host, port) in [
            ("postgres://10.0.0.2:5433/postgres", "10.0.0.2", 5433),
            (
                "postgresql://u:p@db.example:6000/x?sslmode=off",
                "db.example",
                6000,
            ),
            ("postgres://db.example", "db.example", 5432),
            ("postgres://[::1]:5432/postgres", "::1", 5432),
        ] {
            let address = parse_pg_url(url).unwrap();
            assert_eq!((address.host.as_str(), address.port), (host, port), "{url}");
        }
        assert_eq!(
            parse_pg_url("postgres://[::1]:5432").unwrap().to_string(),
            "[::1]:5432"
        );
        for url in [
            "http://h:1",
            "postgres://:5432",
            "postgres://h:0",
            "postgres://h:x",
            "postgres://[::1",
        ] {
            let err = parse_pg_url(url).unwrap_err();
            assert!(
                err.contains(url) && err.contains("member.connect_address"),
                "{err}"
            );
        }
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

    #[test]
    fn records_round_trip_with_their_schema_version() {
        let leader = Leader {
            member: "db1".to_string(),
        };
        let bytes = encode("k", &leader).unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"schema":1,"member":"db1"}"#
        );
        assert_eq!(decode::<Leader>("k", &bytes).unwrap(), leader);
        let status = member();
        assert_eq!(
            decode::<MemberStatus>("k", &encode("k", &status).unwrap()).unwrap(),
            status
        );
        let config = DynamicConfig::default();
        assert_eq!(
            decode::<DynamicConfig>("k", &encode("k", &config).unwrap()).unwrap(),
            config
        );
        assert!(config.problems().is_empty(), "{:?}", config.problems());
    }

    #[test]
    fn garbage_and_unknown_versions_are_errors_naming_the_key() {
        let key = "/pgwarden/main/leader";
        let cases: &[(&[u8], &str)] = &[
            (b"\xff\x00garbage", "not JSON"),
            (b"[1,2]", "expected a JSON object"),
            (br#"{"member":"db1"}"#, "no `schema` field"),
            (
                br#"{"schema":"one","member":"db1"}"#,
                "not a version number",
            ),
            (br#"{"schema":2,"member":"db1"}"#, "upgrade pgwarden"),
            (br#"{"schema":0,"member":"db1"}"#, "older than"),
            (br#"{"schema":1}"#, "missing field `member`"),
            (br#"{"schema":1,"member":-1}"#, "not a valid leader"),
            (br#"{"schema":1,"member":"db1","x":0}"#, "unknown field `x`"),
        ];
        for (bytes, expected) in cases {
            let err = decode::<Leader>(key, bytes).unwrap_err();
            let StoreError::BadData { key: named, .. } = &err else {
                panic!("{err:?}");
            };
            assert_eq!(named, key);
            let message = err.to_string();
            assert!(message.contains(key), "{message}");
            assert!(
                message.contains(expected),
                "{message} should say {expected}"
            );
        }
    }

    #[test]
    fn config_fills_missing_fields_with_defaults_and_refuses_unknown_ones() {
        let config: DynamicConfig = decode(
            "c",
            br#"{"schema":1,"ttl_ms":20000,"parameters":{"work_mem":"8MB"}}"#,
        )
        .unwrap();
        assert_eq!(config.ttl_ms, 20_000);
        assert_eq!(config.heartbeat_ms, DynamicConfig::default().heartbeat_ms);
        assert_eq!(config.parameters["work_mem"], "8MB");
        assert!(decode::<DynamicConfig>("c", br#"{"schema":1,"ttl":1}"#).is_err());
        let bad = DynamicConfig {
            ttl_ms: 2_000,
            heartbeat_ms: 1_500,
            ..DynamicConfig::default()
        };
        assert_eq!(bad.problems().len(), 1, "{:?}", bad.problems());
    }

    #[test]
    fn parameters_pgwarden_manages_or_that_cannot_be_written_are_refused() {
        let mut config = DynamicConfig::default();
        for (name, value) in [
            ("work_mem", "8MB"),
            ("Port", "5433"),
            ("synchronous_standby_names", "*"),
            ("work mem", "1"),
            ("log_line_prefix", "a\nb"),
        ] {
            config.parameters.insert(name.into(), value.into());
        }
        let problems = config.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0].contains("parameters.Port is managed by pgwarden: set member.port instead")
        );
        assert!(problems[1].contains("control character"), "{problems:?}");
        assert!(problems[2].contains("synchronous_mode"), "{problems:?}");
        assert!(
            problems[3].contains("not a PostgreSQL parameter name"),
            "{problems:?}"
        );
    }

    #[tokio::test]
    async fn typed_keys_read_write_and_compare() {
        let store = store();
        let keys = keys();
        assert_eq!(keys.leader().get(&store).await.unwrap(), None);
        let leader = Leader {
            member: "db1".to_string(),
        };
        let revision = keys.leader().create(&store, &leader, None).await.unwrap();
        let read = keys.leader().get(&store).await.unwrap().unwrap();
        assert_eq!(read.value, leader);
        assert_eq!(read.mod_revision, revision);
        let err = keys
            .leader()
            .create(&store, &leader, None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
        store
            .put(keys.leader().key(), b"{oops".to_vec(), None)
            .await
            .unwrap();
        let err = keys.leader().get(&store).await.unwrap_err();
        assert!(err.to_string().contains("/pgwarden/main/leader"), "{err}");
    }

    #[tokio::test]
    async fn a_bad_member_does_not_hide_the_others() {
        let store = store();
        let keys = keys();
        keys.member("db1")
            .unwrap()
            .put(&store, &member(), None)
            .await
            .unwrap();
        store
            .put("/pgwarden/main/members/db2", b"garbage".to_vec(), None)
            .await
            .unwrap();
        let members = keys.members().list(&store).await.unwrap();
        assert_eq!(members.entries.keys().collect::<Vec<_>>(), ["db1"]);
        assert_eq!(members.bad.len(), 1);
        assert!(members.bad[0]
            .to_string()
            .contains("/pgwarden/main/members/db2"));
    }

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
