//! What PostgreSQL's user can change (the data directory, the log, the pid
//! and lock files) must never lead pgwarden, possibly root, to touch anything
//! else; and the passwords pgwarden reads from its environment never reach
//! PostgreSQL. A database superuser can run programs as that user (`COPY …
//! TO PROGRAM`), so each symlink planted here could have come from SQL.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pg::{Instance, InstanceSpec, StopMode};
use testkit::PgCluster;

const MANAGED_FILE: &str = "pgwarden.conf";

/// Owner, group, mode and content of a file, or of a directory's entries.
fn snapshot(path: &Path) -> (u32, u32, u32, String) {
    let meta = fs::symlink_metadata(path).unwrap();
    let content = if meta.is_dir() {
        let mut names: Vec<_> = fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.join(",")
    } else {
        fs::read_to_string(path).unwrap()
    };
    (meta.uid(), meta.gid(), meta.mode(), content)
}

/// A directory and a file outside the data directory, as root (or whoever
/// runs the test) made them.
struct Outside {
    dir: tempfile::TempDir,
}

impl Outside {
    fn new() -> Outside {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.path().join("precious"), "precious content\n").unwrap();
        fs::set_permissions(
            dir.path().join("precious"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        Outside { dir }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("precious")
    }

    fn state(&self) -> Vec<(u32, u32, u32, String)> {
        vec![snapshot(self.dir()), snapshot(&self.file())]
    }
}

fn replace_with_link(path: &Path, target: &Path) {
    let _ = fs::remove_file(path);
    symlink(target, path).unwrap();
}

#[tokio::test]
async fn links_planted_by_postgres_never_change_anything_outside_the_data_directory() {
    let mut cluster = PgCluster::start(0).await.unwrap();
    let outside = Outside::new();
    let before = outside.state();
    let node = &mut cluster.nodes[0];
    let data_dir = node.instance.data_dir().to_path_buf();
    // The agent's default log place: inside the data directory.
    let instance = Instance::new(InstanceSpec {
        log_file: data_dir.join("log").join("postmaster.log"),
        ..node.instance.spec().clone()
    });
    instance.stop(StopMode::Fast).await.unwrap();

    // The log directory is a link to a directory outside: the start refuses
    // instead of handing that directory to postgres.
    symlink(outside.dir(), data_dir.join("log")).unwrap();
    let err = instance.start().await.unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    assert!(
        err.contains(&data_dir.join("log").display().to_string()),
        "{err}"
    );
    assert_eq!(
        outside.state(),
        before,
        "the log directory's target changed"
    );

    // The log file is a link to a file outside: the failed start's error
    // shows none of it.
    fs::remove_file(data_dir.join("log")).unwrap();
    fs::create_dir(data_dir.join("log")).unwrap();
    symlink(outside.file(), data_dir.join("log").join("postmaster.log")).unwrap();
    if let Err(err) = instance.start().await {
        let err = err.to_string();
        assert!(!err.contains("precious content"), "{err}");
    }
    instance.stop(StopMode::Fast).await.unwrap();
    assert_eq!(outside.state(), before, "the log file's target changed");
    fs::remove_file(data_dir.join("log").join("postmaster.log")).unwrap();

    // pgwarden.conf and the temporary name it is written through are links
    // to a file outside: writing the settings replaces the links.
    let managed = data_dir.join(MANAGED_FILE);
    replace_with_link(&managed, &outside.file());
    replace_with_link(
        &data_dir.join(format!(".{}.pgwarden-tmp", MANAGED_FILE)),
        &outside.file(),
    );
    instance.write_settings(&node.settings).unwrap();
    assert_eq!(outside.state(), before, "pgwarden.conf's target changed");
    let written = fs::symlink_metadata(&managed).unwrap();
    assert!(written.is_file(), "pgwarden.conf is a file of its own now");
    assert_eq!(written.uid(), fs::metadata(&data_dir).unwrap().uid());

    // postgresql.conf is a link to a file outside: refused, and its content
    // does not end up in the data directory.
    let conf = data_dir.join("postgresql.conf");
    let real_conf = fs::read_to_string(&conf).unwrap();
    replace_with_link(&conf, &outside.file());
    let err = instance
        .write_settings(&node.settings)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&conf.display().to_string()), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert!(fs::symlink_metadata(&conf).unwrap().is_symlink());
    assert_eq!(outside.state(), before, "postgresql.conf's target changed");
    fs::remove_file(&conf).unwrap();
    fs::write(&conf, real_conf).unwrap();
    node.instance.spec().run_as.chown(&conf).unwrap();

    // A dead postmaster's pid file names a socket lock outside that is not
    // PostgreSQL's: the lock stays, the pid file goes, the server starts.
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    let port = node.instance.spec().endpoint.port;
    let lock = outside.dir().join(format!(".s.PGSQL.{port}.lock"));
    fs::write(&lock, format!("{dead}\n")).unwrap();
    let before_lock = outside.state();
    fs::write(
        data_dir.join("postmaster.pid"),
        format!(
            "{dead}\n{}\n0\n{port}\n{}\n",
            data_dir.display(),
            outside.dir().display()
        ),
    )
    .unwrap();
    instance.start().await.unwrap();
    assert_eq!(
        outside.state(),
        before_lock,
        "a lock file outside was removed"
    );
    instance.stop(StopMode::Fast).await.unwrap();
    fs::remove_file(&lock).unwrap();

    // postmaster.pid itself is a link to a file outside.
    replace_with_link(&data_dir.join("postmaster.pid"), &outside.file());
    assert_eq!(instance.postmaster_pid(), None);
    let _ = instance.start().await;
    let _ = instance.stop(StopMode::Fast).await;
    assert_eq!(outside.state(), before, "postmaster.pid's target changed");
    let _ = fs::remove_file(data_dir.join("postmaster.pid"));
    // The cluster's own instance starts again for the kit to stop it.
    node.instance.start().await.unwrap();
}

#[tokio::test]
async fn postgresql_does_not_inherit_the_passwords_pgwarden_read_from_its_environment() {
    // Unique to this test (nextest runs each test in a process of its own).
    std::env::set_var("PGWARDEN_TEST_PG_SECRET", "hunter2");
    std::env::set_var("PGWARDEN_TEST_PG_HARMLESS", "visible");
    pg::hide_from_children(["PGWARDEN_TEST_PG_SECRET"]);
    let cluster = PgCluster::start(0).await.unwrap();
    let instance = &cluster.nodes[0].instance;
    let pid = instance.postmaster_pid().expect("the server runs");
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
    assert!(
        environ.contains("PGWARDEN_TEST_PG_HARMLESS=visible"),
        "{environ}"
    );
    assert!(!environ.contains("PGWARDEN_TEST_PG_SECRET"), "{environ}");
}
