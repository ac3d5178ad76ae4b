//! Base backups and the archive, for the tests that restore.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use backup::backup::{BackupOptions, BaseBackup};
use backup::manifest::Manifest;
use backup::wal::{WalArchive, WalName};
use backup::{RepoError, Repository};
use pg::RunAs;
use testkit::AgentMember;

use super::DEADLINE;

/// An empty repository directory owned by PostgreSQL's user, in a
/// directory of its own (declare it before the cluster: removed after).
pub fn repository_dir() -> (testkit::ScratchDir, PathBuf) {
    let run_as = RunAs::detect().unwrap();
    let holder = testkit::ScratchDir::new(&run_as).unwrap();
    let dir = holder.join("repository");
    std::fs::create_dir(&dir).unwrap();
    run_as.chown(&dir).unwrap();
    (holder, dir)
}

/// The cluster's archive, as the backup waits on it.
pub struct Archived {
    pub repo: Arc<dyn Repository>,
    pub archive: WalArchive,
}

#[async_trait]
impl backup::backup::WalArchive for Archived {
    async fn has_segment(&self, name: &str) -> Result<bool, RepoError> {
        let name = WalName::parse(name).map_err(RepoError::BadPath)?;
        Ok(self
            .repo
            .size(&self.archive.path_of(&name))
            .await?
            .is_some())
    }
    fn describe(&self) -> String {
        self.archive.dir().to_string()
    }
}

pub fn archive_of(repo: Arc<dyn Repository>, member: &AgentMember) -> WalArchive {
    let data_dir = &member.instance.spec().data_dir;
    WalArchive::new(
        repo,
        backup::wal::control::system_identifier(data_dir).unwrap(),
    )
}

/// A full base backup of `member`, through the library.
pub async fn take_backup(repo: &Arc<dyn Repository>, member: &AgentMember) -> Manifest {
    let client = member.instance.connect().await.unwrap();
    let archive = Archived {
        repo: repo.clone(),
        archive: archive_of(repo.clone(), member),
    };
    BaseBackup {
        client: &client,
        data_dir: member.instance.data_dir(),
        repo: repo.as_ref(),
        archive: &archive,
        parent: None,
        options: BackupOptions::default(),
        progress: &|_| {},
    }
    .run()
    .await
    .unwrap_or_else(|e| {
        panic!(
            "backup of {} failed: {e}\n{}",
            member.name,
            member.log_tail(30)
        )
    })
}

/// One value of `sql` on `member`, as text.
pub async fn text(member: &AgentMember, sql: &str) -> String {
    member
        .query_text(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql} on {}: {e}", member.name))
        .unwrap_or_default()
}

/// Ends the current segment on `member` and waits until the archive has
/// it: everything written so far can be restored.
pub async fn archive_everything(repo: &Arc<dyn Repository>, member: &AgentMember) -> String {
    let segment = text(member, "SELECT pg_walfile_name(pg_switch_wal())").await;
    let archive = archive_of(repo.clone(), member);
    let path = archive.path_of(&WalName::parse(&segment).unwrap());
    let waited = testkit::wait_for(&format!("{segment} archived"), DEADLINE, || async {
        match repo.size(&path).await {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    waited.unwrap_or_else(|e| panic!("{e}\n{}", member.log_tail(30)));
    segment
}

/// A connection to `database` on `member`'s PostgreSQL, as its superuser.
pub async fn on(member: &AgentMember, database: &str) -> tokio_postgres::Client {
    let spec = member.instance.spec();
    let (client, connection) = tokio_postgres::Config::new()
        .host(&spec.endpoint.host)
        .port(spec.endpoint.port)
        .user(&spec.superuser.name)
        .password(&spec.superuser.password)
        .dbname(database)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Creates `database` on `member` and restores the pg_dump archive `file`
/// into it with pg_restore.
pub async fn pg_restore_into(member: &AgentMember, file: &std::path::Path, database: &str) {
    member
        .execute(&format!("CREATE DATABASE {database}"))
        .await
        .unwrap();
    let spec = member.instance.spec();
    let restore = tokio::process::Command::new(spec.bin_dir.join("pg_restore"))
        .arg(format!("--host={}", spec.endpoint.host))
        .arg(format!("--port={}", spec.endpoint.port))
        .arg(format!("--username={}", spec.superuser.name))
        .arg(format!("--dbname={database}"))
        .arg(file)
        .env("PGPASSWORD", &spec.superuser.password)
        .output()
        .await
        .unwrap();
    assert!(restore.status.success(), "{}", super::shown(&restore));
}
