//! Keeping the newest N dumps of a database: each older one loses its
//! manifest first (so it stops being a dump), then its chunks.

use std::num::NonZeroUsize;

use super::manifest::{dump_dir, list, manifest_path};
use super::DumpError;
use crate::repo::Repository;

/// Removes all but the newest `keep` dumps of `database`; returns the ids
/// removed, oldest first.
pub async fn expire(
    repo: &dyn Repository,
    database: &str,
    keep: NonZeroUsize,
) -> Result<Vec<String>, DumpError> {
    let dumps = list(repo, Some(database)).await?;
    let surplus = dumps.len().saturating_sub(keep.get());
    let mut removed = Vec::new();
    for dump in &dumps[..surplus] {
        repo.delete(&manifest_path(database, &dump.id)?).await?;
        for entry in repo.list(&dump_dir(database, &dump.id)?).await? {
            repo.delete(&entry.path).await?;
        }
        removed.push(dump.id.clone());
    }
    Ok(removed)
}
