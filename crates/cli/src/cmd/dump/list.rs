//! `pgwarden dump list`: the complete dumps, as a table or JSON.

use std::path::Path;

use anyhow::Result;
use backup::dump::{self, DumpManifest};

use super::super::backup_repo::{self, size, table};

pub fn run(config: &Path, database: Option<&str>, json: bool) -> Result<()> {
    let (repo, _) = backup_repo::open(config)?;
    let dumps = backup_repo::runtime()?.block_on(dump::list(&*repo, database))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&dumps)?);
    } else {
        print!("{}", render(&repo.describe(), &dumps));
    }
    Ok(())
}

pub fn render(repository: &str, dumps: &[DumpManifest]) -> String {
    let mut out = format!("Logical dumps in {repository}\n");
    if dumps.is_empty() {
        out.push_str("(no complete dump)\n");
        return out;
    }
    let rows: Vec<Vec<String>> = dumps
        .iter()
        .map(|d| {
            vec![
                d.database.clone(),
                d.id.clone(),
                d.wal_position.to_string(),
                d.taken_from.clone(),
                d.server_version.clone(),
                size(d.bytes),
                size(d.stored_bytes),
            ]
        })
        .collect();
    out.push_str(&table(
        &["DATABASE", "ID", "WAL", "FROM", "VERSION", "SIZE", "STORED"],
        &rows,
    ));
    out
}
