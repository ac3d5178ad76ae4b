//! The cluster-wide settings (`<cluster>/config`) and what is wrong with them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::typed::Record;

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
    /// `false`, `true` (`FIRST n`) or `"quorum"` (`ANY n`).
    pub synchronous_mode: SynchronousMode,
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
    /// How long a primary's reachability check (`[member] reachability`)
    /// must fail, without a pause, before it hands over to a standby whose
    /// check passes.
    pub reachability_grace_ms: u64,
    /// Automatic failover suspended (maintenance).
    pub paused: bool,
    /// PostgreSQL parameters applied on every member.
    pub parameters: BTreeMap<String, String>,
    /// Between scheduled base backups; 0: none scheduled.
    pub backup_interval_ms: u64,
    /// A scheduled backup is full when the last full one is older than
    /// this, else incremental; 0: always full.
    pub backup_full_interval_ms: u64,
    /// Databases the member that took a base backup then dumps with
    /// pg_dump into the repository (skipped when nothing changed); empty:
    /// none.
    pub dump_databases: Vec<String>,
    /// Dumps kept per database (the newest).
    pub dump_keep: u32,
    /// How long the primary keeps the replication slot of a member whose
    /// agent is down (its status gone), e.g. for maintenance: back within
    /// it, the member finds its WAL; meanwhile the slot holds that WAL on
    /// the primary (`ctl list` shows how much).
    pub slot_retention_ms: u64,
}

/// Bounds of `slot_retention_ms`: long enough for an agent restart, and
/// at most 30 days (a slot holding a month of WAL is a full disk).
pub const SLOT_RETENTION_MIN_MS: u64 = 10_000;
pub const SLOT_RETENTION_MAX_MS: u64 = 30 * 24 * 3600 * 1000;

/// How commits wait for standbys, as written in the configuration:
/// `false` (asynchronous), `true` (`FIRST n`, every named standby
/// confirms) or `"quorum"` (`ANY n` of every healthy standby).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SynchronousMode {
    Off,
    First,
    #[default]
    Quorum,
}

impl SynchronousMode {
    pub fn to_ha(self) -> ha::SyncMode {
        match self {
            SynchronousMode::Off => ha::SyncMode::Off,
            SynchronousMode::First => ha::SyncMode::First,
            SynchronousMode::Quorum => ha::SyncMode::Quorum,
        }
    }
}

impl Serialize for SynchronousMode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            SynchronousMode::Off => serializer.serialize_bool(false),
            SynchronousMode::First => serializer.serialize_bool(true),
            SynchronousMode::Quorum => serializer.serialize_str("quorum"),
        }
    }
}

impl<'de> Deserialize<'de> for SynchronousMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Flag(bool),
            Word(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Flag(false) => Ok(SynchronousMode::Off),
            Written::Flag(true) => Ok(SynchronousMode::First),
            Written::Word(word) => match word.as_str() {
                "quorum" => Ok(SynchronousMode::Quorum),
                "off" | "false" => Ok(SynchronousMode::Off),
                "on" | "true" => Ok(SynchronousMode::First),
                other => Err(serde::de::Error::custom(format!(
                    "synchronous_mode = {other:?}: use \"quorum\" (any synchronous_count of the healthy standbys confirm each commit), \
                     true (the first synchronous_count standbys all confirm) or false (asynchronous: a failover may lose commits)"
                ))),
            },
        }
    }
}

/// `reachability_grace_ms`: by default long enough that a switch port
/// flapping or an application host rebooting moves no primary, short
/// enough that clients cut off get a reachable primary within a minute.
const REACHABILITY_GRACE_DEFAULT_MS: u64 = 10_000;
/// At least a few checks (each up to its timeout, a second by default)
/// must agree before a primary moves; beyond an hour the rule is off in
/// all but name.
const REACHABILITY_GRACE_MIN_MS: u64 = 3_000;
const REACHABILITY_GRACE_MAX_MS: u64 = 3_600_000;

/// Bounds of `dump_keep`: at least the newest dump, and a number a
/// repository listing stays quick with.
const DUMP_KEEP_MAX: u32 = 1000;
/// PostgreSQL's longest identifier (NAMEDATALEN - 1).
const DATABASE_NAME_MAX: usize = 63;

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            ttl_ms: 3_000,
            heartbeat_ms: 500,
            maximum_lag_on_failover: 1 << 20,
            // No acknowledged commit lost by default (docs/agent.md).
            synchronous_mode: SynchronousMode::Quorum,
            synchronous_count: 1,
            synchronous_strict: false,
            failsafe: false,
            restart_grace_ms: 2_000,
            reachability_grace_ms: REACHABILITY_GRACE_DEFAULT_MS,
            paused: false,
            parameters: BTreeMap::new(),
            backup_interval_ms: 0,
            backup_full_interval_ms: 0,
            dump_databases: Vec::new(),
            dump_keep: 7,
            slot_retention_ms: 10 * 60 * 1000,
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
        // Both hold failover off that long: beyond a few minutes it is
        // failover turned off.
        let max_ms = config::MAX_LEASE_TTL.as_millis() as u64;
        for (key, value) in [
            ("ttl_ms", self.ttl_ms),
            ("restart_grace_ms", self.restart_grace_ms),
        ] {
            if value > max_ms {
                problems.push(format!(
                    "{key} = {value} is above {max_ms}; use at most {max_ms} (5 minutes): failover waits that long"
                ));
            }
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
        // A year: beyond that a schedule is a mistake (and sums overflow).
        const YEAR_MS: u64 = 366 * 24 * 3600 * 1000;
        for (key, value) in [
            ("backup_interval_ms", self.backup_interval_ms),
            ("backup_full_interval_ms", self.backup_full_interval_ms),
        ] {
            if value > YEAR_MS {
                problems.push(format!(
                    "{key} = {value} is more than a year ({YEAR_MS}); give a shorter interval, or 0 for none"
                ));
            }
        }
        if !(REACHABILITY_GRACE_MIN_MS..=REACHABILITY_GRACE_MAX_MS)
            .contains(&self.reachability_grace_ms)
        {
            problems.push(format!(
                "reachability_grace_ms = {} must be between {REACHABILITY_GRACE_MIN_MS} and {REACHABILITY_GRACE_MAX_MS} \
                 (3 s to 1 h): several checks must agree before a primary hands over, and an hour is the rule turned off",
                self.reachability_grace_ms
            ));
        }
        problems.extend(self.dump_problems());
        if !(SLOT_RETENTION_MIN_MS..=SLOT_RETENTION_MAX_MS).contains(&self.slot_retention_ms) {
            problems.push(format!(
                "slot_retention_ms = {} is out of bounds: give between {SLOT_RETENTION_MIN_MS} (10 s, an agent \
                 restart) and {SLOT_RETENTION_MAX_MS} (30 days); the primary keeps a stopped member's slot, and \
                 the WAL it holds, that long",
                self.slot_retention_ms
            ));
        }
        if self.synchronous_count == 0 {
            problems.push("synchronous_count must be at least 1".to_string());
        }
        problems.extend(self.refused_parameters().into_values());
        problems
    }

    /// The parameters no agent writes into PostgreSQL's configuration, each
    /// with why: the same rules `ctl config` and `PATCH /config` apply, for
    /// a record written into the store some other way.
    pub fn refused_parameters(&self) -> BTreeMap<String, String> {
        self.parameters
            .iter()
            .filter_map(|(name, value)| {
                let problem = if let Some(instead) = config::managed_parameter(name) {
                    format!("parameters.{name} is managed by pgwarden: {instead}")
                } else if let Some(problem) = config::bad_parameter_name(name) {
                    problem
                } else if let Some(instead) = config::runs_code(name) {
                    format!("parameters.{name} cannot be set cluster-wide: {instead}")
                } else {
                    config::bad_parameter_value(&format!("parameters.{name}"), value)?
                };
                Some((name.clone(), problem))
            })
            .collect()
    }

    /// The parameters an agent writes: all but the refused ones.
    pub fn applicable_parameters(&self) -> BTreeMap<String, String> {
        let refused = self.refused_parameters();
        self.parameters
            .iter()
            .filter(|(name, _)| !refused.contains_key(*name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }

    fn dump_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=DUMP_KEEP_MAX).contains(&self.dump_keep) {
            problems.push(format!(
                "dump_keep = {} must be between 1 and {DUMP_KEEP_MAX} (the newest dumps kept per database)",
                self.dump_keep
            ));
        }
        for (n, name) in self.dump_databases.iter().enumerate() {
            // The repository stores a database's dumps under its name
            // (`dumps/<database>/`): only names a path segment can hold.
            let storable = !name.is_empty()
                && name.len() <= DATABASE_NAME_MAX
                && !name.starts_with('.')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !storable {
                problems.push(format!(
                    "dump_databases: {name:?} cannot be dumped into the repository: give a database \
                     name of at most {DATABASE_NAME_MAX} letters, digits, '_', '-' and '.' (not first)"
                ));
            } else if self.dump_databases[..n].contains(name) {
                problems.push(format!("dump_databases names {name:?} twice"));
            }
        }
        problems
    }
}

impl Record for DynamicConfig {
    const KIND: &'static str = "dynamic configuration";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typed::{decode, encode};

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
    fn a_slot_retention_out_of_bounds_is_refused() {
        for bad in [0, SLOT_RETENTION_MIN_MS - 1, SLOT_RETENTION_MAX_MS + 1] {
            let config = DynamicConfig {
                slot_retention_ms: bad,
                ..DynamicConfig::default()
            };
            let problems = config.problems();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].starts_with(&format!("slot_retention_ms = {bad} is out of bounds")),
                "{problems:?}"
            );
        }
        for good in [SLOT_RETENTION_MIN_MS, 3_600_000, SLOT_RETENTION_MAX_MS] {
            let config = DynamicConfig {
                slot_retention_ms: good,
                ..DynamicConfig::default()
            };
            assert!(config.problems().is_empty());
        }
    }

    #[test]
    fn a_backup_interval_beyond_a_year_is_refused() {
        let config = DynamicConfig {
            backup_interval_ms: u64::MAX,
            backup_full_interval_ms: 7 * 24 * 3600 * 1000,
            ..DynamicConfig::default()
        };
        let problems = config.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("backup_interval_ms = "),
            "{problems:?}"
        );
    }

    #[test]
    fn dump_settings_out_of_bounds_or_unstorable_are_refused() {
        let config = DynamicConfig {
            dump_databases: vec![
                "app".into(),
                "billing-2".into(),
                "my db".into(),
                "app".into(),
                ".hidden".into(),
                "x".repeat(64),
            ],
            dump_keep: 0,
            ..DynamicConfig::default()
        };
        let problems = config.problems();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].starts_with("dump_keep = 0 must be between 1 and 1000"));
        assert!(
            problems[1].contains("\"my db\" cannot be dumped"),
            "{problems:?}"
        );
        assert_eq!(problems[2], "dump_databases names \"app\" twice");
        assert!(problems[3].contains("\".hidden\""), "{problems:?}");
        assert!(problems[4].contains("at most 63"), "{problems:?}");
        let config = DynamicConfig {
            dump_keep: DUMP_KEEP_MAX + 1,
            ..DynamicConfig::default()
        };
        assert_eq!(config.problems().len(), 1);
    }

    #[test]
    fn timings_that_would_disable_failover_are_refused() {
        let config = DynamicConfig {
            ttl_ms: 3_600_000,
            heartbeat_ms: 500,
            restart_grace_ms: 300_001,
            ..DynamicConfig::default()
        };
        let problems = config.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("ttl_ms = 3600000 is above 300000"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("restart_grace_ms = 300001 is above 300000"),
            "{problems:?}"
        );
        let longest = DynamicConfig {
            ttl_ms: 300_000,
            restart_grace_ms: 300_000,
            ..DynamicConfig::default()
        };
        assert!(longest.problems().is_empty(), "{:?}", longest.problems());
    }

    #[test]
    fn a_reachability_grace_out_of_bounds_is_refused() {
        for (grace, ok) in [
            (0, false),
            (2_999, false),
            (3_000, true),
            (3_600_000, true),
            (3_600_001, false),
        ] {
            let config = DynamicConfig {
                reachability_grace_ms: grace,
                ..DynamicConfig::default()
            };
            let problems = config.problems();
            assert_eq!(problems.is_empty(), ok, "{grace}: {problems:?}");
            if !ok {
                assert!(
                    problems[0].starts_with(&format!(
                        "reachability_grace_ms = {grace} must be between 3000 and 3600000"
                    )),
                    "{problems:?}"
                );
            }
        }
    }

    #[test]
    fn the_defaults_round_trip_and_are_valid() {
        let config = DynamicConfig::default();
        assert_eq!(
            decode::<DynamicConfig>("k", &encode("k", &config).unwrap()).unwrap(),
            config
        );
        assert!(config.problems().is_empty(), "{:?}", config.problems());
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

    #[test]
    fn parameters_that_run_code_are_refused_and_left_out_of_the_applicable_ones() {
        let mut config = DynamicConfig::default();
        for (name, value) in [
            ("work_mem", "8MB"),
            ("shared_preload_libraries", "evil"),
            ("Archive_Library", "evil"),
            ("SSL_passphrase_command", "/bin/sh -c evil"),
            ("jit_provider", "evil"),
            ("x\nshared_preload_libraries", "evil"),
            ("a=b", "1"),
            ("log_line_prefix", "x'\nshared_preload_libraries = 'evil"),
        ] {
            config.parameters.insert(name.into(), value.into());
        }
        let refused = config.refused_parameters();
        assert_eq!(refused.len(), 7, "{refused:?}");
        assert_eq!(
            refused["shared_preload_libraries"],
            "parameters.shared_preload_libraries cannot be set cluster-wide: it runs a program or \
             loads code: set it in [postgresql.parameters] of each member's pgwarden.toml instead"
        );
        assert!(refused["SSL_passphrase_command"].contains("runs a program"));
        assert!(refused["jit_provider"].contains("runs a program"));
        // pgwarden archives itself: the managed message stays.
        assert!(
            refused["Archive_Library"].contains("is managed by pgwarden: pgwarden archives WAL")
        );
        assert!(refused["a=b"].contains("not a PostgreSQL parameter name"));
        assert!(refused["x\nshared_preload_libraries"].contains("not a PostgreSQL parameter name"));
        assert!(refused["log_line_prefix"].contains("control character"));
        let problems = config.problems();
        assert_eq!(problems.len(), 7, "{problems:?}");
        assert_eq!(
            config.applicable_parameters(),
            BTreeMap::from([("work_mem".to_string(), "8MB".to_string())])
        );
    }
}
