//! Every archived WAL file re-read: decompressed and checked against the
//! size and SHA-256 its header records (what `wal fetch` checks before
//! PostgreSQL sees it), and its name against the one it is stored under.

use futures::StreamExt;
use serde::Serialize;

use crate::catalog::WalObject;
use crate::repo::{RepoError, RepoPath, Repository};
use crate::wal::object;

/// An archived file that does not read back whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DamagedWal {
    pub name: String,
    pub object: RepoPath,
    pub problem: String,
}

#[derive(Debug, Default)]
pub struct Checked {
    pub files: u64,
    pub bytes: u64,
    pub damaged: Vec<DamagedWal>,
}

pub async fn check(
    repo: &dyn Repository,
    files: Vec<&WalObject>,
    parallelism: usize,
) -> Result<Checked, RepoError> {
    let results: Vec<Result<Option<DamagedWal>, RepoError>> = futures::stream::iter(files)
        .map(|w| async move {
            let data = match repo.get(&w.path).await {
                Ok(data) => data,
                // Listed a moment ago, gone now: expired meanwhile, or lost.
                Err(RepoError::NotFound(_)) => {
                    return Ok(Some(damaged(w, "it is no longer there".into())))
                }
                Err(e) => return Err(e),
            };
            let name = w.name.as_str().to_string();
            let problem = tokio::task::spawn_blocking(move || match object::decode(&data) {
                Err(problem) => Some(problem),
                Ok((header, _)) if header.name != name => {
                    Some(format!("it holds {} instead", header.name))
                }
                Ok(_) => None,
            })
            .await
            .expect("decompression does not panic");
            Ok(problem.map(|p| damaged(w, p)))
        })
        .buffer_unordered(parallelism.max(1))
        .collect()
        .await;
    let mut checked = Checked::default();
    for result in results {
        checked.files += 1;
        if let Some(damaged) = result? {
            checked.damaged.push(damaged);
        }
    }
    checked.damaged.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(checked)
}

fn damaged(w: &WalObject, problem: String) -> DamagedWal {
    DamagedWal {
        name: w.name.as_str().to_string(),
        object: w.path.clone(),
        problem,
    }
}
