//! Secrets the operator hands pgwarden through its environment
//! (`password_env`) stay with pgwarden: every child it starts (PostgreSQL
//! and its programs, hooks) gets an environment without them. A child that
//! needs a password gets it in its own variable (PGPASSWORD, PGPASSFILE).

use std::ffi::OsString;
use std::sync::RwLock;

static HIDDEN: RwLock<Vec<OsString>> = RwLock::new(Vec::new());

/// Keeps the variables `names` out of every child started from now on.
pub fn hide_from_children(names: impl IntoIterator<Item = impl Into<OsString>>) {
    let mut hidden = HIDDEN.write().unwrap_or_else(|e| e.into_inner());
    for name in names {
        let name = name.into();
        if !hidden.contains(&name) {
            hidden.push(name);
        }
    }
}

/// Removes the hidden variables from `command`'s environment.
pub fn scrub(command: &mut tokio::process::Command) {
    for name in HIDDEN.read().unwrap_or_else(|e| e.into_inner()).iter() {
        command.env_remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hidden_variable_does_not_reach_the_child() {
        // Set for this process only; the name is unique to this test.
        std::env::set_var("PGWARDEN_TEST_HIDDEN_SECRET", "hunter2");
        hide_from_children(["PGWARDEN_TEST_HIDDEN_SECRET"]);
        let mut command = tokio::process::Command::new("env");
        scrub(&mut command);
        let out = command.output().await.unwrap();
        let env = String::from_utf8_lossy(&out.stdout);
        assert!(!env.contains("hunter2"), "{env}");
        assert!(env.contains("PATH="), "{env}");
    }
}
