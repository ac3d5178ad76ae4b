//! A PostgreSQL 15 server archiving its WAL into a directory (`cp`, until
//! pgwarden's own archive is there), a POSIX repository, and the steps the
//! backup tests share: back up, archive, restore and start, compare.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use backup::backup::{BackupOptions, BaseBackup, Progress, WalArchive};
use backup::manifest::Manifest;
use backup::repo::{PosixRepository, RepoError};
use backup::restore::{self, Recovery, RecoveryTarget, RestoreOptions, RestoreReport};
use testkit::{wait_for, PgCluster, PgNode};

pub struct Lab {
    pub cluster: PgCluster,
    pub archive: PathBuf,
    pub repo: PosixRepository,
}

/// The archive directory the test server's archive_command copies into.
pub struct DirArchive(pub PathBuf);

#[async_trait]
impl WalArchive for DirArchive {
    async fn has_segment(&self, name: &str) -> Result<bool, RepoError> {
        Ok(self.0.join(name).is_file())
    }
    fn describe(&self) -> String {
        self.0.display().to_string()
    }
}

impl Lab {
    /// A primary named `source` that archives every segment and records
    /// commit times.
    pub async fn start() -> Lab {
        let mut cluster = PgCluster::empty().expect("cluster directory");
        let archive = cluster.dir.join("archive");
        std::fs::create_dir(&archive).unwrap();
        cluster.run_as.chown(&archive).unwrap();
        let repo_dir = cluster.dir.join("repo");
        std::fs::create_dir(&repo_dir).unwrap();
        let mut node = cluster.new_node("source").unwrap();
        let a = archive.display();
        // Copied under a temporary name, then renamed: the backup's check
        // never sees half a segment. (pgwarden.conf's archive settings, as
        // the agent writes them: an operator parameter may not set them.)
        node.settings.archive_command = Some(format!(
            "test ! -f {a}/%f && cp %p {a}/%f.tmp && mv {a}/%f.tmp {a}/%f"
        ));
        node.settings
            .parameters
            .insert("track_commit_timestamp".into(), "on".into());
        node.instance.bootstrap(&node.settings).await.unwrap();
        cluster.nodes.push(node);
        Lab {
            cluster,
            archive,
            repo: PosixRepository::new(repo_dir),
        }
    }

    pub fn source(&self) -> &PgNode {
        self.cluster.node("source")
    }

    pub fn options() -> BackupOptions {
        BackupOptions {
            // Small, so that tables span several chunks.
            chunk_size: 256 << 10,
            ..BackupOptions::default()
        }
    }

    pub async fn backup(&self, parent: Option<&Manifest>) -> Manifest {
        self.backup_with(parent, &|_| {}).await
    }

    pub async fn backup_with(
        &self,
        parent: Option<&Manifest>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Manifest {
        let source = self.source();
        let client = source.instance.connect().await.unwrap();
        BaseBackup {
            client: &client,
            data_dir: source.instance.data_dir(),
            repo: &self.repo,
            archive: &DirArchive(self.archive.clone()),
            parent,
            options: Lab::options(),
            progress,
        }
        .run()
        .await
        .unwrap_or_else(|e| panic!("backup failed: {e}\n{}", self.log("source")))
    }

    pub async fn execute(&self, sql: &str) {
        self.source()
            .execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub async fn text(&self, node: &PgNode, sql: &str) -> String {
        node.query_text(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} on {}: {e}", node.name))
            .unwrap_or_default()
    }

    /// Ends the current WAL segment and waits until it is archived, so
    /// everything written so far can be restored.
    pub async fn archive_current_segment(&self) {
        let segment = self
            .text(self.source(), "SELECT pg_walfile_name(pg_switch_wal())")
            .await;
        let path = self.archive.join(&segment);
        wait_for(
            &format!("{segment} to be archived"),
            Duration::from_secs(30),
            || async {
                if path.is_file() {
                    Ok(())
                } else {
                    Err("not in the archive yet")
                }
            },
        )
        .await
        .unwrap();
    }

    pub fn recovery(&self, target: RecoveryTarget) -> Recovery {
        Recovery {
            restore_command: format!("cp {}/%f %p", self.archive.display()),
            target,
            keep_archiving: false,
        }
    }

    /// Restores `id` into a new node `name`, starts it and waits until
    /// recovery reached its target and the server was promoted.
    pub async fn restore_and_start(
        &mut self,
        name: &str,
        id: &str,
        target: RecoveryTarget,
    ) -> (&PgNode, RestoreReport) {
        let node = self.cluster.new_node(name).unwrap();
        let options = RestoreOptions {
            parallelism: 2,
            delta: false,
            run_as: self.cluster.run_as.clone(),
            recovery: self.recovery(target),
        };
        let report = restore::restore(&self.repo, id, node.instance.data_dir(), &options)
            .await
            .unwrap_or_else(|e| panic!("restore of {id} failed: {e}"));
        self.start_restored(node).await;
        (self.cluster.node(name), report)
    }

    /// Starts a restored data directory on its own port and waits for the
    /// end of recovery.
    pub async fn start_restored(&mut self, node: PgNode) {
        node.instance.write_settings(&node.settings).unwrap();
        let name = node.name.clone();
        self.cluster.nodes.push(node);
        self.start_and_wait(&name).await;
    }

    /// Starts node `name` and waits until recovery ended and it was
    /// promoted.
    pub async fn start_and_wait(&self, name: &str) {
        let node = self.cluster.node(name);
        if let Err(e) = node.instance.start().await {
            panic!("{name} did not start: {e}\n{}", self.log(name));
        }
        let promoted = wait_for(
            &format!("{name} to finish recovery"),
            Duration::from_secs(60),
            || async {
                match node.query_text("SELECT pg_is_in_recovery()::text").await {
                    Ok(Some(r)) if r == "false" => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        if let Err(e) = promoted {
            panic!("{e}\n{}", self.log(name));
        }
    }

    /// Restores `id` over node `name`'s data directory, keeping what matches.
    pub async fn restore_delta(
        &self,
        name: &str,
        id: &str,
        target: RecoveryTarget,
    ) -> RestoreReport {
        let node = self.cluster.node(name);
        let options = RestoreOptions {
            parallelism: 2,
            delta: true,
            run_as: self.cluster.run_as.clone(),
            recovery: self.recovery(target),
        };
        let report = restore::restore(&self.repo, id, node.instance.data_dir(), &options)
            .await
            .unwrap_or_else(|e| panic!("delta restore of {id} failed: {e}"));
        // The backup brought the source's pgwarden.conf (its port).
        node.instance.write_settings(&node.settings).unwrap();
        report
    }

    /// The last lines of a node's server log.
    pub fn log(&self, name: &str) -> String {
        let path = self.cluster.dir.join(&format!("{name}.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- {} ---\n{}",
            path.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    /// An md5 of every user table's ordered rows, by table name.
    pub async fn table_sums(&self, node: &PgNode) -> Vec<(String, String)> {
        let tables = self
            .text(
                node,
                "SELECT coalesce(string_agg(relname, ',' ORDER BY relname), '') FROM pg_class \
                 WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace",
            )
            .await;
        let mut sums = Vec::new();
        for table in tables.split(',').filter(|t| !t.is_empty()) {
            let sql = format!(
                "SELECT coalesce(md5(string_agg(r::text, ',' ORDER BY r::text)), 'empty') FROM {table} r"
            );
            sums.push((table.to_string(), self.text(node, &sql).await));
        }
        sums
    }
}

/// Whether `path` is somewhere in the manifest's files.
pub fn has_file(manifest: &Manifest, path: &str) -> bool {
    manifest.files.iter().any(|f| f.path == path)
}

pub fn data_path(node: &PgNode, relative: &str) -> PathBuf {
    Path::new(node.instance.data_dir()).join(relative)
}
