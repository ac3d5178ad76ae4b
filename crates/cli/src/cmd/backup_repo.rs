//! What the `pgwarden backup` commands share: the repository `[backup]`
//! names (read directly, no agent needed), the cluster in it, a runtime,
//! and sizes and tables for people.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use backup::Repository;

/// The repository and `[backup]` of `config`.
pub fn open(config: &Path) -> Result<(Arc<dyn Repository>, config::Backup)> {
    let backup = config::load_backup(config)?.ok_or_else(|| {
        anyhow!(
            "{} has no [backup] table, so there is no repository; add one (docs/configuration.md)",
            config.display()
        )
    })?;
    Ok((backup::open(&backup)?, backup))
}

/// The cluster to work on: the one given, or the only one in the repository.
pub async fn system_identifier(repo: &dyn Repository, given: Option<u64>) -> Result<u64> {
    match given {
        Some(id) => Ok(id),
        None => Ok(backup::catalog::only_system_identifier(repo).await?),
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")
}

/// `1.5 GB`, `340 MB`, `12 kB`, `80 B` (powers of 1000, as df -H).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 || value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Columns aligned under their headers, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let text: String = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}  ", w = *w))
            .collect();
        format!("{}\n", text.trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_df() {
        assert_eq!(size(80), "80 B");
        assert_eq!(size(12_345), "12.3 kB");
        assert_eq!(size(1_500_000_000), "1.5 GB");
        assert_eq!(size(340_000_000), "340 MB");
    }

    #[test]
    fn columns_line_up() {
        let rows = vec![vec!["a".to_string(), "bbb".to_string()]];
        assert_eq!(table(&["ID", "X"], &rows), "ID  X\na   bbb\n");
    }
}
