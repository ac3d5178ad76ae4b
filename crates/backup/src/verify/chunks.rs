//! Every chunk of the backups verified, re-read: each object fetched once
//! (a bundle holds the chunks of many files, and an incremental backup's
//! chunks live in earlier backups' objects), every frame decompressed and
//! its SHA-256 compared with the manifest's.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::Serialize;

use crate::manifest::Manifest;
use crate::repo::{RepoError, RepoPath, Repository};
use crate::{checksum, compress};

/// A chunk that does not read back as its manifest says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DamagedChunk {
    /// The backup whose manifest lists it.
    pub backup: String,
    pub file: String,
    pub object: RepoPath,
    pub offset: u64,
    pub problem: String,
}

/// One frame to check, and who lists it.
struct Frame {
    offset: u64,
    length: u64,
    size: u64,
    sha256: String,
    users: Vec<(String, String)>,
}

/// What reading the chunks found.
#[derive(Debug, Default)]
pub struct Checked {
    pub chunks: u64,
    pub bytes: u64,
    pub damaged: Vec<DamagedChunk>,
}

pub async fn check(
    repo: &dyn Repository,
    manifests: &[&Manifest],
    parallelism: usize,
) -> Result<Checked, RepoError> {
    let mut objects: BTreeMap<RepoPath, BTreeMap<(u64, u64), Frame>> = BTreeMap::new();
    for m in manifests {
        for file in &m.files {
            for chunk in &file.chunks {
                let frame = objects
                    .entry(chunk.object_path()?)
                    .or_default()
                    .entry((chunk.offset, chunk.length))
                    .or_insert_with(|| Frame {
                        offset: chunk.offset,
                        length: chunk.length,
                        size: chunk.size,
                        sha256: chunk.sha256.clone(),
                        users: Vec::new(),
                    });
                frame.users.push((m.id.clone(), file.path.clone()));
            }
        }
    }
    let results: Vec<Result<Checked, RepoError>> = futures::stream::iter(objects)
        .map(|(path, frames)| async move {
            let frames: Vec<Frame> = frames.into_values().collect();
            let data = match repo.get(&path).await {
                Ok(data) => data,
                Err(RepoError::NotFound(_)) => {
                    return Ok(all_damaged(&path, &frames, "the object is missing"));
                }
                Err(e) => return Err(e),
            };
            let checking = tokio::task::spawn_blocking(move || check_frames(&path, &data, &frames));
            Ok(checking.await.expect("checking does not panic"))
        })
        .buffer_unordered(parallelism.max(1))
        .collect()
        .await;
    let mut checked = Checked::default();
    for result in results {
        let one = result?;
        checked.chunks += one.chunks;
        checked.bytes += one.bytes;
        checked.damaged.extend(one.damaged);
    }
    checked
        .damaged
        .sort_by(|a, b| (&a.backup, &a.file).cmp(&(&b.backup, &b.file)));
    Ok(checked)
}

fn all_damaged(path: &RepoPath, frames: &[Frame], problem: &str) -> Checked {
    let mut checked = Checked::default();
    for frame in frames {
        checked.chunks += 1;
        damage(&mut checked, path, frame, problem.to_string());
    }
    checked
}

fn damage(checked: &mut Checked, path: &RepoPath, frame: &Frame, problem: String) {
    for (backup, file) in &frame.users {
        checked.damaged.push(DamagedChunk {
            backup: backup.clone(),
            file: file.clone(),
            object: path.clone(),
            offset: frame.offset,
            problem: problem.clone(),
        });
    }
}

fn check_frames(path: &RepoPath, data: &[u8], frames: &[Frame]) -> Checked {
    let mut checked = Checked {
        bytes: data.len() as u64,
        ..Checked::default()
    };
    for frame in frames {
        checked.chunks += 1;
        let end = frame.offset.saturating_add(frame.length);
        let Some(bytes) = data.get(frame.offset as usize..end as usize) else {
            let problem = format!(
                "the object is {} bytes long, the chunk ends at {end}",
                data.len()
            );
            damage(&mut checked, path, frame, problem);
            continue;
        };
        let problem = match compress::decompress(bytes, frame.size) {
            Err(e) => Some(format!("it does not decompress: {e}")),
            Ok(content) => {
                let found = checksum::sha256_hex(&content);
                (found != frame.sha256).then(|| {
                    format!(
                        "its checksum is {found}, the manifest says {}",
                        frame.sha256
                    )
                })
            }
        };
        if let Some(problem) = problem {
            damage(&mut checked, path, frame, problem);
        }
    }
    checked
}
