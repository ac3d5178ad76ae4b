//! `pgwarden dump fetch`: one dump written back as the file pg_dump wrote.

use std::path::Path;

use anyhow::Result;
use backup::dump;

use super::super::backup_repo::{self, size};

pub fn run(config: &Path, id: &str, database: &str, out: &Path) -> Result<()> {
    let (repo, _) = backup_repo::open(config)?;
    let manifest = backup_repo::runtime()?.block_on(dump::fetch(&*repo, database, id, out))?;
    println!(
        "wrote dump {id} of {database} to {} ({}); restore it with `pg_restore -d DATABASE {}`",
        out.display(),
        size(manifest.bytes),
        out.display()
    );
    Ok(())
}
