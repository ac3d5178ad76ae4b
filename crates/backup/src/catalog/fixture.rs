//! A repository with backups and archived WAL made by hand, for the tests
//! of the catalog, retention and verify.

use std::sync::Arc;

use bytes::Bytes;
use pg::Lsn;
use tempfile::TempDir;

use crate::backup::wal_needed::segment_name;
use crate::manifest::{self, BackupKind, Chunk, Manifest, Position};
use crate::repo::{PosixRepository, RepoPath, Repository};
use crate::wal::{object, WalName};
use crate::{checksum, compress};

pub const SYSID: u64 = 7300000000000000001;
pub const MB16: u64 = 16 << 20;

pub struct Fixture {
    _dir: TempDir,
    pub repo: Arc<PosixRepository>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let repo = Arc::new(PosixRepository::new(dir.path()));
        Fixture { _dir: dir, repo }
    }

    pub fn wal_path(&self, name: &str) -> RepoPath {
        WalName::parse(name)
            .unwrap()
            .repo_path(&RepoPath::new(format!("wal/{SYSID}")).unwrap())
            .unwrap()
    }

    pub async fn file(&self, name: &str, content: &[u8]) {
        let (encoded, _) = object::encode(name, content).unwrap();
        self.repo.put(&self.wal_path(name), encoded).await.unwrap();
    }

    /// Archives segments `range` of timeline `tli`.
    pub async fn segments(&self, tli: u32, range: std::ops::Range<u64>) {
        for seg in range {
            let name = segment_name(tli, seg, MB16);
            self.file(&name, name.as_bytes()).await;
        }
    }

    pub async fn history(&self, tli: u32, text: &str) {
        self.file(&format!("{tli:08X}.history"), text.as_bytes())
            .await;
    }

    /// Publishes a backup with one chunk of its own, and one of `parent`'s
    /// when it has one.
    pub async fn backup(
        &self,
        id: &str,
        parent: Option<&Manifest>,
        (start, stop): (&str, &str),
        tli: u32,
        time: &str,
    ) -> Manifest {
        let content = format!("data of {id}");
        let frame = compress::compress(content.as_bytes(), 3).unwrap();
        let object = "data/000001.zst";
        self.repo
            .put(
                &RepoPath::new(format!("backups/{id}/{object}")).unwrap(),
                Bytes::from(frame.clone()),
            )
            .await
            .unwrap();
        let mut m = manifest::sample(id);
        let position = |lsn: &str| Position {
            lsn: lsn.parse::<Lsn>().unwrap(),
            timeline: tli,
            time: time.into(),
        };
        m.start = position(start);
        m.stop = position(stop);
        m.files[0].chunks = vec![Chunk {
            size: content.len() as u64,
            sha256: checksum::sha256_hex(content.as_bytes()),
            backup: id.into(),
            object: object.into(),
            offset: 0,
            length: frame.len() as u64,
        }];
        m.files[0].path = "base/1".into();
        if let Some(parent) = parent {
            m.kind = BackupKind::Incremental;
            m.parent = Some(parent.id.clone());
            let mut inherited = parent.files[0].clone();
            inherited.path = "PG_VERSION".into();
            m.files.insert(0, inherited);
        }
        manifest::publish(&*self.repo, &m).await.unwrap();
        m
    }
}
