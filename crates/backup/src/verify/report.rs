//! The verify report as an operator reads it: what was checked, what is
//! broken and what that breaks, and what to do.

use std::fmt;

use super::VerifyReport;

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Checked {} backup(s) ({} chunks) and {} archived WAL file(s) of cluster {} in {}: {} MB read.",
            self.backups,
            self.chunks,
            self.wal_files,
            self.system_identifier,
            self.repository,
            self.bytes_read / 1_000_000
        )?;
        if self.is_ok() {
            return writeln!(
                f,
                "OK: every chunk and segment is whole, and the WAL is continuous from every backup \
                 to the end of the archive on every timeline."
            );
        }
        for chunk in &self.damaged_chunks {
            writeln!(
                f,
                "DAMAGED chunk of {} in backup {} ({} at offset {}): {}",
                chunk.file, chunk.backup, chunk.object, chunk.offset, chunk.problem
            )?;
        }
        for wal in &self.damaged_wal {
            writeln!(
                f,
                "DAMAGED WAL file {} ({}): {}",
                wal.name, wal.object, wal.problem
            )?;
        }
        for problem in &self.problems {
            writeln!(f, "PROBLEM: {problem}")?;
        }
        for broken in &self.broken_backups {
            writeln!(
                f,
                "BROKEN backup {}: it can no longer be restored consistently: {}",
                broken.id, broken.reason
            )?;
        }
        for gap in &self.unreachable {
            let missing: Vec<String> = gap.gap.missing.iter().map(|r| r.to_string()).collect();
            writeln!(
                f,
                "UNREACHABLE: from {} to {} on timeline {} no point can be restored to{}",
                gap.gap.from,
                gap.gap.to,
                gap.timeline,
                if missing.is_empty() {
                    String::new()
                } else {
                    format!(" ({} missing or damaged)", missing.join(", "))
                }
            )?;
        }
        for short in &self.cut_short {
            writeln!(
                f,
                "CUT SHORT: backup {} restores on timeline {} only up to {}",
                short.id, short.timeline, short.until
            )?;
        }
        writeln!(f, "What to do:")?;
        let wal_broken = !self.damaged_wal.is_empty() || !self.unreachable.is_empty();
        if wal_broken || !self.broken_backups.is_empty() {
            writeln!(
                f,
                "  * Take a new full backup now: every point after its end can be restored \
                 again, whatever is missing before it."
            )?;
        }
        if wal_broken {
            writeln!(
                f,
                "  * The points named unreachable are lost unless the missing segments are found: \
                 if a server still has them in pg_wal, archive them with `pgwarden wal push \
                 -c FILE pg_wal/NAME` (run in its data directory; a damaged file in the \
                 archive must be removed first), then run verify again."
            )?;
        }
        if !self.damaged_chunks.is_empty() {
            writeln!(
                f,
                "  * Restore from another backup than the broken ones; check the repository's \
                 storage (disk, NFS server, bucket) for errors."
            )?;
        }
        if !self.problems.is_empty() {
            writeln!(f, "  * See each PROBLEM line for its own remedy.")?;
        }
        Ok(())
    }
}
