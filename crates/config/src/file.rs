//! The located-error machinery of this crate, for other TOML files of
//! pgwarden (e.g. the proxy's `proxy.toml`), so that they report problems
//! the same way: `file:line:column: what` and a hint.

use serde::de::DeserializeOwned;

use crate::error::ConfigError;
use crate::locate::{KeyPath, Locator, Target};
use crate::raw::RawStore;
use crate::schema::Store;
use crate::validate::{self, Host};

/// A parsed TOML file that can point at any of its keys.
pub struct TomlFile<'a> {
    source: &'a str,
    loc: Locator<'a>,
}

impl<'a> TomlFile<'a> {
    /// Parses `source` (errors name `file_name`).
    pub fn new(source: &'a str, file_name: &'a str) -> Result<TomlFile<'a>, ConfigError> {
        Ok(TomlFile {
            source,
            loc: Locator::new(source, file_name)?,
        })
    }

    /// Deserializes the whole file into `T` (use `deny_unknown_fields` and
    /// `Option` fields); serde's complaints become located errors that
    /// speak of keys and TOML types.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        crate::raw::deserialize(&self.loc, self.source)
    }

    /// An error about the value at `path` (e.g. `["proxy", "hold_timeout"]`),
    /// or about the nearest enclosing table when the key is not written.
    pub fn value_error(
        &self,
        path: &[&str],
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> ConfigError {
        self.loc
            .error(&KeyPath::of(path), Target::Value, message, hint)
    }

    /// Whether the file itself writes `path`.
    pub fn is_set(&self, path: &[&str]) -> bool {
        self.loc.is_set(&KeyPath::of(path))
    }

    /// Validates a `[store]` table exactly as pgwarden.toml's is validated
    /// (defaults, endpoints, credentials read from their files).
    pub fn store(&self, raw: StoreTable) -> Result<Store, ConfigError> {
        validate::store(raw, &self.loc, &Host::real())
    }
}

/// The `[store]` table as written; embed it in a file's raw shape and pass
/// it to [`TomlFile::store`].
pub type StoreTable = RawStore;
