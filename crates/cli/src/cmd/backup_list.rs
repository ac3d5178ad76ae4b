//! `pgwarden backup list`: the backups in the repository and the recovery
//! window of each timeline, as a table or as JSON (what the API serves).

use std::path::Path;

use anyhow::Result;
use backup::catalog::{self, Catalog, TimelineWindow};
use backup::manifest::BackupKind;

use super::backup_repo::{self, size, table};

pub fn run(config: &Path, system_identifier: Option<u64>, json: bool) -> Result<()> {
    let (repo, _) = backup_repo::open(config)?;
    let catalog = backup_repo::runtime()?.block_on(async {
        let id = backup_repo::system_identifier(&*repo, system_identifier).await?;
        anyhow::Ok(catalog::list(&*repo, id).await?)
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&catalog)?);
    } else {
        print!("{}", render(&catalog));
    }
    Ok(())
}

pub fn render(catalog: &Catalog) -> String {
    let mut out = format!(
        "Backups of cluster {} in {}\n",
        catalog.system_identifier, catalog.repository
    );
    if catalog.backups.is_empty() {
        out.push_str("(no complete backup)\n");
    } else {
        let rows: Vec<Vec<String>> = catalog
            .backups
            .iter()
            .map(|b| {
                vec![
                    b.id.clone(),
                    match b.kind {
                        BackupKind::Full => "full".into(),
                        BackupKind::Incremental => "incremental".into(),
                    },
                    b.parent.clone().unwrap_or_default(),
                    b.start.lsn.to_string(),
                    b.stop.lsn.to_string(),
                    b.stop.timeline.to_string(),
                    short_time(&b.stop.time),
                    size(b.bytes),
                    size(b.stored_bytes),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "ID", "KIND", "PARENT", "START", "STOP", "TL", "ENDED", "SIZE", "STORED",
            ],
            &rows,
        ));
    }
    for i in &catalog.incomplete {
        out.push_str(&format!(
            "incomplete: {} ({} objects, {}, no manifest: interrupted, or still running)\n",
            i.id,
            i.objects,
            size(i.stored_bytes)
        ));
    }
    out.push_str("\nRecovery window (a restore can reach any point in these ranges):\n");
    if catalog.timelines.is_empty() {
        out.push_str("  (no archived WAL)\n");
    }
    for (n, window) in catalog.timelines.iter().enumerate() {
        out.push_str(&timeline(window, n == 0));
    }
    for problem in &catalog.problems {
        out.push_str(&format!("PROBLEM: {problem}\n"));
    }
    out
}

/// `2026-12-03T22:21:24.059819722Z` as `2026-12-03 22:21:24Z`: a table
/// cell needs no nanoseconds (the JSON keeps them).
fn short_time(rfc3339: &str) -> String {
    match rfc3339.get(..19) {
        Some(seconds) => format!("{}Z", seconds.replace('T', " ")),
        None => rfc3339.to_string(),
    }
}

fn timeline(window: &TimelineWindow, newest: bool) -> String {
    let mut title = format!("  timeline {}", window.timeline);
    if let Some(last) = window.history.last() {
        title.push_str(&format!(" (from timeline {} at {})", last.parent, last.at));
    }
    if newest {
        title.push_str(", the newest");
    }
    let end = window
        .archive_end
        .map_or("no segment".to_string(), |lsn| lsn.to_string());
    let mut out = format!("{title}; archived WAL up to {end}\n");
    if window.reachable.is_empty() {
        out.push_str("    no backup can be restored on it\n");
    }
    for range in &window.reachable {
        out.push_str(&format!("    {}  to  {}\n", range.from, range.to));
    }
    for gap in &window.unreachable {
        let missing: Vec<String> = gap.missing.iter().map(|r| r.to_string()).collect();
        out.push_str(&format!(
            "    UNREACHABLE {}  to  {} (missing: {}; run `pgwarden backup verify`)\n",
            gap.from,
            gap.to,
            missing.join(", ")
        ));
    }
    out
}
