//! `pgwarden backup verify`: re-reads every chunk and archived segment and
//! checks the WAL for gaps; exit status 1 when anything is broken.

use std::path::Path;

use anyhow::Result;
use backup::verify::{self, VerifyOptions};

use super::backup_repo;

/// `Ok(true)` when everything verified.
pub fn run(
    config: &Path,
    system_identifier: Option<u64>,
    backup: Option<String>,
    parallelism: usize,
    json: bool,
) -> Result<bool> {
    let (repo, _) = backup_repo::open(config)?;
    let report = backup_repo::runtime()?.block_on(async {
        let id = backup_repo::system_identifier(&*repo, system_identifier).await?;
        let options = VerifyOptions {
            backup,
            parallelism,
        };
        anyhow::Ok(verify::verify(&*repo, id, &options).await?)
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(report.is_ok())
}
