//! `pgwarden backup list`, `verify` and `expire` on a repository a real
//! cluster archives into through `pgwarden wal push`, with a base backup
//! in it: the table and the recovery window, verify passing then failing
//! (exit status 1) with the unreachable range once a segment is deleted,
//! and what expire would remove.

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use backup::repo::PosixRepository;
use backup::wal::WalName;
use backup::Repository;
use common::backups::{archive_of, repository_dir, take_backup, Archived};
use common::{binary, healthy};
use testkit::{AgentCluster, ClusterOptions};

const DEADLINE: Duration = Duration::from_secs(90);

async fn backup_cmd(args: &[&str]) -> Output {
    common::pgwarden(&[&["backup"], args].concat()).await
}

/// Ends the current segment and waits until the repository has it.
async fn switch(member: &testkit::AgentMember, archive: &Archived) -> String {
    member
        .execute("CREATE TABLE IF NOT EXISTS t (i int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let name = member
        .query_text("SELECT pg_walfile_name(pg_switch_wal())")
        .await
        .unwrap()
        .unwrap();
    let waited = testkit::wait_for(&format!("{name} in the archive"), DEADLINE, || async {
        match backup::backup::WalArchive::has_segment(archive, &name).await {
            Ok(true) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    if let Err(e) = waited {
        panic!("{e}\n{}", member.log_tail(30));
    }
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_verify_and_expire_read_the_repository_of_the_config() {
    let (_holder, repo_dir) = repository_dir();
    let options = ClusterOptions {
        members: 1,
        backup: Some(format!("repository = \"{}\"", repo_dir.display())),
        ..ClusterOptions::default()
    };
    let cluster = AgentCluster::start(binary(), options).await.unwrap();
    healthy(&cluster, &["db1"]).await;
    let member = &cluster.members[0];
    let data_dir: &Path = &member.instance.spec().data_dir;
    let system_identifier = backup::wal::control::system_identifier(data_dir).unwrap();
    let repo: Arc<dyn Repository> = Arc::new(PosixRepository::new(&repo_dir));
    let archive = Archived {
        repo: repo.clone(),
        archive: archive_of(repo.clone(), member),
    };
    switch(member, &archive).await;
    let full = take_backup(&repo, member).await;
    let mut after = Vec::new();
    for _ in 0..3 {
        after.push(switch(member, &archive).await);
    }
    let config = member.config_file.display().to_string();

    let list = backup_cmd(&["list", "-c", &config]).await;
    assert!(list.status.success(), "{}", common::shown(&list));
    let text = common::shown(&list);
    assert!(text.contains(&full.id), "{text}");
    assert!(text.contains("timeline 1, the newest"), "{text}");
    assert!(
        text.contains(&format!("{} (", full.stop.lsn)),
        "the window starts at the backup's end: {text}"
    );
    let json = backup_cmd(&["list", "-c", &config, "--json"]).await;
    let catalog: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(catalog["system_identifier"], system_identifier.to_string());
    assert_eq!(catalog["backups"][0]["id"], full.id.as_str());
    assert_eq!(catalog["backups"][0]["kind"], "full");

    let verified = backup_cmd(&["verify", "-c", &config]).await;
    assert!(verified.status.success(), "{}", common::shown(&verified));
    assert!(
        common::shown(&verified).contains("OK: every chunk"),
        "{}",
        common::shown(&verified)
    );

    let dry = backup_cmd(&["expire", "-c", &config, "--dry-run"]).await;
    assert!(dry.status.success(), "{}", common::shown(&dry));
    assert!(
        common::shown(&dry).contains(&format!("keep   {}: the newest backup", full.id)),
        "{}",
        common::shown(&dry)
    );

    // The first segment after the backup goes: verify fails and names it.
    let lost = WalName::parse(&after[0]).unwrap();
    repo.delete(&archive.archive.path_of(&lost)).await.unwrap();
    let broken = backup_cmd(&["verify", "-c", &config]).await;
    assert_eq!(broken.status.code(), Some(1), "{}", common::shown(&broken));
    let text = common::shown(&broken);
    assert!(text.contains("UNREACHABLE: from "), "{text}");
    assert!(
        text.contains(&format!(
            "on timeline 1 no point can be restored to ({}",
            after[0]
        )),
        "{text}"
    );
    assert!(text.contains("Take a new full backup now"), "{text}");
}
