//! `pgwarden config check` as an operator runs it.

use std::process::Command;

fn check(toml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("su.pw"), "s3cret\n").unwrap();
    std::fs::write(dir.path().join("repl.pw"), "r3pl\n").unwrap();
    let toml = toml.replace("DIR", &dir.path().display().to_string());
    let file = dir.path().join("pgwarden.toml");
    std::fs::write(&file, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const VALID: &str = r#"
[member]
name = "db1"
data_dir = "DIR/data"

[credentials.superuser]
password_file = "DIR/su.pw"

[credentials.replication]
password_file = "DIR/repl.pw"
"#;

#[test]
fn a_valid_file_prints_the_effective_configuration_without_secrets() {
    let (ok, stdout, stderr) = check(VALID);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("lease_ttl = \"3s\""), "{stdout}");
    assert!(stdout.contains("password = \"********\""), "{stdout}");
    assert!(
        !stdout.contains("s3cret") && !stderr.contains("s3cret"),
        "a secret leaked: {stdout}{stderr}"
    );
    assert!(stderr.contains("pgwarden.toml: ok"), "{stderr}");
}

#[test]
fn a_bad_file_fails_with_file_line_column_and_a_hint() {
    let (ok, stdout, stderr) = check(&format!(
        "{VALID}\n[timing]\nheartbeat = \"1s\"\nlease_tl = \"5s\"\n"
    ));
    assert!(!ok);
    assert!(stdout.is_empty(), "{stdout}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("pgwarden: ") && first.contains("pgwarden.toml:14:1: "),
        "{stderr}"
    );
    assert!(first.contains("lease_tl"), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
}

#[test]
fn a_missing_file_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args(["config", "check", "/nonexistent/pgwarden.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/pgwarden.toml"), "{stderr}");
}

#[test]
fn an_open_api_needs_the_token_pgwarden_token_makes() {
    let open = format!("{VALID}\n[api]\nlisten = \"0.0.0.0:8008\"\n");
    let (ok, _, stderr) = check(&open);
    assert!(!ok);
    assert!(
        stderr.contains("`api.token_file` is not set") && stderr.contains("pgwarden token"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .arg("token")
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(token.trim_end().len(), 64, "{token}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("chmod 600") && stderr.contains("api.token_file"),
        "{stderr}"
    );
    // DIR is the directory check() makes: the token goes in the file it names.
    let (ok, _, stderr) = check(&format!("{open}token_file = \"DIR/su.pw\"\n"));
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = check(&format!("{open}insecure = true\n"));
    assert!(ok, "{stderr}");
}
