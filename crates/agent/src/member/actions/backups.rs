//! The leader's store writes about base backups: assign one, record a
//! skipped one, end one whose member went away. Each is guarded by the
//! leader key and by the backup keys as this round read them.

use store::cluster::{BackupAssignment, BackupKind, LastBackup};
use store::{Condition, Expect, Versioned, Write};

use super::super::{ActionError, Member};
use super::transactions::{put, unchanged};

impl Member {
    /// Asks `member` to take a backup: creates the assignment (none may
    /// exist) and consumes the request this round read, in one transaction.
    pub(super) async fn assign_backup(
        &self,
        member: &str,
        kind: ha::backups::BackupKind,
        wall_ms: u64,
    ) -> Result<(), ActionError> {
        let leader = self.own_leader("assign a backup")?;
        let assignment = BackupAssignment {
            member: member.to_string(),
            kind: match kind {
                ha::backups::BackupKind::Full => BackupKind::Full,
                ha::backups::BackupKind::Incremental => BackupKind::Incremental,
            },
            assigned_ms: wall_ms,
            term: leader.create_revision as u64,
        };
        let key = self.keys.backup_assignment();
        let mut conditions = vec![
            unchanged(self.keys.leader().key(), leader.mod_revision),
            Condition {
                key: key.key().to_string(),
                expect: Expect::Absent,
            },
        ];
        let mut writes = vec![put(&key, &assignment)?];
        self.consume_backup_request(&mut conditions, &mut writes);
        self.store.transaction(&conditions, &writes).await?;
        Ok(())
    }

    /// A due backup not taken: the schedule looked at `wall_ms`; a pending
    /// request is consumed.
    pub(super) async fn skip_backup(&self, wall_ms: u64) -> Result<(), ActionError> {
        let leader = self.own_leader("skip a backup")?;
        let key = self.keys.last_backup();
        let read = self.records.last_backup.as_ref();
        let last = LastBackup {
            checked_ms: wall_ms,
            ..read.map(|l| l.value.clone()).unwrap_or_default()
        };
        let mut conditions = vec![
            unchanged(self.keys.leader().key(), leader.mod_revision),
            Condition {
                key: key.key().to_string(),
                expect: read.map_or(Expect::Absent, |l| Expect::ModRevision(l.mod_revision)),
            },
        ];
        let mut writes = vec![put(&key, &last)?];
        self.consume_backup_request(&mut conditions, &mut writes);
        self.store.transaction(&conditions, &writes).await?;
        Ok(())
    }

    /// Ends the assignment this round read (its member went away).
    pub(super) async fn end_backup(&self) -> Result<(), ActionError> {
        let leader = self.own_leader("end a backup")?;
        let Some(assignment) = &self.records.backup_assignment else {
            return Ok(());
        };
        let key = self.keys.backup_assignment();
        let conditions = [
            unchanged(self.keys.leader().key(), leader.mod_revision),
            unchanged(key.key(), assignment.mod_revision),
        ];
        let writes = [Write::Delete {
            key: key.key().to_string(),
        }];
        self.store.transaction(&conditions, &writes).await?;
        Ok(())
    }

    /// Deletes the request this round read, if any, unless it changed.
    fn consume_backup_request(&self, conditions: &mut Vec<Condition>, writes: &mut Vec<Write>) {
        if let Some(Versioned { mod_revision, .. }) = &self.records.backup_request {
            let key = self.keys.backup_request().key().to_string();
            conditions.push(unchanged(&key, *mod_revision));
            writes.push(Write::Delete { key });
        }
    }
}
