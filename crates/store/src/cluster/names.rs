//! The names that become key segments (cluster, member).

use crate::error::StoreError;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_ascii_letters_digits_and_three_marks() {
        for good in ["db1", "db-2", "main_cluster", "a.b", &"x".repeat(128)] {
            assert!(check_name("member name", good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "it is empty"),
            ("a/b", "only ASCII letters"),
            ("db 1", "only ASCII letters"),
            (&"x".repeat(129), "longer than 128 bytes"),
        ] {
            let err = check_name("member name", bad).unwrap_err().to_string();
            assert!(err.contains("member name") && err.contains(why), "{err}");
        }
    }
}
