//! Typed records above the raw [`Store`]: serde JSON with a schema version.
//!
//! A record is stored as one JSON object, its own fields next to
//! `"schema": N`. Reading checks the version, so a value of another schema,
//! written by hand or by something else is an error naming the key
//! ([`StoreError::BadData`]), never a panic. Fields a newer pgwarden added
//! are ignored (records are lenient; the dynamic configuration, which an
//! operator writes, is not): in a rolling upgrade the older agents keep
//! reading what the newer ones write. A field is never renamed or re-typed;
//! a change of meaning takes a new key or a new schema (docs/store.md).

use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StoreError;
use crate::types::{Expect, KeyValue, LeaseId};
use crate::Store;

/// A record kind stored under typed keys.
pub trait Record: Serialize + DeserializeOwned + Send + Sync {
    /// What the record is, for messages ("leader", "member status").
    const KIND: &'static str;
    /// The schema version this build writes and reads.
    const SCHEMA: u64 = 1;
}

/// A decoded record and where it stands in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    /// For a later compare-and-set.
    pub mod_revision: i64,
    pub create_revision: i64,
    pub lease: Option<LeaseId>,
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    schema: u64,
    #[serde(flatten)]
    record: &'a T,
}

/// The stored bytes of a record.
pub fn encode<T: Record>(key: &str, record: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&Envelope {
        schema: T::SCHEMA,
        record,
    })
    .map_err(|e| StoreError::bad_data(key, format!("cannot encode the {}: {e}", T::KIND)))
}

/// The record in `bytes`, read from `key`.
pub fn decode<T: Record>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    let bad = |detail: String| StoreError::bad_data(key, detail);
    let not_ours = "; it was not written by pgwarden: delete the key or write a valid value";
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        bad(format!(
            "not JSON ({e}): {:?}{not_ours}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
        ))
    })?;
    let serde_json::Value::Object(mut fields) = value else {
        return Err(bad(format!(
            "expected a JSON object holding a {}{not_ours}",
            T::KIND
        )));
    };
    let schema = match fields.remove("schema") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(_) => None,
        None => {
            return Err(bad(format!(
                "no `schema` field, so not a pgwarden {} record{not_ours}",
                T::KIND
            )))
        }
    };
    match schema {
        Some(schema) if schema == T::SCHEMA => {}
        Some(schema) if schema > T::SCHEMA => {
            return Err(bad(format!(
                "{} schema version {schema} is newer than this pgwarden reads ({}); upgrade pgwarden on this host",
                T::KIND,
                T::SCHEMA
            )))
        }
        Some(schema) => {
            return Err(bad(format!(
                "{} schema version {schema} is older than this pgwarden reads ({}); rewrite the value with a current pgwarden",
                T::KIND,
                T::SCHEMA
            )))
        }
        None => {
            return Err(bad(format!(
                "`schema` is not a version number{not_ours}"
            )))
        }
    }
    serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| bad(format!("not a valid {} record: {e}", T::KIND)))
}

/// A raw key value decoded as `T`.
pub fn decode_kv<T: Record>(kv: &KeyValue) -> Result<Versioned<T>, StoreError> {
    Ok(Versioned {
        value: decode(&kv.key, &kv.value)?,
        mod_revision: kv.mod_revision,
        create_revision: kv.create_revision,
        lease: kv.lease,
    })
}

/// A key that holds records of type `T`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypedKey<T> {
    key: String,
    record: PhantomData<fn() -> T>,
}

impl<T: Record> TypedKey<T> {
    pub fn new(key: impl Into<String>) -> TypedKey<T> {
        TypedKey {
            key: key.into(),
            record: PhantomData,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The record, or `None` when the key is absent.
    pub async fn get(&self, store: &dyn Store) -> Result<Option<Versioned<T>>, StoreError> {
        store
            .get(&self.key)
            .await?
            .map(|kv| decode_kv(&kv))
            .transpose()
    }

    pub async fn put(
        &self,
        store: &dyn Store,
        record: &T,
        lease: Option<LeaseId>,
    ) -> Result<i64, StoreError> {
        store
            .put(&self.key, encode(&self.key, record)?, lease)
            .await
    }

    /// Writes only if the key is absent.
    pub async fn create(
        &self,
        store: &dyn Store,
        record: &T,
        lease: Option<LeaseId>,
    ) -> Result<i64, StoreError> {
        self.compare_and_set(store, Expect::Absent, record, lease)
            .await
    }

    /// See [`Store::compare_and_set`]; decode a conflict's current value
    /// with [`decode_kv`].
    pub async fn compare_and_set(
        &self,
        store: &dyn Store,
        expect: Expect,
        record: &T,
        lease: Option<LeaseId>,
    ) -> Result<i64, StoreError> {
        store
            .compare_and_set(&self.key, expect, encode(&self.key, record)?, lease)
            .await
    }

    pub async fn delete(&self, store: &dyn Store) -> Result<bool, StoreError> {
        store.delete(&self.key).await
    }

    pub async fn compare_and_delete(
        &self,
        store: &dyn Store,
        mod_revision: i64,
    ) -> Result<i64, StoreError> {
        store.compare_and_delete(&self.key, mod_revision).await
    }
}

/// A prefix whose keys each hold a record of type `T`, named by the rest
/// of the key (`…/members/<name>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypedPrefix<T> {
    prefix: String,
    record: PhantomData<fn() -> T>,
}

/// The records under a prefix, by name, and the revision they were read at.
/// A key that does not decode is in `bad` and does not hide the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypedSnapshot<T> {
    pub revision: i64,
    pub entries: BTreeMap<String, Versioned<T>>,
    pub bad: Vec<StoreError>,
}

impl<T: Record> TypedPrefix<T> {
    pub fn new(prefix: impl Into<String>) -> TypedPrefix<T> {
        TypedPrefix {
            prefix: prefix.into(),
            record: PhantomData,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of the record named `name`.
    pub fn key(&self, name: &str) -> TypedKey<T> {
        TypedKey::new(format!("{}{name}", self.prefix))
    }

    /// The name a key under this prefix stands for.
    pub fn name<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())
    }

    pub async fn list(&self, store: &dyn Store) -> Result<TypedSnapshot<T>, StoreError> {
        let snapshot = store.get_prefix(&self.prefix).await?;
        let mut entries = BTreeMap::new();
        let mut bad = Vec::new();
        for kv in &snapshot.kvs {
            let name = self.name(&kv.key).unwrap_or(&kv.key).to_string();
            match decode_kv(kv) {
                Ok(record) => {
                    entries.insert(name, record);
                }
                Err(e) => bad.push(e),
            }
        }
        Ok(TypedSnapshot {
            revision: snapshot.revision,
            entries,
            bad,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::{keys, store};
    use crate::cluster::Leader;

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
    fn a_field_added_by_a_newer_agent_is_ignored() {
        let leader = decode::<Leader>(
            "/pgwarden/main/leader",
            br#"{"schema":1,"member":"db1","added_later":{"x":0}}"#,
        )
        .unwrap();
        assert_eq!(leader.member, "db1");
        let status = crate::cluster::fixtures::member();
        let mut json: serde_json::Value =
            serde_json::from_slice(&encode("k", &status).unwrap()).unwrap();
        json["added_later"] = serde_json::json!([1, 2]);
        json["tags"]["added_later"] = serde_json::json!(true);
        let read = decode::<crate::cluster::MemberStatus>(
            "/pgwarden/main/members/db2",
            &serde_json::to_vec(&json).unwrap(),
        )
        .unwrap();
        assert_eq!(read, status);
    }

    #[test]
    fn the_dynamic_configuration_still_rejects_unknown_fields() {
        let err = decode::<crate::cluster::DynamicConfig>(
            "/pgwarden/main/config",
            br#"{"schema":1,"tll_ms":1000}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `tll_ms`"), "{err}");
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
}
