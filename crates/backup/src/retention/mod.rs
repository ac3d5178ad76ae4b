//! Retention: `pgwarden backup expire`, and what the agent runs after each
//! backup. [`plan`] decides (no I/O); [`expire`] reads the repository,
//! plans and removes.
//!
//! A backup goes manifest first: from that moment it is no longer a backup
//! (nothing lists or restores it), so an expire cut short leaves objects
//! without a manifest — an incomplete directory the next run removes —
//! never a backup with chunks missing.

use futures::{StreamExt, TryStreamExt};

use crate::catalog::Snapshot;
use crate::manifest;
use crate::repo::{RepoError, RepoPath, Repository};

pub mod plan;

pub use plan::{plan, Plan, Policy};

/// Objects deleted at once.
const PARALLEL_DELETES: usize = 8;

/// What an expire did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub plan: Plan,
    /// Objects deleted (0 for a dry run).
    pub deleted_objects: u64,
}

/// Reads the repository and plans retention for cluster `system_identifier`
/// now, removing nothing (`backup expire --dry-run`).
pub async fn plan_for(
    repo: &dyn Repository,
    system_identifier: u64,
    policy: &Policy,
) -> Result<Plan, RepoError> {
    let snapshot = Snapshot::read(repo, system_identifier).await?;
    Ok(plan(&snapshot, policy, jiff::Timestamp::now()))
}

/// Removes what `policy` does not keep of cluster `system_identifier`'s
/// backups and WAL.
pub async fn expire(
    repo: &dyn Repository,
    system_identifier: u64,
    policy: &Policy,
) -> Result<Report, RepoError> {
    let snapshot = Snapshot::read(repo, system_identifier).await?;
    let plan = plan(&snapshot, policy, jiff::Timestamp::now());
    let mut deleted = 0;
    for id in &plan.expire {
        repo.delete(&manifest::manifest_path(id)?).await?;
        deleted += 1;
    }
    let mut objects: Vec<RepoPath> = Vec::new();
    for id in plan.expire.iter().chain(&plan.incomplete) {
        objects.extend(
            snapshot
                .backup_objects
                .get(id)
                .into_iter()
                .flatten()
                .map(|e| e.path.clone())
                .filter(|p| manifest::manifest_path(id).map_or(true, |m| m != *p)),
        );
    }
    objects.extend(plan.wal.iter().cloned());
    deleted += objects.len() as u64;
    futures::stream::iter(objects)
        .map(|path| async move { repo.delete(&path).await })
        .buffer_unordered(PARALLEL_DELETES)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(Report {
        plan,
        deleted_objects: deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::fixture::{Fixture, SYSID};

    #[tokio::test]
    async fn expire_removes_the_backups_and_wal_it_planned_and_nothing_else() {
        let f = Fixture::new();
        let f1 = f
            .backup(
                "20261201-000000F",
                None,
                ("0/2000028", "0/2000100"),
                1,
                "2026-12-01T00:00:00Z",
            )
            .await;
        f.backup(
            "20261202-000000I",
            Some(&f1),
            ("0/4000028", "0/4000100"),
            1,
            "2026-12-02T00:00:00Z",
        )
        .await;
        f.backup(
            "20261203-000000F",
            None,
            ("0/6000028", "0/6000100"),
            1,
            "2026-12-03T00:00:00Z",
        )
        .await;
        f.segments(1, 2..9).await;
        let policy = Policy {
            full: 1,
            window: None,
        };
        let planned = plan_for(&*f.repo, SYSID, &policy).await.unwrap();
        let report = expire(&*f.repo, SYSID, &policy).await.unwrap();
        assert_eq!(report.plan, planned);
        assert_eq!(report.plan.expire, ["20261201-000000F", "20261202-000000I"]);
        // Two manifests, two chunk objects, four segments.
        assert_eq!(report.deleted_objects, 8);
        assert_eq!(
            manifest::list(&*f.repo).await.unwrap(),
            ["20261203-000000F"]
        );
        let left = f
            .repo
            .list(&RepoPath::new("backups").unwrap())
            .await
            .unwrap();
        assert!(
            left.iter()
                .all(|e| e.path.as_str().starts_with("backups/20261203-000000F/")),
            "{left:?}"
        );
        let catalog = crate::catalog::list(&*f.repo, SYSID).await.unwrap();
        let window = catalog.newest().unwrap();
        assert_eq!(window.earliest().unwrap().lsn.to_string(), "0/6000100");
        assert_eq!(window.latest().unwrap().lsn.to_string(), "0/9000000");
        assert_eq!(window.unreachable, []);
        // Again: nothing left to do.
        assert_eq!(
            expire(&*f.repo, SYSID, &policy)
                .await
                .unwrap()
                .deleted_objects,
            0
        );
    }
}
