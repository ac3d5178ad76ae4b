//! `pgwarden backup expire`: removes the backups and WAL the retention
//! settings of `[backup]` no longer keep (`--dry-run`: only says what).

use std::path::Path;

use anyhow::Result;
use backup::retention::{self, Plan, Policy};

use super::backup_repo::{self, size};

pub fn run(config: &Path, system_identifier: Option<u64>, dry_run: bool) -> Result<()> {
    let (repo, settings) = backup_repo::open(config)?;
    let policy = Policy::from(&settings.retention);
    backup_repo::runtime()?.block_on(async {
        let id = backup_repo::system_identifier(&*repo, system_identifier).await?;
        if dry_run {
            let plan = retention::plan_for(&*repo, id, &policy).await?;
            print!("{}", render(&plan, true));
        } else {
            let report = retention::expire(&*repo, id, &policy).await?;
            print!("{}", render(&report.plan, false));
            println!("{} objects deleted.", report.deleted_objects);
        }
        anyhow::Ok(())
    })
}

fn render(plan: &Plan, dry_run: bool) -> String {
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut out = String::new();
    for (id, why) in &plan.keep {
        out.push_str(&format!("keep   {id}: {why}\n"));
    }
    for id in &plan.expire {
        out.push_str(&format!("expire {id}\n"));
    }
    for id in &plan.incomplete {
        out.push_str(&format!("expire {id} (incomplete: never finished)\n"));
    }
    if let (Some(first), Some(last)) = (plan.wal.first(), plan.wal.last()) {
        out.push_str(&format!(
            "expire {} archived WAL file(s), {} to {}\n",
            plan.wal.len(),
            name(first.as_str()),
            name(last.as_str())
        ));
    }
    if plan.is_empty() {
        out.push_str("Nothing to remove.\n");
    } else {
        out.push_str(&format!("{verb} {}\n", size(plan.bytes)));
    }
    out
}

fn name(path: &str) -> &str {
    path.rsplit('/')
        .next()
        .unwrap_or(path)
        .trim_end_matches(".zst")
}
