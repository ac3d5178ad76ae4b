//! Passwords and tokens: kept out of logs, debug output and serialized config.

use std::fmt;
use std::path::Path;

const MASK: &str = "********";

/// A secret string. `Debug`, `Display` and `Serialize` all print `********`;
/// only [`Secret::expose`] gives the value, so every use of it is greppable.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

/// Reads a secret file. One trailing newline is dropped because `echo` and
/// editors add it; anything else is part of the secret.
pub(crate) fn read_file(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let why = match crate::access::why_unreadable(path) {
            Some(denied) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                format!(" ({}; run: {})", denied.problem, denied.fix)
            }
            _ => String::new(),
        };
        format!("cannot read {}: {e}{why}", path.display())
    })?;
    let value = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "******** ********");
        assert_eq!(as_toml_value(&s), "\"********\"");
        assert_eq!(s.expose(), "hunter2");
    }

    fn as_toml_value(s: &Secret) -> String {
        #[derive(serde::Serialize)]
        struct W<'a> {
            v: &'a Secret,
        }
        toml::to_string(&W { v: s })
            .unwrap()
            .trim()
            .trim_start_matches("v = ")
            .to_owned()
    }

    #[test]
    fn drops_exactly_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "pw\n\n").unwrap();
        assert_eq!(read_file(&p).unwrap().expose(), "pw\n");
        std::fs::write(&p, "pw\r\n").unwrap();
        assert_eq!(read_file(&p).unwrap().expose(), "pw");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_file(&p).unwrap_err().ends_with("is empty"));
    }
}
