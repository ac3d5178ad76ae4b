//! A dump written back as the one file pg_dump wrote, for pg_restore; every
//! chunk's checksum checked on the way.

use std::io::Write;
use std::path::Path;

use super::manifest::{chunk_path, manifest_path, read};
use super::{DumpError, DumpManifest};
use crate::checksum::sha256_hex;
use crate::compress;
use crate::repo::{RepoError, Repository};

/// Writes dump `id` of `database` to `out` (replacing it). On any error
/// the partial file is removed.
pub async fn fetch(
    repo: &dyn Repository,
    database: &str,
    id: &str,
    out: &Path,
) -> Result<DumpManifest, DumpError> {
    let unknown = || DumpError::UnknownDump {
        database: database.to_string(),
        id: id.to_string(),
        repo: repo.describe(),
    };
    let path = manifest_path(database, id).map_err(|_| unknown())?;
    let manifest = match read(repo, &path).await {
        Err(DumpError::Repo(RepoError::NotFound(_))) => return Err(unknown()),
        other => other?,
    };
    let write_error = |source| DumpError::Write {
        path: out.display().to_string(),
        source,
    };
    let mut file = std::fs::File::create(out).map_err(write_error)?;
    let result = write_chunks(repo, &manifest, &mut file, out).await;
    let result = result.and_then(|()| file.sync_all().map_err(write_error));
    if let Err(e) = result {
        let _ = std::fs::remove_file(out);
        return Err(e);
    }
    Ok(manifest)
}

async fn write_chunks(
    repo: &dyn Repository,
    manifest: &DumpManifest,
    file: &mut std::fs::File,
    out: &Path,
) -> Result<(), DumpError> {
    for (index, chunk) in manifest.chunks.iter().enumerate() {
        let damaged = |message: String| DumpError::Damaged {
            database: manifest.database.clone(),
            id: manifest.id.clone(),
            index,
            message,
        };
        let frame = repo
            .get(&chunk_path(&manifest.database, &manifest.id, index)?)
            .await?;
        let data = compress::decompress(&frame, chunk.size).map_err(|e| damaged(e.to_string()))?;
        let sum = sha256_hex(&data);
        if sum != chunk.sha256 {
            return Err(damaged(format!(
                "checksum {sum}, the manifest says {}",
                chunk.sha256
            )));
        }
        file.write_all(&data).map_err(|source| DumpError::Write {
            path: out.display().to_string(),
            source,
        })?;
    }
    Ok(())
}
