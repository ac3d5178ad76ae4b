//! `pgwarden config check` as an operator runs it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use nix::unistd::{chown, User};

/// A directory PostgreSQL's user may work in, as the agent needs (the
/// tests run as root; `config check` then checks as `postgres`).
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    if let Ok(Some(pg)) = User::from_name("postgres") {
        if nix::unistd::Uid::effective().is_root() {
            chown(dir.path(), Some(pg.uid), Some(pg.gid)).unwrap();
        }
    }
    dir
}

fn check(toml: &str) -> (bool, String, String) {
    let dir = scratch();
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

fn config_check(file: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args(["config", "check"])
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The first hour on a real host (issue 19): root made the directories and
/// the secrets, the agent runs as postgres. Each problem is named with the
/// command that fixes it, and once those ran the check passes.
#[test]
fn paths_are_checked_as_the_user_postgresql_runs_as_with_the_fix_for_each() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: checking for another user needs root");
        return;
    }
    let pg = User::from_name("postgres")
        .unwrap()
        .expect("a postgres user");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let d = dir.path().display().to_string();
    // What `mkdir` as root makes: root's, 755.
    let parent = dir.path().join("15");
    std::fs::create_dir(&parent).unwrap();
    std::fs::set_permissions(&parent, PermissionsExt::from_mode(0o755)).unwrap();
    // Secrets in a directory postgres cannot enter, and one root-only file.
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::set_permissions(&etc, PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(etc.join("su.pw"), "s3cret\n").unwrap();
    std::fs::write(etc.join("repl.pw"), "r3pl\n").unwrap();
    let token = dir.path().join("api.token");
    std::fs::write(&token, "t0ken\n").unwrap();
    std::fs::set_permissions(&token, PermissionsExt::from_mode(0o600)).unwrap();
    let file = dir.path().join("pgwarden.toml");
    std::fs::write(
        &file,
        format!(
            r#"[member]
name = "db1"
data_dir = "{d}/15/main"
socket_dir = "{d}/run"
log_file = "{d}/log/db1.log"

[api]
token_file = "{d}/api.token"

[credentials.superuser]
password_file = "{d}/etc/su.pw"

[credentials.replication]
password_file = "{d}/etc/repl.pw"
"#
        ),
    )
    .unwrap();

    let (ok, stderr) = config_check(&file);
    assert!(!ok, "{stderr}");
    for expected in [
        format!("{d}/etc is not traversable by postgres (drwx------ root:root)"),
        format!("fix: chmod o+x {d}/etc"),
        format!("{d}/api.token is not readable by postgres (-rw------- root:root)"),
        format!("fix: chown postgres:postgres {d}/api.token"),
        format!("{d}/15 is not writable by postgres (drwxr-xr-x root:root) (the agent creates data_dir {d}/15/main in it)"),
        format!("fix: chown postgres:postgres {d}/15"),
        format!("socket_dir {d}/run does not exist"),
        format!("fix: install -d -o postgres -g postgres -m 2775 {d}/run"),
        format!("fix: install -d -o postgres -g postgres -m 750 {d}/log"),
        "problem(s) on this host, checked as postgres, the user the agent and PostgreSQL run as".to_string(),
    ] {
        assert!(stderr.contains(&expected), "no `{expected}` in:\n{stderr}");
    }

    // The fixes, as printed.
    chown(&etc, Some(pg.uid), Some(pg.gid)).unwrap();
    for path in [&etc.join("su.pw"), &etc.join("repl.pw"), &token, &parent] {
        chown(path.as_path(), Some(pg.uid), Some(pg.gid)).unwrap();
    }
    for sub in ["run", "log"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        chown(&dir.path().join(sub), Some(pg.uid), Some(pg.gid)).unwrap();
    }
    let (ok, stderr) = config_check(&file);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("ok (paths checked as postgres, the user the agent and PostgreSQL run as)"),
        "{stderr}"
    );

    // A data directory root made: not PostgreSQL's.
    std::fs::create_dir(parent.join("main")).unwrap();
    let (ok, stderr) = config_check(&file);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("fix: chown -R postgres:postgres {d}/15/main")),
        "{stderr}"
    );
}

/// An S3 repository's credentials file is read by `pgwarden wal push` as
/// PostgreSQL's user: one only root may read is a problem, named with its
/// fix, not an `ok` followed by failing archiving.
#[test]
fn an_s3_credentials_file_postgres_cannot_read_is_a_problem() {
    if !nix::unistd::Uid::effective().is_root() {
        return; // Checked as postgres only when run as root.
    }
    let dir = scratch();
    let credentials = dir.path().join("s3.credentials");
    std::fs::write(&credentials, "[default]\naws_access_key_id = x\n").unwrap();
    std::fs::set_permissions(&credentials, PermissionsExt::from_mode(0o600)).unwrap();
    let toml = format!(
        "{}\n[backup]\nrepository = \"s3://bucket/main\"\ns3_endpoint = \"http://127.0.0.1:9\"\n\
         s3_credentials_file = \"{}\"\n",
        VALID.replace("DIR", &dir.path().display().to_string()),
        credentials.display()
    );
    std::fs::write(dir.path().join("su.pw"), "s3cret\n").unwrap();
    std::fs::write(dir.path().join("repl.pw"), "r3pl\n").unwrap();
    let file = dir.path().join("pgwarden.toml");
    std::fs::write(&file, toml).unwrap();
    let (ok, shown) = config_check(&file);
    assert!(!ok, "{shown}");
    assert!(
        shown.contains(&format!("{}", credentials.display())) && shown.contains("postgres"),
        "{shown}"
    );
}
